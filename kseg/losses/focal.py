"""The multi-class focal loss of Lin et al. (ICCV 2017) for sparse labels, with an ignore label."""

import keras
import numpy as np
from keras import ops

from kseg.losses.pixel_loss import PixelLoss, per_class_weights
from kseg.losses.pixels import log_probabilities, masked_pixel_losses, pixel_inputs
from kseg.validation import IGNORE_LABEL


def _focal_terms(y_true, y_pred, gamma, alpha, ignore_label, from_logits, check_labels):
    """Per-pixel alpha_t (1 - p_t)^gamma (-log p_t), zero on ignored pixels, and the 0/1 weights."""
    num_classes = len(alpha) if isinstance(alpha, (list, tuple)) else None
    labels, y_pred, valid, out_of_range = pixel_inputs(
        y_true, y_pred, num_classes, ignore_label, check_labels, from_logits
    )
    log_p_true = ops.take_along_axis(
        log_probabilities(y_pred, from_logits), ops.expand_dims(labels, -1), axis=-1
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
    return masked_pixel_losses(losses, valid, out_of_range), ops.cast(valid, "float32")


@keras.saving.register_keras_serializable(package="kseg")
def focal_loss(
    y_true,
    y_pred,
    gamma=2.0,
    alpha=None,
    ignore_label=IGNORE_LABEL,
    from_logits=True,
    check_labels=True,
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
class FocalLoss(PixelLoss):
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
        ignore_label=IGNORE_LABEL,
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
            alpha = per_class_weights(alpha, "alpha")
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
