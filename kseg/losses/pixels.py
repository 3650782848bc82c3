"""Per-pixel inputs of the losses: labels, their masks, weights and log-probabilities."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# Keras exports no public setter for the mask its losses read; its own
# sparse_categorical_crossentropy marks ignored pixels with this function.
from keras.src.backend.common.masking import set_keras_mask

from kseg.validation import IGNORE_LABEL


def squeeze_labels(y_true, y_pred):
    """Returns integer labels of shape `(B, H, W)` matching the scores `y_pred` `(B, H, W, C)`.

    Accepts labels of shape `(B, H, W)` or `(B, H, W, 1)` in any integer or float dtype
    (Keras hands labels to losses as floats). Spatial shapes are compared when both are
    known statically.

    Args:
        y_true: label tensor.
        y_pred: score tensor whose last axis holds the classes.

    Returns:
        An int32 tensor of rank `rank(y_pred) - 1`.

    Example:
        >>> import numpy as np, kseg.losses
        >>> labels = kseg.losses.squeeze_labels(np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 4, 3)))
        >>> tuple(labels.shape)
        (2, 4, 4)
    """
    y_true = ops.convert_to_tensor(y_true)
    pred_rank = len(y_pred.shape)
    if len(y_true.shape) == pred_rank and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    if len(y_true.shape) != pred_rank - 1:
        raise ValueError(
            "Labels must have shape (B, H, W) or (B, H, W, 1) for scores of shape (B, H, W, C). "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )
    for label_dim, pred_dim in zip(y_true.shape, y_pred.shape[:-1]):
        if label_dim is not None and pred_dim is not None and label_dim != pred_dim:
            raise ValueError(
                "Labels and scores disagree in batch or spatial size. "
                f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
            )
    if "int" not in keras.backend.standardize_dtype(y_true.dtype):
        # Rounding, not truncation, so a float label of 2.9999999 stays class 3.
        y_true = ops.round(y_true)
    return ops.cast(y_true, "int32")


def label_masks(labels, num_classes, ignore_label=IGNORE_LABEL, check_labels=True):
    """Splits integer labels into valid, ignored and out-of-range pixels, optionally asserting.

    With `check_labels=True`, a `tf.debugging.Assert` fails when some pixel is neither a class
    in `[0, num_classes)` nor `ignore_label`, naming the smallest and largest such values and
    their pixel count. XLA compilation drops the assertion (see `kseg.losses`).

    Args:
        labels: integer label tensor.
        num_classes: number of classes.
        ignore_label: label value to ignore, or None.
        check_labels: whether to add the assertion.

    Returns:
        `(valid, out_of_range)`: boolean tensors shaped like `labels`.

    Example:
        >>> import numpy as np, kseg.losses
        >>> valid, bad = kseg.losses.label_masks(np.array([0, 2, 255]), num_classes=3)
        >>> np.asarray(valid).tolist(), np.asarray(bad).tolist()
        ([True, True, False], [False, False, False])
    """
    labels = ops.cast(labels, "int32")
    in_range = ops.logical_and(ops.greater_equal(labels, 0), ops.less(labels, num_classes))
    if ignore_label is None:
        valid = in_range
        out_of_range = ops.logical_not(in_range)
    else:
        not_ignored = ops.not_equal(labels, ignore_label)
        valid = ops.logical_and(in_range, not_ignored)
        out_of_range = ops.logical_and(ops.logical_not(in_range), not_ignored)
    if check_labels:
        int_max, int_min = np.iinfo(np.int32).max, np.iinfo(np.int32).min
        smallest = ops.min(ops.where(out_of_range, labels, int_max))
        largest = ops.max(ops.where(out_of_range, labels, int_min))
        count = ops.sum(ops.cast(out_of_range, "int32"))
        message = (
            f"Found label values outside [0, {num_classes}) that are not "
            f"ignore_label={ignore_label}: smallest and largest offending values"
        )
        tf.debugging.Assert(
            ops.equal(count, 0),
            [
                message,
                smallest,
                largest,
                "in this many pixels",
                count,
            ],
        )
    return valid, out_of_range


def pixel_sample_weight(sample_weight, labels, dtype="float32"):
    """Broadcasts a per-image `(B,)` or per-pixel `(B, H, W[, 1])` weight to the label shape.

    Args:
        sample_weight: per-image or per-pixel weights.
        labels: label tensor `(B, H, W)` whose shape the weights take.
        dtype: dtype to cast the weights to, or None to keep theirs.

    Returns:
        The weights broadcast to `labels.shape`.

    Example:
        >>> weights = kseg.losses.pixel_sample_weight([1.0, 2.0], np.zeros((2, 1, 3)))
        >>> np.asarray(weights).tolist()
        [[[1.0, 1.0, 1.0]], [[2.0, 2.0, 2.0]]]
    """
    sample_weight = ops.convert_to_tensor(sample_weight)
    if dtype is not None:
        sample_weight = ops.cast(sample_weight, dtype)
    rank = len(labels.shape)
    if len(sample_weight.shape) == rank + 1 and sample_weight.shape[-1] == 1:
        sample_weight = ops.squeeze(sample_weight, axis=-1)
    while 0 < len(sample_weight.shape) < rank:
        sample_weight = ops.expand_dims(sample_weight, axis=-1)
    return ops.broadcast_to(sample_weight, ops.shape(labels))


def pixel_inputs(y_true, y_pred, num_classes, ignore_label, check_labels, from_logits):
    """float32 scores and labels with ignored and out-of-range pixels replaced by harmless values.

    Args:
        y_true: labels `(B, H, W)` or `(B, H, W, 1)`.
        y_pred: scores `(B, H, W, C)`.
        num_classes: C, checked against `y_pred`, or None to take it from `y_pred`.
        ignore_label: label value to ignore, or None.
        check_labels: whether to assert that every label is a class or the ignore label.
        from_logits: whether `y_pred` holds logits (replaced by 0) or probabilities (by 1).

    Returns:
        `(labels, y_pred, valid, out_of_range)`: int32 labels with 0 where not valid, float32
        scores, and the two boolean masks of `label_masks`.
    """
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    labels = squeeze_labels(y_true, y_pred)
    if num_classes is None:
        num_classes = y_pred.shape[-1]
    elif y_pred.shape[-1] is not None and y_pred.shape[-1] != num_classes:
        raise ValueError(
            f"y_pred has {y_pred.shape[-1]} channels but num_classes={num_classes}. "
            f"Received: y_pred.shape={tuple(y_pred.shape)}"
        )
    valid, out_of_range = label_masks(labels, num_classes, ignore_label, check_labels)
    # Overwriting the scores of pixels that do not count keeps an inf or NaN there out of the
    # gradient: `where` sends zero gradient to the unselected branch, but NaN * 0 is NaN. Equal
    # logits or equal unnormalised probabilities are finite under every later operation.
    y_pred = ops.where(ops.expand_dims(valid, -1), y_pred, 0.0 if from_logits else 1.0)
    labels = ops.where(valid, labels, 0)
    return labels, y_pred, valid, out_of_range


def masked_pixel_losses(losses, valid, out_of_range):
    """Zeroes ignored pixels, poisons out-of-range ones with NaN and attaches the Keras mask.

    Args:
        losses: per-pixel losses `(B, H, W)`.
        valid: boolean mask of the counted pixels.
        out_of_range: boolean mask of the pixels with an invalid label.

    Returns:
        The losses, carrying a Keras mask that leaves the ignored pixels out of Keras's mean.
    """
    losses = ops.where(valid, losses, 0.0)
    losses = ops.where(out_of_range, float("nan"), losses)
    set_keras_mask(losses, ops.logical_or(valid, out_of_range))
    return losses


def log_probabilities(y_pred, from_logits):
    """Log-softmax of logits, or the log of normalised probabilities clipped at Keras's epsilon.

    Args:
        y_pred: scores `(..., C)`.
        from_logits: whether `y_pred` holds logits.

    Returns:
        Log-probabilities shaped like `y_pred`.
    """
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    probabilities = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
    return ops.log(ops.clip(probabilities, keras.backend.epsilon(), 1.0))
