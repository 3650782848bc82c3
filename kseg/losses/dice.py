"""The soft multi-class Dice loss (Milletari et al., 3DV 2016) with an ignore label."""

import keras
import numpy as np
from keras import ops

from kseg.losses.pixel_loss import MEAN_REDUCTIONS, PixelLoss, scale_for_replicas
from kseg.losses.pixels import pixel_inputs, pixel_sample_weight
from kseg.validation import IGNORE_LABEL, validate_num_classes


@keras.saving.register_keras_serializable(package="kseg")
def dice_loss(
    y_true,
    y_pred,
    num_classes,
    ignore_label=IGNORE_LABEL,
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
    labels, y_pred, valid, out_of_range = pixel_inputs(
        y_true, y_pred, num_classes, ignore_label, check_labels, from_logits
    )
    probabilities = ops.softmax(y_pred, axis=-1) if from_logits else y_pred
    weights = ops.cast(valid, "float32")
    if sample_weight is not None:
        weights = weights * pixel_sample_weight(sample_weight, labels)
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


@keras.saving.register_keras_serializable(package="kseg")
class DiceLoss(PixelLoss):
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
        ignore_label=IGNORE_LABEL,
        smooth=1.0,
        from_logits=True,
        check_labels=True,
        reduction="sum_over_batch_size",
        name="dice_loss",
        dtype=None,
    ):
        super().__init__(ignore_label, from_logits, check_labels, reduction, name, dtype)
        self.num_classes = validate_num_classes(num_classes)
        if not np.isfinite(smooth) or smooth < 0:
            raise ValueError(f"`smooth` must be finite and >= 0. Received: smooth={smooth}")
        self.smooth = float(smooth)

    def _dice(self, y_true, y_pred, sample_weight=None):
        return dice_loss(
            y_true,
            y_pred,
            self.num_classes,
            self.ignore_label,
            self.smooth,
            self.from_logits,
            self.check_labels,
            sample_weight=sample_weight,
        )

    def call(self, y_true, y_pred):
        return self._dice(y_true, y_pred)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            loss = self._dice(y_true, y_pred, sample_weight)
            if self.reduction in MEAN_REDUCTIONS:
                loss = scale_for_replicas(loss)
            return loss

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "smooth": self.smooth})
        return config
