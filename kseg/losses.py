"""Segmentation losses on integer masks with an ignore label: cross-entropy, soft Dice, focal.

Every loss here takes integer masks `y_true` of shape `(B, H, W)` or `(B, H, W, 1)` and
per-pixel scores `y_pred` of shape `(B, H, W, C)` (logits by default), computes in float32
whatever the scores' dtype (so `mixed_bfloat16` and `mixed_float16` models are safe), and
honours `ignore_label` (255 by default, `None` for none): an ignored pixel contributes to
neither the numerator nor the denominator of any loss, and its scores, however large, have
no effect on the value or the gradient.

Each loss comes in Keras's two forms: a function returning per-pixel values (usable as
`model.compile(loss=fn)`), and a registered `keras.losses.Loss` class with a complete
`get_config` that applies the normalisation described in its docstring.

A label that is neither in `[0, num_classes)` nor the ignore label is an error, not a silent
miscount. With `check_labels=True` (the default) a `tf.debugging.Assert` raises an
`InvalidArgumentError` naming the smallest and largest offending values and how many pixels
carry them. XLA drops assertions, and Keras compiles `fit`/`evaluate` with XLA by default
(`jit_compile="auto"`), so independently of `check_labels` every offending pixel also gets a
NaN loss: under XLA the loss turns NaN (which `keras.callbacks.TerminateOnNaN` catches)
instead of training on garbage. Compile with `jit_compile=False` to get the named error.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# Keras exports no public setter for the mask its losses read; its own
# sparse_categorical_crossentropy marks ignored pixels with this function.
from keras.src.backend.common.masking import set_keras_mask

_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")
_REDUCTIONS = _MEAN_REDUCTIONS + ("sum", "none", None)


def _validate_ignore_label(ignore_label):
    if ignore_label is not None and (
        isinstance(ignore_label, bool) or not isinstance(ignore_label, (int, np.integer))
    ):
        raise ValueError(
            f"`ignore_label` must be an integer or None. Received: ignore_label={ignore_label!r}"
        )
    return None if ignore_label is None else int(ignore_label)


def _validate_num_classes(num_classes):
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(
            f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}"
        )
    return int(num_classes)


def _validate_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"`reduction` must be one of {_REDUCTIONS}. Received: reduction={reduction!r}"
        )
    return reduction


def _per_class_vector(values, arg_name):
    """Checks a per-class weight list and returns it as a tuple of floats."""
    values = [float(v) for v in values]
    if not values or any(not np.isfinite(v) or v < 0 for v in values):
        raise ValueError(
            f"`{arg_name}` entries must be finite and non-negative. Received: {arg_name}={values}"
        )
    return tuple(values)


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


def label_masks(labels, num_classes, ignore_label=255, check_labels=True):
    """Splits integer labels into valid, ignored and out-of-range pixels, optionally asserting.

    With `check_labels=True`, a `tf.debugging.Assert` fails when some pixel is neither a class
    in `[0, num_classes)` nor `ignore_label`, naming the smallest and largest such values and
    their pixel count. XLA compilation drops the assertion (see the module docstring).

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


def _pixel_sample_weight(sample_weight, labels, dtype="float32"):
    """Broadcasts a per-image `(B,)` or per-pixel `(B, H, W[, 1])` weight to the label shape."""
    sample_weight = ops.convert_to_tensor(sample_weight)
    if dtype is not None:
        sample_weight = ops.cast(sample_weight, dtype)
    rank = len(labels.shape)
    if len(sample_weight.shape) == rank + 1 and sample_weight.shape[-1] == 1:
        sample_weight = ops.squeeze(sample_weight, axis=-1)
    while 0 < len(sample_weight.shape) < rank:
        sample_weight = ops.expand_dims(sample_weight, axis=-1)
    return ops.broadcast_to(sample_weight, ops.shape(labels))


def _scale_for_replicas(loss):
    # Keras sums gradients over replicas, so each replica's mean loss is divided by their count,
    # as Keras's own losses do.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


def _safe_inputs(y_true, y_pred, num_classes, ignore_label, check_labels, from_logits):
    """float32 scores and labels with ignored/out-of-range pixels replaced by harmless values."""
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


def _finish_pixel_losses(losses, valid, out_of_range):
    """Zeroes ignored pixels, poisons out-of-range ones with NaN and attaches the Keras mask."""
    losses = ops.where(valid, losses, 0.0)
    losses = ops.where(out_of_range, float("nan"), losses)
    set_keras_mask(losses, ops.logical_or(valid, out_of_range))
    return losses


def _log_probabilities(y_pred, from_logits):
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    probabilities = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
    return ops.log(ops.clip(probabilities, keras.backend.epsilon(), 1.0))


def _cross_entropy_terms(
    y_true, y_pred, ignore_label, class_weights, from_logits, label_smoothing, check_labels
):
    """Per-pixel (weight * loss, weight) for the cross-entropy, zero on ignored pixels."""
    num_classes = None if class_weights is None else len(class_weights)
    labels, y_pred, valid, out_of_range = _safe_inputs(
        y_true, y_pred, num_classes, ignore_label, check_labels, from_logits
    )
    losses = ops.sparse_categorical_crossentropy(labels, y_pred, from_logits=from_logits)
    if label_smoothing:
        mean_nll = -ops.mean(_log_probabilities(y_pred, from_logits), axis=-1)
        losses = (1.0 - label_smoothing) * losses + label_smoothing * mean_nll
    if class_weights is None:
        weights = ops.cast(valid, "float32")
    else:
        weights = ops.where(
            valid, ops.take(ops.convert_to_tensor(class_weights, "float32"), labels), 0.0
        )
    losses = _finish_pixel_losses(weights * losses, valid, out_of_range)
    return losses, weights


def _focal_terms(y_true, y_pred, gamma, alpha, ignore_label, from_logits, check_labels):
    """Per-pixel alpha_t (1 - p_t)^gamma (-log p_t), zero on ignored pixels, and the 0/1 weights."""
    num_classes = len(alpha) if isinstance(alpha, (list, tuple)) else None
    labels, y_pred, valid, out_of_range = _safe_inputs(
        y_true, y_pred, num_classes, ignore_label, check_labels, from_logits
    )
    log_p_true = ops.take_along_axis(
        _log_probabilities(y_pred, from_logits), ops.expand_dims(labels, -1), axis=-1
    )[..., 0]
    # 1 - p_t via expm1 keeps precision when p_t is close to 1, where the focal term matters.
    one_minus_p = ops.maximum(-ops.expm1(log_p_true), 0.0)
    if gamma == 0:
        modulation = ops.ones_like(one_minus_p)
    else:
        # The power's gradient is infinite at 0 for gamma < 1; evaluate it away from 0 instead.
        positive = ops.greater(one_minus_p, 0.0)
        modulation = ops.where(
            positive, ops.power(ops.where(positive, one_minus_p, 1.0), gamma), 0.0
        )
    losses = -modulation * log_p_true
    if isinstance(alpha, (list, tuple)):
        losses = losses * ops.take(ops.convert_to_tensor(alpha, "float32"), labels)
    elif alpha is not None:
        losses = losses * alpha
    return _finish_pixel_losses(losses, valid, out_of_range), ops.cast(valid, "float32")


@keras.saving.register_keras_serializable(package="kseg")
def segmentation_cross_entropy(
    y_true,
    y_pred,
    ignore_label=255,
    class_weights=None,
    from_logits=True,
    label_smoothing=0.0,
    check_labels=True,
):
    """Per-pixel softmax cross-entropy with an ignore label and optional class weights.

    The pixel loss is `w[y] * ((1 - s) * (-log p_y) + s * mean_c(-log p_c))` with label
    smoothing `s` (the same targets as `keras.losses.CategoricalCrossentropy(label_smoothing=s)`),
    `w[y] = class_weights[y]` or 1. Ignored pixels get 0 and are left out of the returned Keras
    mask, so `model.compile(loss=kseg.losses.segmentation_cross_entropy)` averages over
    non-ignored pixels; `SegmentationCrossEntropy` additionally divides by the summed class
    weights rather than the pixel count.

    Args:
        y_true: integer labels `(B, H, W)` or `(B, H, W, 1)`.
        y_pred: scores `(B, H, W, C)`, logits unless `from_logits=False`.
        ignore_label: label value that contributes nothing, or None.
        class_weights: optional sequence of C non-negative weights.
        from_logits: whether `y_pred` holds logits (True) or probabilities.
        label_smoothing: smoothing factor in `[0, 1)`.
        check_labels: assert that every label is a class or the ignore label.

    Returns:
        float32 tensor `(B, H, W)` of per-pixel losses, 0 at ignored pixels and NaN at
        out-of-range labels.

    Example:
        >>> import numpy as np, kseg.losses
        >>> labels = np.array([[[0, 255]]])
        >>> logits = np.zeros((1, 1, 2, 3), "float32")
        >>> losses = kseg.losses.segmentation_cross_entropy(labels, logits)
        >>> [round(float(value), 4) for value in losses[0, 0]]
        [1.0986, 0.0]
    """
    return _cross_entropy_terms(
        y_true, y_pred, ignore_label, class_weights, from_logits, label_smoothing, check_labels
    )[0]


@keras.saving.register_keras_serializable(package="kseg")
def focal_loss(
    y_true, y_pred, gamma=2.0, alpha=None, ignore_label=255, from_logits=True, check_labels=True
):
    """Per-pixel multi-class focal loss for sparse labels, with an ignore label.

    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017: `FL = -alpha_t (1 - p_t)^gamma
    log p_t`, where `p_t` is the softmax probability of the true class. `gamma = 0` and no
    `alpha` give the cross-entropy. Unlike `keras.losses.categorical_focal_crossentropy`, this
    takes integer labels, needs no one-hot tensor, and works from `log_softmax` instead of
    clipped probabilities, so confidently wrong pixels keep their gradient.

    Args:
        y_true: integer labels `(B, H, W)` or `(B, H, W, 1)`.
        y_pred: scores `(B, H, W, C)`, logits unless `from_logits=False`.
        gamma: focusing parameter, >= 0 (2 in the paper).
        alpha: None, a scalar factor, or a sequence of C per-class factors `alpha_t`.
        ignore_label: label value that contributes nothing, or None.
        from_logits: whether `y_pred` holds logits (True) or probabilities.
        check_labels: assert that every label is a class or the ignore label.

    Returns:
        float32 tensor `(B, H, W)`, 0 at ignored pixels and NaN at out-of-range labels.

    Example:
        >>> import numpy as np, kseg.losses
        >>> logits = np.log(np.array([[[[0.5, 0.5]]]], "float32"))
        >>> round(float(kseg.losses.focal_loss(np.array([[[0]]]), logits)[0, 0, 0]), 4)
        0.1733
    """
    return _focal_terms(y_true, y_pred, gamma, alpha, ignore_label, from_logits, check_labels)[0]


@keras.saving.register_keras_serializable(package="kseg")
def dice_loss(
    y_true,
    y_pred,
    num_classes,
    ignore_label=255,
    smooth=1.0,
    from_logits=True,
    check_labels=True,
    sample_weight=None,
):
    """Soft multi-class Dice loss over a batch, with ignored pixels masked out.

    Milletari et al., "V-Net", 3DV 2016, extended to C classes by averaging: with `p` the
    softmax probabilities and `g` the one-hot labels, both restricted to non-ignored pixels,
    `dice_c = (2 sum(p_c g_c) + smooth) / (sum(p_c) + sum(g_c) + smooth)` summed over the whole
    batch and image, and the loss is `1 - mean_c dice_c` over all C classes. With `smooth > 0`
    a class absent from the labels scores near 1 when it is also barely predicted, and pushes
    its probabilities down otherwise.

    Args:
        y_true: integer labels `(B, H, W)` or `(B, H, W, 1)`.
        y_pred: scores `(B, H, W, C)`, logits unless `from_logits=False`.
        num_classes: C; must match the last axis of `y_pred`.
        ignore_label: label value that contributes nothing, or None.
        smooth: additive smoothing, >= 0.
        from_logits: whether `y_pred` holds logits (True) or probabilities.
        check_labels: assert that every label is a class or the ignore label.
        sample_weight: optional per-image `(B,)` or per-pixel weights scaling each pixel's counts.

    Returns:
        float32 scalar, NaN if some label is out of range.

    Example:
        >>> import numpy as np, kseg.losses
        >>> logits = np.array([[[[9.0, -9.0], [-9.0, 9.0]]]], "float32")
        >>> round(float(kseg.losses.dice_loss(np.array([[[0, 1]]]), logits, num_classes=2)), 3)
        0.0
    """
    labels, y_pred, valid, out_of_range = _safe_inputs(
        y_true, y_pred, num_classes, ignore_label, check_labels, from_logits
    )
    probabilities = ops.softmax(y_pred, axis=-1) if from_logits else y_pred
    weights = ops.cast(valid, "float32")
    if sample_weight is not None:
        weights = weights * _pixel_sample_weight(sample_weight, labels)
    weights = ops.expand_dims(weights, -1)
    one_hot = ops.one_hot(labels, num_classes, dtype="float32")
    reduce_axes = tuple(range(len(y_pred.shape) - 1))
    intersection = ops.sum(weights * probabilities * one_hot, axis=reduce_axes)
    total = ops.sum(weights * (probabilities + one_hot), axis=reduce_axes)
    # Only reachable with smooth=0: a class neither present nor predicted is a perfect match.
    dice = ops.where(
        ops.greater(total + smooth, 0.0), (2.0 * intersection + smooth) / (total + smooth), 1.0
    )
    loss = 1.0 - ops.mean(dice)
    return ops.where(ops.any(out_of_range), float("nan"), loss)


class _PixelLoss(keras.losses.Loss):
    """Reduces per-pixel terms as sum(sample_weight * loss) / sum(sample_weight * normaliser)."""

    def __init__(self, ignore_label, from_logits, check_labels, reduction, name, dtype):
        super().__init__(name=name, reduction=_validate_reduction(reduction), dtype=dtype)
        self.ignore_label = _validate_ignore_label(ignore_label)
        self.from_logits = bool(from_logits)
        self.check_labels = bool(check_labels)

    def _terms(self, y_true, y_pred):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        return self._terms(y_true, y_pred)[0]

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            losses, normaliser = self._terms(y_true, y_pred)
            if sample_weight is not None:
                pixel_weight = _pixel_sample_weight(sample_weight, losses)
                losses = losses * pixel_weight
                normaliser = normaliser * pixel_weight
            if self.reduction in (None, "none"):
                return losses
            total = ops.sum(losses)
            if self.reduction == "sum":
                return total
            # Dividing by the weight of the counted pixels, not by B*H*W, is the point of an
            # ignore label; an all-ignored batch gives 0 rather than NaN.
            return _scale_for_replicas(ops.divide_no_nan(total, ops.sum(normaliser)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "ignore_label": self.ignore_label,
                "from_logits": self.from_logits,
                "check_labels": self.check_labels,
                "dtype": self.dtype,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class SegmentationCrossEntropy(_PixelLoss):
    """Softmax cross-entropy averaged over non-ignored pixels, with optional class weights.

    Normalisation follows PyTorch's `CrossEntropyLoss(weight=w, ignore_index=i)`: with the
    default reduction the loss is `sum_i w[y_i] ce_i / sum_i w[y_i]` over non-ignored pixels
    i of the whole batch, a weighted mean (plain mean over non-ignored pixels when
    `class_weights` is None), and 0 for a batch with no counted pixel. A `sample_weight`
    (per image `(B,)` or per pixel) multiplies both sums. With label smoothing the pixel loss
    is smoothed as in `segmentation_cross_entropy` and then weighted by `w[y_i]`; PyTorch
    instead weights the smoothing term's classes individually, so the two differ when both
    options are set. `reduction="sum"` returns the numerator, `"none"` the weighted pixel map.

    Args:
        ignore_label: label value that contributes nothing, or None.
        class_weights: optional sequence of C non-negative weights.
        from_logits: whether predictions are logits (True) or probabilities.
        label_smoothing: smoothing factor in `[0, 1)`.
        check_labels: assert that every label is a class or the ignore label (see the module
            docstring for XLA).
        reduction: "sum_over_batch_size" (weighted mean, also "mean" and
            "mean_with_sample_weight"), "sum", or "none".
        name: loss name.
        dtype: Keras loss dtype; the computation itself is always float32.

    Returns:
        A `keras.losses.Loss`; calling it gives a float32 scalar (or map for "none").

    Example:
        >>> import numpy as np, kseg.losses
        >>> loss = kseg.losses.SegmentationCrossEntropy(class_weights=[1.0, 3.0])
        >>> logits = np.array([[[[2.0, 0.0], [2.0, 0.0], [5.0, 5.0]]]], "float32")
        >>> round(float(loss(np.array([[[0, 1, 255]]]), logits)), 4)  # (0.1269 + 3 * 2.1269) / 4
        1.6269
    """

    def __init__(
        self,
        ignore_label=255,
        class_weights=None,
        from_logits=True,
        label_smoothing=0.0,
        check_labels=True,
        reduction="sum_over_batch_size",
        name="segmentation_cross_entropy",
        dtype=None,
    ):
        super().__init__(ignore_label, from_logits, check_labels, reduction, name, dtype)
        self.class_weights = (
            None if class_weights is None else _per_class_vector(class_weights, "class_weights")
        )
        if self.class_weights is not None and sum(self.class_weights) == 0:
            raise ValueError(
                f"`class_weights` must not all be 0. Received: class_weights={class_weights}"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing}"
            )
        self.label_smoothing = float(label_smoothing)

    def _terms(self, y_true, y_pred):
        return _cross_entropy_terms(
            y_true,
            y_pred,
            self.ignore_label,
            self.class_weights,
            self.from_logits,
            self.label_smoothing,
            self.check_labels,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "class_weights": None if self.class_weights is None else list(self.class_weights),
                "label_smoothing": self.label_smoothing,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class FocalLoss(_PixelLoss):
    """Multi-class focal loss (Lin et al. 2017) for sparse labels, averaged over non-ignored pixels.

    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017. The pixel loss is
    `-alpha_t (1 - p_t)^gamma log p_t` (see `focal_loss`); the default reduction divides the
    sum by the number of non-ignored pixels (times any `sample_weight`), not by the sum of
    `alpha_t`: alpha rescales classes the way the paper's alpha balances foreground and
    background, and a scalar alpha simply scales the loss, as in
    `keras.losses.CategoricalFocalCrossentropy`.

    Args:
        gamma: focusing parameter, >= 0.
        alpha: None, a scalar factor, or a sequence of C per-class factors.
        ignore_label: label value that contributes nothing, or None.
        from_logits: whether predictions are logits (True) or probabilities.
        check_labels: assert that every label is a class or the ignore label.
        reduction: "sum_over_batch_size" (mean over counted pixels), "sum", or "none".
        name: loss name.
        dtype: Keras loss dtype; the computation itself is always float32.

    Returns:
        A `keras.losses.Loss`; calling it gives a float32 scalar (or map for "none").

    Example:
        >>> import numpy as np, kseg.losses
        >>> loss = kseg.losses.FocalLoss(gamma=2.0)
        >>> logits = np.log(np.array([[[[0.5, 0.5], [0.9, 0.1]]]], "float32"))
        >>> round(float(loss(np.array([[[0, 255]]]), logits)), 4)
        0.1733
    """

    def __init__(
        self,
        gamma=2.0,
        alpha=None,
        ignore_label=255,
        from_logits=True,
        check_labels=True,
        reduction="sum_over_batch_size",
        name="focal_loss",
        dtype=None,
    ):
        super().__init__(ignore_label, from_logits, check_labels, reduction, name, dtype)
        if not np.isfinite(gamma) or gamma < 0:
            raise ValueError(f"`gamma` must be finite and >= 0. Received: gamma={gamma}")
        self.gamma = float(gamma)
        if isinstance(alpha, (list, tuple, np.ndarray)):
            alpha = _per_class_vector(alpha, "alpha")
        elif alpha is not None:
            if not np.isfinite(alpha) or alpha < 0:
                raise ValueError(
                    f"`alpha` must be None, a non-negative number or a per-class list. "
                    f"Received: alpha={alpha}"
                )
            alpha = float(alpha)
        self.alpha = alpha

    def _terms(self, y_true, y_pred):
        return _focal_terms(
            y_true,
            y_pred,
            self.gamma,
            self.alpha,
            self.ignore_label,
            self.from_logits,
            self.check_labels,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "gamma": self.gamma,
                "alpha": list(self.alpha) if isinstance(self.alpha, tuple) else self.alpha,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class DiceLoss(keras.losses.Loss):
    """Soft multi-class Dice loss on softmax probabilities, ignored pixels masked out.

    Milletari et al., "V-Net", 3DV 2016; see `dice_loss` for the formula. The Dice ratios are
    taken over the whole batch (as segmentation_models.pytorch and nnU-Net's "batch Dice" do),
    so the loss is one scalar per batch and `reduction` has no effect on its value; it is kept
    for Keras compatibility. A `sample_weight` scales each pixel's contribution to the counts.

    Args:
        num_classes: number of classes C.
        ignore_label: label value that contributes nothing, or None.
        smooth: additive smoothing, >= 0 (1 by default; with 0 a class that is neither
            labelled nor predicted, whose ratio is 0/0, counts as Dice 1).
        from_logits: whether predictions are logits (True) or probabilities.
        check_labels: assert that every label is a class or the ignore label.
        reduction: accepted for Keras compatibility; any value gives the batch Dice loss.
        name: loss name.
        dtype: Keras loss dtype; the computation itself is always float32.

    Returns:
        A `keras.losses.Loss`; calling it gives a float32 scalar in `[0, 1]`.

    Example:
        >>> import numpy as np, kseg.losses
        >>> loss = kseg.losses.DiceLoss(num_classes=2, smooth=0.0)
        >>> probabilities = np.array([[[[0.75, 0.25], [0.25, 0.75]]]], "float32")
        >>> # 1 - (1.5 / 1.75 + 0 / 0.25) / 2
        >>> round(float(loss(np.array([[[0, 255]]]), np.log(probabilities))), 4)
        0.5714
    """

    def __init__(
        self,
        num_classes,
        ignore_label=255,
        smooth=1.0,
        from_logits=True,
        check_labels=True,
        reduction="sum_over_batch_size",
        name="dice_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=_validate_reduction(reduction), dtype=dtype)
        self.num_classes = _validate_num_classes(num_classes)
        self.ignore_label = _validate_ignore_label(ignore_label)
        if not np.isfinite(smooth) or smooth < 0:
            raise ValueError(f"`smooth` must be finite and >= 0. Received: smooth={smooth}")
        self.smooth = float(smooth)
        self.from_logits = bool(from_logits)
        self.check_labels = bool(check_labels)

    def call(self, y_true, y_pred):
        return dice_loss(
            y_true,
            y_pred,
            self.num_classes,
            self.ignore_label,
            self.smooth,
            self.from_logits,
            self.check_labels,
        )

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            loss = dice_loss(
                y_true,
                y_pred,
                self.num_classes,
                self.ignore_label,
                self.smooth,
                self.from_logits,
                self.check_labels,
                sample_weight=sample_weight,
            )
            if self.reduction in _MEAN_REDUCTIONS:
                loss = _scale_for_replicas(loss)
            return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "ignore_label": self.ignore_label,
                "smooth": self.smooth,
                "from_logits": self.from_logits,
                "check_labels": self.check_labels,
                "dtype": self.dtype,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class CombinedLoss(keras.losses.Loss):
    """Weighted sum of several losses, e.g. cross-entropy plus Dice.

    Each member is called with the same `y_true`, `y_pred` and `sample_weight` and keeps its
    own normalisation; the result is `sum_k weights[k] * loss_k`.

    Args:
        losses: list of `keras.losses.Loss` instances (or names Keras can resolve).
        weights: optional list of floats, one per loss (default all 1).
        name: loss name.
        dtype: Keras loss dtype.

    Returns:
        A `keras.losses.Loss` giving a float32 scalar.

    Example:
        >>> import numpy as np, kseg.losses
        >>> loss = kseg.losses.CombinedLoss(
        ...     [kseg.losses.SegmentationCrossEntropy(), kseg.losses.DiceLoss(num_classes=3)],
        ...     [1.0, 0.5])
        >>> float(loss(np.zeros((1, 4, 4), "int32"), np.zeros((1, 4, 4, 3), "float32"))) > 0
        True
    """

    def __init__(self, losses, weights=None, name="combined_loss", dtype=None):
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)
        if not isinstance(losses, (list, tuple)) or not losses:
            raise ValueError(
                f"`losses` must be a non-empty list of losses. Received: losses={losses!r}"
            )
        self.losses = [keras.losses.get(loss) for loss in losses]
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses):
            raise ValueError(
                f"`weights` needs one entry per loss ({len(losses)}). Received: weights={weights}"
            )
        self.weights = weights

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            total = 0.0
            for weight, loss in zip(self.weights, self.losses):
                total = total + weight * ops.cast(
                    loss(y_true, y_pred, sample_weight=sample_weight), "float32"
                )
            return total

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        config.update(
            {
                "losses": [keras.losses.serialize(loss) for loss in self.losses],
                "weights": list(self.weights),
                "dtype": self.dtype,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["losses"] = [keras.losses.deserialize(loss) for loss in config["losses"]]
        return cls(**config)
