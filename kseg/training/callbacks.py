"""The callbacks of a resumable run directory, a wall-time limit, and a run's newest checkpoint.

`make_callbacks` writes the run directory laid out in `kseg.training`; `latest_checkpoint` reads
its `checkpoints/` folder back.
"""

import time
import warnings
from pathlib import Path

import keras


class _EpochBackup(keras.callbacks.BackupAndRestore):
    # Keras's BackupAndRestore deletes its state when training ends, so rerunning a finished
    # `fit` would silently train from scratch again; keeping it makes the rerun a no-op and lets a
    # larger `epochs` continue the same run.
    def __init__(self, backup_dir):
        super().__init__(
            backup_dir, save_freq="epoch", double_checkpoint=True, delete_checkpoint=False
        )


class TimeLimit(keras.callbacks.Callback):
    """Stops training at the end of the epoch during which `minutes` of wall time have passed.

    The clock starts when training begins; `minutes=0` or `None` means no limit. The epoch in
    progress always finishes, so checkpoints and backups stay whole. Pass it to
    `kseg.training.fit(..., callbacks=[TimeLimit(45)])`.

    Args:
        minutes: wall-time budget in minutes; 0 or None for no limit.

    Example:
        >>> limit = kseg.training.TimeLimit(45)
        >>> limit.minutes, limit.stopped_epoch
        (45, None)
    """

    def __init__(self, minutes):
        super().__init__()
        self.minutes = minutes
        self.started = None
        self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self.minutes and time.monotonic() - self.started >= 60 * self.minutes:
            self.model.stop_training = True
            self.stopped_epoch = epoch


def make_callbacks(
    run_dir,
    *,
    checkpoint_every_epoch=True,
    checkpoint_format="keras",
    tensorboard=True,
    backup=True,
    csv_log=True,
    tensorboard_kwargs=None,
    keep_checkpoints=None,
    epoch_metrics=None,
):
    """Build the callbacks of a resumable training run rooted at `run_dir`.

    The run can resume after a crash because of `keras.callbacks.BackupAndRestore`, which saves
    the model weights, the optimizer state (iteration count, moments, loss scale) and the epoch
    counter at the end of every epoch and restores them in `on_train_begin`. Backups happen at
    epoch boundaries only: Keras 3.15's `save_freq=<steps>` does write mid-epoch state, but on
    restore it only uses the epoch counter and replays the interrupted epoch from its first batch
    with the later weights, so the work lost is the same while the optimizer ends up with more
    steps than the schedule planned. For long epochs use a repeated dataset and a smaller
    `steps_per_epoch` instead. The backup is kept after training, so rerunning a finished run
    trains nothing, and asking for more epochs continues it.

    Args:
        run_dir: directory of the run; created if missing. Use one directory per run.
        checkpoint_every_epoch: keep one checkpoint per epoch (`checkpoints/epoch_001.keras`, ...);
            if False a single `checkpoints/last.keras` is overwritten every epoch.
        checkpoint_format: "keras" (whole model, reloadable with `keras.saving.load_model`) or
            "weights" (`.weights.h5`).
        tensorboard: add `keras.callbacks.TensorBoard` logging to `run_dir/logs` (needs the
            `tensorboard` package; skipped with a warning when it is missing).
        backup: add the BackupAndRestore callback that makes the run resumable.
        csv_log: append per-epoch logs to `run_dir/history.csv`.
        tensorboard_kwargs: extra keyword arguments for `keras.callbacks.TensorBoard`.
        keep_checkpoints: with `checkpoint_every_epoch`, keep only the newest this many epoch
            checkpoints (older ones are deleted as new ones are written); None keeps all. The
            backup, not the checkpoints, is what a resume reads, so 1 is enough to resume.
        epoch_metrics: callbacks that add entries to the epoch logs (e.g.
            `kseg.training.InstanceAP`); they run right after the backup, before the
            checkpoint and the loggers, so that `history.csv` and TensorBoard record them.

    Returns:
        A list of callbacks, the backup first so that it restores state before the others start.

    Example:
        >>> callbacks = kseg.training.make_callbacks("/tmp/run", tensorboard=False)
        >>> [type(c).__name__ for c in callbacks]
        ['_EpochBackup', 'ModelCheckpoint', 'CSVLogger']
    """
    if checkpoint_format not in ("keras", "weights"):
        raise ValueError(
            "`checkpoint_format` must be 'keras' or 'weights'. "
            f"Received: checkpoint_format={checkpoint_format!r}"
        )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    callbacks = []
    if backup:
        callbacks.append(_EpochBackup(str(run_dir / "backup")))
    callbacks.extend(epoch_metrics or [])
    suffix = ".keras" if checkpoint_format == "keras" else ".weights.h5"
    stem = "epoch_{epoch:03d}" if checkpoint_every_epoch else "last"
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    callbacks.append(
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoints" / (stem + suffix)),
            save_weights_only=checkpoint_format == "weights",
            save_freq="epoch",
        )
    )
    if checkpoint_every_epoch and keep_checkpoints is not None:
        callbacks.append(_PruneCheckpoints(run_dir / "checkpoints", keep_checkpoints))
    if csv_log:
        callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True))
    if tensorboard:
        if _tensorboard_available():
            callbacks.append(
                keras.callbacks.TensorBoard(str(run_dir / "logs"), **(tensorboard_kwargs or {}))
            )
        else:
            warnings.warn(
                "TensorBoard logging skipped: the `tensorboard` package is not installed "
                "(`pip install tensorboard`); per-epoch logs still go to history.csv.",
                stacklevel=2,
            )
    return callbacks


class _PruneCheckpoints(keras.callbacks.Callback):
    def __init__(self, folder, keep):
        super().__init__()
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(
                f"`keep_checkpoints` must be a positive integer or None. Received: {keep!r}"
            )
        self.folder = Path(folder)
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        for path in _epoch_checkpoints(self.folder)[: -self.keep]:
            path.unlink(missing_ok=True)


def _epoch_checkpoints(folder):
    """The epoch checkpoints in `folder`, oldest first."""
    candidates = list(folder.glob("epoch_*.keras")) + list(folder.glob("epoch_*.weights.h5"))
    return sorted(candidates, key=lambda p: int(p.name[len("epoch_") :].split(".")[0]))


def _tensorboard_available():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def latest_checkpoint(run_dir):
    """Return the path of the newest epoch checkpoint in `run_dir/checkpoints`, or None.

    Args:
        run_dir: directory of a run written by `fit` / `make_callbacks`.

    Returns:
        A `pathlib.Path` to the checkpoint with the highest epoch number (or `last.keras` /
        `last.weights.h5`), or None when there is none.

    Example:
        >>> kseg.training.latest_checkpoint("/nonexistent") is None
        True
    """
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    candidates = _epoch_checkpoints(folder)
    if candidates:
        return candidates[-1]
    for name in ("last.keras", "last.weights.h5"):
        if (folder / name).exists():
            return folder / name
    return None
