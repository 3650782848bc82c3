"""Segmentation metrics with an ignore label: mean IoU, per-class IoU, pixel accuracy.

The Keras metrics here take integer masks `y_true` `(B, H, W)` or `(B, H, W, 1)` and, by default,
per-pixel scores `y_pred` `(B, H, W, C)` (logits or probabilities, reduced by argmax in any dtype),
so they go straight into `model.compile(metrics=[...])` beside a logits model. Pixels labelled
`ignore_label` (255 by default, `None` for none) count nowhere. IoU metrics accumulate an int64
confusion matrix (rows: true class, columns: predicted class), exact for any dataset size.

`confusion_matrix_scores` turns such a matrix into the usual table (per-class IoU, mIoU, pixel
accuracy, mean class accuracy, frequency-weighted IoU) for an evaluation report, following
Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015, section 5.

Labels outside `[0, num_classes)` that are not the ignore label are reported by a
`tf.debugging.Assert` when `check_labels=True` (see `kseg.losses`); XLA drops assertions, and
then such pixels are left out, as `keras.metrics.MeanIoU` does, while the kseg losses of the
same compiled step turn NaN.
"""

import re

import keras
import numpy as np
from keras import ops

from kseg import validation
from kseg.losses import pixels


def confusion_matrix_scores(confusion):
    """Per-class IoU, mIoU, pixel and mean accuracy, frequency-weighted IoU of a confusion matrix.

    Definitions of Long et al., CVPR 2015, section 5, with `n[i, j]` the number of pixels of true
    class i predicted as j, `t_i = sum_j n[i, j]`: pixel accuracy `sum_i n[i, i] / sum_i t_i`,
    class accuracy `n[i, i] / t_i`, IoU `n[i, i] / (t_i + sum_j n[j, i] - n[i, i])`,
    frequency-weighted IoU `sum_i t_i IoU_i / sum_i t_i`. A class absent from both labels and
    predictions has IoU NaN and is left out of the mean IoU (a class predicted but never
    labelled has IoU 0 and counts); a class never labelled has class accuracy NaN.

    A mean over fewer classes than the model has can read perfect when it is not (a binary
    run whose foreground was all ignored scores mean IoU 1.0 on the background alone), so the
    classes the mean covers and those it leaves out are returned with it, for reports to show
    beside the number.

    Args:
        confusion: square array `(C, C)`, rows true classes, columns predicted classes, e.g.
            `kseg.metrics.MeanIoU(...).total_cm`.

    Returns:
        dict with float64 numpy arrays `"iou"` and `"class_accuracy"` of shape `(C,)`, floats
        `"mean_iou"`, `"pixel_accuracy"`, `"mean_accuracy"`, `"frequency_weighted_iou"` (NaN
        when the matrix is empty), and lists of class ids `"present_classes"` (labelled or
        predicted somewhere: the classes the mean IoU averages) and `"absent_classes"` (neither
        labelled nor predicted: IoU NaN, left out of the mean).

    Example:
        >>> import kseg.metrics
        >>> scores = kseg.metrics.confusion_matrix_scores([[2, 1, 0], [0, 1, 0], [0, 0, 0]])
        >>> [round(float(v), 4) for v in scores["iou"]], round(scores["mean_iou"], 4)
        ([0.6667, 0.5, nan], 0.5833)
        >>> scores["present_classes"], scores["absent_classes"]
        ([0, 1], [2])
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(
            f"A confusion matrix must be square (C, C). Received: shape={confusion.shape}"
        )
    if np.any(confusion < 0) or not np.all(np.isfinite(confusion)):
        raise ValueError(
            "A confusion matrix holds non-negative finite counts. Received negative or "
            "non-finite entries"
        )
    true_positives = np.diag(confusion)
    labelled = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    union = labelled + predicted - true_positives
    total = labelled.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positives / union, np.nan)
        class_accuracy = np.where(labelled > 0, true_positives / labelled, np.nan)

    def nanmean(values):
        return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")

    if total > 0:
        pixel_accuracy = float(true_positives.sum() / total)
        frequency_weighted_iou = float(np.sum(labelled[labelled > 0] * iou[labelled > 0]) / total)
    else:
        pixel_accuracy = frequency_weighted_iou = float("nan")
    return {
        "iou": iou,
        "mean_iou": nanmean(iou),
        "pixel_accuracy": pixel_accuracy,
        "class_accuracy": class_accuracy,
        "mean_accuracy": nanmean(class_accuracy),
        "frequency_weighted_iou": frequency_weighted_iou,
        "present_classes": [int(c) for c in np.flatnonzero(union > 0)],
        "absent_classes": [int(c) for c in np.flatnonzero(union == 0)],
    }


class _IgnoreLabelConfusion:
    """Checks labels and per-image weights before Keras's confusion-matrix update."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        if self.sparse_y_pred:
            if len(y_pred.shape) == 4 and y_pred.shape[-1] == 1:
                y_pred = ops.squeeze(y_pred, axis=-1)
            y_true = pixels.squeeze_labels(y_true, ops.expand_dims(y_pred, -1))
        else:
            y_true = pixels.squeeze_labels(y_true, y_pred)
        if self.check_labels:
            pixels.label_masks(y_true, self.num_classes, self.ignore_label, check_labels=True)
        if sample_weight is not None:
            # Keras flattens the labels and cannot broadcast a per-image (B,) weight onto them.
            sample_weight = pixels.pixel_sample_weight(sample_weight, y_true, dtype=None)
        super().update_state(y_true, y_pred, sample_weight)

    def scores(self):
        """`confusion_matrix_scores` of the accumulated confusion matrix (eager mode)."""
        return confusion_matrix_scores(ops.convert_to_numpy(self.total_cm))

    def _config(self):
        return {
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "sparse_y_pred": self.sparse_y_pred,
            "check_labels": self.check_labels,
            "name": self.name,
            "dtype": self._dtype,
            "axis": self.axis,
        }


@keras.saving.register_keras_serializable(package="kseg")
class MeanIoU(_IgnoreLabelConfusion, keras.metrics.MeanIoU):
    """Mean intersection over union on logits, ignoring pixels labelled `ignore_label`.

    `keras.metrics.MeanIoU` with the ignore label wired in, argmax over the class axis by
    default (`sparse_y_pred=False`), label checks, and per-image `(B,)` sample weights
    broadcast to pixels. IoU per class is `TP / (TP + FP + FN)` over the accumulated int64
    confusion matrix; classes absent from both labels and predictions are left out of the
    mean (Everingham et al., "The PASCAL Visual Object Classes Challenge", IJCV 2010). As in
    Keras, sample weights are cast to integers: use 0/1 masks, or pass `dtype="float64"`.
    `scores()` returns `confusion_matrix_scores` of the accumulated matrix.

    Args:
        num_classes: number of classes C.
        ignore_label: label value that counts nowhere, or None.
        sparse_y_pred: False for scores `(B, H, W, C)` (argmax taken), True for class maps.
        check_labels: assert that every label is a class or the ignore label.
        name: metric name (the key in Keras logs).
        dtype: confusion-matrix dtype.
        axis: class axis of `y_pred`.

    Returns:
        A `keras.metrics.Metric` whose result is a float32 scalar.

    Example:
        >>> import numpy as np, kseg.metrics
        >>> metric = kseg.metrics.MeanIoU(num_classes=3)
        >>> logits = np.eye(3, dtype="float32")[[[[0, 1, 1, 2]]]]
        >>> metric.update_state(np.array([[[0, 1, 2, 255]]]), logits)
        >>> round(float(metric.result()), 4)  # IoU 1, 0.5, 0
        0.5
    """

    def __init__(
        self,
        num_classes,
        ignore_label=validation.IGNORE_LABEL,
        sparse_y_pred=False,
        check_labels=True,
        name="mean_iou",
        dtype=None,
        axis=-1,
    ):
        num_classes = validation.validate_num_classes(num_classes)
        ignore_label = validation.validate_ignore_label(ignore_label)
        super().__init__(
            num_classes=num_classes,
            name=name,
            dtype=dtype,
            ignore_class=ignore_label,
            sparse_y_true=True,
            sparse_y_pred=bool(sparse_y_pred),
            axis=axis,
        )
        self.ignore_label = ignore_label
        self.check_labels = bool(check_labels)

    def get_config(self):
        return self._config()


@keras.saving.register_keras_serializable(package="kseg")
class ClassIoU(_IgnoreLabelConfusion, keras.metrics.IoU):
    """Intersection over union of one class, a scalar Keras can log, ignoring `ignore_label`.

    `keras.metrics.IoU` with one target class, taking logits like `kseg.metrics.MeanIoU`. Unlike
    Keras, whose IoU is 0 for a class that has neither labels nor predictions, the result is
    then NaN: the IoU is undefined, and 0 would read as a failure. See `per_class_iou_metrics`
    for one metric per class.

    Args:
        num_classes: number of classes C.
        class_id: the class in `[0, C)` to score.
        ignore_label: label value that counts nowhere, or None.
        sparse_y_pred: False for scores `(B, H, W, C)` (argmax taken), True for class maps.
        check_labels: assert that every label is a class or the ignore label.
        name: metric name, `"iou_class_{class_id}"` by default.
        dtype: confusion-matrix dtype.
        axis: class axis of `y_pred`.

    Returns:
        A `keras.metrics.Metric` whose result is a float32 scalar (NaN for an absent class).

    Example:
        >>> import numpy as np, kseg.metrics
        >>> metric = kseg.metrics.ClassIoU(num_classes=3, class_id=1)
        >>> logits = np.eye(3, dtype="float32")[[[[0, 1, 1, 2]]]]
        >>> metric.update_state(np.array([[[0, 1, 2, 255]]]), logits)
        >>> round(float(metric.result()), 4)
        0.5
    """

    def __init__(
        self,
        num_classes,
        class_id,
        ignore_label=validation.IGNORE_LABEL,
        sparse_y_pred=False,
        check_labels=True,
        name=None,
        dtype=None,
        axis=-1,
    ):
        num_classes = validation.validate_num_classes(num_classes)
        if (
            isinstance(class_id, bool)
            or not isinstance(class_id, (int, np.integer))
            or not (0 <= class_id < num_classes)
        ):
            raise ValueError(
                f"`class_id` must be an integer in [0, {num_classes}). "
                f"Received: class_id={class_id!r}"
            )
        ignore_label = validation.validate_ignore_label(ignore_label)
        super().__init__(
            num_classes=num_classes,
            target_class_ids=[int(class_id)],
            name=name or f"iou_class_{int(class_id)}",
            dtype=dtype,
            ignore_class=ignore_label,
            sparse_y_true=True,
            sparse_y_pred=bool(sparse_y_pred),
            axis=axis,
        )
        self.class_id = int(class_id)
        self.ignore_label = ignore_label
        self.check_labels = bool(check_labels)

    def result(self):
        true_positives = ops.cast(self.total_cm[self.class_id, self.class_id], "float32")
        union = (
            ops.cast(
                ops.sum(self.total_cm[self.class_id, :]) + ops.sum(self.total_cm[:, self.class_id]),
                "float32",
            )
            - true_positives
        )
        return ops.where(
            ops.greater(union, 0.0), true_positives / ops.maximum(union, 1.0), float("nan")
        )

    def get_config(self):
        config = self._config()
        config["class_id"] = self.class_id
        return config


def per_class_iou_metrics(
    num_classes, class_names=None, ignore_label=validation.IGNORE_LABEL, sparse_y_pred=False
):
    """One `ClassIoU` per class, named `iou_<class name>`, for `model.compile(metrics=...)`.

    Keras logs scalars only, so per-class IoU is one metric per class. Each keeps its own
    confusion matrix, which is small; under XLA the repeated argmax is shared.

    Args:
        num_classes: number of classes C.
        class_names: optional C names; characters other than letters, digits and `_` become `_`.
            Defaults to the class indices.
        ignore_label: label value that counts nowhere, or None.
        sparse_y_pred: False for scores `(B, H, W, C)`, True for class maps.

    Returns:
        list of C `ClassIoU` metrics.

    Example:
        >>> import kseg.metrics
        >>> [m.name for m in kseg.metrics.per_class_iou_metrics(2, ["background", "road sign"])]
        ['iou_background', 'iou_road_sign']
    """
    num_classes = validation.validate_num_classes(num_classes)
    if class_names is None:
        names = [str(class_id) for class_id in range(num_classes)]
    else:
        names = [re.sub(r"\W", "_", str(name)) for name in class_names]
        if len(names) != num_classes:
            raise ValueError(
                f"`class_names` needs one name per class ({num_classes}). "
                f"Received: class_names={list(class_names)}"
            )
        if len(set(names)) != len(names):
            raise ValueError(
                f"`class_names` must give distinct metric names. Received: class_names="
                f"{list(class_names)}"
            )
    return [
        ClassIoU(
            num_classes,
            class_id,
            ignore_label=ignore_label,
            sparse_y_pred=sparse_y_pred,
            name=f"iou_{name}",
        )
        for class_id, name in enumerate(names)
    ]


@keras.saving.register_keras_serializable(package="kseg")
class PixelAccuracy(keras.metrics.Metric):
    """Fraction of non-ignored pixels whose argmax prediction is the label.

    The accuracy of Long et al., CVPR 2015, section 5, `sum_i n_ii / sum_i t_i`, taking logits or
    probabilities. It counts pixels in int64 across batches, so batches of different image
    sizes weigh by their pixel counts; `keras.metrics.SparseCategoricalAccuracy` averages per
    image first and has no ignore label. Sample weights are cast to the counter dtype, as in
    `keras.metrics.MeanIoU`: use 0/1 masks or `dtype="float64"`.

    Args:
        ignore_label: label value that counts nowhere, or None.
        check_labels: assert that every label is a class or the ignore label (needs a known
            number of channels in `y_pred`).
        name: metric name.
        dtype: counter dtype.

    Returns:
        A `keras.metrics.Metric` whose result is a float32 scalar.

    Example:
        >>> import numpy as np, kseg.metrics
        >>> metric = kseg.metrics.PixelAccuracy()
        >>> logits = np.eye(3, dtype="float32")[[[[0, 1, 1, 2]]]]
        >>> metric.update_state(np.array([[[0, 1, 2, 255]]]), logits)
        >>> round(float(metric.result()), 4)
        0.6667
    """

    def __init__(
        self,
        ignore_label=validation.IGNORE_LABEL,
        check_labels=True,
        name="pixel_accuracy",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype or "int64")
        self._direction = "up"
        self.ignore_label = validation.validate_ignore_label(ignore_label)
        self.check_labels = bool(check_labels)
        self.correct = self.add_variable(
            shape=(), initializer="zeros", dtype=self.dtype, name="correct"
        )
        self.total = self.add_variable(
            shape=(), initializer="zeros", dtype=self.dtype, name="total"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        labels = pixels.squeeze_labels(y_true, y_pred)
        num_classes = y_pred.shape[-1]
        if num_classes is None:
            # Without a static class count only the ignore label can be told apart.
            valid = (
                ops.ones_like(labels, "bool")
                if self.ignore_label is None
                else ops.not_equal(labels, self.ignore_label)
            )
        else:
            valid, _ = pixels.label_masks(labels, num_classes, self.ignore_label, self.check_labels)
        weights = ops.cast(valid, self.dtype)
        if sample_weight is not None:
            weights = weights * pixels.pixel_sample_weight(sample_weight, labels, dtype=self.dtype)
        hits = ops.cast(
            ops.equal(ops.argmax(y_pred, axis=-1), ops.cast(labels, "int32")), self.dtype
        )
        self.correct.assign_add(ops.sum(hits * weights))
        self.total.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(ops.cast(self.correct, "float32"), ops.cast(self.total, "float32"))

    def reset_state(self):
        self.correct.assign(ops.zeros((), self.dtype))
        self.total.assign(ops.zeros((), self.dtype))

    def get_config(self):
        return {
            "ignore_label": self.ignore_label,
            "check_labels": self.check_labels,
            "name": self.name,
            "dtype": self._dtype,
        }
