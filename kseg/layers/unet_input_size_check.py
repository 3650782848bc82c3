"""A pass-through layer refusing image sizes an unpadded U-Net cannot tile."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kseg")
class UNetInputSizeCheck(keras.layers.Layer):
    """Passes images through unchanged, refusing heights and widths an unpadded U-Net cannot tile.

    Ronneberger et al. 2015 (section 2) choose the tile size so that every 2x2 max pooling
    sees an even size; other sizes would silently misalign the crop-and-concatenate skips.
    A static input shape is checked when the model is built
    (`kseg.models.unet.unet_output_size`); this layer checks dynamic ones when the model runs
    and names the size and the valid sizes.

    Args:
        smallest: the smallest valid size (`kseg.models.unet.valid_input_sizes(depth)[0]`).
        step: the spacing of valid sizes (`2**depth`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        The input tensor, unchanged.

    Example:
        >>> import numpy as np, kseg
        >>> check = kseg.layers.UNetInputSizeCheck(smallest=44, step=4)
        >>> check(np.zeros((1, 48, 52, 1), "float32")).shape
        TensorShape([1, 48, 52, 1])
    """

    def __init__(self, smallest, step, **kwargs):
        super().__init__(autocast=False, **kwargs)
        if int(smallest) <= 0 or int(step) <= 0:
            raise ValueError(
                f"smallest and step must be positive. Received: smallest={smallest}, step={step}"
            )
        self.smallest = int(smallest)
        self.step = int(step)

    def call(self, images):
        height_width = tf.shape(images)[1:3]
        valid = tf.reduce_all(
            (height_width >= self.smallest)
            & (tf.math.floormod(height_width - self.smallest, self.step) == 0)
        )
        message = (
            "an unpadded U-Net needs every 2x2 pooling to see an even size: valid heights "
            f"and widths are {self.smallest} + k * {self.step} ({self.smallest}, "
            f"{self.smallest + self.step}, ...); use padding='same', or "
            "kseg.inference.overlap_tile_predict with a valid tile. Received: image "
            "height and width="
        )
        check = tf.raw_ops.Assert(condition=valid, data=[message, height_width])
        with tf.control_dependencies([check]):
            return tf.identity(images)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "smallest": self.smallest, "step": self.step}
