"""A `fit` that writes checkpoints and logs to a run directory and resumes there after a crash."""

import sys
from pathlib import Path

import keras
import tensorflow as tf

from kseg.training.best_model import BestModel
from kseg.training.callbacks import make_callbacks
from kseg.training.flat_metric import FlatMetricWarning


def fit(
    model,
    train_ds,
    val_ds=None,
    *,
    epochs,
    run_dir,
    steps_per_epoch=None,
    validation_steps=None,
    callbacks=None,
    checkpoint_every_epoch=True,
    checkpoint_format="keras",
    tensorboard=True,
    backup=True,
    verbose="auto",
    epoch_metrics=None,
    monitor=None,
    mode="auto",
    patience=None,
    flat_warning_epochs=None,
    keep_checkpoints=None,
    history_plot=False,
    **fit_kwargs,
):
    """Train a compiled model with checkpoints, logs and crash recovery; rerun the call to resume.

    Builds `make_callbacks(run_dir, ...)`, appends `callbacks`, and calls `model.fit`. If an
    earlier call with the same `run_dir` was interrupted, the backup restores the weights,
    optimizer state and epoch counter, and training continues with the next unfinished epoch; a
    call on a finished run trains nothing. The model and its compile arguments must be the same
    as in the interrupted call.

    Args:
        model: a compiled `keras.Model` (see `compile_model`).
        train_ds: training data: a `tf.data.Dataset` of (images, masks) batches, or an
            (images, masks) tuple of arrays (then pass `batch_size`).
        val_ds: optional validation data of the same kinds.
        epochs: total number of epochs of the run (not the number still to do).
        run_dir: directory for backups, checkpoints and logs.
        steps_per_epoch: steps per epoch; needed for repeated (infinite) datasets.
        validation_steps: validation steps per epoch.
        callbacks: extra callbacks, run after kseg's.
        checkpoint_every_epoch: see `make_callbacks`.
        checkpoint_format: see `make_callbacks`.
        tensorboard: see `make_callbacks`.
        backup: see `make_callbacks`.
        verbose: passed to `model.fit`; "auto" is Keras's progress bar (1) when standard output
            is a terminal and one line per epoch (2) otherwise, e.g. in a log file.
        epoch_metrics: callbacks that add entries to the epoch logs (see `make_callbacks`).
        monitor: an epoch-log entry (e.g. "val_mean_iou", "val_mask_AP", "val_loss"): the best
            epoch by it is saved as `run_dir/best.keras` (`BestModel`). None: no best model.
        mode: "max", "min" or "auto" (see `BestModel`).
        patience: with `monitor`, stop when it has not improved for this many epochs; a rerun
            of a run that stopped this way trains nothing. None or 0: never.
        flat_warning_epochs: with `monitor`, print one warning when it stays within 1e-4 for
            this many epochs (`FlatMetricWarning`). None: no warning.
        keep_checkpoints: see `make_callbacks` (None keeps every epoch's checkpoint).
        history_plot: at the end, draw `history.csv` with `kseg.viz.plot_history` into
            `run_dir/history.png`.
        **fit_kwargs: passed to `model.fit`.

    Returns:
        The `keras.callbacks.History` of this call (only the epochs it ran).

    Example:
        >>> history = kseg.training.fit(  # doctest: +SKIP
        ...     model, train_ds, val_ds, epochs=30, run_dir="runs/camvid"
        ... )
    """
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise ValueError(
            "The model must be compiled with an optimizer before `fit` (see "
            f"kseg.training.compile_model). Received: model={model.name!r} (not compiled)"
        )
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive integer. Received: epochs={epochs!r}")
    watchers = []
    if monitor is not None:
        best = BestModel(run_dir, monitor, mode=mode, patience=patience)
        if best.patience_exhausted():
            print(
                f"{run_dir}: training already stopped, {monitor} having not improved for "
                f"{best.patience} epochs; nothing to do (pass a larger patience to continue)"
            )
            history = keras.callbacks.History()
            history.set_model(model)
            history.on_train_begin()
            return history
        watchers.append(best)
        if flat_warning_epochs:
            watchers.append(FlatMetricWarning(monitor, epochs=flat_warning_epochs))
    all_callbacks = (
        make_callbacks(
            run_dir,
            checkpoint_every_epoch=checkpoint_every_epoch,
            checkpoint_format=checkpoint_format,
            tensorboard=tensorboard,
            backup=backup,
            keep_checkpoints=keep_checkpoints,
            epoch_metrics=epoch_metrics,
        )
        + watchers
        + list(callbacks or [])
    )
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    targets = None
    if isinstance(train_ds, tuple) and len(train_ds) == 2:
        train_ds, targets = train_ds
    if isinstance(train_ds, tf.data.Dataset):
        # A tf.data pipeline shuffles itself; Keras would only warn that it ignores shuffle=True.
        fit_kwargs.setdefault("shuffle", False)

    def run():
        return model.fit(
            train_ds,
            targets,
            validation_data=val_ds,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            callbacks=all_callbacks,
            verbose=verbose,
            **fit_kwargs,
        )

    strategy = model.distribute_strategy
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and isinstance(
        train_ds, tf.data.Dataset
    ):
        history = _fit_multi_worker(model, strategy, train_ds.element_spec, run)
    else:
        history = run()
    if history_plot:
        _plot_history(Path(run_dir))
    return history


def _plot_history(run_dir):
    from kseg.viz import plot_history

    csv_path = run_dir / "history.csv"
    try:
        plot_history(csv_path, run_dir / "history.png")
    except (OSError, ValueError) as error:
        print(f"history.png not written: {error}")


def _fit_multi_worker(model, strategy, element_spec, run):
    # Keras 3.15's `fit` does not run under a multi-worker MultiWorkerMirroredStrategy as is
    # (keras-team/keras#20585): it averages a first (images, masks) batch with `strategy.reduce`,
    # which rejects the pair, and it averages each step's scalar logs across workers with
    # `strategy.reduce("MEAN", axis=0)`, which needs an axis 0. So the loss, metrics and optimizer
    # are built here from the dataset's element spec, inside the scope so that their variables
    # are mirrored; the strategy is detached from the model while `fit` runs inside the same scope
    # (`Model.distribute_strategy` then falls back to the scope's, so steps still go through
    # `strategy.run` with all-reduced gradients); and each step returns its logs with a leading
    # axis of one, which the cross-worker mean removes again. The logs are then the mean of the
    # workers' local metrics: the global value whenever every worker sees as many examples.
    def with_leading_axis(step):
        def wrapped(data):
            return keras.tree.map_structure(lambda value: tf.expand_dims(value, 0), step(data))

        return wrapped

    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)
        saved = model._distribute_strategy
        model._distribute_strategy = None
        model.train_step = with_leading_axis(type(model).train_step.__get__(model))
        model.test_step = with_leading_axis(type(model).test_step.__get__(model))
        try:
            return run()
        finally:
            del model.train_step, model.test_step
            model._distribute_strategy = saved
            # The compiled steps close over the wrappers; later calls must trace afresh.
            model.train_function = model.test_function = None
