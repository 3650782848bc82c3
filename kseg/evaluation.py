"""Scoring a segmentation model over a whole dataset."""

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from kseg.metrics import confusion_matrix_scores
from kseg.validation import IGNORE_LABEL


def confusion_matrix(
    model, dataset, num_classes, *, ignore_label=IGNORE_LABEL, progress=True, predict_fn=None
):
    """Accumulates the confusion matrix of a model's argmax predictions over a dataset.

    Pixels labelled `ignore_label` (including the padding `kseg.data.make_pipeline` adds) are
    left out. Rows are ground-truth classes, columns predicted classes.

    Args:
        model: a segmentation model mapping images to logits `(B, H, W, C)`.
        dataset: batches of `(images, masks)`, e.g. from
            `kseg.data.make_pipeline(..., augment=False)`.
        num_classes: number of classes.
        ignore_label: label left out of the counts.
        progress: show a progress bar when stderr is a terminal.
        predict_fn: optional function mapping a batch of images to int labels `(B, H, W)`
            in place of the model's argmax, e.g. `kseg.inference.make_predictor(model,
            scales=(0.5, 1.0, 1.5), flip=True, crf=True)`.

    Returns:
        An int64 array `(num_classes, num_classes)`.

    Example:
        >>> import kseg
        >>> model = kseg.models.DeepLabV3Plus(num_classes=5, backbone="tiny")
        >>> val = kseg.data.make_pipeline(kseg.data.shapes_dataset("val", 4, 64), 2, augment=False)
        >>> int(kseg.evaluation.confusion_matrix(model, val, 5, progress=False).sum())  # 4 x 64²
        16384
    """

    def count(predictions, masks):
        masks = tf.cast(masks, tf.int32)
        valid = masks != ignore_label
        out_of_range = tf.logical_and(valid, tf.logical_or(masks < 0, masks >= num_classes))
        tf.debugging.assert_equal(
            tf.reduce_any(out_of_range),
            False,
            message=f"a mask holds a label outside [0, {num_classes}) that is not {ignore_label}",
        )
        pairs = tf.boolean_mask(masks * num_classes + predictions, valid)
        return tf.math.bincount(
            pairs, minlength=num_classes**2, maxlength=num_classes**2, dtype=tf.int64
        )

    @tf.function(reduce_retracing=True)
    def model_counts(images, masks):
        predictions = tf.argmax(model(images, training=False), axis=-1, output_type=tf.int32)
        return count(predictions, masks)

    total = np.zeros(num_classes * num_classes, np.int64)
    # disable=None: tqdm draws only on a terminal, so a redirected log gets no bar.
    bar = tqdm(dataset, desc="evaluating", unit="batch", disable=None if progress else True)
    for images, masks in bar:
        if predict_fn is None:
            total += model_counts(images, masks).numpy()
        else:
            predictions = tf.convert_to_tensor(predict_fn(images.numpy()), tf.int32)
            total += count(predictions, masks).numpy()
    return total.reshape(num_classes, num_classes)


def evaluate_model(
    model, dataset, num_classes, *, ignore_label=IGNORE_LABEL, progress=True, predict_fn=None
):
    """Mean IoU, per-class IoU and accuracies of a model over a dataset.

    Args:
        model: a segmentation model mapping images to logits.
        dataset: batches of `(images, masks)`.
        num_classes: number of classes.
        ignore_label: label left out of every score.
        progress: show a progress bar when stderr is a terminal.
        predict_fn: optional images -> labels function (see `confusion_matrix`).

    A class absent from both the ground truth and the predictions keeps IoU NaN and is left
    out of the mean IoU; "present_classes" lists the classes the mean averages and
    "absent_classes" the others, so a report can say that a mean of 1.0 covers one class of
    two.

    Returns:
        The dict of `kseg.metrics.confusion_matrix_scores` (with "present_classes" and
        "absent_classes"), plus "confusion_matrix".

    Example:
        >>> import kseg
        >>> model = kseg.models.DeepLabV3Plus(num_classes=5, backbone="tiny")
        >>> val = kseg.data.make_pipeline(kseg.data.shapes_dataset("val", 4, 64), 2, augment=False)
        >>> scores = kseg.evaluation.evaluate_model(model, val, 5, progress=False)
        >>> 0.0 <= scores["mean_iou"] <= 1.0
        True
        >>> sorted(scores["present_classes"] + scores["absent_classes"])
        [0, 1, 2, 3, 4]
    """
    confusion = confusion_matrix(
        model,
        dataset,
        num_classes,
        ignore_label=ignore_label,
        progress=progress,
        predict_fn=predict_fn,
    )
    scores = dict(confusion_matrix_scores(confusion))
    scores["confusion_matrix"] = confusion
    return scores
