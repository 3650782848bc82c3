"""Zero-padding images at the bottom and right so their sides divide by a network's stride."""

import tensorflow as tf


def pad_bottom_right_to_multiple(images, multiple):
    """Zero-pads `(B, H, W, C)` images at the bottom and right to sides divisible by `multiple`.

    The top-left pixels keep their coordinates, so boxes and labels computed on the padded
    images apply to the originals after cropping `[:H, :W]`. Sizes are read at run time. For
    padding split evenly between both sides inside a model, see
    `kseg.layers.crop.CenteredPadToMultiple`.

    Args:
        images: `(B, H, W, C)` tensor.
        multiple: the positive integer the padded height and width divide by.

    Returns:
        The images padded to `(B, ceil(H / m) * m, ceil(W / m) * m, C)`.

    Example:
        >>> kseg.utils.pad_bottom_right_to_multiple(tf.zeros((1, 100, 130, 3)), 64).shape
        TensorShape([1, 128, 192, 3])
    """
    shape = tf.shape(images)
    pad_h = (-shape[1]) % multiple
    pad_w = (-shape[2]) % multiple
    return tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
