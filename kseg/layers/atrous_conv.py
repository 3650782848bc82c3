"""kseg's `Conv2D`: Keras's, with its dilated form run as one native TensorFlow convolution."""

import keras

# The dtypes whose dilated Conv2D and both its gradients TensorFlow's CPU kernels (oneDNN)
# implement natively; float16 and float64 have the forward kernel only.
_NATIVE_DTYPES = ("float32", "bfloat16")


@keras.saving.register_keras_serializable(package="kseg")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` that computes a dilated convolution natively on TensorFlow.

    Keras's TensorFlow backend routes every dilated convolution through
    `tf.nn.convolution`, which rewrites it as SpaceToBatchND, an undilated convolution on
    `rate**2` times as many small images, and BatchToSpaceND. The rewrite copies the
    feature map twice, pads it to a multiple of the rate, keeps bias and activation from
    fusing with the convolution and, when the rate nears the map's size (DeepLab's ASPP
    rates 12/24/36 on a 64x64 map), runs thousands of 4x4 convolutions. TensorFlow's own
    `Conv2D` op takes the dilation directly (oneDNN on CPU, cuDNN on GPU) and skips the
    taps that fall in the padding; this layer calls it for stride-1 dilated convolutions
    in float32 or bfloat16 and is an ordinary `Conv2D` otherwise (other backends, strides
    with dilation, grouped convolutions, float16/float64, whose CPU gradients are missing).
    Same weights, same configuration, same results within float rounding. The class keeps
    Keras's name on purpose: weight files key layers by class name, so a model saved at one
    output stride loads into its form at another whichever of its convolutions dilate.

    Example:
    >>> layer = kseg.layers.Conv2D(4, 3, padding="same", dilation_rate=2)
    >>> x = np.random.default_rng(0).normal(size=(1, 9, 9, 3)).astype("float32")
    >>> y = layer(x)
    >>> plain = keras.layers.Conv2D.from_config(layer.get_config())
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
            and self.groups == 1
            and keras.backend.standardize_dtype(inputs.dtype) in _NATIVE_DTYPES
        )

    def convolution_op(self, inputs, kernel):
        if not self._runs_natively(inputs):
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        return tf.nn.conv2d(
            inputs,
            kernel,
            strides=1,
            padding=self.padding.upper(),
            data_format="NHWC" if self.data_format == "channels_last" else "NCHW",
            dilations=list(self.dilation_rate),
        )
