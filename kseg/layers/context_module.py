"""The context module of Yu & Koltun 2016 and the identity initialisation it trains from."""

import keras
import numpy as np

from kseg.layers.fast_equivalents import conv2d

# Table 1 of the paper: dilation of each 3x3 layer, then the 1x1 output layer.
CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
# Output channels of the 3x3 layers in units of C; the 1x1 layer outputs C.
CONTEXT_MULTIPLIERS = {"basic": (1, 1, 1, 1, 1, 1, 1), "large": (2, 2, 4, 8, 16, 32, 32)}
# Yu's layer names (ct_conv1_1 ... ct_fc1), so weights map one to one.
_CONTEXT_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv3_1", "conv4_1", "conv5_1", "fc1")
# The paper asks for sigma << C / c_{i+1}; the smallest such ratio, 1/32, is 31 times this.
_LARGE_NOISE_STDDEV = 1e-3


@keras.saving.register_keras_serializable(package="kseg")
class ContextIdentity(keras.initializers.Initializer):
    """Identity initialisation of a context-module convolution, for any channel counts.

    Yu & Koltun 2016, "Multi-scale Context Aggregation by Dilated Convolutions", section 3:
    random initialisation did not train the context module, so each kernel starts as
    `k^b(t, a) = C / c_out` at the centre tap `t = 0` when
    `floor(a * C / c_in) == floor(b * C / c_out)`, and `eps ~ N(0, sigma^2)` elsewhere, `a`
    and `b` being the input and output channel, `c_in` and `c_out` the layer's channel
    counts and `C` the module's base width (the number of classes), which divides both.
    With equal counts and `stddev=0` this is the plain identity `1[t=0] 1[a=b]` of the basic
    module. Channel `a` of the module's input thus spreads over `c_out / C` outputs, each
    holding `C / c_out` of it, so a chain of these layers closed by a `c -> C` layer passes
    its (non-negative) input through unchanged; the noise breaks ties between copies.

    Args:
        base_channels: `C`, which must divide the kernel's input and output channels.
        stddev: standard deviation of the noise off the identity (0 for none).
        seed: optional int seed of the noise.

    Returns:
        An initializer producing `(kh, kw, c_in, c_out)` kernels with odd `kh`, `kw`.

    Example:
        >>> import kseg
        >>> init = kseg.layers.ContextIdentity(base_channels=2)
        >>> kernel = init((3, 3, 2, 4))
        >>> float(kernel[1, 1, 0, 1]), float(kernel[1, 1, 0, 2])
        (0.5, 0.0)
    """

    def __init__(self, base_channels, stddev=0.0, seed=None):
        if not isinstance(base_channels, int) or base_channels < 1:
            raise ValueError(
                "base_channels must be a positive integer. "
                f"Received: base_channels={base_channels!r}"
            )
        if stddev < 0:
            raise ValueError(f"stddev must be >= 0. Received: stddev={stddev!r}")
        self.base_channels = base_channels
        self.stddev = stddev
        self.seed = seed

    def __call__(self, shape, dtype=None):
        if len(shape) != 4 or shape[0] % 2 == 0 or shape[1] % 2 == 0:
            raise ValueError(
                f"ContextIdentity needs a 2D kernel of odd size. Received: shape={tuple(shape)}"
            )
        height, width, c_in, c_out = shape
        base = self.base_channels
        if c_in % base or c_out % base:
            raise ValueError(
                f"base_channels={base} must divide the kernel's channels. "
                f"Received: shape={tuple(shape)}"
            )
        groups_in = np.arange(c_in) * base // c_in
        groups_out = np.arange(c_out) * base // c_out
        centre = np.zeros((height, width, 1, 1), bool)
        centre[height // 2, width // 2] = True
        on_identity = centre & (groups_in[:, None] == groups_out[None, :])
        kernel = np.where(on_identity, base / c_out, 0.0)
        if self.stddev > 0:
            rng = np.random.default_rng(self.seed)
            kernel = np.where(on_identity, kernel, rng.normal(0.0, self.stddev, tuple(shape)))
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"base_channels": self.base_channels, "stddev": self.stddev, "seed": self.seed}


def ContextModule(num_channels, variant="basic", name="context"):
    """The context module: dilated 3x3 convolutions that aggregate multi-scale context.

    Yu & Koltun 2016, "Multi-scale Context Aggregation by Dilated Convolutions", section 3
    and table 1. It maps `C` feature maps (a front-end's class scores) to `C` maps of the
    same size: seven 3x3 convolutions with dilations 1, 1, 2, 4, 8, 16, 1, each followed by
    ReLU, then a 1x1 convolution without it. The basic module keeps `C` channels throughout;
    the large one widens to 2C, 2C, 4C, 8C, 16C, 32C, 32C. Its receptive field grows to 67
    positions (3, 5, 9, 17, 33, 65, 67, 67 after each layer). Kernels start from the
    paper's identity initialisation (`ContextIdentity`; exact for the basic module, with
    N(0, 1e-3^2) noise off the identity for the large one) and biases from zero, so the
    untrained basic module returns `relu(x)`, which is `x` for non-negative input. Every
    layer pads "same" with zeros, where the paper's deploy network zero-pads its input by
    33 once and convolves "valid"; both keep the input's size.

    Args:
        num_channels: `C`, the input and output channels (the number of classes).
        variant: "basic" or "large".
        name: model name.

    Returns:
        A functional `keras.Model` mapping `(B, H, W, C)` to `(B, H, W, C)`; its layers are
        named after the paper's reference network (`ctx_conv1_1` ... `ctx_fc1`,
        `ctx_final`).

    Example:
        >>> import numpy as np, kseg
        >>> context = kseg.layers.ContextModule(4)
        >>> scores = np.random.default_rng(0).uniform(0, 1, (1, 9, 9, 4)).astype("float32")
        >>> bool(np.allclose(context(scores), scores))
        True
    """
    if not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(
            f"num_channels must be a positive integer. Received: num_channels={num_channels!r}"
        )
    if variant not in CONTEXT_MULTIPLIERS:
        raise ValueError(
            f"variant must be one of {sorted(CONTEXT_MULTIPLIERS)}. Received: variant={variant!r}"
        )
    stddev = 0.0 if variant == "basic" else _LARGE_NOISE_STDDEV
    inputs = keras.Input((None, None, num_channels), name=f"{name}_input")
    x = inputs
    for index, (multiplier, dilation, layer_name) in enumerate(
        zip(CONTEXT_MULTIPLIERS[variant], CONTEXT_DILATIONS, _CONTEXT_NAMES, strict=True)
    ):
        x = conv2d(
            multiplier * num_channels,
            3,
            dilation_rate=dilation,
            padding="same",
            activation="relu",
            kernel_initializer=ContextIdentity(num_channels, stddev, seed=index),
            name=f"ctx_{layer_name}",
        )(x)
    outputs = keras.layers.Conv2D(
        num_channels,
        1,
        kernel_initializer=ContextIdentity(num_channels, stddev, seed=len(CONTEXT_DILATIONS)),
        name="ctx_final",
    )(x)
    return keras.Model(inputs, outputs, name=name)
