"""The base class of the per-pixel losses and its reduction: a weighted mean over counted pixels."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kseg.losses.pixels import pixel_sample_weight
from kseg.validation import validate_choice, validate_ignore_label

MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")
REDUCTIONS = MEAN_REDUCTIONS + ("sum", "none", None)


def per_class_weights(values, name):
    """Returns a non-empty list of finite, non-negative per-class weights as a tuple of floats."""
    values = [float(v) for v in values]
    if not values or any(not np.isfinite(v) or v < 0 for v in values):
        raise ValueError(
            f"`{name}` entries must be finite and non-negative. Received: {name}={values}"
        )
    return tuple(values)


def scale_for_replicas(loss):
    """Divides a replica's mean loss by the replica count, as Keras's own losses do.

    Keras sums gradients over replicas, so without this a mean loss would count once per replica.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


class PixelLoss(keras.losses.Loss):
    """Base of the kseg losses: reduces per-pixel terms to a mean over the counted pixels.

    A subclass's `_terms(y_true, y_pred)` returns per-pixel `(losses, normaliser)`; the default
    reduction is `sum(sample_weight * losses) / sum(sample_weight * normaliser)`, "sum" returns
    the numerator and "none" the weighted map. A loss reduced another way overrides `__call__`.

    Args:
        ignore_label: label value that contributes nothing, or None.
        from_logits: whether predictions are logits (True) or probabilities.
        check_labels: assert that every label is a class or the ignore label.
        reduction: a Keras reduction name.
        name: loss name.
        dtype: Keras loss dtype; the computation itself is always float32.
    """

    def __init__(self, ignore_label, from_logits, check_labels, reduction, name, dtype):
        super().__init__(
            name=name, reduction=validate_choice(reduction, "reduction", REDUCTIONS), dtype=dtype
        )
        self.ignore_label = validate_ignore_label(ignore_label)
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
                pixel_weight = pixel_sample_weight(sample_weight, losses)
                losses = losses * pixel_weight
                normaliser = normaliser * pixel_weight
            if self.reduction in (None, "none"):
                return losses
            total = ops.sum(losses)
            if self.reduction == "sum":
                return total
            # Dividing by the weight of the counted pixels, not by B*H*W, is the point of an
            # ignore label; an all-ignored batch gives 0 rather than NaN.
            return scale_for_replicas(ops.divide_no_nan(total, ops.sum(normaliser)))

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
