"""Mask R-CNN training in one call: a clipped optimizer under a warmed-up poly decay.

He et al. (ICCV 2017) train Mask R-CNN with SGD and a linear warm-up; `fit_instances` compiles a
`kseg.models.MaskRCNN` with gradients clipped to a global norm of 10 (`clipped_optimizer`) and
trains it with kseg's resumable `fit`, with an optional wall-clock limit.
"""

import time

import keras

from kseg.data.instances import pad_instance_batch
from kseg.training import (
    InstanceAP,
    PreviewImages,
    TimeLimit,
    fit,
    instance_renderer,
    poly_schedule,
)


def clipped_optimizer(name, learning_rate):
    """The optimizer `name` with gradients clipped to a global norm of 10, as Mask R-CNN needs.

    Clipping keeps the first steps of a randomly initialised detection head stable.

    Args:
        name: "sgd" (momentum 0.9), "adam" or "adamw" (weight decay 1e-4).
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.

    Returns:
        A `keras.optimizers.Optimizer`.

    Example:
        >>> kseg.recipes.clipped_optimizer("sgd", 0.01).global_clipnorm
        10.0
    """
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, global_clipnorm=10.0)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, global_clipnorm=10.0)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=1e-4, global_clipnorm=10.0)
    raise ValueError(
        f"Unknown optimizer. Expected 'sgd', 'adam' or 'adamw'. Received: name={name!r}"
    )


def fit_instances(
    model,
    batches,
    *,
    epochs,
    steps_per_epoch,
    learning_rate,
    run_dir,
    optimizer="adam",
    warmup_steps=100,
    max_train_minutes=None,
    tensorboard=False,
    checkpoint_every_epoch=False,
    verbose=2,
    run_eagerly=False,
    val_examples=None,
    categories=None,
    class_names=None,
    val_batch_size=2,
    ap_every=0,
    monitor=None,
    patience=None,
    keep_checkpoints=None,
    preview_images=0,
    flat_warning_epochs=None,
    history_plot=False,
):
    """Compiles a `kseg.models.MaskRCNN` with a clipped optimizer and trains it into `run_dir`.

    He et al. (ICCV 2017) train Mask R-CNN with a linear warm-up; here the learning rate rises
    over `warmup_steps` and then follows the poly decay to zero at `epochs * steps_per_epoch`
    (`kseg.training.poly_schedule`). Gradients are clipped to a global norm of 10
    (`clipped_optimizer`). The model's own losses are used (it is compiled without `loss`).
    Training is `kseg.training.fit` (resumable); `max_train_minutes` stops it at the first step
    past that time.

    Args:
        model: a `kseg.models.MaskRCNN`.
        batches: repeating batches of `kseg.data.pad_instance_batch`.
        epochs: epochs to train.
        steps_per_epoch: training steps per epoch.
        learning_rate: peak learning rate.
        run_dir: folder of the checkpoints and logs.
        optimizer: "adam", "sgd" or "adamw".
        warmup_steps: steps of linear warm-up; 0 for none.
        max_train_minutes: wall-clock limit of this call, or None.
        tensorboard: also write TensorBoard logs.
        checkpoint_every_epoch: keep a checkpoint of every epoch rather than one at the end.
        verbose: passed to `model.fit` (2: one line per epoch; "auto": bars on a terminal only).
        run_eagerly: skip graph compilation (cheaper for a handful of steps).
        val_examples: unbatched validation example dicts, or None. With them the five losses
            are computed on them after every epoch (`val_loss`, `val_mask_loss`, ...).
        categories: the class names or `CocoCategories` of the examples (for AP).
        class_names: the object class names, class 1 first, for the preview captions.
        val_batch_size: validation images per batch.
        ap_every: with `val_examples` and `categories`, add `val_mask_AP` and `val_box_AP`
            every this many epochs and at the last (`kseg.training.InstanceAP`; NaN between);
            0: never.
        monitor: save the best epoch by this log entry as `run_dir/best.keras` (e.g.
            "val_mask_AP", "val_loss"); None: no best model.
        patience: with `monitor`, stop after this many epochs without improvement.
        keep_checkpoints: with `checkpoint_every_epoch`, keep only the newest this many.
        preview_images: draw the detections on the first this many validation images into
            `run_dir/previews/` (and TensorBoard with `tensorboard`) after every epoch; 0: none.
        flat_warning_epochs: with `monitor`, warn once when it stays flat for this many epochs.
        history_plot: draw the curves into `run_dir/history.png` at the end.

    Returns:
        The seconds this call spent training.

    Example:
        >>> import kseg, kseg.recipes
        >>> examples = kseg.data.shapes_instance_examples("train", num_samples=4, image_size=64)
        >>> batches = kseg.data.pad_instance_batch(examples.repeat(), 2)
        >>> model = kseg.models.MaskRCNN(
        ...     num_classes=kseg.data.shapes_info().num_classes, backbone="tiny", fpn_channels=16
        ... )
        >>> seconds = kseg.recipes.fit_instances(  # doctest: +SKIP
        ...     model, batches, epochs=1, steps_per_epoch=100, learning_rate=3e-4,
        ...     run_dir="runs/mask_rcnn", max_train_minutes=30)
    """
    schedule = poly_schedule(learning_rate, epochs * steps_per_epoch, warmup_steps=warmup_steps)
    model.compile(optimizer=clipped_optimizer(optimizer, schedule), run_eagerly=run_eagerly)
    callbacks = [TimeLimit(max_train_minutes)] if max_train_minutes else []
    val, epoch_metrics = None, []
    if val_examples is not None:
        val = pad_instance_batch(val_examples, val_batch_size)
        if ap_every and categories is not None:
            epoch_metrics.append(
                InstanceAP(val_examples, categories, every=ap_every, batch_size=val_batch_size)
            )
        if preview_images:
            render = instance_renderer(val_examples.take(preview_images), class_names=class_names)
            callbacks.append(PreviewImages(run_dir, render, tensorboard=tensorboard))
    start = time.time()
    fit(
        model,
        batches,
        val,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        run_dir=str(run_dir),
        callbacks=callbacks,
        tensorboard=tensorboard,
        checkpoint_every_epoch=checkpoint_every_epoch,
        verbose=verbose,
        epoch_metrics=epoch_metrics,
        monitor=monitor,
        patience=patience,
        keep_checkpoints=keep_checkpoints,
        flat_warning_epochs=flat_warning_epochs,
        history_plot=history_plot,
    )
    return time.time() - start
