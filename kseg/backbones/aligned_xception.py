"""The Modified Aligned Xception-65 backbone of DeepLabv3+."""

import keras

from kseg.layers.batch_normalization import BatchNormalization
from kseg.layers.fast_equivalents import depthwise_conv2d

# (block name, output widths of its three separable convolutions, shortcut kind, stride).
_XCEPTION65_BLOCKS = (
    ("entry_flow_block1", (128, 128, 128), "conv", 2),
    ("entry_flow_block2", (256, 256, 256), "conv", 2),
    ("entry_flow_block3", (728, 728, 728), "conv", 2),
    *((f"middle_flow_block{i}", (728, 728, 728), "sum", 1) for i in range(1, 17)),
    ("exit_flow_block1", (728, 1024, 1024), "conv", 2),
    ("exit_flow_block2", (1536, 1536, 2048), "none", 1),
)


class _StridePlan:
    """Trades strides for dilation once the target output stride is reached.

    Follows DeepLab's `stack_blocks_dense`: a block that would take the features past the
    target runs with stride 1 at the current rate, and the rate then grows by that stride.
    """

    def __init__(self, output_stride, current_stride):
        self.output_stride = output_stride
        self.current_stride = current_stride
        self.rate = 1

    def block(self, stride):
        if self.current_stride == self.output_stride:
            rate = self.rate
            self.rate *= stride
            return 1, rate
        self.current_stride *= stride
        return stride, 1


def _single(tensors):
    # A one-element list of inputs would make Keras expect a list when the model is called.
    return tensors[0] if len(tensors) == 1 else tensors


def _separable_conv(x, filters, stride, rate, name):
    # Strided convolutions pad explicitly and symmetrically (DeepLab's `fixed_padding`), so
    # output pixel i sees input pixels centred on 2i for any input size: the "aligned" part,
    # shared with the 1x1 strided shortcut.
    if stride > 1:
        x = keras.layers.ZeroPadding2D(padding=1, name=f"{name}_pad")(x)
    x = depthwise_conv2d(
        3,
        strides=stride,
        dilation_rate=rate,
        padding="valid" if stride > 1 else "same",
        use_bias=False,
        name=f"{name}_depthwise",
    )(x)
    x = BatchNormalization(name=f"{name}_depthwise_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_depthwise_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pointwise")(x)
    x = BatchNormalization(name=f"{name}_pointwise_bn")(x)
    return keras.layers.ReLU(name=f"{name}_pointwise_relu")(x)


def _xception_block(inputs, widths, shortcut, stride, rate, unit_rates, name):
    x = inputs
    for index, (filters, unit_rate) in enumerate(zip(widths, unit_rates), start=1):
        x = _separable_conv(
            x,
            filters,
            stride=stride if index == len(widths) else 1,
            rate=rate * unit_rate,
            name=f"{name}_sepconv{index}",
        )
    if shortcut == "conv":
        residual = keras.layers.Conv2D(
            widths[-1], 1, strides=stride, use_bias=False, name=f"{name}_shortcut"
        )(inputs)
        residual = BatchNormalization(name=f"{name}_shortcut_bn")(residual)
        return keras.layers.Add(name=f"{name}_add")([x, residual])
    if shortcut == "sum":
        return keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _conv_bn_relu(x, filters, stride, name):
    if stride > 1:
        x = keras.layers.ZeroPadding2D(padding=1, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="valid" if stride > 1 else "same",
        use_bias=False,
        name=name,
    )(x)
    x = BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def AlignedXception65(
    input_tensor=None,
    input_shape=(None, None, 3),
    weights=None,
    output_stride=32,
    multi_grid=(1, 1, 1),
    name="xception65",
):
    """Builds the Modified Aligned Xception-65 of DeepLabv3+.

    Chen et al. (2018), "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
    Segmentation", section 3.2, adapt Xception (Chollet, 2017) to segmentation: a deeper
    middle flow (16 blocks), every max pooling replaced by a strided depthwise separable
    convolution so that any stride can be traded for dilation, and batch normalisation and
    ReLU after every 3x3 depthwise convolution, as in MobileNet. Entry flow: 3x3/2 convolution
    with 32 filters, 3x3 with 64, then three blocks of three separable convolutions (128, 256,
    728 filters), each ending in a strided separable convolution and joined by a 1x1 strided
    convolution shortcut with batch normalisation. Middle flow: 16 blocks of three 728-wide
    separable convolutions with identity shortcuts. Exit flow: a [728, 1024, 1024] block with
    a strided last convolution and a convolution shortcut, then [1536, 1536, 2048] without
    shortcut. Each separable convolution is depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 ->
    BN -> ReLU, without biases.

    Output strides 32, 16 and 8 are native: blocks past the target run with stride 1 and a
    dilation rate that grows by each skipped stride, as in the official DeepLab code, and the
    last block's three convolutions may further multiply their rates by `multi_grid`. The
    layer names do not depend on `output_stride`, so one weights file serves every stride.
    The stride-4 feature the DeepLabv3+ decoder reads is
    `entry_flow_block2_sepconv2_pointwise_relu` (256 channels).

    Args:
        input_tensor: Optional Keras tensor to build on (for instance a preprocessing output).
        input_shape: Input shape `(height, width, channels)` when `input_tensor` is None.
        weights: None (random initialisation) or the path of a weights file saved from this
            architecture. No ImageNet checkpoint is distributed for Keras.
        output_stride: 8, 16 or 32.
        multi_grid: Three rate multipliers for the exit flow's last block (DeepLabv3 uses
            `(1, 2, 4)`).
        name: Model name.

    Returns:
        A functional `keras.Model` whose output is the 2048-channel exit-flow feature map at
        `output_stride`.

    Example:
    >>> model = kseg.backbones.aligned_xception.AlignedXception65(output_stride=16)
    >>> model.get_layer("exit_flow_block2_sepconv1_depthwise").dilation_rate
    (2, 2)
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(
            f"`output_stride` must be 8, 16 or 32. Received: output_stride={output_stride!r}"
        )
    multi_grid = tuple(multi_grid)
    if len(multi_grid) != 3 or not all(isinstance(r, int) and r >= 1 for r in multi_grid):
        raise ValueError(
            f"`multi_grid` must be three positive integers. Received: multi_grid={multi_grid!r}"
        )
    if weights == "imagenet":
        raise ValueError(
            "No ImageNet weights are available for xception65; pass weights=None or the path "
            "of a weights file saved from this architecture. Received: weights='imagenet'"
        )

    inputs = keras.Input(shape=input_shape) if input_tensor is None else input_tensor
    x = _conv_bn_relu(inputs, 32, stride=2, name="entry_flow_conv1_1")
    x = _conv_bn_relu(x, 64, stride=1, name="entry_flow_conv1_2")
    plan = _StridePlan(output_stride, current_stride=2)
    for block_name, widths, shortcut, block_stride in _XCEPTION65_BLOCKS:
        stride, rate = plan.block(block_stride)
        unit_rates = multi_grid if block_name == "exit_flow_block2" else (1, 1, 1)
        x = _xception_block(x, widths, shortcut, stride, rate, unit_rates, name=block_name)

    source = inputs if input_tensor is None else _single(keras.utils.get_source_inputs(inputs))
    model = keras.Model(source, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model
