"""Copies of a functional model with some layers rebuilt, weights carried over by layer name."""

import keras

from kseg.layers.fast_equivalents import fast_equivalent, has_slower_layers


def rebuild_layers(model, rebuild):
    """A clone of functional `model` whose layers are `rebuild(layer)`, with `model`'s weights.

    Each rebuilt layer must keep its name and its variables' shapes; the weights are copied
    layer by layer, and layers that snapshot their variables into constants (Keras's
    `Normalization`) refresh them.

    Args:
        model: A functional `keras.Model`.
        rebuild: A function from a layer to its new (unbuilt) copy.

    Returns:
        The new functional model.

    Example:
    >>> from kseg.backbones.rebuild import rebuild_layers
    >>> model = kseg.backbones.get_backbone("tiny")
    >>> copy = rebuild_layers(model, lambda layer: layer.__class__.from_config(layer.get_config()))
    >>> all(np.array_equal(a, b) for a, b in zip(model.weights, copy.weights))
    True
    """
    rebuilt = keras.models.clone_model(model, clone_function=rebuild)
    for layer in model.layers:
        if not layer.weights:
            continue
        target = rebuilt.get_layer(layer.name)
        for new, old in zip(target.weights, layer.weights, strict=True):
            new.assign(old)
        if hasattr(target, "finalize_state"):
            target.finalize_state()
    return rebuilt


def with_fast_layers(model):
    """`model`, or its copy with each layer that has a faster kseg equivalent replaced.

    The replacements (`kseg.layers.fast_equivalents.fast_equivalent`) compute the same
    function with the same variables; networks kseg does not build itself
    (`keras.applications`) get them this way.

    Example:
    >>> from kseg.backbones.rebuild import with_fast_layers
    >>> inputs = keras.Input((8, 8, 3))
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
    >>> type(with_fast_layers(model).get_layer("bn")) is kseg.layers.BatchNormalization
    True
    """
    if not has_slower_layers(model):
        return model

    def rebuild(layer):
        config = layer.get_config()
        return fast_equivalent(type(layer), config).from_config(config)

    return rebuild_layers(model, rebuild)
