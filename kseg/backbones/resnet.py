"""Bottleneck ResNets laid out like torchvision's, so PyTorch checkpoints map on by name.

He et al. (2016), "Deep Residual Learning for Image Recognition": a 7x7/2 stem convolution,
a 3x3/2 max pooling and four stages of bottleneck units (1x1 reduce, 3x3, 1x1 expand, with
an identity or 1x1 projection shortcut). keras.applications' ResNet follows the original
Caffe model (stride in the first 1x1 convolution, biased convolutions, BN epsilon 1.001e-5,
"caffe" inputs); torchvision's segmentation and detection models use "ResNet v1.5" instead:
the stride sits on the 3x3 convolution, convolutions carry no bias, BatchNorm's epsilon is
1e-5 and inputs are ImageNet-normalised [0, 1] RGB. `ResNet` builds either with options,
not copies, and trades late strides for dilation the way torchvision's
`replace_stride_with_dilation` does.

Layer names are torchvision's module paths: `conv1`, `bn1`, `layer{s}.{u}.conv{k}`,
`layer{s}.{u}.bn{k}`, `layer{s}.{u}.downsample.0` (projection convolution) and
`layer{s}.{u}.downsample.1` (its BatchNorm), so a state-dict key `<path>.<param>` names the
Keras layer `<path>` (`kseg.pretrained.convert_resnet`). Weightless layers use names torch
has no module for: `conv1_pad`, `relu`, `maxpool_pad`, `maxpool`, `layer{s}.{u}.conv2_pad`,
`layer{s}.{u}.relu{k}` and the unit output `layer{s}.{u}.out`.
"""

import keras

from kseg.layers.batch_normalization import BatchNormalization
from kseg.layers.fast_equivalents import conv2d

BOTTLENECK_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
"""Bottleneck units per stage for each depth (He et al., 2016, Table 1)."""

BOTTLENECK_EXPANSION = 4
"""A bottleneck's output has 4x the channels of its 3x3 convolution."""

# PyTorch's momentum 0.1 weighs the new batch statistics; Keras's momentum weighs the old.
_TORCH_BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="kseg")
class FrozenBatchNormalization(BatchNormalization):
    """Batch normalisation with fixed statistics and affine parameters.

    The counterpart of torchvision's `FrozenBatchNorm2d`, which detection models use because
    their per-device batches are too small for batch statistics: the layer always normalises
    with its moving mean and variance, whatever `training` says, and none of its four
    variables is ever trained. Unlike a `BatchNormalization` with `trainable=False`, it stays
    frozen when an enclosing model is later set `trainable=True` for fine-tuning.

    Args:
        **kwargs: `keras.layers.BatchNormalization` arguments (`epsilon`, `name`, ...).

    Example:
    >>> layer = kseg.backbones.resnet.FrozenBatchNormalization(epsilon=1e-5)
    >>> images = np.full((1, 2, 2, 3), 4.0, "float32")
    >>> np.asarray(layer(images, training=True))[0, 0, 0].round(3)  # moving stats: 0 and 1
    array([4., 4., 4.], dtype=float32)
    >>> layer.trainable = True
    >>> layer.trainable, len(layer.trainable_weights)
    (False, 0)
    """

    def __init__(self, **kwargs):
        kwargs["trainable"] = False
        super().__init__(**kwargs)

    @property
    def trainable(self):
        return False

    @trainable.setter
    def trainable(self, value):
        keras.layers.Layer.trainable.fset(self, False)

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def stage_dilations(output_stride, units=BOTTLENECK_UNITS[50]):
    """Stride and per-unit dilations of the four stages at an output stride, as in torchvision.

    torchvision's `replace_stride_with_dilation` turns a stage's stride 2 into a dilation
    that doubles the running rate, but the first unit of a dilated stage still uses the rate
    of the stage before it (`ResNet._make_layer`'s `previous_dilation`): at output stride 8,
    layer3 runs at rates 1, 2, 2, ... and layer4 at 2, 4, 4.

    Args:
        output_stride: 32, 16 or 8.
        units: Bottleneck units per stage.

    Returns:
        A list of four `(stride, [dilation of each unit])` pairs.

    Example:
    >>> kseg.backbones.resnet.stage_dilations(8)
    [(1, [1, 1, 1]), (2, [1, 1, 1, 1]), (1, [1, 2, 2, 2, 2, 2]), (1, [2, 4, 4])]
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(
            f"`output_stride` must be 8, 16 or 32. Received: output_stride={output_stride!r}"
        )
    # layer2..layer4 each halve the resolution unless dilated; the stem already reaches 4.
    dilated = {32: 0, 16: 1, 8: 2}[output_stride]
    stages = []
    rate = 1
    for index, count in enumerate(units):
        stride = 1 if index == 0 else 2
        previous = rate
        if index >= 4 - dilated:
            rate *= stride
            stride = 1
        stages.append((stride, [previous] + [rate] * (count - 1)))
    return stages


def _batch_norm(x, name, epsilon, frozen):
    layer_class = FrozenBatchNormalization if frozen else BatchNormalization
    return layer_class(epsilon=epsilon, momentum=_TORCH_BN_MOMENTUM, name=name)(x)


def _conv(x, filters, kernel_size, name, stride=1, dilation=1, use_bias=False):
    # PyTorch pads symmetrically by `dilation * (kernel_size - 1) / 2`; explicit padding and
    # a "valid" convolution give the same sizes and values for odd and even inputs alike,
    # where "same" would pad only the bottom/right side of a strided convolution.
    padding = dilation * (kernel_size - 1) // 2
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return conv2d(
        filters,
        kernel_size,
        strides=stride,
        dilation_rate=dilation,
        padding="valid",
        use_bias=use_bias,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
        name=name,
    )(x)


def _bottleneck(x, planes, stride, dilation, name, options):
    """One bottleneck unit; `options` holds the network-wide choices."""
    in_channels = x.shape[-1]
    out_channels = planes * BOTTLENECK_EXPANSION
    conv_options = {"use_bias": options["use_bias"]}
    bn_options = {"epsilon": options["bn_epsilon"], "frozen": options["frozen_batchnorm"]}
    stride_1x1, stride_3x3 = (stride, 1) if options["stride_in_1x1"] else (1, stride)

    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = _conv(x, out_channels, 1, f"{name}.downsample.0", stride, **conv_options)
        shortcut = _batch_norm(shortcut, f"{name}.downsample.1", **bn_options)

    y = _conv(x, planes, 1, f"{name}.conv1", stride_1x1, **conv_options)
    y = _batch_norm(y, f"{name}.bn1", **bn_options)
    y = keras.layers.ReLU(name=f"{name}.relu1")(y)
    y = _conv(y, planes, 3, f"{name}.conv2", stride_3x3, dilation, **conv_options)
    y = _batch_norm(y, f"{name}.bn2", **bn_options)
    y = keras.layers.ReLU(name=f"{name}.relu2")(y)
    y = _conv(y, out_channels, 1, f"{name}.conv3", **conv_options)
    y = _batch_norm(y, f"{name}.bn3", **bn_options)
    y = keras.layers.Add(name=f"{name}.add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}.out")(y)


def _single(tensors):
    # A one-element list of inputs would make Keras expect a list when the model is called.
    return tensors[0] if len(tensors) == 1 else tensors


def _validate(depth, multi_grid, units, base_channels, bn_epsilon):
    if depth not in BOTTLENECK_UNITS:
        raise ValueError(
            f"`depth` must be one of {sorted(BOTTLENECK_UNITS)}. Received: depth={depth!r}"
        )
    if multi_grid is not None and (
        len(multi_grid) != units[3] or not all(isinstance(r, int) and r >= 1 for r in multi_grid)
    ):
        raise ValueError(
            f"`multi_grid` must be {units[3]} positive integers, one per unit of layer4. "
            f"Received: multi_grid={multi_grid!r}"
        )
    if not isinstance(base_channels, int) or base_channels < 1:
        raise ValueError(
            f"`base_channels` must be a positive integer. Received: base_channels={base_channels!r}"
        )
    if not bn_epsilon > 0:
        raise ValueError(f"`bn_epsilon` must be positive. Received: bn_epsilon={bn_epsilon!r}")


def ResNet(
    input_tensor=None,
    input_shape=(None, None, 3),
    weights=None,
    depth=50,
    output_stride=32,
    multi_grid=None,
    stride_in_1x1=False,
    use_bias=False,
    bn_epsilon=1e-5,
    frozen_batchnorm=False,
    base_channels=64,
    name=None,
):
    """Builds a bottleneck ResNet-50/101/152 with torchvision's layout and layer names.

    He et al. (2016), "Deep Residual Learning for Image Recognition", in the variants
    published checkpoints differ by: the stride of a downsampling unit on its 3x3
    convolution ("v1.5", torchvision's default and this one's) or on its first 1x1
    convolution (`stride_in_1x1=True`, the original Caffe "v1"); convolution biases; the
    BatchNorm epsilon; and frozen batch normalisation for detection
    (`FrozenBatchNormalization`). Every padding is an explicit symmetric `ZeroPadding2D`
    before a "valid" layer (3 for the 7x7/2 stem, 1 for the 3x3/2 max pooling, the dilation
    rate for a 3x3 convolution), so odd and even sizes give PyTorch's values exactly. Zero
    padding before the max pooling equals PyTorch's ignored border because it follows a
    ReLU. Output strides 16 and 8 keep layer4 (and layer3) at stride 1 with torchvision's
    dilation rule (`stage_dilations`, Chen et al., 2017); `multi_grid` multiplies layer4's
    rates unit by unit. The input is expected already normalised; `kseg.backbones.get_backbone`
    adds the "torch" normalisation in front.

    Args:
        input_tensor: Optional Keras tensor to build on (for instance a preprocessing output).
        input_shape: `(height, width, channels)` when `input_tensor` is None.
        weights: None or the path of a Keras weights file of the same configuration.
        depth: 50, 101 or 152.
        output_stride: 32, 16 or 8.
        multi_grid: Optional rate multipliers, one per unit of layer4 (three).
        stride_in_1x1: Put a unit's stride on its first 1x1 convolution ("v1").
        use_bias: Give every convolution a bias.
        bn_epsilon: BatchNorm epsilon (torchvision 1e-5; keras.applications 1.001e-5).
        frozen_batchnorm: Use `FrozenBatchNormalization`, as torchvision's detection models.
        base_channels: Stem width and layer1's bottleneck width (64), doubled per stage;
            smaller values give small networks for tests.
        name: Model name; defaults to `resnet{depth}`.

    Returns:
        A functional `keras.Model` whose output is layer4's last unit.

    Example:
    >>> model = kseg.backbones.resnet.ResNet(depth=50, output_stride=8, base_channels=8)
    >>> model.get_layer("layer4.1.conv2").dilation_rate, model.output.shape
    ((4, 4), (None, None, None, 256))
    """
    units = BOTTLENECK_UNITS.get(depth)
    _validate(depth, multi_grid, units, base_channels, bn_epsilon)
    if weights is not None and weights == "imagenet":
        raise ValueError(
            "ResNet has no Keras ImageNet weights file; convert a torchvision checkpoint "
            "with kseg.pretrained.convert_resnet.load_torchvision_resnet_weights. "
            "Received: weights='imagenet'"
        )
    stages = stage_dilations(output_stride, units)
    options = {
        "use_bias": use_bias,
        "bn_epsilon": bn_epsilon,
        "frozen_batchnorm": frozen_batchnorm,
        "stride_in_1x1": stride_in_1x1,
    }
    inputs = keras.Input(shape=input_shape) if input_tensor is None else input_tensor
    x = _conv(inputs, base_channels, 7, "conv1", stride=2, use_bias=use_bias)
    x = _batch_norm(x, "bn1", bn_epsilon, frozen_batchnorm)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)
    for stage, (stride, dilations) in enumerate(stages, start=1):
        if stage == 4 and multi_grid is not None:
            dilations = [rate * grid for rate, grid in zip(dilations, multi_grid, strict=True)]
        planes = base_channels * 2 ** (stage - 1)
        for unit, dilation in enumerate(dilations):
            unit_stride = stride if unit == 0 else 1
            x = _bottleneck(x, planes, unit_stride, dilation, f"layer{stage}.{unit}", options)
    source = inputs if input_tensor is None else _single(keras.utils.get_source_inputs(inputs))
    model = keras.Model(source, x, name=name or f"resnet{depth}")
    if weights is not None:
        model.load_weights(weights)
    return model


def resnet_taps(depth):
    """Layer names of the stride-2..32 features of a `ResNet` at output stride 32.

    Example:
    >>> kseg.backbones.resnet.resnet_taps(50)["P4"]
    'layer3.5.out'
    """
    units = BOTTLENECK_UNITS[depth]
    return {
        "P1": "relu",
        **{f"P{stage + 1}": f"layer{stage}.{units[stage - 1] - 1}.out" for stage in range(1, 5)},
    }
