"""A tens-of-thousands-parameter convolutional backbone for fast tests and quick experiments."""

import keras

from kseg.layers.batch_normalization import BatchNormalization

TINY_WIDTHS = (8, 16, 24, 32, 48)


def _single(tensors):
    # A one-element list of inputs would make Keras expect a list when the model is called.
    return tensors[0] if len(tensors) == 1 else tensors


def TinyBackbone(input_tensor=None, input_shape=(None, None, 3), widths=TINY_WIDTHS, name="tiny"):
    """Builds a plain five-stage Conv-BN-ReLU network, one stride-2 stage per pyramid level.

    Stage `n` (1 to 5) is a 3x3 stride-2 convolution followed by a 3x3 stride-1 convolution,
    each with batch normalisation and ReLU, in the plain VGG style (Simonyan & Zisserman,
    2015) scaled down to a few tens of thousands of parameters. Its output, layer
    `stage{n}_conv2_relu`, is the stride-2**n feature. The second convolution of every stage
    gives atrous conversion (`kseg.backbones.atrous.dilate`) something to dilate, so tests of
    output strides 8 and 16 exercise the same code path as the large backbones.

    Args:
        input_tensor: Optional Keras tensor to build on (for instance a preprocessing output).
        input_shape: Input shape `(height, width, channels)` when `input_tensor` is None.
        widths: Output channels of the five stages.
        name: Model name.

    Returns:
        A functional `keras.Model` whose output is the stride-32 feature map.

    Example:
    >>> model = kseg.backbones.tiny.TinyBackbone(input_shape=(64, 64, 3))
    >>> model.output.shape
    (None, 2, 2, 48)
    """
    if len(widths) != 5 or not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError(f"`widths` must be five positive integers. Received: widths={widths!r}")
    inputs = keras.Input(shape=input_shape) if input_tensor is None else input_tensor
    x = inputs
    for stage, filters in enumerate(widths, start=1):
        for index, stride in ((1, 2), (2, 1)):
            prefix = f"stage{stage}_conv{index}"
            x = keras.layers.Conv2D(
                filters, 3, strides=stride, padding="same", use_bias=False, name=prefix
            )(x)
            x = BatchNormalization(name=f"{prefix}_bn")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    source = inputs if input_tensor is None else _single(keras.utils.get_source_inputs(inputs))
    return keras.Model(source, x, name=name)
