"""Per-level anchor boxes for a feature pyramid region proposal network."""

import math

import tensorflow as tf


def _level_anchors(image_height, image_width, stride, size, aspect_ratios):
    # Ceiling division matches the cell count of a stack of same-padded stride-2 layers, and
    # equals image_size / stride exactly for the multiples of 64 the data pipeline produces.
    rows = (image_height + stride - 1) // stride
    cols = (image_width + stride - 1) // stride
    centre_y = (tf.cast(tf.range(rows), tf.float32) + 0.5) * float(stride)
    centre_x = (tf.cast(tf.range(cols), tf.float32) + 0.5) * float(stride)
    grid_y, grid_x = tf.meshgrid(centre_y, centre_x, indexing="ij")
    centres = tf.stack([grid_y, grid_x, grid_y, grid_x], axis=-1)[:, :, None, :]
    # Half extents in float64 first so area and ratio stay exact to float32 precision.
    half_extents = []
    for ratio in aspect_ratios:
        half_h = 0.5 * size * math.sqrt(ratio)
        half_w = 0.5 * size / math.sqrt(ratio)
        half_extents.append([-half_h, -half_w, half_h, half_w])
    offsets = tf.constant(half_extents, tf.float32)[None, None, :, :]
    return tf.reshape(centres + offsets, [-1, 4])


def generate_anchors(
    image_height,
    image_width,
    strides=(4, 8, 16, 32, 64),
    sizes=(32, 64, 128, 256, 512),
    aspect_ratios=(0.5, 1.0, 2.0),
):
    """Anchor boxes for every level of a feature pyramid, one size per level.

    Faster R-CNN (Ren et al. 2015) places k reference boxes at every cell of the RPN's feature
    map; the Feature Pyramid Network (Lin et al. 2017, section 4.1) gives each level a single
    anchor area (32^2 on P2 up to 512^2 on P6) and three aspect ratios {1:2, 1:1, 2:1}. Anchor
    (i, j, a) of a level is centred on ((i + 0.5) * stride, (j + 0.5) * stride), has area
    size^2 and height / width = aspect_ratios[a]. Rows follow (y, x, anchor) in row-major order,
    which is the order of an RPN head's output reshaped from (B, Hl, Wl, A * k) to
    (B, Hl * Wl * A, k). Anchors that cross the image border are included.

    Args:
        image_height: network input height in pixels (Python int or scalar int tensor).
        image_width: network input width in pixels (Python int or scalar int tensor).
        strides: the stride of each pyramid level.
        sizes: the anchor side (square root of the area) of each level, one per stride.
        aspect_ratios: height / width ratios, shared by every level.

    Returns:
        list of float32 tensors, one per level, each `(ceil(H / s) * ceil(W / s) * A, 4)` boxes
        `[y1, x1, y2, x2]` in input pixels, with `A = len(aspect_ratios)`.

    Example:
        >>> from kseg.detection.anchors import generate_anchors
        >>> levels = generate_anchors(128, 64)
        >>> [int(level.shape[0]) for level in levels]
        [1536, 384, 96, 24, 6]
    """
    strides = tuple(strides)
    sizes = tuple(sizes)
    aspect_ratios = tuple(aspect_ratios)
    if len(strides) != len(sizes) or not strides:
        raise ValueError(
            "strides and sizes must be non-empty and of equal length (one anchor size per "
            f"level). Received: strides={strides}, sizes={sizes}"
        )
    if any(int(s) != s or s <= 0 for s in strides):
        raise ValueError(f"strides must be positive integers. Received: strides={strides}")
    if any(s <= 0 for s in sizes):
        raise ValueError(f"sizes must be positive. Received: sizes={sizes}")
    if not aspect_ratios or any(r <= 0 for r in aspect_ratios):
        raise ValueError(
            f"aspect_ratios must be non-empty and positive. Received: aspect_ratios={aspect_ratios}"
        )
    image_height = tf.cast(image_height, tf.int32)
    image_width = tf.cast(image_width, tf.int32)
    return [
        _level_anchors(image_height, image_width, int(stride), float(size), aspect_ratios)
        for stride, size in zip(strides, sizes)
    ]
