"""What EM-Adapt and EM-Fixed share: the E-step's input checks and the latent cross-entropy.

Papandreou, Chen, Murphy and Yuille, "Weakly- and Semi-Supervised Learning of a Deep
Convolutional Network for Semantic Image Segmentation", ICCV 2015, train DeepLab by
expectation-maximisation: the E-step turns the network's current scores plus class biases
into a latent segmentation (an argmax), the M-step is the ordinary pixel cross-entropy on it.
Here both steps run inside a Keras loss, so any kseg model trains with `model.compile(loss=...)`
and `model.fit`. `kseg.weak.em_adapt` (image-level tags) and `kseg.weak.em_fixed` (per-pixel
allowed classes from boxes, tags or full masks) each supply an E-step; `LatentCrossEntropy` is
the loss around it. The box pseudo-labels of the same paper (Bbox-Rect, Bbox-Seg) and EM-Fixed's
box maps are in `kseg.weak.box_labels`.

Label conventions are those of `kseg.weak`: class 0 is the background, 255 the ignore label,
boxes float `[y1, x1, y2, x2]` in pixels with pixel `(i, j)` covering `[i, i+1) x [j, j+1)`.
"""

import keras
import tensorflow as tf

from kseg.losses import SegmentationCrossEntropy, segmentation_cross_entropy
from kseg.validation import IGNORE_LABEL, validate_non_negative_int

# A finite stand-in for -inf: keeps differences and midpoints of suppressed scores finite.
SUPPRESSED_SCORE = -1e30


def validate_background_class(value, num_classes=None):
    """Returns a background class index, or None for a model without a background class.

    Args:
        value: an int >= 0, or None.
        num_classes: the model's number of classes K when known; the index must be below it.

    Returns:
        `int(value)`, or None.

    Example:
        >>> from kseg.weak.em_loss import validate_background_class
        >>> validate_background_class(np.int64(0), num_classes=3), validate_background_class(None)
        (0, None)
    """
    if value is None:
        return None
    value = validate_non_negative_int(value, "background_class")
    if num_classes is not None and value >= num_classes:
        raise ValueError(
            f"background_class={value} is not one of the model's {num_classes} classes"
        )
    return value


def check_class_count(y_true, logits, what):
    """Raises when the label encoding and the logits disagree on the number of classes K.

    Args:
        y_true: labels whose last axis has one entry per class.
        logits: `(..., K)` network scores.
        what: what the labels are, for the error message.
    """
    labelled, predicted = y_true.shape[-1], logits.shape[-1]
    if labelled is not None and predicted is not None and labelled != predicted:
        raise ValueError(
            f"{what} cover {labelled} classes (indices up to {labelled - 1}) but the model "
            f"predicts {predicted}: a tag or box names a class the model lacks. "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(logits.shape)}"
        )
    if predicted is not None and predicted > IGNORE_LABEL:
        raise ValueError(
            f"at most {IGNORE_LABEL} classes fit beside the ignore label {IGNORE_LABEL}. "
            f"Received: y_pred.shape={tuple(logits.shape)}"
        )


def checked_e_step_inputs(
    labels, logits, background_class, *, method, name, layout, description=None
):
    """`(labels, logits)` as tensors, float32 logits without gradient, after checking shapes.

    Args:
        labels: the weak labels of the E-step, laid out as `layout`.
        logits: `(B, H, W, K)` network scores.
        background_class: index of the background class, or None.
        method: the method's name, for error messages.
        name: the labels' argument name, for error messages.
        layout: the labels' expected axes, e.g. `"(B, K)"`.
        description: what the labels are, for error messages (default: `name`).

    Returns:
        `(labels, logits)`: the labels as a tensor and the logits as float32 without gradient.
    """
    description = description or name
    logits = tf.stop_gradient(tf.cast(tf.convert_to_tensor(logits), tf.float32))
    labels = tf.convert_to_tensor(labels)
    if logits.shape.rank != 4 or labels.shape.rank != len(layout.split(",")):
        raise ValueError(
            f"{method} takes {description} {layout} and logits (B, H, W, K). "
            f"Received: {name}.shape={tuple(labels.shape)}, logits.shape={tuple(logits.shape)}"
        )
    check_class_count(labels, logits, f"the {description}")
    validate_background_class(background_class, logits.shape[-1])
    return labels, logits


def class_vector(num_classes, background_class, foreground_value, background_value):
    """(K,) float32: `background_value` at the background class, `foreground_value` elsewhere.

    Args:
        num_classes: K.
        background_class: index of the background class, or None (every class foreground).
        foreground_value: value of the foreground classes.
        background_value: value of the background class.

    Returns:
        A float32 tensor `(K,)`.

    Example:
        >>> from kseg.weak.em_loss import class_vector
        >>> class_vector(3, 0, 0.2, 0.4).numpy().round(2).tolist()
        [0.4, 0.2, 0.2]
    """
    is_background = tf.equal(
        tf.range(num_classes), -1 if background_class is None else background_class
    )
    return tf.where(is_background, background_value, foreground_value)


def latent_cross_entropy(labels, logits):
    """The M-step per pixel: cross-entropy of the logits on latent labels, 0 where they are 255.

    Args:
        labels: int `(B, H, W)` latent labels, 255 where the E-step gave none.
        logits: `(B, H, W, K)` network scores.

    Returns:
        float32 `(B, H, W)` per-pixel losses, masked at the ignored pixels.

    Example:
        >>> from kseg.weak.em_loss import latent_cross_entropy
        >>> losses = latent_cross_entropy(np.array([[[0, 255]]]), np.zeros((1, 1, 2, 2), "float32"))
        >>> np.asarray(losses).round(4).tolist()  # -log(1/2), then nothing
        [[[0.6931, 0.0]]]
    """
    return segmentation_cross_entropy(labels, logits, ignore_label=IGNORE_LABEL, check_labels=False)


class LatentCrossEntropy(keras.losses.Loss):
    """Cross-entropy of the logits on latent labels computed from y_true and the logits.

    The base of `EMAdaptCrossEntropy` and `EMFixedCrossEntropy`: a subclass names its E-step
    function (`_latent_function`) and the attributes passed to it as keywords
    (`_latent_options`); those attributes are also its config.

    Args:
        reduction: as `kseg.losses.SegmentationCrossEntropy`.
        name: loss name.
        dtype: Keras loss dtype.
        background_class: index of the background class, or None.
    """

    _latent_function = None
    _latent_options = ()

    def __init__(self, reduction, name, dtype, background_class):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.background_class = validate_background_class(background_class)
        # The M-step is kseg's pixel cross-entropy, averaged over the pixels that got a label.
        self._cross_entropy = SegmentationCrossEntropy(
            ignore_label=IGNORE_LABEL, check_labels=False, reduction=reduction
        )

    def latent_labels(self, y_true, y_pred):
        """The E-step's latent segmentation `(B, H, W)` for labels y_true and logits y_pred."""
        options = {name: getattr(self, name) for name in self._latent_options}
        return type(self)._latent_function(y_true, y_pred, **options)

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in self._latent_options})
        config["dtype"] = self.dtype
        return config

    def call(self, y_true, y_pred):
        return latent_cross_entropy(self.latent_labels(y_true, y_pred), y_pred)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            labels = self.latent_labels(y_true, y_pred)
            return self._cross_entropy(labels, y_pred, sample_weight=sample_weight)
