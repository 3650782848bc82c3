"""Semantic segmentation training in a few calls: batches, loss, fit and a score record.

Random-scale crops and flips (`semantic_batches`), a loss by name (`segmentation_loss`), an
optimizer under the "poly" learning-rate decay of DeepLab (Chen et al., TPAMI 2017) trained by
kseg's resumable `fit` (`fit_semantic`), and scores as a JSON-ready record (`scores_record`).
The building blocks stay public in `kseg.data`, `kseg.training` and `kseg.evaluation` for runs
that need other choices.
"""

import tensorflow as tf

from kseg.data.augment import make_pipeline
from kseg.distribute import worker_run_dir
from kseg.losses import CombinedLoss, DiceLoss, FocalLoss, SegmentationCrossEntropy
from kseg.training import (
    PreviewImages,
    compile_model,
    fit,
    poly_schedule,
    semantic_renderer,
    set_batchnorm_momentum,
)
from kseg.validation import IGNORE_LABEL


def semantic_batches(
    train_source,
    val_source,
    *,
    batch_size,
    crop_size,
    ignore_label=IGNORE_LABEL,
    seed=None,
    scale_range=(0.75, 1.25),
    val_batch_size=None,
    steps_per_epoch=None,
    flip=True,
    jitter=True,
):
    """Training and validation batches of `(image, mask)` datasets, and the steps of an epoch.

    Training batches are augmented by `kseg.data.make_pipeline` (random scale within
    `scale_range`, crop to `crop_size`, flip, photometric jitter) and repeat forever; validation
    batches are not augmented. An epoch is one pass over the training pairs unless
    `steps_per_epoch` is given. `flip` and `jitter` switch the mirroring and the photometric
    jitter.

    Args:
        train_source: `tf.data.Dataset` of training `(image, mask)` pairs of known cardinality.
        val_source: `tf.data.Dataset` of validation `(image, mask)` pairs.
        batch_size: training batch size.
        crop_size: training crop, an int or `(height, width)`.
        ignore_label: mask value left out of the loss, also used to pad.
        seed: seed of the augmentation and shuffling.
        scale_range: `(low, high)` random rescaling factors before cropping.
        val_batch_size: validation batch size; default `min(batch_size, 16)`.
        steps_per_epoch: steps of an epoch; default the training pairs // batch_size (at least 1).
        flip: random left-right mirroring of the training pairs.
        jitter: random photometric jitter (brightness, contrast, saturation) of training images.

    Returns:
        `(train, val, steps_per_epoch)`.

    Example:
        >>> import kseg, kseg.recipes
        >>> source = kseg.data.load_dataset("shapes", "train", num_samples=8, image_size=48)
        >>> train, val, steps = kseg.recipes.semantic_batches(
        ...     source, source, batch_size=4, crop_size=48, seed=0
        ... )
        >>> steps
        2
    """
    train = make_pipeline(
        train_source,
        batch_size,
        crop_size=crop_size,
        scale_range=scale_range,
        flip=flip,
        jitter=jitter,
        ignore_label=ignore_label,
        seed=seed,
        repeat=True,
    )
    val = make_pipeline(
        val_source,
        val_batch_size or min(batch_size, 16),
        augment=False,
        ignore_label=ignore_label,
    )
    steps = steps_per_epoch or max(1, int(train_source.cardinality()) // batch_size)
    return train, val, steps


LOSSES = ("ce", "focal", "dice", "ce+dice")
"""The loss names `segmentation_loss` (and `fit_semantic`'s `loss=`) accept."""


def segmentation_loss(name, num_classes, ignore_label=IGNORE_LABEL, class_weights=None):
    """The segmentation loss called `name`, ignoring `ignore_label`.

    Args:
        name: "ce" (cross-entropy), "focal", "dice" or "ce+dice" (the two summed).
        num_classes: number of classes (the Dice loss needs it).
        ignore_label: mask value left out of the loss.
        class_weights: one weight per class for the cross-entropy ("ce", and the cross-entropy
            term of "ce+dice"), e.g. `kseg.data.median_frequency_weights`; None: equal.

    Returns:
        A `keras.losses.Loss`.

    Example:
        >>> type(kseg.recipes.segmentation_loss("dice", 3)).__name__
        'DiceLoss'
    """
    if name not in LOSSES:
        raise ValueError(f"Unknown loss. Expected one of {LOSSES}. Received: name={name!r}")
    if class_weights is not None and name not in ("ce", "ce+dice"):
        raise ValueError(
            f"Class weights apply to the 'ce' and 'ce+dice' losses. Received: name={name!r}"
        )
    cross_entropy = SegmentationCrossEntropy(
        ignore_label=ignore_label,
        class_weights=None if class_weights is None else [float(w) for w in class_weights],
    )
    if name == "ce":
        return cross_entropy
    if name == "focal":
        return FocalLoss(ignore_label=ignore_label)
    dice = DiceLoss(num_classes, ignore_label=ignore_label)
    return dice if name == "dice" else CombinedLoss([cross_entropy, dice], [1.0, 1.0])


def fit_semantic(
    model,
    train,
    val,
    *,
    num_classes,
    epochs,
    steps_per_epoch,
    learning_rate,
    run_dir,
    ignore_label=IGNORE_LABEL,
    optimizer="adam",
    loss=None,
    metrics=None,
    batchnorm_momentum=None,
    warmup_steps=0,
    weight_decay=None,
    momentum=0.9,
    schedule="poly",
    jit_compile="auto",
    strategy=None,
    tensorboard=False,
    verbose=2,
    run_eagerly=False,
    monitor=None,
    patience=None,
    keep_checkpoints=None,
    preview_images=0,
    class_names=None,
    palette=None,
    flat_warning_epochs=None,
    history_plot=False,
):
    """Compiles a segmentation model under poly decay and trains it into `run_dir`.

    The learning rate falls as `learning_rate * (1 - t / T) ** 0.9` over the
    `epochs * steps_per_epoch` steps (`kseg.training.poly_schedule`), after a linear rise over
    the first `warmup_steps` when given (`schedule="constant"` keeps it fixed); the loss and
    metric default to those of `kseg.training.compile_model`. Training is `kseg.training.fit`,
    so running it again on the same `run_dir` resumes. Compiling here also makes Keras pick up
    changed `trainable` flags, as between fine-tuning phases. The optimizer is created inside
    `strategy.scope()`; build the model in the same scope. Under a multi-worker strategy only
    the chief writes into `run_dir` (see `kseg.distribute.worker_run_dir`). The options from
    `monitor` on watch the run and are passed to `kseg.training.fit`.

    Args:
        model: a segmentation model mapping images to `(B, H, W, num_classes)` logits.
        train: training batches (repeating).
        val: validation batches, or None.
        num_classes: number of classes.
        epochs: epochs to train.
        steps_per_epoch: training steps per epoch.
        learning_rate: initial learning rate.
        run_dir: folder of the checkpoints and logs.
        ignore_label: mask value left out of the loss and metric.
        optimizer: "sgd", "adam", "adamw" or a `keras.optimizers.Optimizer`.
        loss: a name of `LOSSES`, a `keras.losses.Loss`, or None for cross-entropy.
        metrics: metrics to track, or None for the mean IoU.
        batchnorm_momentum: set every batch normalisation's momentum to this first, or None.
        warmup_steps: steps of linear warm-up from 0 before the decay; 0 for none.
        weight_decay: decoupled weight decay of the optimizer, or None.
        momentum: SGD momentum (other optimizers do not use it).
        schedule: "poly" (decay to 0 over the run) or "constant".
        jit_compile: True, False or "auto" (see `kseg.training.compile_model`).
        strategy: the `tf.distribute.Strategy`; None uses the current one.
        tensorboard: also write TensorBoard logs.
        verbose: passed to `model.fit` (2: one line per epoch; "auto": bars on a terminal only).
        run_eagerly: skip graph compilation (cheaper for a handful of steps).
        monitor: save the best epoch by this log entry as `run_dir/best.keras`, e.g.
            "val_mean_iou" (the default metric's validation value); None: no best model.
        patience: with `monitor`, stop after this many epochs without improvement.
        keep_checkpoints: keep only the newest this many epoch checkpoints; None keeps all.
        preview_images: draw the first this many validation images, the prediction and the
            ground truth into `run_dir/previews/` and TensorBoard after every epoch; 0: none.
        class_names: class names for the previews' legend; None: no legend.
        palette: class colours of the previews (see `kseg.viz.colorize`).
        flat_warning_epochs: with `monitor`, warn once when it stays flat for this many epochs.
        history_plot: draw the curves into `run_dir/history.png` at the end.

    Returns:
        The `keras.callbacks.History` of the run.

    Example:
        >>> import kseg, kseg.recipes, tempfile
        >>> source = kseg.data.load_dataset("shapes", "train", num_samples=4, image_size=48)
        >>> train, val, steps = kseg.recipes.semantic_batches(
        ...     source, source, batch_size=2, crop_size=48, steps_per_epoch=1
        ... )
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(5, 1)(inputs))
        >>> history = kseg.recipes.fit_semantic(
        ...     model, train, val, num_classes=5, epochs=1, steps_per_epoch=steps,
        ...     learning_rate=1e-3, run_dir=tempfile.mkdtemp(), run_eagerly=True,
        ... )  # doctest: +ELLIPSIS
        1/1 - ...
    """
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(loss, str):
        loss = segmentation_loss(loss, num_classes, ignore_label)
    with strategy.scope():
        if batchnorm_momentum is not None:
            set_batchnorm_momentum(model, batchnorm_momentum)
        compile_model(
            model,
            num_classes=num_classes,
            optimizer=optimizer,
            learning_rate=learning_rate_schedule(
                learning_rate, epochs * steps_per_epoch, schedule, warmup_steps
            ),
            momentum=momentum,
            weight_decay=weight_decay,
            loss=loss,
            metrics=metrics,
            ignore_label=ignore_label,
            jit_compile=jit_compile,
            run_eagerly=run_eagerly,
        )
    run_dir = str(worker_run_dir(run_dir, strategy))
    callbacks = []
    if preview_images and val is not None:
        pairs = list(val.unbatch().take(preview_images).as_numpy_iterator())
        render = semantic_renderer(
            [image for image, _ in pairs],
            [mask for _, mask in pairs],
            class_names=class_names,
            palette=palette,
            ignore_label=ignore_label,
        )
        callbacks.append(PreviewImages(run_dir, render, tensorboard=tensorboard))
    return fit(
        model,
        train,
        val,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        run_dir=run_dir,
        tensorboard=tensorboard,
        verbose=verbose,
        callbacks=callbacks,
        monitor=monitor,
        patience=patience,
        keep_checkpoints=keep_checkpoints,
        flat_warning_epochs=flat_warning_epochs,
        history_plot=history_plot,
    )


SCHEDULES = ("poly", "constant")
"""The learning-rate schedules `fit_semantic` (and a recipe's `schedule`) accept."""


def learning_rate_schedule(learning_rate, total_steps, schedule="poly", warmup_steps=0):
    """The learning rate of a run of `total_steps`: poly decay (power 0.9) or constant.

    With `warmup_steps`, the rate rises linearly from 0 over those steps, and the poly decay
    runs over the remaining ones so that it still reaches 0 at `total_steps`.

    Args:
        learning_rate: the initial (peak) learning rate.
        total_steps: optimizer steps of the whole run.
        schedule: "poly" or "constant".
        warmup_steps: steps of linear warm-up; 0 for none.

    Returns:
        A float (constant without warm-up) or a `keras.optimizers.schedules.LearningRateSchedule`.

    Example:
        >>> schedule = kseg.recipes.learning_rate_schedule(0.01, 100, warmup_steps=10)
        >>> round(float(schedule(5)), 4), round(float(schedule(10)), 4)
        (0.005, 0.01)
    """
    if schedule not in SCHEDULES:
        raise ValueError(
            f"Unknown schedule. Expected one of {SCHEDULES}. Received: schedule={schedule!r}"
        )
    warmup_steps = int(warmup_steps or 0)
    if schedule == "constant":
        if not warmup_steps:
            return learning_rate
        return poly_schedule(
            learning_rate, 1, power=1.0, end_learning_rate=learning_rate, warmup_steps=warmup_steps
        )
    return poly_schedule(
        learning_rate, max(1, total_steps - warmup_steps), warmup_steps=warmup_steps
    )


def scores_record(scores, class_names=None):
    """The per-class and mean scores of `kseg.evaluation.evaluate_model` as plain JSON values.

    Args:
        scores: the dict `kseg.evaluation.evaluate_model` returns.
        class_names: one name per class; default "0", "1", ...

    Returns:
        A dict with "class_names", "iou" (a list of floats, NaN for a class that never occurs),
        "mean_iou", "pixel_accuracy" and "mean_accuracy".

    Example:
        >>> import numpy as np, kseg.recipes
        >>> scores = {"iou": np.array([0.5, 1.0]), "mean_iou": 0.75,
        ...           "pixel_accuracy": 0.9, "mean_accuracy": 0.8}
        >>> kseg.recipes.scores_record(scores)["class_names"]
        ['0', '1']
    """
    names = class_names or [str(index) for index in range(len(scores["iou"]))]
    return {
        "class_names": list(names),
        "iou": [float(value) for value in scores["iou"]],
        "mean_iou": float(scores["mean_iou"]),
        "pixel_accuracy": float(scores["pixel_accuracy"]),
        "mean_accuracy": float(scores["mean_accuracy"]),
    }
