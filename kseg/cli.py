"""The `kseg` command line: demo, train, evaluate, predict, export, list.

Flags map onto builder arguments: `--backbone`, `--output-stride`, `--backbone-weights`, and any
other builder keyword through `--model-arg NAME=VALUE` (e.g. `--model-arg alpha=0.35`).

`evaluate`, `predict` and `export` also take a saved `kseg.models.MaskRCNN`: evaluation then
reports COCO mask and box AP on `--data shapes` or `--data coco:ANNOTATIONS.json,IMAGE_DIR`,
prediction writes instance overlays and detection JSON files, and export writes the instance
SavedModel.
"""

import argparse
import ast
import json
import os
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_model_args(pairs):
    """Parses `--model-arg NAME=VALUE` strings into builder keyword arguments.

    Each VALUE is read as a Python literal (`64`, `0.5`, `(1, 2)`, `None`) and kept as a string
    when it is not one, so `--model-arg backbone=resnet50` needs no quotes.

    Args:
        pairs: the `NAME=VALUE` strings, or None.

    Returns:
        A dict from each NAME to its parsed VALUE.

    Example:
        >>> import kseg.cli
        >>> kseg.cli.parse_model_args(["num_filters=32", "backbone=resnet50"])
        {'num_filters': 32, 'backbone': 'resnet50'}
    """
    kwargs = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"--model-arg takes NAME=VALUE. Received: {pair!r}")
        name, value = pair.split("=", 1)
        try:
            kwargs[name.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[name.strip()] = value
    return kwargs


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def _size(text):
    parts = [int(p) for p in text.replace("x", ",").split(",")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHT,WIDTH. Received: {text!r}")
    return tuple(parts)


def load_split(source, split, *, num_classes=None, resize=None, **options):
    """Loads one split of any source `kseg.data.load_dataset` reads, with its `DatasetInfo`.

    Plain image/mask folders declare no class count, so `num_classes` is passed to the loader
    only for them (which then checks every label against it); other sources know their own.

    Args:
        source: "shapes", a VOC or CamVid folder, image/mask folders, "tfds:NAME", ...
        split: the split name, e.g. "train" or "val".
        num_classes: the class count of plain folders; ignored for other sources.
        resize: optional `(height, width)` every pair is resized to.
        **options: passed to the loader, e.g. `num_samples=`, `image_size=` for "shapes".

    Returns:
        `(dataset, info)`: the `tf.data.Dataset` of `(image, mask)` pairs and its `DatasetInfo`.

    Example:
        >>> import kseg.cli
        >>> dataset, info = kseg.cli.load_split("shapes", "val", num_samples=4, image_size=48)
    """
    import kseg.data

    kwargs = dict(options)
    if num_classes is not None and kseg.data.describe_source(source) == "folders":
        # Plain folders declare no class count: given one, the loader checks every label.
        kwargs["num_classes"] = num_classes
    dataset, info = kseg.data.load_dataset(source, split, with_info=True, **kwargs)
    if resize is not None:
        dataset = dataset.map(lambda image, mask: kseg.data.resize_pair(image, mask, resize))
    return dataset, info


def _model_arguments(args, num_classes):
    kwargs = {"num_classes": num_classes}
    if args.backbone:
        kwargs["backbone"] = args.backbone
    if args.backbone_weights:
        kwargs["backbone_weights"] = args.backbone_weights
    if args.output_stride:
        kwargs["output_stride"] = args.output_stride
    kwargs.update(parse_model_args(args.model_arg))
    return kwargs


def _loss(name, num_classes, ignore_label):
    import kseg.losses

    cross_entropy = kseg.losses.SegmentationCrossEntropy(ignore_label=ignore_label)
    choices = {
        "ce": cross_entropy,
        "focal": kseg.losses.FocalLoss(ignore_label=ignore_label),
        "dice": kseg.losses.DiceLoss(num_classes, ignore_label=ignore_label),
        "ce+dice": kseg.losses.CombinedLoss(
            [cross_entropy, kseg.losses.DiceLoss(num_classes, ignore_label=ignore_label)],
            [1.0, 1.0],
        ),
    }
    return choices[name]


def train_model(
    *,
    train_ds,
    val_ds,
    num_classes,
    model_name,
    model_kwargs,
    run_dir,
    epochs,
    steps_per_epoch,
    learning_rate,
    optimizer,
    loss,
    ignore_label,
    batchnorm_momentum=None,
    jit_compile=False,
    verbose="auto",
    strategy=None,
    run_eagerly=False,
):
    """Builds, compiles and trains a registered model with kseg's resumable `fit`.

    The model and its optimizer are created inside `strategy.scope()` (the current strategy when
    None), so their variables are mirrored on every replica. Under a multi-worker strategy only
    the chief writes into `run_dir`; other workers keep their backups and checkpoints in
    `run_dir/workers/<task>` (see `kseg.distribute.worker_run_dir`).
    """
    import tensorflow as tf

    import kseg.distribute
    import kseg.metrics
    import kseg.models
    import kseg.training

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = kseg.models.get_model(model_name, **model_kwargs)
        if batchnorm_momentum is not None:
            kseg.training.set_batchnorm_momentum(model, batchnorm_momentum)
        schedule = kseg.training.poly_schedule(learning_rate, epochs * steps_per_epoch, power=0.9)
        kseg.training.compile_model(
            model,
            num_classes=num_classes,
            optimizer=optimizer,
            learning_rate=schedule,
            loss=_loss(loss, num_classes, ignore_label),
            metrics=[kseg.metrics.MeanIoU(num_classes, ignore_label=ignore_label, name="mean_iou")],
            ignore_label=ignore_label,
            jit_compile=jit_compile,
            run_eagerly=run_eagerly,
        )
    history = kseg.training.fit(
        model,
        train_ds.repeat(),
        val_ds,
        epochs=epochs,
        run_dir=kseg.distribute.worker_run_dir(run_dir, strategy),
        steps_per_epoch=steps_per_epoch,
        verbose=verbose,
    )
    kseg.distribute.save_on_chief(model, Path(run_dir) / "model.keras", strategy)
    return model, history


def _print_scores(scores, class_names):
    names = class_names or [str(i) for i in range(len(scores["iou"]))]
    width = max(len(n) for n in names)
    for name, iou in zip(names, scores["iou"]):
        print(f"  {name:{width}s}  IoU {iou:.4f}")
    print(
        f"mean IoU {scores['mean_iou']:.4f}  pixel accuracy {scores['pixel_accuracy']:.4f}  "
        f"mean accuracy {scores['mean_accuracy']:.4f}"
    )


def _write_scores(path, scores, class_names):
    record = {
        key: (value.tolist() if hasattr(value, "tolist") else value)
        for key, value in scores.items()
    }
    record["class_names"] = list(class_names) if class_names else None
    Path(path).write_text(json.dumps(record, indent=2, allow_nan=True))


def cmd_demo(args):
    """Trains DeepLabV3+ on the built-in shapes data and reports validation mIoU."""
    import numpy as np

    import kseg.data
    import kseg.evaluation
    import kseg.export
    import kseg.training
    import kseg.viz

    policy = kseg.training.set_precision(args.precision)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = kseg.data.shapes_info()
    weights = None
    if not args.scratch:
        # The ImageNet file kseg ships, so the demo fine-tunes without a network; other
        # backbones download theirs through keras.applications.
        weights = kseg.backbones.bundled_weights_path(args.backbone, args.alpha) or "imagenet"
    print(
        f"kseg demo: DeepLabV3+ ({args.backbone}, alpha {args.alpha}, "
        f"{'random' if weights is None else 'ImageNet'} initialisation) on {args.train_samples} "
        f"shapes images of {args.image_size}px, {args.epochs} epochs, precision {policy}"
    )
    train = kseg.data.make_pipeline(
        kseg.data.shapes_dataset("train", args.train_samples, args.image_size, seed=args.seed),
        args.batch_size,
        crop_size=args.image_size,
        scale_range=(0.75, 1.25),
        jitter=False,
        seed=args.seed,
    )
    val_source = kseg.data.shapes_dataset("val", args.val_samples, args.image_size, seed=args.seed)
    val = kseg.data.make_pipeline(val_source, 50, augment=False)
    steps = args.train_samples // args.batch_size
    model, _ = train_model(
        train_ds=train,
        val_ds=val,
        num_classes=info.num_classes,
        model_name="deeplabv3plus",
        model_kwargs=dict(
            num_classes=info.num_classes,
            backbone=args.backbone,
            output_stride=16,
            num_filters=args.num_filters,
            backbone_weights=weights,
            **({"alpha": args.alpha} if args.backbone.startswith("mobilenet") else {}),
        ),
        run_dir=out / "run",
        epochs=args.epochs,
        steps_per_epoch=steps,
        learning_rate=args.learning_rate,
        optimizer="adam",
        loss="ce",
        ignore_label=info.ignore_label,
        batchnorm_momentum=0.9,
        verbose=2 if args.quiet_progress else "auto",
    )
    scores = kseg.evaluation.evaluate_model(model, val, info.num_classes)
    _print_scores(scores, info.class_names)
    _write_scores(out / "scores.json", scores, info.class_names)

    images, masks = next(iter(val.unbatch().batch(4)))
    predictions = np.argmax(model.predict(images, verbose=0), axis=-1)
    rows = [
        images.numpy().astype(np.uint8),
        [kseg.viz.colorize(p, info.palette) for p in predictions],
        [kseg.viz.colorize(m, info.palette) for m in masks.numpy()],
    ]
    from PIL import Image

    Image.fromarray(np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)).save(
        out / "overlay.png"
    )
    kseg.export.saved_model(model, out / "saved_model")
    print(f"validation mIoU {scores['mean_iou']:.4f}")
    print(
        f"wrote {out / 'overlay.png'} (rows: image, prediction, ground truth), "
        f"{out / 'saved_model'}, {out / 'run' / 'model.keras'}"
    )
    return scores


def cmd_train(args):
    """Trains a registered model (or `--model mask_rcnn`) on a dataset, resuming an interrupted
    run in the same folder.

    `--batch-size` is the global batch: each of the strategy's N replicas gets batch-size / N
    examples per step. `--scale-learning-rate` multiplies `--learning-rate` by N (linear scaling).
    """
    import kseg.data
    import kseg.distribute
    import kseg.models
    import kseg.training

    if args.model.lower() in INSTANCE_MODEL_NAMES:
        return _train_instances(args)
    if _coco_source(args.data) is not None:
        raise SystemExit(
            f"kseg: error: {args.data} holds instance annotations: train --model mask_rcnn on "
            f"it; {args.model} is a semantic segmentation model."
        )
    if args.val_data:
        raise SystemExit(
            "kseg: error: --val-data goes with --model mask_rcnn and coco: data; "
            "semantic models validate on --val-split of --data."
        )
    if args.model.lower() not in kseg.models.list_models():
        raise SystemExit(
            f"kseg: error: unknown model {args.model!r}; registered: "
            f"{', '.join(kseg.models.list_models())}"
        )

    try:
        # First: MultiWorkerMirroredStrategy must be set up before any other TensorFlow work.
        strategy = kseg.distribute.get_strategy(args.strategy)
        per_replica = kseg.distribute.per_replica_batch_size(args.batch_size, strategy)
    except kseg.distribute.DistributionError as error:
        raise SystemExit(f"kseg: error: {error}") from None
    learning_rate = args.learning_rate
    if args.scale_learning_rate:
        learning_rate = kseg.distribute.scale_learning_rate(learning_rate, strategy)
    policy = kseg.training.set_precision(args.precision)
    train_source, info = load_split(
        args.data, args.train_split, resize=args.resize, num_classes=args.num_classes
    )
    val_source, _ = load_split(
        args.data, args.val_split, resize=args.resize, num_classes=args.num_classes
    )
    if args.num_samples is not None:
        train_source = train_source.take(args.num_samples)
        val_source = val_source.take(args.num_samples)
    num_classes = args.num_classes or info.num_classes
    if num_classes is None:
        raise SystemExit(f"the number of classes of {args.data!r} is unknown: pass --num-classes")
    with strategy.scope():
        # Element-wise sharding: every step sees the same global batch whatever the worker count.
        train = kseg.distribute.shard_by_data(
            kseg.data.make_pipeline(
                train_source,
                args.batch_size,
                crop_size=args.crop_size,
                seed=args.seed,
                ignore_label=info.ignore_label,
            )
        )
        val = kseg.distribute.shard_by_data(
            kseg.data.make_pipeline(
                val_source, args.val_batch_size, augment=False, ignore_label=info.ignore_label
            )
        )
    steps = args.steps_per_epoch or max(1, sum(1 for _ in train_source) // args.batch_size)
    replicas = strategy.num_replicas_in_sync
    print(
        f"training {args.model} on {args.data} ({num_classes} classes), precision {policy}, "
        f"{args.epochs} epochs of {steps} steps, run folder {args.run_dir}"
    )
    print(
        f"strategy {args.strategy}: {replicas} replica{'s' if replicas > 1 else ''}, "
        f"global batch {args.batch_size} ({per_replica} per replica), "
        f"learning rate {learning_rate:g}"
    )
    model, _ = train_model(
        train_ds=train,
        val_ds=val,
        num_classes=num_classes,
        model_name=args.model,
        model_kwargs=_model_arguments(args, num_classes),
        run_dir=args.run_dir,
        epochs=args.epochs,
        steps_per_epoch=steps,
        learning_rate=learning_rate,
        optimizer=args.optimizer,
        loss=args.loss,
        ignore_label=info.ignore_label,
        jit_compile=args.jit,
        strategy=strategy,
        run_eagerly=args.run_eagerly,
    )
    import kseg.evaluation

    scores = kseg.evaluation.evaluate_model(model, val, num_classes, ignore_label=info.ignore_label)
    _print_scores(scores, info.class_names)
    if kseg.distribute.is_chief(strategy):
        _write_scores(Path(args.run_dir) / "scores.json", scores, info.class_names)


def _load_model(path):
    import keras

    import kseg  # noqa: F401  (registers kseg's layers, losses and metrics)

    if not Path(path).exists():
        raise SystemExit(f"model file not found: {path}")
    if str(path).endswith(".keras") and not zipfile.is_zipfile(path):
        raise SystemExit(f"not a .keras model archive (a zip file saved by model.save): {path}")
    return keras.saving.load_model(path)


COCO_PREFIX = "coco:"


def _is_instance_model(model):
    from kseg.models.mask_rcnn import MaskRCNN

    return isinstance(model, MaskRCNN)


def _coco_source(source):
    """`coco:ANNOTATIONS.json,IMAGE_DIR` as `(annotations, image_dir)`; None for other sources."""
    text = os.fspath(source)
    if not text.startswith(COCO_PREFIX):
        return None
    parts = [part.strip() for part in text[len(COCO_PREFIX) :].split(",")]
    if len(parts) != 2 or not all(parts):
        raise SystemExit(
            "kseg: error: COCO data are given as coco:ANNOTATIONS.json,IMAGE_DIR. "
            f"Received: --data {text!r}"
        )
    return tuple(parts)


def _instance_examples(source, split, num_samples):
    """Instance examples and their categories from `shapes` or `coco:ANNOTATIONS,IMAGE_DIR`."""
    import kseg.data

    coco = _coco_source(source)
    if coco is not None:
        annotations, image_dir = coco
        # Both calls name a missing annotation file or image folder in a DatasetError.
        examples = kseg.data.coco_instance_dataset(annotations, image_dir)
        categories = kseg.data.coco_categories(annotations)
        if num_samples is not None:
            examples = examples.take(num_samples)
        return examples, categories
    if source == "shapes":
        kwargs = {} if num_samples is None else {"num_samples": num_samples}
        return kseg.data.shapes_instance_examples(split, **kwargs), kseg.data.shapes_info()
    raise SystemExit(
        "kseg: error: MaskRCNN models take instance annotations: --data shapes or "
        f"--data coco:ANNOTATIONS.json,IMAGE_DIR. Received: --data {source!r}"
    )


def _refuse_semantic_flags(args, flags):
    """Stops with a message naming the semantic-only flags given for an instance model."""
    given = [flag for flag, value in flags if value]
    if given:
        raise SystemExit(
            f"kseg: error: {', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to "
            f"semantic segmentation models only; {args.model} is a MaskRCNN."
        )


INSTANCE_MODEL_NAMES = ("mask_rcnn", "maskrcnn")


def _instance_optimizer(name, learning_rate):
    import keras

    # Clipping keeps the first steps of a randomly initialised detection head stable.
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, global_clipnorm=10.0)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, global_clipnorm=10.0)
    return keras.optimizers.AdamW(learning_rate, weight_decay=1e-4, global_clipnorm=10.0)


def _train_instances(args):
    """`kseg train --model mask_rcnn`: Mask R-CNN on shapes or COCO-format data, resumable."""
    import kseg.data
    import kseg.detection
    import kseg.models
    import kseg.training

    _refuse_semantic_flags(
        args,
        [
            ("--output-stride", args.output_stride is not None),
            ("--loss", args.loss != "ce"),
            ("--resize", args.resize is not None),
            ("--num-classes", args.num_classes is not None),
            ("--strategy", args.strategy != "default"),
            ("--scale-learning-rate", args.scale_learning_rate),
            ("--jit", args.jit),
        ],
    )
    train, categories = _instance_examples(args.data, args.train_split, args.num_samples)
    if _coco_source(args.data) is not None:
        val = None
        if args.val_data:
            annotations, image_dir = _coco_source(args.val_data) or (None, None)
            if annotations is None:
                raise SystemExit(
                    "kseg: error: --val-data takes coco:ANNOTATIONS.json,IMAGE_DIR. "
                    f"Received: {args.val_data!r}"
                )
            # Numbered with the training categories, so class k means the same in both.
            val = kseg.data.coco_instance_dataset(
                annotations, image_dir, category_ids=categories.coco_ids
            )
            if args.num_samples is not None:
                val = val.take(args.num_samples)
    else:
        if args.val_data:
            raise SystemExit(
                "kseg: error: --val-data goes with --data coco:...; shapes data "
                "take their validation images from --val-split."
            )
        val, _ = _instance_examples(args.data, args.val_split, args.num_samples)
    count = int(train.cardinality())
    steps = args.steps_per_epoch or (max(1, count // args.batch_size) if count > 0 else None)
    if steps is None:
        raise SystemExit(f"kseg: error: the size of {args.data} is unknown: pass --steps-per-epoch")
    names = _category_names(categories)
    policy = kseg.training.set_precision(args.precision)
    model_kwargs = parse_model_args(args.model_arg)
    if args.backbone:
        model_kwargs["backbone"] = args.backbone
    if args.backbone_weights:
        model_kwargs["backbone_weights"] = (
            None if args.backbone_weights.lower() == "none" else args.backbone_weights
        )
    try:
        model = kseg.models.MaskRCNN(num_classes=len(names) + 1, **model_kwargs)
    except TypeError as error:
        raise SystemExit(f"kseg: error: --model-arg: {error}") from None
    schedule = kseg.training.poly_schedule(args.learning_rate, args.epochs * steps, power=0.9)
    model.compile(
        optimizer=_instance_optimizer(args.optimizer, schedule), run_eagerly=args.run_eagerly
    )
    print(
        f"training MaskRCNN ({model.backbone_name}) on {args.data} ({len(names)} classes: "
        f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}), precision {policy}, "
        f"{args.epochs} epochs of {steps} steps, batch {args.batch_size}, run folder "
        f"{args.run_dir}"
    )
    coco = _coco_source(args.data)
    if coco is not None and args.num_samples is None:
        # Shuffling image indices before decoding keeps memory flat with large COCO images.
        train = kseg.data.coco_instance_dataset(*coco, shuffle=True, seed=args.seed)
    else:
        # Decoded examples fill the buffer: shapes images are small, COCO subsets capped.
        train = train.shuffle(min(max(count, 1), 1000 if coco is None else 64), seed=args.seed)
    batches = kseg.data.pad_instance_batch(
        train.repeat(),
        args.batch_size,
        max_instances=args.max_instances,
        num_classes=len(names) + 1,
    )
    kseg.training.fit(
        model, batches, epochs=args.epochs, steps_per_epoch=steps, run_dir=args.run_dir
    )
    run_dir = Path(args.run_dir)
    model.save(run_dir / "model.keras")
    if val is None:
        print(f"wrote {run_dir / 'model.keras'} (no --val-data: no AP computed)")
        return
    scores = kseg.detection.evaluate_instances(
        model, val, categories, batch_size=args.val_batch_size
    )
    _print_instance_scores(scores)
    record = {key: float(value) for key, value in scores.items()}
    record["num_images"] = int(scores["num_images"])
    record["class_names"] = list(names)
    (run_dir / "scores.json").write_text(json.dumps(record, indent=2, allow_nan=True))


def _inference_flags_given(args):
    return [
        ("--scales", args.scales != (1.0,)),
        ("--flip", args.flip),
        ("--window", args.window is not None),
        ("--crf", args.crf),
    ]


def _print_instance_scores(scores):
    for kind in ("mask", "box"):
        print(
            f"{kind:4s} AP {scores[f'{kind}_AP']:.4f}  AP50 {scores[f'{kind}_AP50']:.4f}  "
            f"AP75 {scores[f'{kind}_AP75']:.4f}"
        )
    print(f"({scores['num_images']} images)")


def _evaluate_instances(model, args):
    import kseg.detection

    _refuse_semantic_flags(
        args,
        [
            ("--resize", args.resize is not None),
            ("--num-classes", args.num_classes is not None),
            *_inference_flags_given(args),
        ],
    )
    examples, categories = _instance_examples(args.data, args.split, args.num_samples)
    class_names = list(_category_names(categories))
    if len(class_names) + 1 != model.num_classes:
        raise SystemExit(
            f"kseg: error: {args.model} predicts {model.num_classes - 1} object classes but "
            f"{args.data} has {len(class_names)} ({', '.join(class_names)})."
        )
    scores = kseg.detection.evaluate_instances(
        model, examples, categories, batch_size=args.batch_size
    )
    _print_instance_scores(scores)
    if args.output:
        record = {key: float(value) for key, value in scores.items()}
        record["num_images"] = int(scores["num_images"])
        record["class_names"] = class_names
        Path(args.output).write_text(json.dumps(record, indent=2, allow_nan=True))


def _category_names(categories):
    if hasattr(categories, "coco_ids"):
        return tuple(categories.names)
    return tuple(categories.class_names[1:])


def _draw_instances(image, masks, boxes):
    """The image with each instance's mask blended in its own colour and its box outlined.

    Masks arrive best first; they are painted in reverse so that a better detection covers a
    weaker one where they overlap. Instance i gets colour i + 1 of `kseg.viz.palette`.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    import kseg.viz

    colours = kseg.viz.palette(len(masks) + 1)
    labels = np.zeros(image.shape[:2], np.int32)
    for index in reversed(range(len(masks))):
        labels[masks[index] > 0] = index + 1
    blended = kseg.viz.overlay(image, labels, colours, alpha=0.5)
    drawn = Image.fromarray(np.where(labels[..., None] > 0, blended, image).astype(np.uint8))
    pen = ImageDraw.Draw(drawn)
    for index, (y1, x1, y2, x2) in enumerate(boxes):
        # Boxes are continuous [y1, x1, y2, x2]; PIL's rectangle includes its last pixel.
        pen.rectangle(
            [float(x1), float(y1), max(float(x1), float(x2) - 1), max(float(y1), float(y2) - 1)],
            outline=tuple(int(c) for c in colours[index + 1]),
        )
    return drawn


def _class_names_for_predict(text, num_classes):
    """`--class-names`: comma-separated names of classes 1..K, or a COCO annotation file."""
    if text is None:
        return None
    if text.endswith(".json"):
        import kseg.data

        names = list(kseg.data.coco_categories(text).names)
    else:
        names = [name.strip() for name in text.split(",")]
    if len(names) != num_classes - 1:
        raise SystemExit(
            f"kseg: error: --class-names gives {len(names)} names but the model predicts "
            f"{num_classes - 1} object classes. Received: {text!r}"
        )
    return names


def _predict_instances(model, args, files):
    import numpy as np
    import tensorflow as tf
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    import kseg.detection

    _refuse_semantic_flags(args, _inference_flags_given(args))
    names = _class_names_for_predict(args.class_names, model.num_classes)
    serve = tf.function(
        kseg.detection.instance_serving_function(model, mask_threshold=args.mask_threshold),
        reduce_retracing=True,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="predicting", unit="image"):
        try:
            image = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as error:
            raise SystemExit(f"cannot read image {path}: {error}") from None
        result = {key: value.numpy() for key, value in serve(tf.constant(image)).items()}
        count = int(result["num_detections"])
        keep = [i for i in range(count) if result["scores"][i] >= args.min_score]
        detections = [
            {
                "box": [round(float(v), 2) for v in result["boxes"][i]],
                "class": int(result["classes"][i]),
                **({"class_name": names[int(result["classes"][i]) - 1]} if names else {}),
                "score": round(float(result["scores"][i]), 4),
                "mask_area": int(result["masks"][i].sum()),
            }
            for i in keep
        ]
        record = {
            "image": str(path),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "box_format": "[y1, x1, y2, x2] in pixels, max exclusive",
            "min_score": args.min_score,
            "detections": detections,
        }
        (out / f"{path.stem}_instances.json").write_text(json.dumps(record, indent=2))
        _draw_instances(image, result["masks"][keep], result["boxes"][keep]).save(
            out / f"{path.stem}_instances.png"
        )
    print(f"wrote instance overlays and detections to {out}")


def cmd_evaluate(args):
    """Scores a saved model on a dataset split: per-class IoU, mIoU, accuracies (semantic models)
    or COCO mask and box AP, AP50, AP75 (MaskRCNN models).
    """
    import kseg.data
    import kseg.evaluation

    model = _load_model(args.model)
    if _is_instance_model(model):
        return _evaluate_instances(model, args)
    if _coco_source(args.data) is not None:
        raise SystemExit(
            f"kseg: error: {args.data} holds instance annotations, which only MaskRCNN models "
            f"are evaluated on; {args.model} is a semantic segmentation model (evaluate it on "
            "label-map data: 'shapes', a VOC or CamVid root, IMAGES,MASKS folders...)."
        )
    source, info = load_split(
        args.data, args.split, resize=args.resize, num_classes=args.num_classes
    )
    if args.num_samples is not None:
        source = source.take(args.num_samples)
    num_classes = args.num_classes or info.num_classes or int(model.output.shape[-1])
    val = kseg.data.make_pipeline(
        source, args.batch_size, augment=False, ignore_label=info.ignore_label
    )
    scores = kseg.evaluation.evaluate_model(
        model, val, num_classes, ignore_label=info.ignore_label, predict_fn=_predictor(model, args)
    )
    _print_scores(scores, info.class_names)
    if args.output:
        _write_scores(args.output, scores, info.class_names)


def _predictor(model, args):
    """The `--scales/--flip/--window/--crf` inference modes as an images -> labels function."""
    import kseg.inference

    if args.scales == (1.0,) and not args.flip and args.window is None and not args.crf:
        return None
    return kseg.inference.make_predictor(
        model,
        scales=args.scales,
        flip=args.flip,
        window=args.window,
        overlap=args.overlap,
        crf=args.crf,
    )


def parse_scales(text):
    """Parses a comma-separated list of positive image scales, e.g. "0.75,1,1.25".

    Args:
        text: the scales, separated by commas.

    Returns:
        A tuple of floats.

    Raises:
        argparse.ArgumentTypeError: when a part is not a number or a scale is not positive.

    Example:
        >>> import kseg.cli
        >>> kseg.cli.parse_scales("0.75,1,1.25")
        (0.75, 1.0, 1.25)
    """
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        scales = ()
    if not scales or any(scale <= 0 for scale in scales):
        raise argparse.ArgumentTypeError(f"expected positive numbers like 0.5,1,1.5, got {text!r}")
    return scales


def _add_inference_flags(parser):
    parser.add_argument(
        "--scales",
        type=parse_scales,
        default=(1.0,),
        help="average over these image scales, e.g. 0.5,0.75,1,1.25,1.5,1.75",
    )
    parser.add_argument("--flip", action="store_true", help="also average over mirrored images")
    parser.add_argument(
        "--window",
        type=_size,
        help="sliding-window inference with this window (SIZE or HEIGHT,WIDTH)",
    )
    parser.add_argument(
        "--overlap", type=float, default=1 / 3, help="fraction shared by neighbouring windows"
    )
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF")


def image_files(inputs):
    """Lists the image files named by `inputs`: files as given, folders' images in name order.

    Args:
        inputs: paths of image files (any format PIL reads) or of folders, whose `.png`,
            `.jpg`, `.jpeg` and `.bmp` files are taken.

    Returns:
        A list of `pathlib.Path`.

    Raises:
        SystemExit: naming an input that does not exist, or when no image is found.

    Example:
        >>> import kseg.cli
        >>> files = kseg.cli.image_files(["photos/"])  # doctest: +SKIP
    """
    suffixes = {".png", ".jpg", ".jpeg", ".bmp"}
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes))
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"input not found: {item}")
    if not files:
        raise SystemExit(f"no images found in {', '.join(inputs)}")
    return files


def cmd_predict(args):
    """Writes a label PNG and a colour overlay for every input image; for a MaskRCNN model, an
    instance overlay PNG and a JSON of boxes, classes and scores.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    import kseg.viz

    model = _load_model(args.model)
    if _is_instance_model(model):
        return _predict_instances(model, args, image_files(args.inputs))
    num_classes = int(model.output.shape[-1])
    predict = _predictor(model, args)
    palette = kseg.viz.CAMVID_PALETTE if args.palette == "camvid" else kseg.viz.palette(num_classes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(image_files(args.inputs), desc="predicting", unit="image"):
        try:
            image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        except (UnidentifiedImageError, OSError) as error:
            raise SystemExit(f"cannot read image {path}: {error}") from None
        if predict is None:
            labels = np.argmax(model.predict(image[None], verbose=0)[0], axis=-1)
        else:
            labels = predict(image[None])[0]
        labels = labels.astype(np.uint8)
        Image.fromarray(labels).save(out / f"{path.stem}_labels.png")
        kseg.viz.save_overlay(out / f"{path.stem}_overlay.png", image, labels, palette=palette)
    print(f"wrote predictions to {out}")


def _export_instances(model, args):
    import kseg.export

    if args.format != "savedmodel" or args.tflite:
        given = f"--format {args.format}" if args.format != "savedmodel" else "--tflite"
        raise SystemExit(
            f"kseg: error: {given} is not supported for instance segmentation models "
            f"({args.model} is a MaskRCNN, whose proposal and NMS stages have no TFLite or ONNX "
            "export in kseg); use --format savedmodel."
        )
    _refuse_semantic_flags(
        args,
        [
            ("--logits", args.logits),
            ("--image-size", args.image_size is not None),
            ("--quantization", args.quantization != "none"),
            ("--calibration-data", args.calibration_data is not None),
        ],
    )
    path = kseg.export.saved_model(model, args.out)
    print(
        f"wrote SavedModel {path} (signature serving_default: one uint8 image (H, W, 3) -> "
        "boxes, scores, classes, masks, num_detections)"
    )


def cmd_export(args):
    """Exports a saved `.keras` model: SavedModel (uint8 images in), TFLite or ONNX."""
    import kseg.export

    model = _load_model(args.model)
    if _is_instance_model(model):
        return _export_instances(model, args)
    common = {"include_logits": args.logits, "image_size": args.image_size}
    if args.format == "savedmodel":
        path = kseg.export.saved_model(model, args.out, **common)
        print(
            f"wrote SavedModel {path} (signature serving_default: uint8 images -> labels, "
            "probabilities)"
        )
    elif args.format == "tflite":
        representative = None
        if args.calibration_data:
            import kseg.data

            source, _ = load_split(args.calibration_data, args.calibration_split)
            representative = source.take(args.calibration_steps)
        path = kseg.export.tflite(
            model,
            args.out,
            quantization=args.quantization,
            representative_images=representative,
            allow_select_tf_ops=args.select_tf_ops,
            **common,
        )
        print(f"wrote {path} (TFLite, quantization {args.quantization})")
    else:
        print(f"wrote {kseg.export.onnx(model, args.out, opset=args.opset, **common)} (ONNX)")
    if args.tflite:
        print(f"wrote {kseg.export.tflite(model, args.tflite, **common)}")


def cmd_list(args):
    """Lists the registered models and backbones."""
    import kseg

    print("models:    " + ", ".join(kseg.models.list_models()))
    print("instance:  mask_rcnn (kseg.models.MaskRCNN; --model-arg sets its arguments)")
    print("backbones: " + ", ".join(kseg.backbones.list_backbones()))


def _add_model_flags(parser):
    parser.add_argument(
        "--model",
        default="deeplabv3plus",
        help="registered model name (see `kseg list`), or mask_rcnn",
    )
    parser.add_argument("--backbone", help="backbone name (see `kseg list`)")
    parser.add_argument("--backbone-weights", help="None, 'imagenet' or a weights file")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32))
    parser.add_argument(
        "--model-arg",
        action="append",
        metavar="NAME=VALUE",
        help="any other builder argument, e.g. alpha=0.35 (repeatable)",
    )


def build_parser():
    parser = argparse.ArgumentParser(prog="kseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help=cmd_demo.__doc__, description=cmd_demo.__doc__)
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--epochs", type=int, default=6)
    demo.add_argument("--train-samples", type=int, default=2000)
    demo.add_argument("--val-samples", type=int, default=200)
    demo.add_argument("--image-size", type=int, default=128)
    demo.add_argument("--batch-size", type=int, default=16)
    demo.add_argument("--backbone", default="mobilenetv2")
    demo.add_argument("--alpha", type=float, default=0.35, help="width of a MobileNet backbone")
    demo.add_argument(
        "--scratch",
        action="store_true",
        help="random backbone initialisation instead of ImageNet weights",
    )
    demo.add_argument("--num-filters", type=int, default=64, help="ASPP and decoder channels")
    demo.add_argument("--learning-rate", type=float, default=2e-3)
    demo.add_argument(
        "--precision",
        default="float32",
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet-progress", action="store_true", help="one line per epoch")
    demo.set_defaults(handler=cmd_demo)

    train = commands.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    train.add_argument(
        "--data",
        required=True,
        help="'shapes', 'tfds:NAME', a VOC or CamVid root, or IMAGES,MASKS folders; "
        "for --model mask_rcnn 'shapes' or 'coco:ANNOTATIONS.json,IMAGE_DIR'",
    )
    train.add_argument(
        "--val-data",
        help="mask_rcnn on coco: data: the validation split, coco:ANNOTATIONS.json,IMAGE_DIR",
    )
    train.add_argument("--train-split", default="train")
    train.add_argument("--val-split", default="val")
    train.add_argument(
        "--num-samples",
        type=_positive_int,
        help="use the first N images of each split (shapes: generate N)",
    )
    train.add_argument(
        "--max-instances",
        type=int,
        default=100,
        help="mask_rcnn: instances kept per training image",
    )
    train.add_argument("--num-classes", type=int)
    _add_model_flags(train)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--steps-per-epoch", type=int)
    train.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="global batch per step, split evenly over the replicas",
    )
    train.add_argument("--val-batch-size", type=int, default=1)
    train.add_argument("--crop-size", type=_size, default=(512, 512), help="SIZE or HEIGHT,WIDTH")
    train.add_argument("--resize", type=_size, help="resize every image first (HEIGHT,WIDTH)")
    train.add_argument("--optimizer", default="sgd", choices=("sgd", "adam", "adamw"))
    train.add_argument("--learning-rate", type=float, default=0.01)
    train.add_argument("--loss", default="ce", choices=("ce", "focal", "dice", "ce+dice"))
    train.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
    )
    train.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    train.add_argument(
        "--run-eagerly",
        action="store_true",
        help="run train steps eagerly (debugging, or a few steps where tracing "
        "the graph would take longer than running them)",
    )
    train.add_argument(
        "--run-dir", default="runs/train", help="checkpoints, logs and model.keras; rerun to resume"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--strategy",
        default="default",
        choices=("default", "mirrored", "multiworker", "tpu"),
        help="tf.distribute strategy; multiworker reads the cluster from TF_CONFIG",
    )
    train.add_argument(
        "--scale-learning-rate",
        action="store_true",
        help="multiply --learning-rate by the number of replicas (linear scaling)",
    )
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser(
        "evaluate", help=cmd_evaluate.__doc__, description=cmd_evaluate.__doc__
    )
    evaluate.add_argument("--model", required=True, help="a .keras file")
    evaluate.add_argument(
        "--data",
        required=True,
        help="as for `kseg train`; for a MaskRCNN model 'shapes' or "
        "'coco:ANNOTATIONS.json,IMAGE_DIR'",
    )
    evaluate.add_argument(
        "--split", default="val", help="split name (a coco: source is one split already)"
    )
    evaluate.add_argument(
        "--num-samples",
        type=_positive_int,
        help="evaluate the first N images only (shapes: generate N)",
    )
    evaluate.add_argument("--num-classes", type=int)
    evaluate.add_argument("--batch-size", type=int, default=1)
    evaluate.add_argument("--resize", type=_size)
    evaluate.add_argument("--output", help="write the scores as JSON")
    _add_inference_flags(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser(
        "predict", help=cmd_predict.__doc__, description=cmd_predict.__doc__
    )
    predict.add_argument("--model", required=True, help="a .keras file")
    predict.add_argument("inputs", nargs="+", help="image files or folders")
    predict.add_argument("--out", default="predictions")
    predict.add_argument("--palette", default="voc", choices=("voc", "camvid"))
    predict.add_argument(
        "--class-names",
        help="MaskRCNN: names of classes 1..K, comma-separated, or the COCO "
        "annotation file the model was trained on",
    )
    predict.add_argument(
        "--min-score",
        type=float,
        default=0.5,
        help="MaskRCNN: keep detections scoring at least this",
    )
    predict.add_argument(
        "--mask-threshold",
        type=float,
        default=0.5,
        help="MaskRCNN: mask probability at which a pixel belongs to the instance",
    )
    _add_inference_flags(predict)
    predict.set_defaults(handler=cmd_predict)

    export = commands.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__)
    export.add_argument("--model", required=True, help="a .keras file")
    export.add_argument(
        "--out", required=True, help="SavedModel folder, or the .tflite / .onnx file"
    )
    export.add_argument("--format", default="savedmodel", choices=("savedmodel", "tflite", "onnx"))
    export.add_argument(
        "--quantization",
        default="none",
        choices=("none", "float16", "int8"),
        help="TFLite weights: int8 alone is dynamic-range",
    )
    export.add_argument(
        "--calibration-data",
        help="images for full-integer int8 (same forms as --data of kseg train)",
    )
    export.add_argument("--calibration-split", default="train")
    export.add_argument(
        "--calibration-steps", type=int, default=100, help="calibration images to use"
    )
    export.add_argument(
        "--image-size",
        type=_size,
        help="fix the signature's HEIGHT,WIDTH (some models need it for TFLite/ONNX)",
    )
    export.add_argument(
        "--select-tf-ops",
        action="store_true",
        help="let TFLite fall back to TensorFlow ops (SegNet's argmax pooling)",
    )
    export.add_argument("--opset", type=int, help="ONNX opset")
    export.add_argument("--logits", action="store_true", help="also output the logits")
    export.add_argument("--tflite", help="also write a float TFLite file here")
    export.set_defaults(handler=cmd_export)

    listing = commands.add_parser("list", help=cmd_list.__doc__, description=cmd_list.__doc__)
    listing.set_defaults(handler=cmd_list)
    return parser


def _pipeline_error_message(error):
    """The readable part of an error raised inside a tf.data pipeline or a graph assertion."""
    text = getattr(error, "message", str(error))
    for marker in ("DatasetError: ", "assertion failed: "):
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0]
    return text.splitlines()[0]


def main(argv=None):
    """Entry point of the `kseg` command."""
    args = build_parser().parse_args(argv)
    import tensorflow as tf

    import kseg.data

    try:
        args.handler(args)
    except kseg.data.DatasetError as error:
        print(f"kseg: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except tf.errors.InvalidArgumentError as error:
        # A bad file met while streaming: checkpoints written so far are kept, so after a fix
        # the same command resumes.
        print(f"kseg: error: {_pipeline_error_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0


if __name__ == "__main__":
    main()
