"""Training targets for Mask R-CNN: anchor labels for the RPN and sampled RoIs for the heads.

Both functions are batched over a leading axis, vectorised (no Python loop over images or
boxes) and safe inside `tf.function`. Ground truth follows the kseg detection convention:
`gt_boxes` (B, M, 4), `gt_classes` (B, M) with -1 on padding rows (valid rows have class >= 1),
`gt_masks` (B, M, H, W) full-image binary masks. An image without any valid row is handled:
all its anchors or RoIs become background, with finite targets.
"""

import tensorflow as tf

from kseg.detection.boxes import as_boxes, box_iou, encode_boxes
from kseg.validation import validate_fraction, validate_positive_int


def _seed_pair(seed):
    if seed is None:
        return None
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.constant(0, tf.int64)])
    if seed.shape.rank != 1 or seed.shape[0] != 2:
        raise ValueError(f"seed must be an int or a pair of ints. Received: seed={seed}")
    return seed


def _random_keys(shape, seed, salt):
    """Uniform [0, 1) keys; a given seed makes them reproducible (salt separates the uses)."""
    pair = _seed_pair(seed)
    if pair is None:
        return tf.random.uniform(shape, dtype=tf.float32)
    return tf.random.stateless_uniform(shape, seed=pair + tf.constant([0, salt], tf.int64))


def _ground_truth(gt_boxes, gt_classes):
    """float32 boxes and int32 classes with one extra padding row, so M >= 1 in every reduction."""
    gt_boxes = as_boxes(gt_boxes, "gt_boxes", rank=3)
    gt_classes = tf.cast(tf.convert_to_tensor(gt_classes), tf.int32)
    if gt_classes.shape.rank is not None and gt_classes.shape.rank != 2:
        raise ValueError(
            f"gt_classes must have shape (B, M). Received: gt_classes.shape={gt_classes.shape}"
        )
    batch = tf.shape(gt_boxes)[0]
    gt_boxes = tf.concat([gt_boxes, tf.zeros([batch, 1, 4], tf.float32)], axis=1)
    gt_classes = tf.concat([gt_classes, -tf.ones([batch, 1], tf.int32)], axis=1)
    return gt_boxes, gt_classes


def _match(candidates, gt_boxes, gt_classes):
    """IoU against the valid ground truth; padding columns count as IoU 0."""
    valid_gt = gt_classes >= 1
    iou = box_iou(candidates, gt_boxes)
    iou = tf.where(valid_gt[:, None, :], iou, 0.0)
    best_iou = tf.reduce_max(iou, axis=-1)
    matched = tf.argmax(iou, axis=-1, output_type=tf.int32)
    return iou, best_iou, matched, valid_gt


def _pick(keys, candidates, limit):
    """Random subset of `candidates` (B, N) with at most `limit` (B,) members per row.

    Returns indices (B, K) into the N axis and a (B, K) flag for the entries actually taken,
    K = min(max(limit), N).
    """
    scores = tf.where(candidates, keys, -1.0)
    # top_k orders by key, so the first `limit` candidates of a row are a uniform random subset.
    count = tf.minimum(tf.reduce_max(limit), tf.shape(scores)[1])
    count = tf.maximum(count, 0)
    values, indices = tf.math.top_k(scores, k=count, sorted=True)
    position = tf.range(count)[None, :]
    taken = (values >= 0.0) & (position < limit[:, None])
    return indices, taken


def _selection_mask(indices, taken, num_columns):
    batch = tf.shape(indices)[0]
    rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(indices))
    scatter_at = tf.stack([rows, indices], axis=-1)
    hits = tf.scatter_nd(scatter_at, tf.cast(taken, tf.int32), [batch, num_columns])
    return hits > 0


def rpn_targets(
    anchors,
    gt_boxes,
    gt_classes,
    *,
    positive_iou=0.7,
    negative_iou=0.3,
    num_samples=256,
    positive_fraction=0.5,
    seed=None,
):
    """Labels and box-regression targets for every anchor, with random minibatch sampling.

    Faster R-CNN's RPN assignment (Ren et al. 2015, section 3.1.2): an anchor is positive when
    its IoU with some ground-truth box is >= `positive_iou` (0.7), or when it is the
    highest-IoU anchor of a ground-truth box (all anchors tying for that maximum in float32, as
    in Detectron, so every valid box has at least one positive); it is negative when its best IoU
    is below `negative_iou` (0.3) and it is not positive; the rest are ignored. Each image then
    keeps a random sample of at most `num_samples` (256) anchors with at most
    `num_samples * positive_fraction` positives, negatives filling the remainder. Anchors that
    cross the image border are kept and labelled like any other (Detectron2 / torchvision
    behaviour; the paper drops them during training). A ground-truth box that overlaps no anchor
    at all (IoU 0 everywhere, e.g. a zero-area box) does not force a positive. Positive anchors
    regress towards the ground-truth box of highest IoU with them.

    Args:
        anchors: `(A, 4)` anchors of all levels concatenated (see `generate_anchors`).
        gt_boxes: `(B, M, 4)` ground-truth boxes.
        gt_classes: `(B, M)` int classes, -1 on padding rows.
        positive_iou: IoU at or above which an anchor is positive.
        negative_iou: IoU below which an anchor is negative.
        num_samples: anchors sampled per image.
        positive_fraction: largest share of positives in the sample.
        seed: None for fresh randomness, or an int / pair of ints for reproducible sampling.

    Returns:
        `(labels, deltas)`: labels `(B, A)` int32 with 1 for sampled positives, 0 for sampled
        negatives and -1 for anchors outside the sample; deltas `(B, A, 4)` float32 targets
        with unit weights (`encode_boxes` of the matched box against the anchor), zero where the
        label is not 1.

    Example:
        >>> import tensorflow as tf
        >>> from kseg.detection.anchors import generate_anchors
        >>> from kseg.detection.targets import rpn_targets
        >>> anchors = tf.concat(generate_anchors(128, 128), axis=0)
        >>> labels, deltas = rpn_targets(
        ...     anchors, [[[10.0, 20.0, 60.0, 90.0]]], [[1]], seed=0)
        >>> labels.shape, int(tf.reduce_sum(tf.cast(labels >= 0, tf.int32)))
        (TensorShape([1, 4092]), 256)
    """
    validate_fraction(positive_fraction, "positive_fraction")
    validate_positive_int(num_samples, "num_samples")
    if not negative_iou <= positive_iou:
        raise ValueError(
            "negative_iou must not exceed positive_iou. Received: "
            f"negative_iou={negative_iou}, positive_iou={positive_iou}"
        )
    anchors = as_boxes(anchors, "anchors", rank=2)
    gt_boxes, gt_classes = _ground_truth(gt_boxes, gt_classes)
    batch = tf.shape(gt_boxes)[0]
    num_anchors = tf.shape(anchors)[0]

    iou, best_iou, matched, valid_gt = _match(anchors[None], gt_boxes, gt_classes)
    best_per_gt = tf.reduce_max(iou, axis=1, keepdims=True)
    is_best_for_some_gt = tf.reduce_any(
        (iou == best_per_gt) & valid_gt[:, None, :] & (best_per_gt > 0.0), axis=-1
    )
    positive = (best_iou >= positive_iou) | is_best_for_some_gt
    negative = (best_iou < negative_iou) & ~positive

    keys = _random_keys([batch, num_anchors], seed, salt=1)
    max_positives = int(num_samples * positive_fraction)
    pos_idx, pos_taken = _pick(keys, positive, tf.fill([batch], max_positives))
    num_positives = tf.reduce_sum(tf.cast(pos_taken, tf.int32), axis=1)
    neg_idx, neg_taken = _pick(keys, negative, num_samples - num_positives)
    sampled_positive = _selection_mask(pos_idx, pos_taken, num_anchors)
    sampled_negative = _selection_mask(neg_idx, neg_taken, num_anchors)
    labels = tf.where(sampled_positive, 1, tf.where(sampled_negative, 0, -1))

    matched_boxes = tf.gather(gt_boxes, matched, batch_dims=1)
    anchors_b = tf.broadcast_to(anchors[None], tf.shape(matched_boxes))
    # Unmatched anchors regress onto themselves, which keeps the log in the encoding finite.
    targets = tf.where(sampled_positive[..., None], matched_boxes, anchors_b)
    deltas = encode_boxes(targets, anchors_b)
    return labels, deltas


def _roi_to_crop_box(rois, mask_height, mask_width, mask_size):
    """Normalised crop_and_resize boxes whose samples sit at the centres of a grid over the roi.

    Sample k of mask_size along y lies at y1 + (k + 0.5) * h / S in continuous pixels, i.e. at
    pixel index y1 + (k + 0.5) * h / S - 0.5; crop_and_resize places sample k at
    ny1 * (H - 1) + k * (ny2 - ny1) * (H - 1) / (S - 1).
    """
    y1, x1, y2, x2 = tf.unstack(rois, num=4, axis=-1)
    half_step_y = 0.5 * (y2 - y1) / mask_size
    half_step_x = 0.5 * (x2 - x1) / mask_size
    scale_y = tf.cast(mask_height - 1, tf.float32)
    scale_x = tf.cast(mask_width - 1, tf.float32)
    return tf.stack(
        [
            tf.math.divide_no_nan(y1 + half_step_y - 0.5, scale_y),
            tf.math.divide_no_nan(x1 + half_step_x - 0.5, scale_x),
            tf.math.divide_no_nan(y2 - half_step_y - 0.5, scale_y),
            tf.math.divide_no_nan(x2 - half_step_x - 0.5, scale_x),
        ],
        axis=-1,
    )


def roi_targets(
    proposals,
    gt_boxes,
    gt_classes,
    gt_masks,
    *,
    num_samples=512,
    positive_fraction=0.25,
    positive_iou=0.5,
    negative_iou_range=(0.0, 0.5),
    mask_size=28,
    box_weights=(10.0, 10.0, 5.0, 5.0),
    seed=None,
):
    """Samples RoIs for the box and mask heads and builds their class, box and mask targets.

    Fast R-CNN's minibatch rule (Girshick 2015, section 2.3) as used by Mask R-CNN (He et al.
    2017, section 3.1, 512 RoIs per image at 1:3 positive:negative): the valid ground-truth
    boxes are appended to the proposals (as in Detectron, so positives exist from the first
    step), every candidate is matched to the ground-truth box of highest IoU, candidates with
    IoU >= `positive_iou` are foreground and those with IoU in `negative_iou_range` are
    background. At most `num_samples * positive_fraction` foreground RoIs are drawn at random,
    background RoIs fill the rest; when there are too few candidates the remaining rows are
    padding. Output rows hold the sampled positives first, then negatives, then padding.

    The mask target of a foreground RoI is its matched ground-truth mask sampled bilinearly by
    `tf.image.crop_and_resize` at the centres of a `mask_size` x `mask_size` grid over the RoI
    (the RoIAlign alignment of Mask R-CNN) and thresholded at 0.5. Samples that fall less than
    half a pixel outside the image's pixel centres read 0 (crop_and_resize's extrapolation);
    this only touches RoIs smaller than `mask_size` pixels lying on the image border. The crop
    reads the (B * M, H, W, 1) view of `gt_masks` through box indices, so no per-RoI copy of a
    full mask is made.

    Args:
        proposals: `(B, P, 4)` proposals; all-zero rows are padding.
        gt_boxes: `(B, M, 4)` ground-truth boxes.
        gt_classes: `(B, M)` int classes in 1..K-1, -1 on padding rows.
        gt_masks: `(B, M, H, W)` binary full-image masks (any numeric dtype).
        num_samples: RoIs per image.
        positive_fraction: largest share of foreground RoIs.
        positive_iou: IoU at or above which a RoI is foreground.
        negative_iou_range: `(low, high)`: IoU in [low, high) makes a RoI background.
        mask_size: side of the mask targets.
        box_weights: `(wy, wx, wh, ww)` for `encode_boxes`.
        seed: None for fresh randomness, or an int / pair of ints for reproducible sampling.

    Returns:
        dict with `rois` `(B, num_samples, 4)` float32 (zero rows for padding), `classes`
        `(B, num_samples)` int32 (matched class for foreground, 0 for background, -1 for
        padding), `box_deltas` `(B, num_samples, 4)` float32 (encoded matched box for
        foreground, zero elsewhere), `mask_targets` `(B, num_samples, mask_size, mask_size)`
        float32 in {0, 1} (zero except for foreground rows).

    Example:
        >>> import numpy as np
        >>> from kseg.detection.targets import roi_targets
        >>> masks = np.zeros((1, 1, 64, 64), np.uint8); masks[0, 0, 8:40, 16:48] = 1
        >>> out = roi_targets(np.zeros((1, 5, 4), np.float32), [[[8.0, 16.0, 40.0, 48.0]]],
        ...                   [[3]], masks, num_samples=4, seed=0)
        >>> out["classes"].numpy().tolist(), float(out["mask_targets"][0, 0].numpy().min())
        ([[3, -1, -1, -1]], 1.0)
    """
    validate_fraction(positive_fraction, "positive_fraction")
    num_samples = validate_positive_int(num_samples, "num_samples")
    mask_size = validate_positive_int(mask_size, "mask_size")
    low_iou, high_iou = (float(v) for v in negative_iou_range)
    if not low_iou <= high_iou:
        raise ValueError(
            f"negative_iou_range must be (low, high) with low <= high. Received: "
            f"negative_iou_range={negative_iou_range}"
        )
    # Targets are constants for the heads: no gradient flows back into the proposals.
    proposals = tf.stop_gradient(as_boxes(proposals, "proposals", rank=3))
    gt_masks = tf.convert_to_tensor(gt_masks)
    if gt_masks.dtype == tf.bool:
        gt_masks = tf.cast(gt_masks, tf.uint8)
    if gt_masks.shape.rank is not None and gt_masks.shape.rank != 4:
        raise ValueError(
            f"gt_masks must have shape (B, M, H, W). Received: gt_masks.shape={gt_masks.shape}"
        )
    num_gt = tf.shape(gt_masks)[1]
    gt_boxes, gt_classes = _ground_truth(gt_boxes, gt_classes)
    batch = tf.shape(gt_boxes)[0]

    # Padding rows after the real candidates guarantee at least num_samples of them, so the
    # final top_k never runs short and every output has a static num_samples axis.
    candidates = tf.concat(
        [proposals, gt_boxes, tf.zeros([batch, num_samples, 4], tf.float32)], axis=1
    )
    is_candidate = tf.concat(
        [
            tf.reduce_any(tf.not_equal(proposals, 0.0), axis=-1),
            gt_classes >= 1,
            tf.zeros([batch, num_samples], tf.bool),
        ],
        axis=1,
    )
    _, best_iou, matched, _ = _match(candidates, gt_boxes, gt_classes)
    foreground = is_candidate & (best_iou >= positive_iou)
    background = is_candidate & (best_iou >= low_iou) & (best_iou < high_iou) & ~foreground

    keys = _random_keys(tf.shape(is_candidate), seed, salt=2)
    max_positives = int(num_samples * positive_fraction)
    pos_idx, pos_taken = _pick(keys, foreground, tf.fill([batch], max_positives))
    num_positives = tf.reduce_sum(tf.cast(pos_taken, tf.int32), axis=1)
    neg_idx, neg_taken = _pick(keys, background, num_samples - num_positives)
    # Compact the taken entries to the front; top_k keeps index order among equal scores.
    indices = tf.concat([pos_idx, neg_idx], axis=1)
    taken = tf.concat([pos_taken, neg_taken], axis=1)
    is_positive_slot = tf.concat([pos_taken, tf.zeros_like(neg_taken)], axis=1)
    padded_indices = tf.concat([indices, tf.zeros([batch, num_samples], tf.int32)], axis=1)
    padded_taken = tf.concat([taken, tf.zeros([batch, num_samples], tf.bool)], axis=1)
    padded_positive = tf.concat([is_positive_slot, tf.zeros([batch, num_samples], tf.bool)], axis=1)
    _, order = tf.math.top_k(tf.cast(padded_taken, tf.int32), k=num_samples, sorted=True)
    chosen = tf.gather(padded_indices, order, batch_dims=1)
    valid = tf.gather(padded_taken, order, batch_dims=1)
    positive = tf.gather(padded_positive, order, batch_dims=1)
    negative = valid & ~positive

    rois = tf.where(valid[..., None], tf.gather(candidates, chosen, batch_dims=1), 0.0)
    matched_gt = tf.gather(matched, chosen, batch_dims=1)
    matched_classes = tf.gather(gt_classes, matched_gt, batch_dims=1)
    classes = tf.where(positive, matched_classes, tf.where(negative, 0, -1))

    matched_boxes = tf.gather(gt_boxes, matched_gt, batch_dims=1)
    # Other rows encode a unit box against itself: zero deltas, and no log of a zero side.
    unit_box = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32)
    safe_rois = tf.where(positive[..., None], rois, unit_box)
    targets = tf.where(positive[..., None], matched_boxes, unit_box)
    box_deltas = encode_boxes(targets, safe_rois, box_weights)

    mask_height = tf.shape(gt_masks)[2]
    mask_width = tf.shape(gt_masks)[3]
    # The extra padding column of gt_boxes (index M) has no mask; positives never match it.
    mask_index = tf.range(batch)[:, None] * num_gt + tf.minimum(matched_gt, num_gt - 1)
    crop_boxes = _roi_to_crop_box(rois, mask_height, mask_width, mask_size)

    def crop():
        flat_masks = tf.reshape(gt_masks, [-1, mask_height, mask_width, 1])
        crops = tf.image.crop_and_resize(
            flat_masks,
            tf.reshape(crop_boxes, [-1, 4]),
            tf.reshape(mask_index, [-1]),
            [mask_size, mask_size],
            method="bilinear",
        )
        return tf.reshape(crops, [batch, num_samples, mask_size, mask_size])

    def no_masks():
        return tf.zeros([batch, num_samples, mask_size, mask_size], tf.float32)

    crops = tf.cond(num_gt > 0, crop, no_masks)
    mask_targets = tf.where(positive[..., None, None] & (crops >= 0.5), 1.0, 0.0)
    return {
        "rois": rois,
        "classes": classes,
        "box_deltas": box_deltas,
        "mask_targets": mask_targets,
    }
