"""Training helpers: precision policy, poly learning rate, callbacks and a resumable `fit`.

Everything here runs through plain `keras.Model.fit`; the helpers only pick the standard Keras
pieces (dtype policies, `PolynomialDecay`, `BackupAndRestore`, `ModelCheckpoint`, `CSVLogger`,
`TensorBoard`) and lay out a run directory so that rerunning the same call after a crash resumes
from the last completed epoch.

Run directory layout written by `make_callbacks` / `fit`:

    run_dir/backup/             BackupAndRestore state (weights, optimizer state, epoch counter)
    run_dir/checkpoints/        epoch_001.keras, epoch_002.keras, ... (or last.keras)
    run_dir/history.csv         one row per completed epoch (CSVLogger, appended on resume)
    run_dir/logs/               TensorBoard event files (train/, validation/)
"""

import time
import warnings
from pathlib import Path

import keras
import tensorflow as tf

PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("sgd", "adam", "adamw")

# CPU flags of matrix units that make bfloat16 convolutions and matmuls faster than float32.
# AVX512_BF16 alone is not enough: on an AVX512_BF16 CPU without AMX, oneDNN's bf16 convolution
# (TensorFlow 2.21) ran at half the float32 speed (benchmarks/throughput.py, the closing note of
# the foundation issue), so such CPUs stay on float32.
_FAST_BF16_CPU_FLAGS = ("amx_bf16",)


def cpu_supports_bf16(cpuinfo_path="/proc/cpuinfo"):
    """Tell whether the CPU runs bfloat16 convolutions faster than float32 (AMX-BF16 tiles).

    Reads the `flags` lines of a Linux `/proc/cpuinfo`; on systems without that file the answer is
    False, so callers fall back to float32. AVX512_BF16 without AMX answers False: its bfloat16
    kernels measured slower than float32 in TensorFlow.

    Args:
        cpuinfo_path: path of the cpuinfo file to read.

    Returns:
        True when an `amx_bf16` flag is listed.

    Example:
        >>> kseg.training.cpu_supports_bf16()  # doctest: +SKIP
        False
    """
    try:
        text = Path(cpuinfo_path).read_text(errors="ignore")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            flags = set(line.split(":", 1)[1].split())
            if flags.intersection(_FAST_BF16_CPU_FLAGS):
                return True
    return False


def _gpu_visible():
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(policy="auto"):
    """Turn a precision request into a Keras dtype-policy name without setting it.

    Args:
        policy: "auto", "float32", "mixed_float16" or "mixed_bfloat16". "auto" picks
            "mixed_float16" when a GPU is visible, "mixed_bfloat16" when the CPU has AMX-BF16
            units (see `cpu_supports_bf16`), and "float32" otherwise.

    Returns:
        The policy name.

    Example:
        >>> kseg.training.resolve_precision("float32")
        'float32'
    """
    if policy == "auto":
        if _gpu_visible():
            return "mixed_float16"
        if cpu_supports_bf16():
            return "mixed_bfloat16"
        return "float32"
    if policy not in PRECISION_POLICIES:
        raise ValueError(
            f"Unknown precision policy. Expected 'auto' or one of {PRECISION_POLICIES}. "
            f"Received: policy={policy!r}"
        )
    return policy


def set_precision(policy="auto"):
    """Set the global Keras dtype policy used by every model built afterwards.

    Mixed precision keeps variables in float32 and computes in float16 or bfloat16
    (Micikevicius et al., "Mixed Precision Training", ICLR 2018). This only calls
    `keras.mixed_precision.set_dtype_policy`; under "mixed_float16" `Model.compile` itself wraps
    the optimizer in a `keras.optimizers.LossScaleOptimizer` with a dynamic loss scale, while
    bfloat16 has float32's exponent range and needs no loss scaling. kseg builders keep their
    logits layer in float32 under any policy. Build models *after* calling this.

    Args:
        policy: "auto", "float32", "mixed_float16" or "mixed_bfloat16" (see `resolve_precision`).

    Returns:
        The name of the policy that was set.

    Example:
        >>> kseg.training.set_precision("float32")
        'float32'
    """
    name = resolve_precision(policy)
    keras.mixed_precision.set_dtype_policy(name)
    return name


@keras.saving.register_keras_serializable(package="kseg")
class WarmupPolynomialDecay(keras.optimizers.schedules.PolynomialDecay):
    """Linear warm-up followed by Keras's `PolynomialDecay`.

    The "poly" policy of DeepLab (Chen et al., 2016, following Liu et al., ParseNet, 2015),
    lr * (1 - t / T) ** power, optionally preceded by a linear warm-up from 0 to
    `initial_learning_rate` over `warmup_steps` (Goyal et al., "Accurate, Large Minibatch SGD",
    2017). As in `keras.optimizers.schedules.CosineDecay`, the decay covers `decay_steps` steps
    *after* the warm-up, so the schedule is continuous and lasts `warmup_steps + decay_steps`.

    Args:
        initial_learning_rate: learning rate at the end of the warm-up.
        decay_steps: number of decay steps after the warm-up; positive.
        end_learning_rate: learning rate once the decay is over.
        power: exponent of the polynomial.
        cycle: passed to `PolynomialDecay`.
        warmup_steps: number of linear warm-up steps; 0 for none.
        name: name scope of the schedule.

    Returns:
        A serializable `keras.optimizers.schedules.LearningRateSchedule`.

    Example:
        >>> schedule = kseg.training.WarmupPolynomialDecay(0.01, 1000, warmup_steps=100)
        >>> round(float(schedule(50)), 6)
        0.005
    """

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        end_learning_rate=0.0,
        power=0.9,
        cycle=False,
        warmup_steps=0,
        name="WarmupPolynomialDecay",
    ):
        super().__init__(
            initial_learning_rate,
            decay_steps,
            end_learning_rate=end_learning_rate,
            power=power,
            cycle=cycle,
            name=name,
        )
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(
                "`warmup_steps` must be a non-negative integer. "
                f"Received: warmup_steps={warmup_steps!r}"
            )
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        decayed = super().__call__(keras.ops.maximum(step - self.warmup_steps, 0.0))
        if self.warmup_steps == 0:
            return decayed
        warm = keras.ops.cast(self.initial_learning_rate, decayed.dtype) * keras.ops.cast(
            step / self.warmup_steps, decayed.dtype
        )
        return keras.ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        config = super().get_config()
        config["warmup_steps"] = self.warmup_steps
        return config


def poly_schedule(
    initial_learning_rate, decay_steps, power=0.9, end_learning_rate=0.0, warmup_steps=0
):
    """Build the "poly" learning-rate schedule lr * (1 - t / T) ** power used by DeepLab and PSPNet.

    Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
    Convolution, and Fully Connected CRFs" (TPAMI 2017) use power 0.9; Zhao et al. (PSPNet, CVPR
    2017) keep it. Without warm-up this is Keras's own `PolynomialDecay` (so it serializes with no
    kseg code at all); with warm-up it is `WarmupPolynomialDecay`, whose decay starts after the
    warm-up.

    Args:
        initial_learning_rate: base learning rate.
        decay_steps: number of optimizer steps over which to decay (after any warm-up).
        power: exponent of the polynomial.
        end_learning_rate: learning rate reached after `decay_steps`, kept afterwards.
        warmup_steps: number of linear warm-up steps from 0; 0 for none.

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule`.

    Example:
        >>> schedule = kseg.training.poly_schedule(0.01, decay_steps=100)
        >>> round(float(schedule(50)), 6)
        0.005359
    """
    if not isinstance(decay_steps, int) or decay_steps <= 0:
        raise ValueError(
            f"`decay_steps` must be a positive integer. Received: decay_steps={decay_steps!r}"
        )
    if warmup_steps:
        return WarmupPolynomialDecay(
            initial_learning_rate,
            decay_steps,
            end_learning_rate=end_learning_rate,
            power=power,
            warmup_steps=warmup_steps,
        )
    return keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate, decay_steps, end_learning_rate=end_learning_rate, power=power
    )


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
    progress always finishes, so checkpoints and backups stay whole.

    Example:
        >>> fit(model, train, epochs=100, run_dir="runs/a", callbacks=[TimeLimit(45)])
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


def _tensorboard_available():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def compile_model(
    model,
    *,
    num_classes,
    optimizer="sgd",
    learning_rate=0.01,
    momentum=0.9,
    weight_decay=None,
    loss=None,
    metrics=None,
    ignore_label=255,
    jit_compile="auto",
    **compile_kwargs,
):
    """Compile a segmentation model with the usual defaults: SGD + momentum, ignore-aware losses.

    Defaults follow FCN/DeepLab practice (SGD, momentum 0.9, "poly" schedule passed as
    `learning_rate`): the loss is `SparseCategoricalCrossentropy(from_logits=True,
    ignore_class=ignore_label)` and the metric `MeanIoU(num_classes, ignore_class=ignore_label,
    sparse_y_pred=False)`, both on per-pixel logits (B, H, W, C) against integer masks (B, H, W).
    Under the "mixed_float16" policy Keras wraps the optimizer in a `LossScaleOptimizer` here.

    Args:
        model: a `keras.Model` producing logits.
        num_classes: number of classes (logit channels).
        optimizer: "sgd", "adam", "adamw" or a `keras.optimizers.Optimizer` instance (then
            `learning_rate`, `momentum` and `weight_decay` are not used).
        learning_rate: float or `LearningRateSchedule` (e.g. `poly_schedule(...)`).
        momentum: SGD momentum.
        weight_decay: decoupled weight decay passed to the optimizer, or None.
        loss: a loss to use instead of the default cross-entropy.
        metrics: metrics to use instead of the default mean IoU.
        ignore_label: label excluded from the default loss and metric; None for none.
        jit_compile: True, False or "auto" (Keras: XLA on accelerators when every layer supports
            it, off on CPU-only machines).
        **compile_kwargs: passed to `model.compile`.

    Returns:
        The same model, compiled.

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(3, 1, dtype="float32")(inputs))
        >>> model = kseg.training.compile_model(model, num_classes=3, learning_rate=0.01)
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}"
        )
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name == "sgd":
            optimizer = keras.optimizers.SGD(
                learning_rate, momentum=momentum, weight_decay=weight_decay
            )
        elif name == "adam":
            optimizer = keras.optimizers.Adam(learning_rate, weight_decay=weight_decay)
        elif name == "adamw":
            optimizer = keras.optimizers.AdamW(
                learning_rate, weight_decay=0.004 if weight_decay is None else weight_decay
            )
        else:
            raise ValueError(
                f"Unknown optimizer. Expected one of {OPTIMIZERS} or an Optimizer instance. "
                f"Received: optimizer={optimizer!r}"
            )
    if loss is None:
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=ignore_label
        )
    if metrics is None:
        metrics = [
            keras.metrics.MeanIoU(
                num_classes, ignore_class=ignore_label, sparse_y_pred=False, name="mean_iou"
            )
        ]
    model.compile(
        optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile, **compile_kwargs
    )
    return model


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
        checkpoint_every_epoch, checkpoint_format, tensorboard, backup: see `make_callbacks`.
        verbose: passed to `model.fit`.
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
    all_callbacks = make_callbacks(
        run_dir,
        checkpoint_every_epoch=checkpoint_every_epoch,
        checkpoint_format=checkpoint_format,
        tensorboard=tensorboard,
        backup=backup,
    ) + list(callbacks or [])
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
        return _fit_multi_worker(model, strategy, train_ds.element_spec, run)
    return run()


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
    candidates = list(folder.glob("epoch_*.keras")) + list(folder.glob("epoch_*.weights.h5"))
    if candidates:
        return max(candidates, key=lambda p: int(p.name[len("epoch_") :].split(".")[0]))
    for name in ("last.keras", "last.weights.h5"):
        if (folder / name).exists():
            return folder / name
    return None


def set_batchnorm_momentum(model, momentum):
    """Set the moving-statistics momentum of every BatchNormalization layer, nested ones too.

    keras.applications build their batch normalisation with momentum 0.99 or 0.999, right for
    fine-tuning from ImageNet statistics but slow for a network trained from scratch for a few
    hundred steps: its moving means still hold the initial values when it is evaluated, and
    inference mode then predicts one class everywhere. A momentum of 0.9 lets the statistics
    follow within tens of steps. Call it before `compile`. The value is stored in each layer's
    config, so it survives saving.

    Args:
        model: a `keras.Model` (nested models and layers are visited).
        momentum: the new momentum, in [0, 1).

    Returns:
        The number of layers changed.

    Example:
        >>> model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny")
        >>> kseg.training.set_batchnorm_momentum(model, 0.9) > 0
        True
    """
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"momentum must be in [0, 1). Received: momentum={momentum}")
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            changed += 1
    return changed
