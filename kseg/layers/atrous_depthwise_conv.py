"""kseg's `DepthwiseConv2D`: Keras's, with its dilated form run as one native TensorFlow op."""

import keras

# The dtypes whose dilated DepthwiseConv2dNative TensorFlow's CPU kernels (oneDNN) run.
_NATIVE_DTYPES = ("float32", "bfloat16")


def _padding(kernel_size, rate, padding):
    """(before, after) zeros along one axis for "same" or "valid" at stride 1."""
    if padding == "valid":
        return 0, 0
    total = (kernel_size - 1) * rate
    return total // 2, total - total // 2


def dilated_depthwise_conv2d(inputs, kernel, dilation_rate, padding):
    """Stride-1 dilated depthwise convolution of NHWC `inputs`, natively on TensorFlow.

    Keras's TensorFlow backend computes a dilated depthwise convolution through
    `tf.nn.depthwise_conv2d`, which rewrites it as SpaceToBatchND, an undilated
    convolution on `rate**2` times as many small images and BatchToSpaceND. TensorFlow's
    `DepthwiseConv2dNative` op takes the dilation directly, but its oneDNN kernel falls
    back to a slow path when "same" padding is wide (rates 8 and more with a 3x3 kernel:
    79 ms against 12 for the rewrite at rate 18 on a 2x32x32x2048 map), and it has no
    dilated gradient kernels. So the forward pass zero-pads explicitly and runs the op with
    "valid" padding (8.6 ms in that case) and the gradients are TensorFlow's own through the
    rewrite (its forward op is unused there, so a compiled graph prunes it).

    Args:
        inputs: `(batch, height, width, channels)` float32 or bfloat16 tensor.
        kernel: `(kernel_h, kernel_w, channels, depth_multiplier)` tensor of the same dtype.
        dilation_rate: `(rate_h, rate_w)`.
        padding: "same" or "valid".

    Returns:
        `(batch, out_h, out_w, channels * depth_multiplier)`, as Keras's `DepthwiseConv2D`.

    Example:
    >>> import tensorflow as tf
    >>> from kseg.layers.atrous_depthwise_conv import dilated_depthwise_conv2d
    >>> x = tf.random.normal((1, 16, 16, 4))
    >>> k = tf.random.normal((3, 3, 4, 1))
    >>> y = dilated_depthwise_conv2d(x, k, (4, 4), "same")
    >>> ref = tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "SAME", dilations=(4, 4))
    >>> bool(tf.reduce_max(tf.abs(y - ref)) < 1e-4)
    True
    """
    import tensorflow as tf

    kernel_h, kernel_w = kernel.shape[:2]
    rate_h, rate_w = (int(rate) for rate in dilation_rate)
    pad_h = _padding(kernel_h, rate_h, padding)
    pad_w = _padding(kernel_w, rate_w, padding)
    strides = [1, 1, 1, 1]
    dilations = [1, rate_h, rate_w, 1]

    @tf.custom_gradient
    def convolve(x, k):
        def gradient(upstream):
            with tf.GradientTape() as tape:
                tape.watch([x, k])
                rewritten = tf.nn.depthwise_conv2d(
                    x, k, strides, padding.upper(), dilations=(rate_h, rate_w)
                )
            return tape.gradient(rewritten, [x, k], output_gradients=upstream)

        padded = tf.pad(x, [[0, 0], pad_h, pad_w, [0, 0]])
        outputs = tf.raw_ops.DepthwiseConv2dNative(
            input=padded, filter=k, strides=strides, padding="VALID", dilations=dilations
        )
        return outputs, gradient

    return convolve(inputs, kernel)


@keras.saving.register_keras_serializable(package="kseg")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` that computes a dilated convolution natively on TensorFlow.

    Stride-1 dilated depthwise convolutions in float32 or bfloat16, channels last, on the
    TensorFlow backend run `dilated_depthwise_conv2d` (forward 1.05-1.7x Keras's rewrite
    through SpaceToBatchND on DeepLabV3+'s ASPP shapes, rates 6 to 36; the gradient costs what
    the rewrite's does); every other case is
    Keras's layer unchanged. Same weights and configuration, same results within float
    rounding, and Keras's class name, so weight files load either way (see
    `kseg.layers.Conv2D`).

    Example:
    >>> layer = kseg.layers.DepthwiseConv2D(3, padding="same", dilation_rate=6)
    >>> x = np.random.default_rng(0).normal(size=(1, 20, 20, 3)).astype("float32")
    >>> y = layer(x)
    >>> plain = keras.layers.DepthwiseConv2D.from_config(layer.get_config())
    >>> plain.build(x.shape)
    >>> plain.set_weights(layer.get_weights())
    >>> bool(np.allclose(y, plain(x), atol=1e-5))
    True
    """

    def _runs_natively(self, inputs):
        return (
            keras.backend.backend() == "tensorflow"
            and max(self.dilation_rate) > 1
            and max(self.strides) == 1
            and self.data_format == "channels_last"
            and keras.backend.standardize_dtype(inputs.dtype) in _NATIVE_DTYPES
        )

    def call(self, inputs):
        if not self._runs_natively(inputs):
            return super().call(inputs)
        kernel = keras.ops.cast(self.kernel, inputs.dtype)
        outputs = dilated_depthwise_conv2d(inputs, kernel, self.dilation_rate, self.padding)
        if self.use_bias:
            outputs = outputs + keras.ops.cast(self.bias, outputs.dtype)
        return outputs if self.activation is None else self.activation(outputs)
