"""Convolution, batch normalisation and ReLU as one reusable block."""

import keras

from kseg.layers.batch_normalization import BatchNormalization
from kseg.layers.fast_equivalents import conv2d, depthwise_conv2d


@keras.saving.register_keras_serializable(package="kseg")
class ConvBNReLU(keras.layers.Layer):
    """A (possibly atrous, possibly depthwise-separable) convolution, BN and ReLU.

    The separable form follows DeepLabV3+ (Chen et al. 2018, "Encoder-Decoder
    with Atrous Separable Convolution"): a depthwise 3x3 convolution with batch
    normalisation and ReLU after it, then a pointwise 1x1 convolution with batch
    normalisation and ReLU. Convolutions carry no bias, since batch
    normalisation follows each of them.

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        dilation_rate: atrous rate.
        separable: depthwise-separable convolution instead of a dense one
            (only meaningful for kernel_size > 1).
        use_activation: apply the final ReLU.
        batchnorm_momentum: momentum of the BN moving statistics.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tensor `(B, H, W, filters)`.

    Example:
        >>> import keras, kseg
        >>> x = keras.Input((None, None, 16))
        >>> kseg.layers.ConvBNReLU(32, 3, dilation_rate=6, separable=True)(x).shape
        (None, None, None, 32)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        dilation_rate=1,
        separable=False,
        use_activation=True,
        batchnorm_momentum=0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) <= 0:
            raise ValueError(f"filters must be a positive integer. Received: filters={filters}")
        if int(kernel_size) <= 0:
            raise ValueError(f"kernel_size must be positive. Received: kernel_size={kernel_size}")
        if int(dilation_rate) <= 0:
            raise ValueError(
                f"dilation_rate must be positive. Received: dilation_rate={dilation_rate}"
            )
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.dilation_rate = int(dilation_rate)
        self.separable = bool(separable) and self.kernel_size > 1
        self.use_activation = bool(use_activation)
        self.batchnorm_momentum = float(batchnorm_momentum)

        bn = {"momentum": self.batchnorm_momentum, "epsilon": 1e-5, "dtype": self.dtype_policy}
        # The spatial convolution: depthwise when separable, then a pointwise 1x1 one.
        spatial = {
            "padding": "same",
            "dilation_rate": self.dilation_rate,
            "use_bias": False,
            "dtype": self.dtype_policy,
        }
        if self.separable:
            self.depthwise = depthwise_conv2d(self.kernel_size, name="depthwise", **spatial)
            self.depthwise_bn = BatchNormalization(name="depthwise_bn", **bn)
            self.conv = keras.layers.Conv2D(
                self.filters, 1, use_bias=False, name="pointwise", dtype=self.dtype_policy
            )
        else:
            self.conv = conv2d(self.filters, self.kernel_size, name="conv", **spatial)
        self.bn = BatchNormalization(name="bn", **bn)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.separable:
            self.depthwise.build(shape)
            self.depthwise_bn.build(shape)
        self.conv.build(shape)
        self.bn.build(shape[:-1] + (self.filters,))
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        if self.separable:
            x = self.depthwise(x)
            x = self.depthwise_bn(x, training=training)
            x = keras.activations.relu(x)
        x = self.conv(x)
        x = self.bn(x, training=training)
        if self.use_activation:
            x = keras.activations.relu(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "dilation_rate": self.dilation_rate,
                "separable": self.separable,
                "use_activation": self.use_activation,
                # Read back from the layer, which kseg.training.set_batchnorm_momentum may change.
                "batchnorm_momentum": self.bn.momentum,
            }
        )
        return config
