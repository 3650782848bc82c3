"""Batch-normalisation momentum of every layer of a model, for training from scratch."""

import keras


def set_batchnorm_momentum(model, momentum):
    """Set the moving-statistics momentum of every BatchNormalization layer, nested ones too.

    keras.applications build their batch normalisation with momentum 0.99 or 0.999, right for
    fine-tuning from ImageNet statistics but slow for a network trained from scratch for a few
    hundred steps: its moving means still hold the initial values when it is evaluated, and
    inference mode then predicts one class everywhere. A momentum of 0.9 lets the statistics
    follow within tens of steps. Call it before `compile`. The value is stored in each layer's
    config, so it survives saving.

    Args:
        model: a `keras.Model` (nested models and layers are visited).
        momentum: the new momentum, in [0, 1).

    Returns:
        The number of layers changed.

    Example:
        >>> model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny")
        >>> kseg.training.set_batchnorm_momentum(model, 0.9) > 0
        True
    """
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"momentum must be in [0, 1). Received: momentum={momentum}")
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            changed += 1
    return changed
