"""`best.keras` by a validation metric, and an optional stop when it stops improving."""

import json
import math
from pathlib import Path

import keras

STATE_FILE = "best.json"
"""The file in the run folder recording the best value, its epoch and the last epoch seen."""


def _resolve_mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"`mode` must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
    if mode != "auto":
        return mode
    return "min" if monitor.endswith("loss") else "max"


class BestModel(keras.callbacks.Callback):
    """Saves `run_dir/best.keras` when `monitor` improves; optionally stops after `patience`.

    The best value, its epoch and the last epoch seen are kept in `run_dir/best.json`, so a
    resumed run compares against the best of the epochs before the interruption and counts
    patience from the same epoch. An epoch whose logs lack `monitor` or hold NaN (a metric
    computed every few epochs only) neither improves nor stops the run. Put it after the
    callbacks that add `monitor` to the epoch logs.

    Args:
        run_dir: the run folder; `best.keras` and `best.json` are written there.
        monitor: the epoch-log entry to follow, e.g. "val_mean_iou" or "val_loss".
        mode: "max", "min", or "auto" ("min" for names ending in "loss", else "max").
        patience: stop when `monitor` has not improved for this many epochs; None or 0 never.
        min_delta: smallest change that counts as an improvement.

    Example:
        >>> best = kseg.training.BestModel("/tmp/kseg_best", "val_loss", patience=3)
        >>> best.mode, best.patience
        ('min', 3)
    """

    def __init__(self, run_dir, monitor, *, mode="auto", patience=None, min_delta=0.0):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.mode = _resolve_mode(monitor, mode)
        self.patience = patience or None
        self.min_delta = abs(min_delta)
        self.stopped_epoch = None
        self._message = None

    @property
    def path(self):
        """Where the best model is saved: `run_dir/best.keras`."""
        return self.run_dir / "best.keras"

    def state(self):
        """The saved state: a dict with "monitor", "best", "best_epoch", "last_epoch" (or {})."""
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return {}
        state = json.loads(path.read_text())
        return state if state.get("monitor") == self.monitor else {}

    def patience_exhausted(self):
        """True when the saved state says the run already went `patience` epochs unimproved."""
        state = self.state()
        if not self.patience or "best_epoch" not in state:
            return False
        return state["last_epoch"] - state["best_epoch"] >= self.patience

    def _improved(self, value, best):
        if best is None:
            return True
        if self.mode == "max":
            return value > best + self.min_delta
        return value < best - self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or math.isnan(float(value)):
            return
        value = float(value)
        state = self.state() or {"monitor": self.monitor}
        if self._improved(value, state.get("best")):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            # Written aside then renamed, so a kill mid-save leaves the previous best whole.
            partial = self.run_dir / "best.saving.keras"
            self.model.save(partial)
            partial.replace(self.path)
            state.update(best=value, best_epoch=epoch)
        state["last_epoch"] = epoch
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=1))
        if self.patience and epoch - state["best_epoch"] >= self.patience:
            self.model.stop_training = True
            self.stopped_epoch = epoch
            self._message = (
                f"stopping: {self.monitor} has not improved for {self.patience} epochs "
                f"(best {state['best']:.4f} at epoch {state['best_epoch'] + 1})"
            )

    def on_train_end(self, logs=None):
        # After the last epoch's progress line, which Keras prints after every callback.
        if self._message:
            print(self._message, flush=True)
            self._message = None
