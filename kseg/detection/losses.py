"""Mask R-CNN's training losses: RPN objectness and boxes, box-head classes and boxes, masks."""

import tensorflow as tf


def smooth_l1(difference, beta):
    """Huber-style smooth L1 of Girshick 2015, Eq. 3, with transition point `beta`.

    Example:
        >>> float(smooth_l1(tf.constant(2.0), beta=1.0))
        1.5
    """
    absolute = tf.abs(difference)
    if beta <= 0:
        return absolute
    return tf.where(absolute < beta, 0.5 * tf.square(absolute) / beta, absolute - 0.5 * beta)


def _count(mask):
    return tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32)), 1.0)


def rpn_losses(objectness, deltas, labels, delta_targets, *, beta=1.0 / 9.0):
    """Objectness cross-entropy and box smooth L1 over the sampled anchors.

    Ren et al. 2015, Eq. 1: binary cross-entropy on the sampled anchors (labels 1 and 0) and a
    smooth L1 box term on the positives, both normalised by the number of sampled anchors
    (Detectron's normalisation; `beta` 1/9 as in its RPN).

    Args:
        objectness: `(B, A)` logits.
        deltas: `(B, A, 4)` predicted deltas.
        labels: `(B, A)` int32, 1 positive, 0 negative, -1 not sampled.
        delta_targets: `(B, A, 4)` target deltas.
        beta: smooth L1 transition point.

    Returns:
        `(objectness_loss, box_loss)` float32 scalars.

    Example:
        >>> cls, box = rpn_losses(tf.zeros((1, 2)), tf.zeros((1, 2, 4)),
        ...                       tf.constant([[1, -1]]), tf.zeros((1, 2, 4)))
        >>> round(float(cls), 4)
        0.6931
    """
    objectness = tf.cast(objectness, tf.float32)
    sampled = labels >= 0
    count = _count(sampled)
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(labels > 0, tf.float32), logits=objectness
    )
    objectness_loss = tf.reduce_sum(tf.where(sampled, cross_entropy, 0.0)) / count
    box = tf.reduce_sum(smooth_l1(tf.cast(deltas, tf.float32) - delta_targets, beta), axis=-1)
    box_loss = tf.reduce_sum(tf.where(labels > 0, box, 0.0)) / count
    return objectness_loss, box_loss


def box_head_losses(class_logits, box_deltas, classes, delta_targets, *, beta=1.0):
    """Softmax classification over sampled regions and smooth L1 on the true class's deltas.

    Girshick 2015 ("Fast R-CNN"), Eq. 1, as Mask R-CNN uses it: cross-entropy over the
    sampled regions (classes >= 0; -1 marks padding), box regression only on foreground
    regions with the deltas predicted for their ground-truth class, both normalised by the
    number of sampled regions.

    Args:
        class_logits: `(B, R, K)`.
        box_deltas: `(B, R, K, 4)` class-specific deltas.
        classes: `(B, R)` int32 targets, 0 background, -1 padding.
        delta_targets: `(B, R, 4)`.
        beta: smooth L1 transition point.

    Returns:
        `(classification_loss, box_loss)` float32 scalars.

    Example:
        >>> cls, box = box_head_losses(tf.zeros((1, 1, 2)), tf.zeros((1, 1, 2, 4)),
        ...                            tf.constant([[1]]), tf.zeros((1, 1, 4)))
        >>> round(float(cls), 4), float(box)
        (0.6931, 0.0)
    """
    sampled = classes >= 0
    count = _count(sampled)
    safe_classes = tf.maximum(classes, 0)
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=safe_classes, logits=tf.cast(class_logits, tf.float32)
    )
    classification = tf.reduce_sum(tf.where(sampled, cross_entropy, 0.0)) / count
    chosen = tf.gather(tf.cast(box_deltas, tf.float32), safe_classes, axis=2, batch_dims=2)
    box = tf.reduce_sum(smooth_l1(chosen - delta_targets, beta), axis=-1)
    box_loss = tf.reduce_sum(tf.where(classes > 0, box, 0.0)) / count
    return classification, box_loss


def mask_loss(mask_logits, classes, mask_targets):
    """Average per-pixel binary cross-entropy on the ground-truth class's mask only.

    He et al. 2017, Sec. 3: each foreground region's loss reads the sigmoid mask of its own
    class, so classes do not compete; background and padding regions contribute nothing.
    The result is the mean over all pixels of all foreground regions.

    Args:
        mask_logits: `(B, P, S, S, K)` logits.
        classes: `(B, P)` int32, the regions' ground-truth classes (<= 0 are skipped).
        mask_targets: `(B, P, S, S)` binary targets.

    Returns:
        A float32 scalar.

    Example:
        >>> float(mask_loss(tf.zeros((1, 1, 2, 2, 2)), tf.constant([[0]]), tf.ones((1, 1, 2, 2))))
        0.0
    """
    foreground = classes > 0
    logits = tf.transpose(tf.cast(mask_logits, tf.float32), (0, 1, 4, 2, 3))
    chosen = tf.gather(logits, tf.maximum(classes, 0), axis=2, batch_dims=2)
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(mask_targets, tf.float32), logits=chosen
    )
    per_region = tf.reduce_mean(per_pixel, axis=(2, 3))
    return tf.reduce_sum(tf.where(foreground, per_region, 0.0)) / _count(foreground)
