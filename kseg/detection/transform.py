"""Resizing detector inputs by their shorter and longer sides, and mapping boxes back."""

import tensorflow as tf


def min_max_resized_size(height, width, min_side, max_side):
    """The size that makes the shorter side `min_side` and the longer at most `max_side`.

    The rule of Faster/Mask R-CNN's data layer (Ren et al. 2015; He et al. 2017: "the shorter
    side is 800, the longer at most 1333") as torchvision's `GeneralizedRCNNTransform` applies
    it: one scale `min(min_side / shorter, max_side / longer)` for both axes, computed in double
    precision, and each side becomes `floor(side * scale)` (torch's `interpolate` with
    `recompute_scale_factor=True`).

    Args:
        height: image height (int or scalar int tensor).
        width: image width (int or scalar int tensor).
        min_side: target of the shorter side.
        max_side: bound of the longer side.

    Returns:
        int32 scalar tensors `(new_height, new_width)`.

    Example:
        >>> from kseg.detection.transform import min_max_resized_size
        >>> [int(s) for s in min_max_resized_size(480, 640, 800, 1333)]
        [800, 1066]
    """
    if not 0 < float(min_side) <= float(max_side):
        raise ValueError(
            "min_side and max_side must be positive with min_side <= max_side. "
            f"Received: min_side={min_side!r}, max_side={max_side!r}"
        )
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    scale = tf.minimum(
        float(min_side) / tf.minimum(height, width), float(max_side) / tf.maximum(height, width)
    )
    return (
        tf.cast(tf.floor(height * scale), tf.int32),
        tf.cast(tf.floor(width * scale), tf.int32),
    )


def resize_min_max_side(images, min_side, max_side):
    """Bilinearly resizes `(B, H, W, C)` images by `min_max_resized_size`.

    The interpolation is torch's `interpolate(mode="bilinear", align_corners=False)` without
    antialiasing, which `tf.image.resize` reproduces (half-pixel centres, edge clamping).

    Args:
        images: `(B, H, W, C)` float images.
        min_side: target of the shorter side.
        max_side: bound of the longer side.

    Returns:
        The resized float32 images.

    Example:
        >>> from kseg.detection.transform import resize_min_max_side
        >>> resize_min_max_side(tf.zeros((1, 30, 50, 3)), 60, 80).shape
        TensorShape([1, 48, 80, 3])
    """
    shape = tf.shape(images)
    size = min_max_resized_size(shape[1], shape[2], min_side, max_side)
    return tf.image.resize(tf.cast(images, tf.float32), tf.stack(size), method="bilinear")


def rescale_boxes(boxes, from_height, from_width, to_height, to_width):
    """Maps `[y1, x1, y2, x2]` boxes from an image of one size onto the same image at another.

    Each axis is scaled by `to / from` computed in float32, as torchvision's `resize_boxes`
    does when it maps detections back to the original image.

    Example:
        >>> from kseg.detection.transform import rescale_boxes
        >>> rescale_boxes([[10., 20., 30., 40.]], 100, 200, 50, 50).numpy().tolist()
        [[5.0, 5.0, 15.0, 10.0]]
    """
    boxes = tf.cast(boxes, tf.float32)
    ratio_y = tf.cast(to_height, tf.float32) / tf.cast(from_height, tf.float32)
    ratio_x = tf.cast(to_width, tf.float32) / tf.cast(from_width, tf.float32)
    return boxes * tf.stack([ratio_y, ratio_x, ratio_y, ratio_x])


def resize_instance_masks(masks, height, width):
    """Resizes `(B, M, H, W)` instance masks to `(B, M, height, width)` by nearest neighbour.

    The training-target side of `resize_min_max_side`: ground-truth masks follow their image
    when a model resizes its input (torchvision's transform resizes masks by nearest neighbour
    too). The dtype is kept.

    Example:
        >>> from kseg.detection.transform import resize_instance_masks
        >>> resize_instance_masks(tf.ones((2, 3, 4, 6), tf.uint8), 8, 12).shape
        TensorShape([2, 3, 8, 12])
    """
    masks = tf.convert_to_tensor(masks)
    channels_last = tf.transpose(masks, (0, 2, 3, 1))
    resized = tf.image.resize(channels_last, tf.stack([height, width]), method="nearest")
    return tf.cast(tf.transpose(resized, (0, 3, 1, 2)), masks.dtype)
