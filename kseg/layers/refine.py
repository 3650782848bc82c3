"""RefineNet's blocks: residual conv unit, multi-resolution fusion, chained residual pooling.

Lin, Milan, Shen and Reid, "RefineNet: Multi-Path Refinement Networks for High-Resolution
Semantic Segmentation", CVPR 2017, Sec. 3.2 and Fig. 2. The units carry no batch
normalisation: RefineNet fine-tunes them with batch size 1 on top of a frozen-BN ResNet.
Bias placement follows the port of the authors' released models
(github.com/DrSleep/refinenet-pytorch): the first convolution of a residual conv unit has a
bias, every other RefineNet convolution has none.

Initialisation is the one choice the paper leaves open. The last convolution of every residual
branch (the second one of a residual conv unit, and each chained-pooling convolution) starts at
zero, so that every unit starts as the identity, as in the zero-initialised residual branches of
Goyal et al. 2017 and Zhang et al. 2019 (Fixup). Without batch normalisation the default Glorot
start compounds over the roughly thirty residual sums of a 4-cascade RefineNet: on MobileNetV2
its untrained logits have a standard deviation near 44, against 1.1 with the zero start. Adam
still needs a short learning-rate warm-up on this decoder (docs/architectures/refinenet.md).
Pass `residual_initializer="glorot_uniform"` to get the plain start back.
"""

import keras
from keras import ops

from kseg.layers.resize import ResizeToMatch
from kseg.validation import validate_positive_int


def _check_channels(layer, input_shape, expected, what):
    channels = input_shape[-1]
    if channels is not None and channels != expected:
        raise ValueError(
            f"{layer.__class__.__name__} {layer.name!r} expects {what} with {expected} channels. "
            f"Received: input_shape={tuple(input_shape)}"
        )


def _conv3x3(filters, use_bias, name, policy, kernel_initializer="glorot_uniform"):
    return keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=kernel_initializer,
        name=name,
        dtype=policy,
    )


@keras.saving.register_keras_serializable(package="kseg")
class ResidualConvUnit(keras.layers.Layer):
    """RefineNet's residual conv unit: ReLU, 3x3 conv, ReLU, 3x3 conv, plus the input.

    Lin et al. 2017 (Sec. 3.2, Fig. 2(b)) simplify the ResNet unit by dropping batch
    normalisation, so the unit adapts pretrained features while fine-tuning. The output
    keeps the input's channel count (`filters`), so the identity shortcut needs no projection.

    Args:
        filters: channels of the input, of both convolutions and of the output.
        residual_initializer: initialiser of the second convolution's kernel; the default
            `"zeros"` makes the untrained unit the identity (see the module docstring).
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tensor `(B, H, W, filters)`: `x + conv2(relu(conv1(relu(x))))`.

    Example:
        >>> import keras, kseg
        >>> x = keras.Input((None, None, 16))
        >>> kseg.layers.ResidualConvUnit(16)(x).shape
        (None, None, None, 16)
    """

    def __init__(self, filters, residual_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = validate_positive_int(filters, "filters")
        self.residual_initializer = keras.initializers.get(residual_initializer)
        policy = self.dtype_policy
        self.conv1 = _conv3x3(self.filters, True, "conv1", policy)
        self.conv2 = _conv3x3(self.filters, False, "conv2", policy, self.residual_initializer)

    def build(self, input_shape):
        _check_channels(self, input_shape, self.filters, "an input")
        self.conv1.build(input_shape)
        self.conv2.build(tuple(input_shape[:-1]) + (self.filters,))
        self.built = True

    def call(self, inputs):
        residual = self.conv1(ops.relu(inputs))
        residual = self.conv2(ops.relu(residual))
        return inputs + residual

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "residual_initializer": keras.initializers.serialize(self.residual_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class MultiResolutionFusion(keras.layers.Layer):
    """Fuses feature maps of several resolutions into the finest one.

    Lin et al. 2017 (Sec. 3.2, Fig. 2(c)): a 3x3 convolution adapts every input path to the
    same number of channels (the smallest among the inputs, which the caller passes as
    `filters`), each adapted map is upsampled bilinearly to the highest input resolution,
    and the maps are summed. With a single input path the block passes it through
    unchanged, as the paper does for RefineNet-4.

    The first input sets the output size: it is the highest-resolution path. The resize
    reads that input's run-time shape, so inputs whose sizes are not exact multiples of
    each other (a 65x97 image at strides 4 and 8 gives 17x25 and 9x13) still line up.

    Args:
        filters: output channels of the adaptation convolutions (unused with one input).
        num_inputs: number of input paths.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tensor `(B, H_0, W_0, filters)`, or the input itself when `num_inputs == 1`.

    Example:
        >>> import keras, kseg
        >>> fine = keras.Input((None, None, 16))
        >>> coarse = keras.Input((None, None, 32))
        >>> kseg.layers.MultiResolutionFusion(16, num_inputs=2)([fine, coarse]).shape
        (None, None, None, 16)
    """

    def __init__(self, filters, num_inputs=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = validate_positive_int(filters, "filters")
        self.num_inputs = validate_positive_int(num_inputs, "num_inputs")
        policy = self.dtype_policy
        self.adapt_convs = []
        self.resizes = []
        if self.num_inputs > 1:
            self.adapt_convs = [
                _conv3x3(self.filters, False, f"adapt_conv_{index}", policy)
                for index in range(self.num_inputs)
            ]
            self.resizes = [
                ResizeToMatch(name=f"upsample_{index}", dtype=policy)
                for index in range(1, self.num_inputs)
            ]

    def _shapes(self, input_shape):
        if self.num_inputs == 1 and not isinstance(input_shape[0], (list, tuple)):
            return [tuple(input_shape)]
        shapes = [tuple(shape) for shape in input_shape]
        if len(shapes) != self.num_inputs:
            raise ValueError(
                f"MultiResolutionFusion {self.name!r} expects {self.num_inputs} inputs. "
                f"Received: {len(shapes)} input shapes {shapes}"
            )
        return shapes

    def build(self, input_shape):
        for conv, shape in zip(self.adapt_convs, self._shapes(input_shape)):
            conv.build(shape)
        self.built = True

    def call(self, inputs):
        if self.num_inputs == 1:
            return inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        fused = self.adapt_convs[0](inputs[0])
        for conv, resize, path in zip(self.adapt_convs[1:], self.resizes, inputs[1:]):
            fused = fused + resize([conv(path), fused])
        return fused

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        if self.num_inputs == 1:
            return shapes[0]
        return shapes[0][:-1] + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "num_inputs": self.num_inputs})
        return config


@keras.saving.register_keras_serializable(package="kseg")
class ChainedResidualPooling(keras.layers.Layer):
    """A chain of max-pool + 3x3 conv blocks whose outputs are added to the input.

    Lin et al. 2017 (Sec. 3.2, Fig. 2(d)): each block is a `pool_size` max pooling with
    stride 1 followed by a 3x3 convolution; block `k` takes block `k-1`'s output, and every
    block's output is summed with the input, so context from ever larger windows is added
    residually. The paper uses 2 blocks ("we choose to employ 2 pooling blocks"); the
    authors' released code offers 2 or 4, and their published PASCAL VOC model uses 4
    (github.com/guosheng/refinenet, `chained_pool_num`; DrSleep/refinenet-pytorch).
    The paper's ReLU at the entrance of this block is left to the caller
    (`kseg.layers.RefineNetBlock` applies it), so that zero kernels make this an identity.

    Args:
        filters: channels of the input, of the convolutions and of the output.
        num_blocks: number of pooling blocks in the chain.
        pool_size: max-pooling window (5 in the paper).
        residual_initializer: initialiser of the convolution kernels; the default `"zeros"`
            makes the untrained chain the identity (see the module docstring).
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tensor `(B, H, W, filters)`.

    Example:
        >>> import keras, kseg
        >>> x = keras.Input((None, None, 16))
        >>> kseg.layers.ChainedResidualPooling(16, num_blocks=2)(x).shape
        (None, None, None, 16)
    """

    def __init__(self, filters, num_blocks=2, pool_size=5, residual_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = validate_positive_int(filters, "filters")
        self.num_blocks = validate_positive_int(num_blocks, "num_blocks")
        self.pool_size = validate_positive_int(pool_size, "pool_size")
        if self.pool_size % 2 == 0:
            raise ValueError(
                f"pool_size must be odd so the pooling is centred. Received: pool_size={pool_size}"
            )
        self.residual_initializer = keras.initializers.get(residual_initializer)
        policy = self.dtype_policy
        # Max pooling has no weights, so one layer serves every block.
        self.pool = keras.layers.MaxPooling2D(
            self.pool_size, strides=1, padding="same", name="pool", dtype=policy
        )
        self.convs = [
            _conv3x3(self.filters, False, f"conv_{index}", policy, self.residual_initializer)
            for index in range(1, self.num_blocks + 1)
        ]

    def build(self, input_shape):
        _check_channels(self, input_shape, self.filters, "an input")
        for conv in self.convs:
            conv.build(tuple(input_shape[:-1]) + (self.filters,))
        self.built = True

    def call(self, inputs):
        total = inputs
        block = inputs
        for conv in self.convs:
            block = conv(self.pool(block))
            total = total + block
        return total

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "num_blocks": self.num_blocks,
                "pool_size": self.pool_size,
                "residual_initializer": keras.initializers.serialize(self.residual_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class RefineNetBlock(keras.layers.Layer):
    """One RefineNet block: adaptive RCUs per path, fusion, chained pooling, output RCU.

    Lin et al. 2017 (Sec. 3.2, Fig. 2(b)): every input path goes through two residual conv
    units at its own width; multi-resolution fusion brings the paths to the smallest width
    and the finest resolution and sums them; a ReLU and chained residual pooling add
    context; a final residual conv unit ("output conv") gives the block's output. Between
    two cascaded blocks this makes three RCUs (the output one and the next block's two
    adaptive ones), the same count the released models place after each chained pooling.

    The first path must be the highest-resolution one (the backbone feature of the
    block's stage); later paths are coarser (the previous block's output).

    Args:
        path_filters: channels of each input path, finest first, e.g. `(256, 512)`.
        crp_blocks: pooling blocks in the chained residual pooling (2 in the paper).
        pool_size: max-pooling window of the chained residual pooling.
        adaptive_units: residual conv units on each input path (2 in the paper).
        output_units: residual conv units after the chained pooling (1 in the paper).
        residual_initializer: kernel initialiser of the last convolution of every residual
            branch (the units' second convolutions and the chained-pooling convolutions).
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tensor `(B, H_0, W_0, min(path_filters))`.

    Example:
        >>> import keras, kseg
        >>> fine = keras.Input((None, None, 16))
        >>> coarse = keras.Input((None, None, 32))
        >>> kseg.layers.RefineNetBlock((16, 32))([fine, coarse]).shape
        (None, None, None, 16)
    """

    def __init__(
        self,
        path_filters,
        crp_blocks=2,
        pool_size=5,
        adaptive_units=2,
        output_units=1,
        residual_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(path_filters, int) or not path_filters:
            raise ValueError(
                "path_filters must be a non-empty list of channel counts, one per input path. "
                f"Received: path_filters={path_filters!r}"
            )
        self.path_filters = tuple(validate_positive_int(f, "path_filters") for f in path_filters)
        self.crp_blocks = validate_positive_int(crp_blocks, "crp_blocks")
        self.pool_size = int(pool_size)
        self.adaptive_units = int(adaptive_units)
        self.output_units = int(output_units)
        if self.adaptive_units < 0 or self.output_units < 0:
            raise ValueError(
                "adaptive_units and output_units must be non-negative. Received: "
                f"adaptive_units={adaptive_units}, output_units={output_units}"
            )
        self.filters = min(self.path_filters)
        self.residual_initializer = keras.initializers.get(residual_initializer)
        init = self.residual_initializer
        policy = self.dtype_policy
        # A flat list, path-major: Keras tracks the layers of a list, not of nested lists.
        self.adaptive_rcus = [
            ResidualConvUnit(width, init, name=f"path{path}_rcu_{unit}", dtype=policy)
            for path, width in enumerate(self.path_filters)
            for unit in range(1, self.adaptive_units + 1)
        ]
        self.fusion = MultiResolutionFusion(
            self.filters, num_inputs=len(self.path_filters), name="fusion", dtype=policy
        )
        self.pooling = ChainedResidualPooling(
            self.filters, self.crp_blocks, self.pool_size, init, name="pooling", dtype=policy
        )
        self.output_rcus = [
            ResidualConvUnit(self.filters, init, name=f"output_rcu_{unit}", dtype=policy)
            for unit in range(1, self.output_units + 1)
        ]

    def _path_units(self, path):
        start = path * self.adaptive_units
        return self.adaptive_rcus[start : start + self.adaptive_units]

    def _shapes(self, input_shape):
        if not isinstance(input_shape[0], (list, tuple)):
            input_shape = [input_shape]
        shapes = [tuple(shape) for shape in input_shape]
        if len(shapes) != len(self.path_filters):
            raise ValueError(
                f"RefineNetBlock {self.name!r} expects {len(self.path_filters)} inputs "
                f"(path_filters={self.path_filters}). Received: input shapes {shapes}"
            )
        return shapes

    def build(self, input_shape):
        shapes = self._shapes(input_shape)
        for path, (shape, width) in enumerate(zip(shapes, self.path_filters)):
            _check_channels(self, shape, width, f"input path {path}")
            for unit in self._path_units(path):
                unit.build(shape)
        self.fusion.build(shapes if len(shapes) > 1 else shapes[0])
        fused_shape = shapes[0][:-1] + (self.filters,)
        self.pooling.build(fused_shape)
        for unit in self.output_rcus:
            unit.build(fused_shape)
        self.built = True

    def call(self, inputs):
        paths = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        adapted = []
        for index, path in enumerate(paths):
            for unit in self._path_units(index):
                path = unit(path)
            adapted.append(path)
        x = self.fusion(adapted if len(adapted) > 1 else adapted[0])
        x = self.pooling(ops.relu(x))
        for unit in self.output_rcus:
            x = unit(x)
        return x

    def compute_output_shape(self, input_shape):
        return self._shapes(input_shape)[0][:-1] + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "path_filters": list(self.path_filters),
                "crp_blocks": self.crp_blocks,
                "pool_size": self.pool_size,
                "adaptive_units": self.adaptive_units,
                "output_units": self.output_units,
                "residual_initializer": keras.initializers.serialize(self.residual_initializer),
            }
        )
        return config
