"""Boxes: from masks, their checks, area, pairwise IoU, delta coding and clipping.

Boxes are float32 `[y1, x1, y2, x2]` in absolute, continuous pixel coordinates of the network
input (pixel (i, j) covers [i, i+1) x [j, j+1)), with any number of leading batch axes.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

# Faster R-CNN's guard against exp() overflow in decoding: no box grows more than 1000/16 times
# its anchor along one side.
_MAX_LOG_SCALE = math.log(1000.0 / 16.0)


def as_boxes(boxes, name="boxes", rank=None):
    """Returns `boxes` as a float32 tensor after checking that its last axis holds 4 coordinates.

    Args:
        boxes: `(..., 4)` boxes `[y1, x1, y2, x2]` in any numeric dtype.
        name: the argument's name, for the error message.
        rank: the rank `boxes` must have, or None for any rank >= 1.

    Returns:
        float32 tensor of the same shape.

    Example:
        >>> kseg.detection.boxes.as_boxes([[0, 0, 2, 3]]).dtype
        tf.float32
    """
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    shape = boxes.shape
    if shape.rank == 0 or (rank is not None and shape.rank not in (None, rank)):
        wanted = "rank >= 1" if rank is None else f"rank {rank}"
        raise ValueError(f"`{name}` must have {wanted}. Received: {name}.shape={shape}")
    if shape.rank is not None and shape[-1] not in (None, 4):
        raise ValueError(
            f"`{name}` must have a last axis of 4 ([y1, x1, y2, x2]). "
            f"Received: {name}.shape={shape}"
        )
    return boxes


def image_boxes(boxes, height, width, name="boxes"):
    """Checks `(N, 4)` boxes annotating a `height` x `width` image and returns them as float64.

    Every box must be finite, have `y2 > y1` and `x2 > x1`, and overlap the image; boxes may
    reach past its border (clip them with `np.clip` if needed).

    Args:
        boxes: array-like `(N, 4)` `[y1, x1, y2, x2]` in pixels; an empty list is `(0, 4)`.
        height: image height in pixels.
        width: image width in pixels.
        name: the argument's name, for the error messages.

    Returns:
        float64 numpy array `(N, 4)`.

    Raises:
        ValueError: naming the argument, the first bad box's index and the box.

    Example:
        >>> kseg.detection.boxes.image_boxes([[2, 1, 5, 7]], height=8, width=8).tolist()
        [[2.0, 1.0, 5.0, 7.0]]
    """
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"`{name}` must be (N, 4) [y1, x1, y2, x2]. Received: {name}.shape={boxes.shape}"
        )
    for index, box in enumerate(boxes):
        if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(
                f"`{name}`[{index}] is not a box with y1 < y2 and x1 < x2. "
                f"Received: {name}[{index}]={box.tolist()}"
            )
        if box[2] <= 0 or box[3] <= 0 or box[0] >= height or box[1] >= width:
            raise ValueError(
                f"`{name}`[{index}] lies entirely outside the {height}x{width} image. "
                f"Received: {name}[{index}]={box.tolist()}"
            )
    return boxes


def _extents(masks, xp):
    """`boxes_from_masks` written once for numpy (`xp=np`) and TensorFlow (`xp=tnp`) arrays."""
    occupied = xp.asarray(masks, dtype=bool)
    rows = xp.asarray(xp.any(occupied, axis=2), dtype="int64")
    cols = xp.asarray(xp.any(occupied, axis=1), dtype="int64")
    # Each occupied row or column times its index + 1: the largest is the exclusive far edge, and
    # an empty mask gets 0 there as argmax gives it 0 at the near edge.
    row_ends = rows * xp.cumsum(xp.ones_like(rows), axis=1)
    col_ends = cols * xp.cumsum(xp.ones_like(cols), axis=1)
    near = [xp.argmax(rows, axis=1), xp.argmax(cols, axis=1)]
    far = [xp.max(row_ends, axis=1), xp.max(col_ends, axis=1)]
    return xp.asarray(xp.stack(near + far, axis=1), dtype="float32")


def boxes_from_masks(masks):
    """Tight boxes around binary masks, as a tensor (in eager code and in graphs).

    Args:
        masks: `(N, H, W)` binary masks (any numeric or bool dtype).

    Returns:
        float32 tensor `(N, 4)` of boxes `[y1, x1, y2, x2]` with the max exclusive, so a mask
        covering the whole image gives `[0, 0, H, W]`; all zeros for an empty mask.

    Example:
        >>> masks = tf.constant([[[0, 1, 1], [0, 1, 0]]], tf.uint8)
        >>> kseg.detection.boxes.boxes_from_masks(masks).numpy()
        array([[0., 1., 2., 3.]], dtype=float32)
    """
    return _extents(tf.convert_to_tensor(masks), tnp)


def numpy_boxes_from_masks(masks):
    """`boxes_from_masks` computed in numpy and returned as a numpy array.

    For numpy code such as loaders run by `tf.numpy_function`, where TensorFlow ops do not belong.

    Example:
        >>> masks = np.array([[[0, 1, 1], [0, 1, 0]], [[0, 0, 0], [0, 0, 0]]], np.uint8)
        >>> kseg.detection.boxes.numpy_boxes_from_masks(masks).tolist()
        [[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]]
    """
    return _extents(np.asarray(masks), np)


def _as_weights(weights):
    if len(weights) != 4:
        raise ValueError(
            f"weights must hold four numbers (wy, wx, wh, ww). Received: weights={weights}"
        )
    return [float(w) for w in weights]


def _coding_inputs(weights, values, name, anchors):
    """The four weights, `values` as checked boxes, and the anchors' centres and sizes."""
    return (
        _as_weights(weights),
        as_boxes(values, name),
        _centres_and_sizes(as_boxes(anchors, "anchors")),
    )


def box_area(boxes):
    """Area of `[y1, x1, y2, x2]` boxes, 0 for boxes with a negative side.

    Args:
        boxes: `(..., 4)` boxes in any numeric dtype.

    Returns:
        float32 tensor of shape `(...)`.

    Example:
        >>> from kseg.detection.boxes import box_area
        >>> float(box_area([[2.0, 3.0, 6.0, 8.0]])[0])
        20.0
    """
    boxes = as_boxes(boxes, "boxes")
    y1, x1, y2, x2 = tf.unstack(boxes, num=4, axis=-1)
    return tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)


def box_iou(boxes_a, boxes_b):
    """Pairwise intersection over union of two sets of boxes.

    The overlap criterion of Everingham et al. 2010 (PASCAL VOC) used by Faster R-CNN
    (Ren et al. 2015) to match anchors and proposals to ground truth. Pairs whose union is
    empty (two zero-area boxes) get 0 rather than NaN, so padding rows of zeros are harmless.

    Args:
        boxes_a: `(..., N, 4)` boxes.
        boxes_b: `(..., M, 4)` boxes; leading axes broadcast against those of `boxes_a`.

    Returns:
        float32 tensor `(..., N, M)` with values in [0, 1].

    Example:
        >>> from kseg.detection.boxes import box_iou
        >>> round(float(box_iou([[0.0, 0.0, 2.0, 2.0]], [[1.0, 0.0, 3.0, 2.0]])[0, 0]), 4)
        0.3333
    """
    boxes_a = as_boxes(boxes_a, "boxes_a")
    boxes_b = as_boxes(boxes_b, "boxes_b")
    # Per-coordinate (..., N, 1) against (..., 1, M) broadcasts are much faster on CPU than
    # broadcasting whole (..., N, 1, 4) boxes, which matters for ~10^5 anchors per image.
    ay1, ax1, ay2, ax2 = (c[..., :, None] for c in tf.unstack(boxes_a, num=4, axis=-1))
    by1, bx1, by2, bx2 = (c[..., None, :] for c in tf.unstack(boxes_b, num=4, axis=-1))
    area_a = tf.maximum(ay2 - ay1, 0.0) * tf.maximum(ax2 - ax1, 0.0)
    area_b = tf.maximum(by2 - by1, 0.0) * tf.maximum(bx2 - bx1, 0.0)
    overlap_h = tf.maximum(tf.minimum(ay2, by2) - tf.maximum(ay1, by1), 0.0)
    overlap_w = tf.maximum(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1), 0.0)
    intersection = overlap_h * overlap_w
    union = area_a + area_b - intersection
    return tf.math.divide_no_nan(intersection, union)


def _centres_and_sizes(boxes):
    y1, x1, y2, x2 = tf.unstack(boxes, num=4, axis=-1)
    height = y2 - y1
    width = x2 - x1
    return y1 + 0.5 * height, x1 + 0.5 * width, height, width


def encode_boxes(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets that move `anchors` onto `boxes`.

    The parametrisation of Girshick et al. 2014 (R-CNN, appendix C) as used by Faster R-CNN
    (Ren et al. 2015, eq. 2): `(dy, dx, dh, dw) = ((cy - cya) / ha * wy, (cx - cxa) / wa * wx,
    log(h / ha) * wh, log(w / wa) * ww)`. The weights rescale the targets to roughly unit
    variance: (1, 1, 1, 1) for the RPN and (10, 10, 5, 5) for the Mask R-CNN box head.
    Anchors and boxes must have positive sides (a zero side gives an infinite log).

    Args:
        boxes: `(..., 4)` target boxes.
        anchors: `(..., 4)` reference boxes; leading axes broadcast against `boxes`.
        weights: four numbers `(wy, wx, wh, ww)`.

    Returns:
        float32 deltas `(..., 4)` ordered `(dy, dx, dh, dw)`.

    Example:
        >>> from kseg.detection.boxes import encode_boxes
        >>> encode_boxes([[0.0, 0.0, 20.0, 10.0]], [[0.0, 0.0, 10.0, 10.0]]).numpy().round(4)
        array([[0.5   , 0.    , 0.6931, 0.    ]], dtype=float32)
    """
    (wy, wx, wh, ww), boxes, (cya, cxa, ha, wa) = _coding_inputs(weights, boxes, "boxes", anchors)
    cy, cx, h, w = _centres_and_sizes(boxes)
    return tf.stack(
        [
            wy * (cy - cya) / ha,
            wx * (cx - cxa) / wa,
            wh * tf.math.log(h / ha),
            ww * tf.math.log(w / wa),
        ],
        axis=-1,
    )


def decode_boxes(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Applies `(dy, dx, dh, dw)` deltas to anchors; the inverse of `encode_boxes`.

    As in Faster R-CNN (Ren et al. 2015) and Detectron, the size deltas are clamped at
    log(1000 / 16) before the exponential so an untrained head cannot overflow to infinity.

    Args:
        deltas: `(..., 4)` deltas (any float dtype; computed in float32).
        anchors: `(..., 4)` reference boxes; leading axes broadcast against `deltas`.
        weights: the four numbers `(wy, wx, wh, ww)` the deltas were encoded with.

    Returns:
        float32 boxes `(..., 4)` `[y1, x1, y2, x2]`.

    Example:
        >>> from kseg.detection.boxes import decode_boxes
        >>> decode_boxes([[0.5, 0.0, 0.6931472, 0.0]], [[0.0, 0.0, 10.0, 10.0]]).numpy().round(3)
        array([[ 0.,  0., 20., 10.]], dtype=float32)
    """
    (wy, wx, wh, ww), deltas, (cya, cxa, ha, wa) = _coding_inputs(
        weights, deltas, "deltas", anchors
    )
    dy, dx, dh, dw = tf.unstack(deltas, num=4, axis=-1)
    dh = tf.minimum(dh / wh, _MAX_LOG_SCALE)
    dw = tf.minimum(dw / ww, _MAX_LOG_SCALE)
    cy = dy / wy * ha + cya
    cx = dx / wx * wa + cxa
    h = tf.exp(dh) * ha
    w = tf.exp(dw) * wa
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def clip_boxes(boxes, height, width):
    """Clips boxes to the image `[0, height] x [0, width]`.

    Args:
        boxes: `(..., 4)` boxes.
        height: image height in pixels (Python number or scalar tensor).
        width: image width in pixels (Python number or scalar tensor).

    Returns:
        float32 boxes `(..., 4)` with y in [0, height] and x in [0, width].

    Example:
        >>> from kseg.detection.boxes import clip_boxes
        >>> clip_boxes([[-5.0, 3.0, 40.0, 90.0]], 32, 64).numpy()
        array([[ 0.,  3., 32., 64.]], dtype=float32)
    """
    boxes = as_boxes(boxes, "boxes")
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    upper = tf.stack([height, width, height, width])
    return tf.clip_by_value(boxes, 0.0, upper)
