"""The softmax cross-entropy with an ignore label, class weights and label smoothing."""

import keras
from keras import ops

from kseg.losses.pixel_loss import PixelLoss, per_class_weights
from kseg.losses.pixels import log_probabilities, masked_pixel_losses, pixel_inputs
from kseg.validation import IGNORE_LABEL


def _cross_entropy_terms(
    y_true, y_pred, ignore_label, class_weights, from_logits, label_smoothing, check_labels
):
    """Per-pixel (weight * loss, weight) for the cross-entropy, zero on ignored pixels."""
    num_classes = None if class_weights is None else len(class_weights)
    labels, y_pred, valid, out_of_range = pixel_inputs(
        y_true, y_pred, num_classes, ignore_label, check_labels, from_logits
    )
    losses = ops.sparse_categorical_crossentropy(labels, y_pred, from_logits=from_logits)
    if label_smoothing:
        mean_nll = -ops.mean(log_probabilities(y_pred, from_logits), axis=-1)
        losses = (1.0 - label_smoothing) * losses + label_smoothing * mean_nll
    if class_weights is None:
        weights = ops.cast(valid, "float32")
    else:
        weights = ops.where(
            valid, ops.take(ops.convert_to_tensor(class_weights, "float32"), labels), 0.0
        )
    losses = masked_pixel_losses(weights * losses, valid, out_of_range)
    return losses, weights


@keras.saving.register_keras_serializable(package="kseg")
def segmentation_cross_entropy(
    y_true,
    y_pred,
    ignore_label=IGNORE_LABEL,
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
class SegmentationCrossEntropy(PixelLoss):
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
        check_labels: assert that every label is a class or the ignore label (see `kseg.losses`
            for XLA).
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
        ignore_label=IGNORE_LABEL,
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
            None if class_weights is None else per_class_weights(class_weights, "class_weights")
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
