"""Resize a feature map or image by a fixed factor of its run-time size."""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="kseg")
class ScaleResize(keras.layers.Layer):
    """Resizes `(B, H, W, C)` inputs to `(B, floor(H * scale), floor(W * scale), C)`.

    Multi-scale input pyramids (Chen et al. 2017, "DeepLab: Semantic Image Segmentation with
    Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", Sec. 3.3, which
    feeds the image at scales 1, 0.75 and 0.5 to one shared network) need an image resized by
    a factor of a size only known at run time. The target size is computed from
    `tf.shape`, so the layer works on `(None, None)` inputs, in SavedModel exports and under
    XLA; each side keeps at least one pixel. The resize runs in float32 and casts back, so a
    bfloat16 policy does not lose precision in the interpolation.

    Args:
        scale: positive resize factor (0.5 halves each side).
        interpolation: "bilinear" (the DeepLab setting) or "nearest".
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        The resized tensor, in the layer's compute dtype.

    Example:
        >>> import numpy as np
        >>> from kseg.layers.scale_resize import ScaleResize
        >>> ScaleResize(0.75)(np.zeros((1, 65, 97, 3), "float32")).shape
        TensorShape([1, 48, 72, 3])
    """

    def __init__(self, scale, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
            raise ValueError(f"scale must be a positive number. Received: scale={scale!r}")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                "interpolation must be 'bilinear' or 'nearest'. "
                f"Received: interpolation={interpolation!r}"
            )
        self.scale = float(scale)
        self.interpolation = interpolation

    def call(self, inputs):
        size = tf.cast(tf.shape(inputs)[1:3], "float64") * self.scale
        size = tf.maximum(tf.cast(tf.floor(size), "int32"), 1)
        resized = tf.image.resize(ops.cast(inputs, "float32"), size, method=self.interpolation)
        return ops.cast(resized, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        def scaled(side):
            return None if side is None else max(1, int(side * self.scale))

        return (input_shape[0], scaled(input_shape[1]), scaled(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "interpolation": self.interpolation})
        return config
