"""Transposed convolutions initialised to bilinear interpolation."""

import keras
import numpy as np


def bilinear_kernel_1d(kernel_size):
    """The 1-D bilinear interpolation profile of a `kernel_size` upsampling kernel.

    The profile of FCN's `upsample_filt` (Long, Shelhamer & Darrell 2015):
    `1 - |i - c| / f` with `f = (kernel_size + 1) // 2` and centre
    `c = f - 1` for odd sizes, `f - 0.5` for even ones.

    Args:
        kernel_size: a positive integer.

    Returns:
        A float32 numpy array of length `kernel_size`.

    Example:
        >>> import kseg
        >>> kseg.layers.bilinear.bilinear_kernel_1d(4).tolist()
        [0.25, 0.75, 0.75, 0.25]
    """
    if int(kernel_size) != kernel_size or kernel_size < 1:
        raise ValueError(
            f"kernel_size must be a positive integer. Received: kernel_size={kernel_size!r}"
        )
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    return (1 - np.abs(np.arange(kernel_size) - center) / factor).astype("float32")


@keras.saving.register_keras_serializable(package="kseg")
class BilinearUpsamplingKernel(keras.initializers.Initializer):
    """Initialises a `Conv2DTranspose` kernel to per-channel bilinear upsampling.

    FCN (Long, Shelhamer & Darrell 2015) initialises its deconvolution layers
    to bilinear interpolation: channel `c` of the output reads only channel `c`
    of the input through the outer product of `bilinear_kernel_1d`; other
    entries are zero. With kernel size `2f - f % 2` and stride `f` the layer
    upsamples by `f`.

    Returns:
        An initializer for kernels of shape `(k, k, channels, channels)`.

    Example:
        >>> import kseg
        >>> kernel = kseg.layers.BilinearUpsamplingKernel()((4, 4, 2, 2))
        >>> tuple(kernel.shape)
        (4, 4, 2, 2)
    """

    def __call__(self, shape, dtype=None):
        if len(shape) != 4 or shape[0] != shape[1] or shape[2] != shape[3]:
            raise ValueError(
                "a bilinear upsampling kernel is square with as many output as input channels: "
                f"(k, k, C, C). Received: shape={tuple(shape)}"
            )
        profile = bilinear_kernel_1d(shape[0])
        kernel = np.zeros(shape, dtype="float32")
        channels = np.arange(shape[2])
        kernel[:, :, channels, channels] = np.outer(profile, profile)[:, :, None]
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or keras.config.floatx())

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="kseg")
class BilinearConvTranspose2D(keras.layers.Layer):
    """Upsamples by an integer factor with a bilinear-initialised transposed convolution.

    The deconvolution of FCN (Long, Shelhamer & Darrell 2015, section 3.3):
    kernel size `2 * factor - factor % 2`, stride `factor`, no padding and no
    bias, initialised with `BilinearUpsamplingKernel`. An input of size `n`
    gives `(n - 1) * factor + kernel_size` pixels, which FCN crops back to the
    image (see `OffsetCrop`). `trainable=False` keeps pure bilinear
    interpolation (FCN's final upsampling).

    Args:
        factor: the integer upsampling factor (>= 1).
        channels: input and output channels.
        **kwargs: standard layer arguments (`name`, `trainable`, `dtype`).

    Returns:
        `(B, (H - 1) * factor + k, (W - 1) * factor + k, channels)`.

    Example:
        >>> import numpy as np, kseg
        >>> up = kseg.layers.BilinearConvTranspose2D(factor=2, channels=3)
        >>> tuple(up(np.zeros((1, 5, 6, 3), "float32")).shape)
        (1, 12, 14, 3)
    """

    def __init__(self, factor, channels, **kwargs):
        super().__init__(**kwargs)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer. Received: factor={factor!r}")
        if int(channels) != channels or channels < 1:
            raise ValueError(
                f"channels must be a positive integer. Received: channels={channels!r}"
            )
        self.factor = int(factor)
        self.channels = int(channels)
        self.kernel_size = 2 * self.factor - self.factor % 2
        self.deconvolution = keras.layers.Conv2DTranspose(
            self.channels,
            self.kernel_size,
            strides=self.factor,
            padding="valid",
            use_bias=False,
            kernel_initializer=BilinearUpsamplingKernel(),
            dtype=self.dtype_policy,
            name="deconvolution",
        )

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ValueError(
                f"expected {self.channels} input channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.deconvolution.build(input_shape)

    def call(self, inputs):
        return self.deconvolution(inputs)

    def compute_output_shape(self, input_shape):
        def grow(size):
            return None if size is None else (size - 1) * self.factor + self.kernel_size

        return (input_shape[0], grow(input_shape[1]), grow(input_shape[2]), self.channels)

    def get_config(self):
        config = super().get_config()
        config.update({"factor": self.factor, "channels": self.channels})
        return config
