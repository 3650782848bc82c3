"""MobileNetV3-Large laid out like torchvision's, so its checkpoints map on by name.

Howard et al. (2019), "Searching for MobileNetV3": a 3x3/2 stem convolution with 16 channels
and hard-swish, fifteen inverted-residual blocks ("bneck", Table 1: kernel, expansion size,
output channels, squeeze-and-excite, non-linearity and stride of each), then a 1x1
convolution to 960 channels with hard-swish. A block expands with a 1x1 convolution (skipped
when the expansion equals the input width), filters with a depthwise convolution, optionally
re-weights channels with squeeze-and-excite (Sec. 5.3: global pooling, a 1x1 convolution to a
quarter of the channels, ReLU, a 1x1 convolution back and hard-sigmoid), and projects with a
linear 1x1 convolution; a stride-1 block with equal input and output widths adds its input.
hard-swish is `x * relu6(x + 3) / 6` and hard-sigmoid `relu6(x + 3) / 6` (Sec. 5.2).

The channel counts follow torchvision's `mobilenet_v3_large`: every width is rounded to a
multiple of 8 (`make_divisible`, from TensorFlow's reference implementation), the
squeeze-and-excite width is `make_divisible(expanded // 4)`, batch normalisation uses
epsilon 0.001. For segmentation torchvision builds it with `dilated=True`: the last stage
(the three stride-32 blocks) runs at stride 1 with dilation 2, output stride 16, as the
paper's segmentation experiments do (Sec. 6.4). `MobileNetV3Large(output_stride=...)`
generalises that rule: each stage past the output stride keeps stride 1 and doubles the
dilation of all its blocks, strided block included.

Layer names are torchvision's module paths inside `features`: `features.0.0` (stem
convolution), `features.0.1` (its BatchNorm), `features.{i}.block.{j}.0` and `.1` (the
convolution and BatchNorm of the block's j-th part), `features.{i}.block.{j}.fc1` and `.fc2`
(squeeze-and-excite), `features.16.0` and `.1` (last convolution); so a state-dict key
`features.<path>.<param>` names the Keras layer `features.<path>`
(`kseg.pretrained.convert_mobilenet_v3`). Weightless layers use names torch has no parameter
for: `*_pad` paddings, activations at torch's own index (`features.0.2`,
`features.{i}.block.{j}.2`), `features.{i}.block.{j}.avgpool`, `.activation`,
`.scale_activation` and `.scale` (the product), and each block's output `features.{i}.out`.
"""

import keras

from kseg.layers.batch_normalization import BatchNormalization
from kseg.layers.fast_equivalents import conv2d, depthwise_conv2d

LARGE_BLOCKS = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hard_swish", 2),
    (3, 200, 80, False, "hard_swish", 1),
    (3, 184, 80, False, "hard_swish", 1),
    (3, 184, 80, False, "hard_swish", 1),
    (3, 480, 112, True, "hard_swish", 1),
    (3, 672, 112, True, "hard_swish", 1),
    (5, 672, 160, True, "hard_swish", 2),
    (5, 960, 160, True, "hard_swish", 1),
    (5, 960, 160, True, "hard_swish", 1),
)
"""MobileNetV3-Large's bneck blocks (Howard et al. 2019, Table 1): kernel, expansion size,
output channels, squeeze-and-excite, non-linearity, stride. They are `features.1` to
`features.15`; `features.0` is the stem and `features.16` the last 1x1 convolution."""

STEM_CHANNELS = 16
LAST_CONV_EXPANSION = 6
"""The last 1x1 convolution has 6x the channels of the last block (960 = 6 x 160)."""

BN_EPSILON = 1e-3
# PyTorch's momentum 0.01 weighs the new batch statistics; Keras's momentum weighs the old.
_TORCH_BN_MOMENTUM = 0.99
_ACTIVATIONS = {"relu": "relu", "hard_swish": "hard_silu"}


def make_divisible(value, divisor=8):
    """`value` rounded to the nearest multiple of `divisor`, never more than 10% below it.

    The channel rounding of TensorFlow's MobileNet code, which torchvision copies.

    Example:
    >>> from kseg.backbones.mobilenet_v3 import make_divisible
    >>> make_divisible(72 // 4), make_divisible(960 * 0.25), make_divisible(16 * 0.25)
    (24, 240, 8)
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def block_dilations(output_stride=32, multi_grid=None):
    """Stride and dilation of each of the fifteen blocks at an output stride.

    A stage whose stride would pass `output_stride` runs at stride 1, and its blocks, the
    strided one included, use twice the dilation of the stage before (torchvision's
    `dilated=True` is output stride 16: dilation 2 for `features.13` to `features.15`).
    `multi_grid` multiplies the dilations of the last stage's three blocks.

    Args:
        output_stride: 8, 16 or 32.
        multi_grid: None or three positive integers.

    Returns:
        A list of fifteen `(stride, dilation)` pairs.

    Example:
    >>> from kseg.backbones.mobilenet_v3 import block_dilations
    >>> block_dilations(16)[11:]
    [(1, 1), (1, 2), (1, 2), (1, 2)]
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(
            f"`output_stride` must be 8, 16 or 32. Received: output_stride={output_stride!r}"
        )
    last_stage = [index for index, block in enumerate(LARGE_BLOCKS) if block[-1] == 2][-1]
    grid_size = len(LARGE_BLOCKS) - last_stage
    if multi_grid is not None and (
        len(multi_grid) != grid_size
        or not all(isinstance(rate, int) and rate >= 1 for rate in multi_grid)
    ):
        raise ValueError(
            f"`multi_grid` must be {grid_size} positive integers, one per block of the last "
            f"stage. Received: multi_grid={multi_grid!r}"
        )
    # The stem already reaches stride 2.
    stride, rate = 2, 1
    layout = []
    for index, block in enumerate(LARGE_BLOCKS):
        block_stride = block[-1]
        if stride * block_stride > output_stride:
            rate *= block_stride
            block_stride = 1
        stride *= block_stride
        grid = multi_grid[index - last_stage] if multi_grid and index >= last_stage else 1
        layout.append((block_stride, rate * grid))
    return layout


def mobilenet_v3_taps():
    """Layer names of the stride-2..32 features of `MobileNetV3Large` at output stride 32.

    The output of the last block before each stride-2 block, and the last convolution's
    activation for stride 32.

    Example:
    >>> kseg.backbones.mobilenet_v3.mobilenet_v3_taps()
    {'P1': 'features.1.out', 'P2': 'features.3.out', 'P3': 'features.6.out', \
'P4': 'features.12.out', 'P5': 'features.16.2'}
    """
    strided = [index + 1 for index, block in enumerate(LARGE_BLOCKS) if block[-1] == 2]
    taps = {f"P{level}": f"features.{index - 1}.out" for level, index in enumerate(strided, 1)}
    taps[f"P{len(strided) + 1}"] = f"features.{len(LARGE_BLOCKS) + 1}.2"
    return taps


def _conv_bn(x, filters, name, activation=None, kernel_size=1, stride=1, dilation=1):
    """A Conv2dNormActivation of torchvision: `{name}.0` conv, `.1` BN, `.2` activation.

    `filters=None` makes the convolution depthwise (one filter per input channel).
    """
    padding = dilation * (kernel_size - 1) // 2
    if padding:
        # PyTorch pads symmetrically; "same" would pad a strided convolution's bottom/right only.
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}.0_pad")(x)
    options = {"strides": stride, "dilation_rate": dilation, "use_bias": False, "name": f"{name}.0"}
    if filters is None:
        x = depthwise_conv2d(kernel_size, **options)(x)
    else:
        initializer = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
        x = conv2d(filters, kernel_size, kernel_initializer=initializer, **options)(x)
    x = BatchNormalization(epsilon=BN_EPSILON, momentum=_TORCH_BN_MOMENTUM, name=f"{name}.1")(x)
    if activation is not None:
        x = keras.layers.Activation(_ACTIVATIONS[activation], name=f"{name}.2")(x)
    return x


def _squeeze_excite(x, name):
    channels = x.shape[-1]
    scale = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.avgpool")(x)
    scale = keras.layers.Conv2D(make_divisible(channels // 4), 1, name=f"{name}.fc1")(scale)
    scale = keras.layers.ReLU(name=f"{name}.activation")(scale)
    scale = keras.layers.Conv2D(channels, 1, name=f"{name}.fc2")(scale)
    scale = keras.layers.Activation("hard_sigmoid", name=f"{name}.scale_activation")(scale)
    return keras.layers.Multiply(name=f"{name}.scale")([x, scale])


def _inverted_residual(x, config, stride, dilation, name):
    kernel, expanded, out_channels, squeeze_excite, activation, nominal_stride = config
    in_channels = x.shape[-1]
    y = x
    part = 0
    if expanded != in_channels:
        y = _conv_bn(y, expanded, f"{name}.block.{part}", activation)
        part += 1
    y = _conv_bn(y, None, f"{name}.block.{part}", activation, kernel, stride, dilation)
    part += 1
    if squeeze_excite:
        y = _squeeze_excite(y, f"{name}.block.{part}")
        part += 1
    y = _conv_bn(y, out_channels, f"{name}.block.{part}")
    # torchvision decides on the nominal stride, so a dilated strided block stays unconnected.
    if nominal_stride == 1 and in_channels == out_channels:
        return keras.layers.Add(name=f"{name}.out")([y, x])
    return keras.layers.Identity(name=f"{name}.out")(y)


def _single(tensors):
    # A one-element list of inputs would make Keras expect a list when the model is called.
    return tensors[0] if len(tensors) == 1 else tensors


def MobileNetV3Large(
    input_tensor=None,
    input_shape=(None, None, 3),
    weights=None,
    output_stride=32,
    multi_grid=None,
    width_multiplier=1.0,
    name="mobilenet_v3_large",
):
    """Builds MobileNetV3-Large without its classifier, with torchvision's layout and names.

    Howard et al. (2019), "Searching for MobileNetV3", Table 1, as torchvision builds it (see
    the module docstring): every padding is an explicit symmetric `ZeroPadding2D` before a
    "valid" convolution, so odd and even input sizes give PyTorch's values exactly. Output
    strides 16 and 8 run the later stages at stride 1 with dilation (`block_dilations`);
    output stride 16 is torchvision's `dilated=True`, the backbone of its
    `deeplabv3_mobilenet_v3_large` and `lraspp_mobilenet_v3_large`. The input is expected
    already normalised; `kseg.backbones.get_backbone("mobilenet_v3_large")` adds the "torch"
    normalisation in front and taps the features (`mobilenet_v3_taps`).

    Args:
        input_tensor: Optional Keras tensor to build on (for instance a preprocessing output).
        input_shape: `(height, width, channels)` when `input_tensor` is None.
        weights: None or the path of a Keras weights file of the same configuration.
        output_stride: 32, 16 or 8.
        multi_grid: Optional dilation multipliers, one per block of the last stage (three).
        width_multiplier: Scales every width before rounding to a multiple of 8 (torchvision's
            `width_mult`); small values give small networks for tests.
        name: Model name.

    Returns:
        A functional `keras.Model` whose output is the last convolution's activation
        (`features.16.2`, 960 channels at width 1).

    Example:
    >>> model = kseg.backbones.mobilenet_v3.MobileNetV3Large(output_stride=16)
    >>> model.get_layer("features.13.block.1.0").dilation_rate, model.output.shape
    ((2, 2), (None, None, None, 960))
    """
    if weights is not None and weights == "imagenet":
        raise ValueError(
            "MobileNetV3Large has no Keras ImageNet weights file; convert a torchvision "
            "checkpoint with kseg.pretrained.convert_mobilenet_v3. Received: weights='imagenet'"
        )
    if not isinstance(width_multiplier, (int, float)) or not width_multiplier > 0:
        raise ValueError(
            "`width_multiplier` must be a positive number. "
            f"Received: width_multiplier={width_multiplier!r}"
        )
    layout = block_dilations(output_stride, multi_grid)
    inputs = keras.Input(shape=input_shape) if input_tensor is None else input_tensor
    x = _conv_bn(
        inputs,
        make_divisible(STEM_CHANNELS * width_multiplier),
        "features.0",
        "hard_swish",
        kernel_size=3,
        stride=2,
    )
    for index, (config, (stride, dilation)) in enumerate(zip(LARGE_BLOCKS, layout), start=1):
        kernel, expanded, out_channels, *rest = config
        widths = (
            make_divisible(expanded * width_multiplier),
            make_divisible(out_channels * width_multiplier),
        )
        x = _inverted_residual(x, (kernel, *widths, *rest), stride, dilation, f"features.{index}")
    x = _conv_bn(
        x,
        LAST_CONV_EXPANSION * x.shape[-1],
        f"features.{len(LARGE_BLOCKS) + 1}",
        "hard_swish",
    )
    source = inputs if input_tensor is None else _single(keras.utils.get_source_inputs(inputs))
    model = keras.Model(source, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model
