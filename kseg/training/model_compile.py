"""Compiling a segmentation model with the usual defaults: SGD + momentum, ignore-aware loss."""

import keras

from kseg.validation import IGNORE_LABEL

OPTIMIZERS = ("sgd", "adam", "adamw")


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
    ignore_label=IGNORE_LABEL,
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
