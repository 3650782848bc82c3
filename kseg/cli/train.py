"""`kseg train`: a registered model on a dataset, resumable in its run folder."""

import argparse
from pathlib import Path

import tensorflow as tf

import kseg.data
import kseg.distribute
import kseg.metrics
import kseg.models
import kseg.recipes
import kseg.tasks
import kseg.training
from kseg.cli import arguments, reports
from kseg.cli.instance_data import category_names, coco_source, instance_examples
from kseg.data.memory_cache import cache_if_it_fits

DESCRIPTION = """Trains a registered model (or `--model mask_rcnn`) on a dataset, resuming an
interrupted run in the same folder.

A recipe sets the training (`--recipe`, default the model's finetune recipe: a short run from
ImageNet weights on a CPU; `kseg list --recipes` shows them); every flag left at None takes the
recipe's value, a flag given overrides it. The resolved recipe is printed at start and saved as
RUN_DIR/recipe.json with the class names and palette, which `kseg evaluate` and `kseg predict`
read back to run the model the way it was trained (its resize, names and colours).

`--batch-size` is the global batch: each of the strategy's N replicas gets batch-size / N
examples per step. `--scale-learning-rate` multiplies `--learning-rate` by N (linear scaling).
"""


def train_semantic_model(
    model_name, model_kwargs, train, val, *, num_classes, run_dir, strategy=None, **fit_options
):
    """Builds a semantic model in the strategy's scope, trains it, saves `run_dir/model.keras`.

    Training is `kseg.recipes.fit_semantic` with the mean IoU as metric; under a multi-worker
    strategy only the chief writes the model file (`kseg.distribute.save_on_chief`).

    Args:
        model_name: a registered semantic model.
        model_kwargs: its builder arguments.
        train: repeating training batches.
        val: validation batches.
        num_classes: number of classes.
        run_dir: the run folder.
        strategy: the `tf.distribute.Strategy`; None uses the current one.
        **fit_options: the other arguments of `kseg.recipes.fit_semantic`.

    Returns:
        The trained model.
    """
    task = kseg.tasks.for_name(model_name)
    strategy = strategy or tf.distribute.get_strategy()
    ignore_label = fit_options.get("ignore_label", 255)
    with strategy.scope():
        model = task.build(model_name, **model_kwargs)
        metrics = [kseg.metrics.MeanIoU(num_classes, ignore_label=ignore_label, name="mean_iou")]
    task.fit(
        model,
        train,
        val,
        num_classes=num_classes,
        run_dir=run_dir,
        strategy=strategy,
        metrics=metrics,
        tensorboard=True,
        **fit_options,
    )
    kseg.distribute.save_on_chief(model, Path(run_dir) / "model.keras", strategy)
    return model


def resolve_recipe(args):
    """The model name and resolved recipe of a `kseg train` command line, or exit naming why.

    The recipe is `--recipe` (the model's finetune or paper recipe, or a recipe.json) with the
    flags the user gave as overrides (`arguments.recipe_overrides`).
    """
    purpose = args.recipe
    from_file = purpose not in kseg.recipes.PURPOSES
    model = args.model or (None if from_file else arguments.DEFAULT_MODEL)
    try:
        recipe = kseg.recipes.resolve(model, purpose, **arguments.recipe_overrides(args))
    except ValueError as error:
        raise SystemExit(f"kseg: error: {error}") from None
    return recipe.model, recipe


def run(args):
    """Runs `kseg train` with the parsed arguments (see `DESCRIPTION`)."""
    model_name, recipe = resolve_recipe(args)
    task = kseg.tasks.for_name(model_name)
    if task is kseg.tasks.INSTANCE:
        return _train_instances(args, task, recipe)
    if coco_source(args.data) is not None:
        raise SystemExit(
            f"kseg: error: {args.data} holds instance annotations: train --model mask_rcnn on "
            f"it; {model_name} is a semantic segmentation model."
        )
    if args.val_data:
        raise SystemExit(
            "kseg: error: --val-data goes with --model mask_rcnn and coco: data; "
            "semantic models validate on --val-split of --data."
        )
    return _train_semantic(args, task, recipe)


def _train_semantic(args, task, recipe):
    try:
        # First: MultiWorkerMirroredStrategy must be set up before any other TensorFlow work.
        strategy = kseg.distribute.get_strategy(args.strategy)
        per_replica = kseg.distribute.per_replica_batch_size(recipe.batch_size, strategy)
    except kseg.distribute.DistributionError as error:
        raise SystemExit(f"kseg: error: {error}") from None
    print(recipe.summary())
    learning_rate = recipe.learning_rate
    if args.scale_learning_rate:
        learning_rate = kseg.distribute.scale_learning_rate(learning_rate, strategy)
    policy = kseg.training.set_precision(args.precision)
    train_source, info = kseg.data.load_split(
        args.data,
        args.train_split,
        resize=recipe.resize,
        num_classes=args.num_classes,
        mask_values=args.mask_values,
    )
    val_source, _ = kseg.data.load_split(
        args.data,
        args.val_split,
        resize=recipe.resize,
        num_classes=args.num_classes,
        mask_values=args.mask_values,
    )
    if args.num_samples is not None:
        train_source = train_source.take(args.num_samples)
        val_source = val_source.take(args.num_samples)
    # Decoding is most of the input pipeline's CPU: a training set that fits is decoded once.
    train_source, train_count, _ = cache_if_it_fits(train_source)
    num_classes = args.num_classes or info.num_classes
    if num_classes is None:
        raise SystemExit(f"the number of classes of {args.data!r} is unknown: pass --num-classes")
    class_names = arguments.dataset_class_names(args, info.class_names, num_classes)
    with strategy.scope():
        # Element-wise sharding: every step sees the same global batch whatever the worker count.
        train = kseg.distribute.shard_by_data(
            kseg.data.make_pipeline(
                train_source,
                recipe.batch_size,
                crop_size=recipe.crop_size,
                scale_range=recipe.scale_range,
                flip=recipe.flip,
                jitter=recipe.jitter,
                seed=args.seed,
                ignore_label=info.ignore_label,
            )
        )
        val = kseg.distribute.shard_by_data(
            kseg.data.make_pipeline(
                val_source, args.val_batch_size, augment=False, ignore_label=info.ignore_label
            )
        )
    steps = recipe.steps_per_epoch
    if not steps:
        if train_count is None:  # too large to cache: the sizing pass stopped early
            train_count = sum(1 for _ in train_source)
        steps = max(1, train_count // recipe.batch_size)
    replicas = strategy.num_replicas_in_sync
    print(
        f"training {recipe.model} on {args.data} ({num_classes} classes), precision {policy}, "
        f"{recipe.epochs} epochs of {steps} steps, run folder {args.run_dir}"
    )
    print(
        f"strategy {args.strategy}: {replicas} replica{'s' if replicas > 1 else ''}, "
        f"global batch {recipe.batch_size} ({per_replica} per replica), "
        f"learning rate {learning_rate:g}"
    )
    names = class_names or [str(label) for label in range(num_classes)]
    palette = info.palette_array() if info.palette else None
    if kseg.distribute.is_chief(strategy):
        kseg.recipes.save(
            recipe.replace(
                class_names=names,
                palette=None if palette is None else palette[:num_classes].tolist(),
            ),
            args.run_dir,
        )
    loss = kseg.recipes.recipe_loss(recipe, num_classes, train_source, info.ignore_label)
    model = train_semantic_model(
        recipe.model,
        {"num_classes": num_classes, **recipe.model_args},
        train.repeat(),
        val,
        num_classes=num_classes,
        run_dir=args.run_dir,
        strategy=strategy,
        steps_per_epoch=steps,
        loss=loss,
        ignore_label=info.ignore_label,
        jit_compile=args.jit,
        verbose="auto",
        run_eagerly=args.run_eagerly,
        monitor="val_mean_iou",
        class_names=names,
        palette=palette,
        # The learning rate may be scaled by the replica count (--scale-learning-rate).
        **(recipe.optimization() | {"learning_rate": learning_rate}),
        **_watch_options(args),
    )
    scores = task.evaluate(model, val, num_classes, ignore_label=info.ignore_label)
    reports.print_scores(scores, class_names)
    if kseg.distribute.is_chief(strategy):
        reports.write_scores(Path(args.run_dir) / "scores.json", scores, class_names)


def _instance_validation(args, categories):
    """The validation examples of `kseg train --model mask_rcnn`, or None without any."""
    if coco_source(args.data) is None:
        if args.val_data:
            raise SystemExit(
                "kseg: error: --val-data goes with --data coco:...; shapes data "
                "take their validation images from --val-split."
            )
        return instance_examples(args.data, args.val_split, args.num_samples)[0]
    if not args.val_data:
        return None
    annotations, image_dir = coco_source(args.val_data) or (None, None)
    if annotations is None:
        raise SystemExit(
            "kseg: error: --val-data takes coco:ANNOTATIONS.json,IMAGE_DIR. "
            f"Received: {args.val_data!r}"
        )
    # Numbered with the training categories, so class k means the same in both.
    val = kseg.data.coco_instance_dataset(annotations, image_dir, category_ids=categories.coco_ids)
    if args.num_samples is not None:
        val = val.take(args.num_samples)
    return val


def _train_instances(args, task, recipe):
    """`kseg train --model mask_rcnn`: Mask R-CNN on shapes or COCO-format data, resumable."""
    arguments.refuse_semantic_flags(
        args,
        [
            ("--output-stride", args.output_stride is not None),
            ("--loss", args.loss is not None),
            ("--resize", args.resize is not None),
            ("--scale-range", args.scale_range is not None),
            ("--class-weighting", args.class_weighting is not None),
            ("--batchnorm-momentum", args.batchnorm_momentum is not None),
            ("--weight-decay", args.weight_decay is not None),
            ("--num-classes", args.num_classes is not None),
            ("--mask-values", args.mask_values is not None),
            ("--strategy", args.strategy != "default"),
            ("--scale-learning-rate", args.scale_learning_rate),
            ("--jit", args.jit),
        ],
    )
    print(recipe.summary())
    train, categories = instance_examples(args.data, args.train_split, args.num_samples)
    val = _instance_validation(args, categories)
    count = int(train.cardinality())
    batch_size = recipe.batch_size
    steps = recipe.steps_per_epoch or (max(1, count // batch_size) if count > 0 else None)
    if steps is None:
        raise SystemExit(f"kseg: error: the size of {args.data} is unknown: pass --steps-per-epoch")
    names = category_names(categories)
    policy = kseg.training.set_precision(args.precision)
    try:
        model = task.build(recipe.model, num_classes=len(names) + 1, **recipe.model_args)
    except TypeError as error:
        raise SystemExit(f"kseg: error: --model-arg: {error}") from None
    print(
        f"training MaskRCNN ({model.backbone_name}) on {args.data} ({len(names)} classes: "
        f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}), precision {policy}, "
        f"{recipe.epochs} epochs of {steps} steps, batch {batch_size}, run folder "
        f"{args.run_dir}"
    )
    coco = coco_source(args.data)
    if coco is not None and args.num_samples is None:
        # Shuffling image indices before decoding keeps memory flat with large COCO images.
        train = kseg.data.coco_instance_dataset(*coco, shuffle=True, seed=args.seed)
    else:
        # Decoded examples fill the buffer: shapes images are small, COCO subsets capped.
        train = train.shuffle(min(max(count, 1), 1000 if coco is None else 64), seed=args.seed)
    batches = kseg.data.pad_instance_batch(
        train.repeat(),
        batch_size,
        max_instances=args.max_instances,
        num_classes=len(names) + 1,
    )
    if val is None and args.patience:
        raise SystemExit("kseg: error: --patience needs validation data: pass --val-data")
    kseg.recipes.save(recipe.replace(class_names=names), args.run_dir)
    task.fit(
        model,
        batches,
        val_examples=val,
        categories=categories,
        class_names=names,
        val_batch_size=args.val_batch_size,
        ap_every=args.ap_every,
        monitor=None if val is None else ("val_mask_AP" if args.ap_every else "val_loss"),
        **_watch_options(args),
        epochs=recipe.epochs,
        steps_per_epoch=steps,
        learning_rate=recipe.learning_rate,
        run_dir=args.run_dir,
        optimizer=recipe.optimizer,
        warmup_steps=recipe.warmup_steps,
        tensorboard=True,
        checkpoint_every_epoch=True,
        verbose="auto",
        run_eagerly=args.run_eagerly,
    )
    run_dir = Path(args.run_dir)
    model.save(run_dir / "model.keras")
    if val is None:
        print(f"wrote {run_dir / 'model.keras'} (no --val-data: no AP computed)")
        return
    scores = task.evaluate(model, val, categories, batch_size=args.val_batch_size)
    reports.print_instance_scores(scores)
    reports.write_instance_scores(run_dir / "scores.json", scores, names)


def _watch_options(args):
    """The options of a watched run shared by semantic and instance training."""
    return {
        "patience": args.patience or None,
        "keep_checkpoints": args.keep_checkpoints or None,
        "preview_images": args.preview_images,
        "flat_warning_epochs": 3,
        "history_plot": True,
    }


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text!r}")
    return value


def _add_watch_flags(train):
    train.add_argument(
        "--patience",
        type=_non_negative_int,
        metavar="N",
        default=0,
        help="stop when the validation metric (mean IoU; mask_rcnn: mask AP with --ap-every, "
        "else the validation loss) has not improved for N epochs; 0: never (default: %(default)s)",
    )
    train.add_argument(
        "--ap-every",
        type=_non_negative_int,
        metavar="N",
        default=1,
        help="mask_rcnn: compute the validation mask and box AP every N epochs and at the last "
        "(NaN in history.csv between); 0: only after training (default: %(default)s)",
    )
    train.add_argument(
        "--preview-images",
        type=_non_negative_int,
        metavar="N",
        default=4,
        help="after every epoch draw image, prediction and ground truth of the first N "
        "validation images into RUN_DIR/previews/epoch_NNN.png and TensorBoard "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--keep-checkpoints",
        type=_non_negative_int,
        metavar="N",
        default=1,
        help="keep the newest N epoch checkpoints in RUN_DIR/checkpoints (best.keras is kept "
        "apart); 0: keep every epoch's (default: %(default)s)",
    )


def add_parser(commands):
    """Adds `kseg train` and its flags to the subcommands."""
    train = commands.add_parser("train", help=DESCRIPTION, description=DESCRIPTION)
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
    train.add_argument("--train-split", default="train", help="split to train on")
    train.add_argument(
        "--val-split", default="val", help="split to validate on (semantic data, shapes)"
    )
    train.add_argument(
        "--num-samples",
        type=arguments.positive_int,
        help="use the first N images of each split (shapes: generate N)",
    )
    train.add_argument(
        "--max-instances",
        type=int,
        default=100,
        help="mask_rcnn: instances kept per training image",
    )
    train.add_argument(
        "--num-classes",
        type=int,
        help="number of classes; None: the dataset's (needed for folders)",
    )
    arguments.add_class_flags(
        train,
        names_default="the dataset's (CamVid, VOC, shapes) or the class numbers",
        palette=False,
    )
    train.add_argument(
        "--mask-values",
        help="image/mask folders: how mask values become labels: 'binary' (0/255 masks: 0 "
        "background, 255 foreground, 2 classes), 'labels' (class ids as stored, 255 ignored) "
        "or STORED:LABEL pairs, e.g. 1:1,2:0,3:255 for trimaps; without it, masks holding only "
        "0 and 255 are refused (see docs/own-data.md)",
    )
    arguments.add_model_flags(train)
    arguments.add_recipe_flags(train, kseg.recipes.LOSSES)
    train.add_argument("--val-batch-size", type=int, default=1, help="images per validation batch")
    train.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
        help="Keras dtype policy; auto picks mixed precision where the hardware gains from it",
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
    train.add_argument(
        "--seed", type=int, default=0, help="seed of the shuffling and the augmentation"
    )
    _add_watch_flags(train)
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
    train.set_defaults(handler=run)
