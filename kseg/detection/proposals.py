"""Region proposals from RPN outputs: per-level top-k, decoding, clipping, NMS over levels."""

import tensorflow as tf

from kseg.detection.boxes import clip_boxes, decode_boxes
from kseg.validation import validate_positive_int

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)

# Candidates a level does not own (or that are too small) get this score in the level-as-class
# score matrix; it lies below every sigmoid probability, so a score threshold between the two
# removes exactly them.
_EXCLUDED_SCORE = -1.0
_EXCLUDED_THRESHOLD = -0.5


def _check_settings(objectness, deltas, anchors, pre_nms_top_n, post_nms_top_n, nms_iou, min_size):
    if not isinstance(objectness, (list, tuple)):
        raise TypeError(
            "select_proposals expects objectness as a list with one (B, A_l) tensor per level. "
            f"Received: objectness={type(objectness).__name__}"
        )
    if not objectness:
        raise ValueError("select_proposals needs at least one level. Received: objectness=[]")
    if not isinstance(deltas, (list, tuple)) or not isinstance(anchors, (list, tuple)):
        raise TypeError(
            "select_proposals expects deltas and anchors as per-level lists like objectness. "
            f"Received: deltas={type(deltas).__name__}, anchors={type(anchors).__name__}"
        )
    if not len(objectness) == len(deltas) == len(anchors):
        raise ValueError(
            "objectness, deltas and anchors must hold the same number of levels. Received: "
            f"{len(objectness)}, {len(deltas)} and {len(anchors)} levels"
        )
    validate_positive_int(pre_nms_top_n, "pre_nms_top_n")
    validate_positive_int(post_nms_top_n, "post_nms_top_n")
    if not 0.0 < float(nms_iou) <= 1.0:
        raise ValueError(f"nms_iou must lie in (0, 1]. Received: nms_iou={nms_iou!r}")
    if float(min_size) < 0.0:
        raise ValueError(f"min_size must be non-negative. Received: min_size={min_size!r}")


def select_proposals(
    objectness,
    deltas,
    anchors,
    image_height,
    image_width,
    *,
    pre_nms_top_n=2000,
    post_nms_top_n=1000,
    nms_iou=0.7,
    min_size=1e-3,
):
    """Turn per-level RPN objectness logits and box deltas into a fixed number of proposals.

    Follows the FPN rule of Lin et al. 2017 ("Feature Pyramid Networks for Object Detection") as
    implemented in Detectron for Mask R-CNN (He et al. 2017): on each level keep the
    `pre_nms_top_n` anchors with the highest objectness, decode their deltas (Ren et al. 2015
    parametrisation, RPN weights (1, 1, 1, 1)), clip to the image, drop boxes with a side shorter
    than `min_size`, suppress overlaps per image and per level at IoU `nms_iou`, then merge the
    levels and keep the `post_nms_top_n` best by score.

    NMS per level is class-wise NMS with the level as the class, so all images and levels go
    through one `tf.image.combined_non_max_suppression` call: it is batched, returns boxes and
    scores already padded with zeros to a fixed size and sorted over all levels (the merge and
    final top-k come free), and it is an ordinary kernel that exports in a SavedModel. It also
    suppresses only at IoU strictly above the threshold, as torchvision's `nms` does, whereas
    `tf.image.non_max_suppression_padded` also drops boxes at exactly the threshold.

    Args:
        objectness: list of per-level (B, A_l) objectness logits.
        deltas: list of per-level (B, A_l, 4) box deltas `(dy, dx, dh, dw)`.
        anchors: list of per-level (A_l, 4) anchors `[y1, x1, y2, x2]` in pixels.
        image_height: network input height (int or scalar tensor).
        image_width: network input width (int or scalar tensor).
        pre_nms_top_n: candidates kept per level before NMS.
        post_nms_top_n: proposals returned per image.
        nms_iou: IoU above which a lower-scored box of the same level is suppressed.
        min_size: boxes with height or width below this (in pixels, after clipping) are dropped.
            The default is torchvision's `remove_small_boxes(boxes, 1e-3)` in its RPN: it drops
            the boxes that clipping reduced to nothing (anchors beyond the image border), which
            would otherwise take places among the proposals with no area to pool.

    Returns:
        `(proposals, scores)`: float32 (B, post_nms_top_n, 4) boxes and (B, post_nms_top_n)
        sigmoid objectness, best first; rows past the survivors are zero boxes with score 0.
        No gradient flows back into the inputs.

    Example:
        >>> import tensorflow as tf
        >>> from kseg.detection.proposals import select_proposals
        >>> anchors = [tf.constant([[0., 0., 16., 16.], [1., 1., 17., 17.], [30., 30., 46., 46.]])]
        >>> logits = [tf.constant([[2.0, 1.0, 0.5]])]
        >>> proposals, scores = select_proposals(
        ...     logits, [tf.zeros((1, 3, 4))], anchors, 64, 64, post_nms_top_n=4)
        >>> proposals[0].numpy().tolist()  # doctest: +NORMALIZE_WHITESPACE
        [[0.0, 0.0, 16.0, 16.0], [30.0, 30.0, 46.0, 46.0],
         [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    _check_settings(objectness, deltas, anchors, pre_nms_top_n, post_nms_top_n, nms_iou, min_size)
    height = tf.cast(image_height, tf.float32)
    width = tf.cast(image_width, tf.float32)
    num_levels = len(objectness)

    level_boxes, level_scores, level_ids = [], [], []
    for level, (level_logits, level_deltas, level_anchors) in enumerate(
        zip(objectness, deltas, anchors)
    ):
        level_logits = tf.stop_gradient(tf.cast(level_logits, tf.float32))
        level_deltas = tf.stop_gradient(tf.cast(level_deltas, tf.float32))
        level_anchors = tf.stop_gradient(tf.cast(level_anchors, tf.float32))

        k = tf.minimum(pre_nms_top_n, tf.shape(level_logits)[1])
        top_logits, top_index = tf.math.top_k(level_logits, k=k, sorted=False)
        top_deltas = tf.gather(level_deltas, top_index, batch_dims=1)
        top_anchors = tf.gather(level_anchors, top_index)
        boxes = decode_boxes(top_deltas, top_anchors, weights=RPN_BOX_WEIGHTS)
        boxes = clip_boxes(boxes, height, width)

        scores = tf.sigmoid(top_logits)
        large_enough = tf.logical_and(
            boxes[..., 2] - boxes[..., 0] >= min_size, boxes[..., 3] - boxes[..., 1] >= min_size
        )
        level_boxes.append(boxes)
        level_scores.append(tf.where(large_enough, scores, _EXCLUDED_SCORE))
        level_ids.append(tf.fill([k], level))

    boxes = tf.concat(level_boxes, axis=1)
    scores = tf.concat(level_scores, axis=1)
    owned = tf.one_hot(tf.concat(level_ids, axis=0), num_levels, on_value=True, off_value=False)
    level_scores_matrix = tf.where(owned[tf.newaxis], scores[..., tf.newaxis], _EXCLUDED_SCORE)

    selected = tf.image.combined_non_max_suppression(
        boxes[:, :, tf.newaxis, :],
        level_scores_matrix,
        max_output_size_per_class=post_nms_top_n,
        max_total_size=post_nms_top_n,
        iou_threshold=float(nms_iou),
        score_threshold=_EXCLUDED_THRESHOLD,
        pad_per_class=False,
        clip_boxes=False,
    )
    return selected.nmsed_boxes, selected.nmsed_scores
