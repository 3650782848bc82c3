"""The training recipes kseg's example scripts share, each one call.

Semantic segmentation: random-scale crops and flips (`semantic_batches`), Adam under the "poly"
learning-rate decay of DeepLab (Chen et al., TPAMI 2017), trained by kseg's resumable `fit`
(`fit_semantic`), and scores as a JSON-ready record (`scores_record`). Instance segmentation:
Mask R-CNN (He et al., ICCV 2017) under Adam with gradient clipping and a warmed-up poly decay,
with an optional wall-clock limit (`fit_instances`). The building blocks stay public in
`kseg.data`, `kseg.training` and `kseg.evaluation` for runs that need other choices.
"""

import time

import keras

from kseg.data.augment import make_pipeline
from kseg.training import TimeLimit, compile_model, fit, poly_schedule


def semantic_batches(
    train_source,
    val_source,
    *,
    batch_size,
    crop_size,
    ignore_label=255,
    seed=None,
    scale_range=(0.75, 1.25),
    val_batch_size=None,
    steps_per_epoch=None,
):
    """Training and validation batches of `(image, mask)` datasets, and the steps of an epoch.

    Training batches are augmented by `kseg.data.make_pipeline` (random scale within
    `scale_range`, crop to `crop_size`, flip, photometric jitter) and repeat forever; validation
    batches are not augmented. An epoch is one pass over the training pairs unless
    `steps_per_epoch` is given.

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
    ignore_label=255,
    run_eagerly=False,
):
    """Compiles a segmentation model with Adam under poly decay and trains it into `run_dir`.

    The learning rate falls as `learning_rate * (1 - t / T) ** 0.9` over the
    `epochs * steps_per_epoch` steps (`kseg.training.poly_schedule`); the loss and metric are
    those of `kseg.training.compile_model`. Training is `kseg.training.fit` with one line of log
    per epoch and no TensorBoard, so running it again on the same `run_dir` resumes. Compiling
    here also makes Keras pick up changed `trainable` flags, as between fine-tuning phases.

    Args:
        model: a segmentation model mapping images to `(B, H, W, num_classes)` logits.
        train: training batches (repeating).
        val: validation batches, or None.
        num_classes: number of classes.
        epochs: epochs to train.
        steps_per_epoch: training steps per epoch.
        learning_rate: initial Adam learning rate.
        run_dir: folder of the checkpoints and logs.
        ignore_label: mask value left out of the loss and metric.
        run_eagerly: skip graph compilation (cheaper for a handful of steps).

    Returns:
        The `keras.callbacks.History` of the run.

    Example:
        >>> import kseg, kseg.recipes, tempfile
        >>> source = kseg.data.load_dataset("shapes", "train", num_samples=4, image_size=48)
        >>> train, val, steps = kseg.recipes.semantic_batches(
        ...     source, source, batch_size=2, crop_size=48, steps_per_epoch=1
        ... )
        >>> model = kseg.testing.build_small_model("fcn8s", num_classes=5)
        >>> history = kseg.recipes.fit_semantic(
        ...     model, train, val, num_classes=5, epochs=1, steps_per_epoch=steps,
        ...     learning_rate=1e-3, run_dir=tempfile.mkdtemp(), run_eagerly=True,
        ... )  # doctest: +ELLIPSIS
        1/1 - ...
    """
    compile_model(
        model,
        num_classes=num_classes,
        optimizer="adam",
        learning_rate=poly_schedule(learning_rate, epochs * steps_per_epoch),
        ignore_label=ignore_label,
        run_eagerly=run_eagerly,
    )
    return fit(
        model,
        train,
        val,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        run_dir=str(run_dir),
        tensorboard=False,
        verbose=2,
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


def fit_instances(
    model,
    batches,
    *,
    epochs,
    steps_per_epoch,
    learning_rate,
    run_dir,
    warmup_steps=100,
    max_train_minutes=None,
    run_eagerly=False,
):
    """Compiles a `kseg.models.MaskRCNN` with clipped Adam and trains it into `run_dir`.

    He et al. (ICCV 2017) train Mask R-CNN with a linear warm-up; here the learning rate rises
    over `warmup_steps` and then follows the poly decay to zero at `epochs * steps_per_epoch`
    (`kseg.training.poly_schedule`). Gradients are clipped to a global norm of 10, which keeps the
    first steps of randomly initialised heads stable. The model's own losses are used (it is
    compiled without `loss`). Training is `kseg.training.fit` (resumable, no TensorBoard, one
    checkpoint at the end); `max_train_minutes` stops it at the first step past that time.

    Args:
        model: a `kseg.models.MaskRCNN`.
        batches: repeating batches of `kseg.data.pad_instance_batch`.
        epochs: epochs to train.
        steps_per_epoch: training steps per epoch.
        learning_rate: peak Adam learning rate.
        run_dir: folder of the checkpoints and logs.
        warmup_steps: steps of linear warm-up.
        max_train_minutes: wall-clock limit of this call, or None.
        run_eagerly: skip graph compilation (cheaper for a handful of steps).

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
    model.compile(
        optimizer=keras.optimizers.Adam(schedule, global_clipnorm=10.0), run_eagerly=run_eagerly
    )
    callbacks = [TimeLimit(max_train_minutes)] if max_train_minutes else []
    start = time.time()
    fit(
        model,
        batches,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        run_dir=str(run_dir),
        callbacks=callbacks,
        tensorboard=False,
        checkpoint_every_epoch=False,
        verbose=2,
    )
    return time.time() - start
