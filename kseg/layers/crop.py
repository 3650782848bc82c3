"""Aligning feature-map sizes by centre cropping, and the centred padding it undoes."""

import keras
import tensorflow as tf

from kseg.validation import validate_choice, validate_positive_int


@keras.saving.register_keras_serializable(package="kseg")
class CropToMatch(keras.layers.Layer):
    """Crops `inputs[0]` around its centre to the height and width of `inputs[1]`.

    U-Net (Ronneberger et al. 2015, "U-Net: Convolutional Networks for
    Biomedical Image Segmentation") uses unpadded convolutions, so each
    contracting-path feature map is larger than the up-convolved map it is
    concatenated with; the paper crops the skip around its centre ("cropping is
    necessary due to the loss of border pixels in every convolution"). FCN's
    skip fusion and a same-padded decoder whose pooling rounded an odd size up
    need the same operation. When the size difference is odd the extra row or
    column is removed at the bottom or right. Sizes are read at run time, so
    inputs of any height and width work.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        `inputs[0]` cropped to `(B, H_ref, W_ref, C)`. A source smaller than the
        reference raises `tf.errors.InvalidArgumentError` (or `ValueError` when
        the sizes are known while building).

    Example:
        >>> import numpy as np, kseg
        >>> big = np.arange(36, dtype="float32").reshape(1, 6, 6, 1)
        >>> kseg.layers.CropToMatch()([big, np.zeros((1, 2, 4, 3))]).shape
        TensorShape([1, 2, 4, 1])
    """

    def call(self, inputs):
        source, reference = inputs
        source_size = tf.shape(source)[1:3]
        target_size = tf.shape(reference)[1:3]
        checks = [
            tf.debugging.assert_greater_equal(
                source_size,
                target_size,
                message=f"{self.name}: the source feature map is smaller than the reference; "
                "CropToMatch can only shrink",
            )
        ]
        with tf.control_dependencies(checks):
            offset = (source_size - target_size) // 2
        return source[
            :,
            offset[0] : offset[0] + target_size[0],
            offset[1] : offset[1] + target_size[1],
            :,
        ]

    def compute_output_shape(self, input_shape):
        source_shape, reference_shape = input_shape
        for axis, label in ((1, "height"), (2, "width")):
            source, reference = source_shape[axis], reference_shape[axis]
            if source is not None and reference is not None and source < reference:
                raise ValueError(
                    f"CropToMatch can only shrink: the source {label} is smaller than the "
                    f"reference's. Received: input_shape={input_shape}"
                )
        return (source_shape[0], reference_shape[1], reference_shape[2], source_shape[-1])


@keras.saving.register_keras_serializable(package="kseg")
class CenteredPadToMultiple(keras.layers.Layer):
    """Pads height and width up to the next multiple of `multiple`, split between both sides.

    An encoder-decoder with `k` stride-2 stages maps its input back to the same
    size only when that size is divisible by `2**k`. Padding the input evenly on
    both sides (the extra row or column going to the bottom or right) lets
    `CropToMatch` with the original image as reference remove the padding
    exactly from the output, so the model accepts any size. Sizes already
    divisible are left unchanged. `kseg.utils.pad_bottom_right_to_multiple`
    pads at the bottom and right only, for code that keeps pixel coordinates.

    Args:
        multiple: the positive integer the padded height and width divide by.
        mode: "constant" (zeros, as same-padded convolutions assume),
            "reflect" or "symmetric" (mirroring, as in U-Net's overlap-tile
            strategy; these need the padding to be smaller than the image).
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        The input padded to `(B, ceil(H / m) * m, ceil(W / m) * m, C)`.

    Example:
        >>> import numpy as np, kseg
        >>> kseg.layers.crop.CenteredPadToMultiple(16)(np.ones((1, 65, 97, 3), "float32")).shape
        TensorShape([1, 80, 112, 3])
    """

    def __init__(self, multiple, mode="constant", **kwargs):
        super().__init__(**kwargs)
        self.multiple = validate_positive_int(multiple, "multiple")
        self.mode = validate_choice(mode, "mode", ("constant", "reflect", "symmetric"))

    def call(self, inputs):
        size = tf.shape(inputs)[1:3]
        total = (-size) % self.multiple
        before = total // 2
        after = total - before
        zero = tf.zeros_like(before[:1])
        paddings = tf.stack(
            [
                tf.concat([zero, zero], 0),
                tf.stack([before[0], after[0]]),
                tf.stack([before[1], after[1]]),
                tf.concat([zero, zero], 0),
            ]
        )
        return tf.pad(inputs, paddings, mode=self.mode.upper())

    def compute_output_shape(self, input_shape):
        def padded(size):
            return None if size is None else -(-size // self.multiple) * self.multiple

        return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"multiple": self.multiple, "mode": self.mode})
        return config


@keras.saving.register_keras_serializable(package="kseg")
class PadToMultiple(CenteredPadToMultiple):
    """`CenteredPadToMultiple` under its name before the rename, kept so saved models load.

    `.keras` files written before the rename name this class; new code should use
    `CenteredPadToMultiple`.

    Example:
        >>> layer = kseg.layers.crop.PadToMultiple(8)
        >>> isinstance(layer, kseg.layers.crop.CenteredPadToMultiple)
        True
    """
