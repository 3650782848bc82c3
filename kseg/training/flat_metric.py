"""A plain-words warning, once, when a validation metric stays flat for several epochs."""

import math

import keras


class FlatMetricWarning(keras.callbacks.Callback):
    """Prints one warning when `monitor` has not moved by more than `tolerance` over `epochs`.

    A validation metric that stays put (a mean IoU stuck at the background-only value, a loss
    that no longer changes) usually means the learning rate, the labels or the data are wrong;
    the warning says so once per run. Epochs whose logs lack `monitor` or hold NaN are skipped.

    Args:
        monitor: the epoch-log entry to watch, e.g. "val_mean_iou".
        epochs: number of consecutive measured epochs that must agree.
        tolerance: largest spread (max - min) that counts as flat.

    Example:
        >>> watch = kseg.training.FlatMetricWarning("val_mean_iou", epochs=3)
        >>> for epoch in range(3):
        ...     watch.on_epoch_end(epoch, {"val_mean_iou": 0.25})
        warning: val_mean_iou has stayed at 0.2500 (within 0.0001) for 3 epochs: ...
        >>> watch.warned
        True
    """

    def __init__(self, monitor, *, epochs=3, tolerance=1e-4):
        super().__init__()
        if not isinstance(epochs, int) or epochs < 2:
            raise ValueError(f"`epochs` must be an integer >= 2. Received: epochs={epochs!r}")
        self.monitor = monitor
        self.epochs = epochs
        self.tolerance = tolerance
        self.values = []
        self.warned = False
        self._pending = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if self.warned or value is None or math.isnan(float(value)):
            return
        self.values = [*self.values, float(value)][-self.epochs :]
        if len(self.values) == self.epochs and max(self.values) - min(self.values) <= (
            self.tolerance
        ):
            self.warned = True
            self._pending = (
                f"warning: {self.monitor} has stayed at {self.values[-1]:.4f} (within "
                f"{self.tolerance:g}) for {self.epochs} epochs: the model may not be learning; "
                "check the learning rate, the labels (are the classes present in the masks?) "
                "and the data"
            )
            if self.model is None:
                self._flush()

    # Keras's progress line of an epoch comes after every other callback's on_epoch_end; the
    # warning waits for it so that it reads after the numbers it is about.
    def on_epoch_begin(self, epoch, logs=None):
        self._flush()

    def on_train_end(self, logs=None):
        self._flush()

    def _flush(self):
        if self._pending:
            print(self._pending, flush=True)
            self._pending = None
