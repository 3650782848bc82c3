"""Fully-convolutional surgery: a Flatten/Dense classifier rewritten as convolutions."""

import keras

_DENSE_LIKE_PASSTHROUGH = (keras.layers.Dropout, keras.layers.Activation, keras.layers.ReLU)


def _clone(layer):
    clone = layer.__class__.from_config(layer.get_config())
    return clone


def _check_chain(classifier):
    layers = [
        layer for layer in classifier.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    previous = classifier.inputs[0]
    for layer in layers:
        if len(layer._inbound_nodes) != 1 or layer.input is not previous:
            raise ValueError(
                "convolutionalize needs a single-input chain of layers (a Sequential-like "
                f"classifier). Received: layer {layer.name!r} does not read its predecessor's "
                "output"
            )
        previous = layer.output
    return layers


def convolutionalize(classifier, input_shape=(None, None, 3), name=None):
    """Rewrites a classifier's Flatten/Dense head as convolutions.

    Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic
    Segmentation", section 3.1: a fully connected layer is a convolution whose
    kernel covers its entire input. The first Dense after a Flatten of an
    `h x w x c` map becomes an `h x w` valid convolution whose kernel is the
    Dense matrix reshaped to `(h, w, c, units)` (Flatten orders features as
    height, width, channel), and every later Dense becomes a 1x1 convolution.
    The result accepts any input at least as large as the classifier's and
    returns a score map whose pixel `(i, j)` equals the classifier applied to
    the crop at `(i * s, j * s)`, `s` being the network's total stride (32 for
    VGG16: a 384x384 image gives a 6x6 map). Layers keep their names, so the
    convolutions are called `fc1`, `fc2`, `predictions` for VGG16.

    Args:
        classifier: a built `keras.Model` whose layers form one chain
            (Sequential or a functional chain such as
            `keras.applications.VGG16(include_top=True)`), with one Flatten
            followed by Dense layers (Dropout and Activation layers may sit
            between them).
        input_shape: the input shape of the new model; None sizes keep it
            size-agnostic.
        name: the new model's name (default: the classifier's name + "_fcn").

    Returns:
        A functional `keras.Model` holding copies of the classifier's weights.

    Example:
        >>> classifier = keras.Sequential([
        ...     keras.Input((4, 4, 3)),
        ...     keras.layers.Conv2D(8, 3, name="conv"),
        ...     keras.layers.Flatten(),
        ...     keras.layers.Dense(5, name="fc"),
        ... ])
        >>> fcn = kseg.backbones.surgery.convolutionalize(classifier)
        >>> tuple(fcn.get_layer("fc").kernel.shape), fcn.output.shape
        ((2, 2, 8, 5), (None, None, None, 5))
    """
    if not isinstance(classifier, keras.Model) or not classifier.built:
        raise TypeError(
            f"classifier must be a built keras.Model. Received: classifier={classifier!r}"
        )
    layers = _check_chain(classifier)
    flatten_positions = [
        i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Flatten)
    ]
    if len(flatten_positions) != 1:
        raise ValueError(
            "convolutionalize needs exactly one Flatten layer before the Dense head. Received: "
            f"{len(flatten_positions)} Flatten layers in {classifier.name!r}"
        )
    flatten_at = flatten_positions[0]
    feature_shape = tuple(layers[flatten_at].input.shape[1:])
    if len(feature_shape) != 3 or None in feature_shape:
        raise ValueError(
            "the Flatten layer must read a feature map of known (h, w, c) shape. "
            f"Received: shape={feature_shape}"
        )

    inputs = keras.Input(shape=input_shape, name=classifier.inputs[0].name.split(":")[0])
    x = inputs
    for layer in layers[:flatten_at]:
        clone = _clone(layer)
        x = clone(x)
        clone.set_weights(layer.get_weights())

    kernel_size = feature_shape[:2]
    for layer in layers[flatten_at + 1 :]:
        if isinstance(layer, keras.layers.Dense):
            units = layer.units
            conv = keras.layers.Conv2D(
                units,
                kernel_size,
                padding="valid",
                activation=layer.activation,
                use_bias=layer.use_bias,
                name=layer.name,
                dtype=layer.dtype_policy,
            )
            x = conv(x)
            weights = layer.get_weights()
            weights[0] = weights[0].reshape((*kernel_size, -1, units))
            conv.set_weights(weights)
            kernel_size = (1, 1)
        elif isinstance(layer, _DENSE_LIKE_PASSTHROUGH):
            x = _clone(layer)(x)
        else:
            raise TypeError(
                "after Flatten only Dense, Dropout and Activation layers can be converted. "
                f"Received: layer {layer.name!r} of type {type(layer).__name__}"
            )
    return keras.Model(inputs, x, name=name or f"{classifier.name}_fcn")
