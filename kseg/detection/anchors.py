"""Per-level anchor boxes for a feature pyramid region proposal network."""

import math

import numpy as np
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


def _rounded_base_anchors(size, aspect_ratios):
    """The cell anchors of torchvision's `AnchorGenerator`, rounded half to even."""
    ratios = np.asarray(aspect_ratios, np.float32)
    height_ratios = np.sqrt(ratios)
    width_ratios = np.float32(1.0) / height_ratios
    heights = height_ratios * np.float32(size)
    widths = width_ratios * np.float32(size)
    base = np.stack([-heights, -widths, heights, widths], axis=1) / np.float32(2.0)
    return np.round(base).astype(np.float32)


def generate_grid_anchors(
    image_height,
    image_width,
    grid_sizes,
    sizes=(32, 64, 128, 256, 512),
    aspect_ratios=(0.5, 1.0, 2.0),
):
    """Anchors laid out as torchvision's `AnchorGenerator` lays them: from the feature grids.

    The same boxes as `generate_anchors` in their roles (one size per level, area size^2,
    height / width = ratio, rows in (y, x, anchor) order), placed the way torchvision places
    them so its checkpoints see the anchors they were trained with: the cell anchors are
    centred on 0 and rounded to whole pixels (half to even), cell (i, j) of a level shifts them
    by `(i * stride_y, j * stride_x)` (the cell's corner, not its centre), and a level's strides
    are `image_size // grid_size` along each axis, from the padded network input and the level's
    actual feature-map size (so P6 of an input that is a multiple of 32 but not 64 has a stride
    under 64).

    Args:
        image_height: padded network input height (int or scalar int tensor).
        image_width: padded network input width.
        grid_sizes: per level, `(rows, cols)` of its feature map (ints or scalar tensors).
        sizes: the anchor side of each level.
        aspect_ratios: height / width ratios, shared by every level.

    Returns:
        list of float32 `(rows * cols * A, 4)` tensors, one per level.

    Example:
        >>> from kseg.detection.anchors import generate_grid_anchors
        >>> level = generate_grid_anchors(64, 64, [(16, 16)], sizes=(32,))[0]
        >>> level[:3].numpy().tolist()
        [[-11.0, -23.0, 11.0, 23.0], [-16.0, -16.0, 16.0, 16.0], [-23.0, -11.0, 23.0, 11.0]]
    """
    sizes = tuple(sizes)
    if len(grid_sizes) != len(sizes) or not sizes:
        raise ValueError(
            "grid_sizes and sizes must be non-empty and of equal length (one anchor size per "
            f"level). Received: {len(grid_sizes)} grids, sizes={sizes}"
        )
    if not aspect_ratios or any(r <= 0 for r in aspect_ratios):
        raise ValueError(
            f"aspect_ratios must be non-empty and positive. Received: aspect_ratios={aspect_ratios}"
        )
    image_height = tf.cast(image_height, tf.int32)
    image_width = tf.cast(image_width, tf.int32)
    levels = []
    for (rows, cols), size in zip(grid_sizes, sizes):
        rows = tf.cast(rows, tf.int32)
        cols = tf.cast(cols, tf.int32)
        stride_y = tf.cast(image_height // rows, tf.float32)
        stride_x = tf.cast(image_width // cols, tf.float32)
        shift_y = tf.cast(tf.range(rows), tf.float32) * stride_y
        shift_x = tf.cast(tf.range(cols), tf.float32) * stride_x
        grid_y, grid_x = tf.meshgrid(shift_y, shift_x, indexing="ij")
        shifts = tf.stack([grid_y, grid_x, grid_y, grid_x], axis=-1)[:, :, None, :]
        base = tf.constant(_rounded_base_anchors(size, aspect_ratios))[None, None]
        levels.append(tf.reshape(shifts + base, [-1, 4]))
    return levels
