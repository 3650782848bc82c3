"""Mask and box AP of an instance model on validation examples, every few epochs."""

import math

import keras

from kseg.detection.evaluation import evaluate_instances

AP_KEYS = ("mask_AP", "box_AP")
"""The AP entries `InstanceAP` adds to the epoch logs, each with the prefix "val_"."""


class InstanceAP(keras.callbacks.Callback):
    """Adds `val_mask_AP` and `val_box_AP` (COCO AP) to the epoch logs every `every` epochs.

    The entries are present at every epoch, NaN on the epochs without an evaluation, so that
    `history.csv` keeps the same columns from the first epoch on (also across a resume); the last
    epoch of a run is always evaluated. Place it before the callbacks that log or monitor the
    values (`kseg.training.fit` does, through `epoch_metrics`).

    Args:
        examples: unbatched validation example dicts (see `kseg.detection.evaluate_instances`).
        categories: the class names or `CocoCategories` of the examples.
        every: evaluate at epochs every, 2 * every, ... (counted from 1).
        batch_size: images per forward pass.

    Example:
        >>> examples = kseg.data.shapes_instance_examples("val", num_samples=2, image_size=64)
        >>> ap = kseg.training.InstanceAP(examples, kseg.data.shapes_info(), every=5)
        >>> ap.due(epoch=4, last_epoch=9), ap.due(epoch=5, last_epoch=9)
        (True, False)
    """

    def __init__(self, examples, categories, *, every=1, batch_size=4):
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be a positive integer. Received: every={every!r}")
        self.examples = examples
        self.categories = categories
        self.every = every
        self.batch_size = batch_size
        self.last_epoch = None

    def on_train_begin(self, logs=None):
        self.last_epoch = self.params.get("epochs", 0) - 1 if self.params else None

    def due(self, epoch, last_epoch=None):
        """Whether the epoch of index `epoch` (from 0) is evaluated."""
        return (epoch + 1) % self.every == 0 or epoch == last_epoch

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        scores = {}
        if self.due(epoch, self.last_epoch):
            scores = evaluate_instances(
                self.model, self.examples, self.categories, batch_size=self.batch_size
            )
        for key in AP_KEYS:
            logs[f"val_{key}"] = float(scores.get(key, math.nan))
