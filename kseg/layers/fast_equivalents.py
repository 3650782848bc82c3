"""Which Keras layers kseg replaces with its faster equivalents of the same name."""

import keras

from kseg.layers.atrous_conv import Conv2D
from kseg.layers.atrous_depthwise_conv import DepthwiseConv2D
from kseg.layers.batch_normalization import BatchNormalization


def _largest(rate):
    return max(int(r) for r in rate) if isinstance(rate, (tuple, list)) else int(rate)


def fast_equivalent(layer_class, config):
    """The class to build a layer of `layer_class` from `config` with, for speed.

    kseg's `Conv2D` or `DepthwiseConv2D` for a plain `keras.layers.Conv2D` or
    `keras.layers.DepthwiseConv2D` whose config dilates, kseg's `BatchNormalization` for a
    plain `keras.layers.BatchNormalization`, else `layer_class`
    (subclasses keep their own class: they may compute something else). Both replacements
    keep Keras's configuration, variables and class name, so weights load either way;
    graph rewrites (`kseg.backbones.atrous.dilate`, backbone construction, batch-norm
    folding) build their copies from it.

    Example:
    >>> from kseg.layers.fast_equivalents import fast_equivalent
    >>> config = keras.layers.Conv2D(2, 3, dilation_rate=2).get_config()
    >>> fast_equivalent(keras.layers.Conv2D, config) is kseg.layers.Conv2D
    True
    >>> fast_equivalent(keras.layers.Conv2D, {**config, "dilation_rate": 1}) is keras.layers.Conv2D
    True
    """
    dilates = _largest(config.get("dilation_rate", 1)) > 1
    if layer_class is keras.layers.Conv2D and dilates:
        return Conv2D
    if layer_class is keras.layers.DepthwiseConv2D and dilates:
        return DepthwiseConv2D
    if layer_class is keras.layers.BatchNormalization:
        return BatchNormalization
    return layer_class


def has_slower_layers(model):
    """Whether any layer of `model` (nested ones too) has a faster kseg equivalent.

    Example:
    >>> from kseg.layers.fast_equivalents import has_slower_layers
    >>> inputs = keras.Input((8, 8, 3))
    >>> has_slower_layers(keras.Model(inputs, keras.layers.BatchNormalization()(inputs)))
    True
    """
    return any(
        fast_equivalent(type(layer), layer.get_config()) is not type(layer)
        for layer in model._flatten_layers(include_self=False)
    )


def conv2d(filters, kernel_size, dilation_rate=1, **kwargs):
    """A 2D convolution layer: kseg's `Conv2D` when dilated, else `keras.layers.Conv2D`.

    Builders call it wherever a convolution may be dilated, so undilated layers stay the
    plain Keras class.

    Example:
    >>> from kseg.layers.fast_equivalents import conv2d
    >>> type(conv2d(8, 3, dilation_rate=2, padding="same")) is kseg.layers.Conv2D
    True
    >>> type(conv2d(8, 3)) is keras.layers.Conv2D
    True
    """
    layer_class = Conv2D if _largest(dilation_rate) > 1 else keras.layers.Conv2D
    return layer_class(filters, kernel_size, dilation_rate=dilation_rate, **kwargs)


def depthwise_conv2d(kernel_size, dilation_rate=1, **kwargs):
    """A 2D depthwise convolution layer: kseg's `DepthwiseConv2D` when dilated, else Keras's.

    Example:
    >>> from kseg.layers.fast_equivalents import depthwise_conv2d
    >>> type(depthwise_conv2d(3, dilation_rate=6, padding="same")) is kseg.layers.DepthwiseConv2D
    True
    >>> type(depthwise_conv2d(3)) is keras.layers.DepthwiseConv2D
    True
    """
    layer_class = DepthwiseConv2D if _largest(dilation_rate) > 1 else keras.layers.DepthwiseConv2D
    return layer_class(kernel_size, dilation_rate=dilation_rate, **kwargs)
