"""Resize one feature map to the spatial size of another."""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="kseg")
class ResizeToMatch(keras.layers.Layer):
    """Resizes `inputs[0]` to the height and width of `inputs[1]`.

    Segmentation decoders upsample coarse features to the size of a finer
    feature map or of the input image, whose sizes are only known at run time
    (513x513 at output stride 16 gives 33x33, not 32x32). The resize runs in
    float32 and casts back, because bilinear interpolation in float16 loses
    precision at large scale factors.

    Args:
        interpolation: "bilinear" or "nearest".
        **kwargs: standard `keras.layers.Layer` arguments (e.g. `dtype="float32"`
            for a logits output under a mixed policy).

    Returns:
        The first input resized to `(B, H_ref, W_ref, C)`.

    Example:
        >>> import keras, kseg
        >>> coarse = keras.Input((None, None, 8))
        >>> image = keras.Input((None, None, 3))
        >>> fine = kseg.layers.ResizeToMatch()([coarse, image])
        >>> fine.shape
        (None, None, None, 8)
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                "interpolation must be 'bilinear' or 'nearest'. "
                f"Received: interpolation={interpolation!r}"
            )
        self.interpolation = interpolation

    def build(self, input_shape):
        source_shape, reference_shape = input_shape
        # tf.image.resize also takes a single (H, W, C) image, so a missing batch axis would
        # otherwise pass silently with the reference's width taken for a height.
        if len(source_shape) != 4 or len(reference_shape) < 3:
            raise ValueError(
                "ResizeToMatch takes [source (B, H, W, C), reference (B, H, W, ...)]. Received: "
                f"source shape={tuple(source_shape)}, reference shape={tuple(reference_shape)}"
            )
        self.built = True

    def call(self, inputs):
        source, reference = inputs
        # keras.ops.image.resize checks the target size in Python, which a size only known
        # at run time cannot pass when the model is traced for export: TensorFlow's op takes it.
        resized = tf.image.resize(
            ops.cast(source, "float32"), tf.shape(reference)[1:3], method=self.interpolation
        )
        return ops.cast(resized, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        source_shape, reference_shape = input_shape
        return (source_shape[0], reference_shape[1], reference_shape[2], source_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"interpolation": self.interpolation})
        return config
