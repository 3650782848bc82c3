"""`kseg evaluate`: a saved model's scores on a dataset split."""

import kseg.data
import kseg.tasks
from kseg.cli import arguments, pretrained_models, reports
from kseg.cli.instance_data import category_names, coco_source, instance_examples

DESCRIPTION = """Scores a saved model on a dataset split: per-class IoU, mIoU, accuracies (semantic
models) or COCO mask and box AP, AP50, AP75 (MaskRCNN models).

A semantic model trained by `kseg train` is run the way it was trained: with recipe.json beside
the model file, images and masks are resized to the recipe's resize (masks by nearest neighbour)
and scored at that size, and the recipe's class names label the report. --resize and
--class-names override them, with a message saying so.

--model also takes a published checkpoint's name (`kseg list --pretrained`): its weights are
downloaded once and converted, and the checkpoint's class names and resize stand in for the
recipe's (each image and mask resized so the shorter side is the checkpoint's size).
"""


def run(args):
    """Runs `kseg evaluate` with the parsed arguments (see `DESCRIPTION`)."""
    model, recipe = pretrained_models.load_model(args.model)
    task = kseg.tasks.for_model(model)
    if task is kseg.tasks.INSTANCE:
        return _evaluate_instances(model, task, args, recipe)
    if coco_source(args.data) is not None:
        raise SystemExit(
            f"kseg: error: {args.data} holds instance annotations, which only MaskRCNN models "
            f"are evaluated on; {args.model} is a semantic segmentation model (evaluate it on "
            "label-map data: 'shapes', a VOC or CamVid root, IMAGES,MASKS folders...)."
        )
    resize = arguments.trained_resize(args, recipe)
    if resize is not None:
        print(
            f"scoring at {arguments.resize_text(resize)}: images and masks resized first "
            "(masks by nearest neighbour)"
        )
    source, info = kseg.data.load_split(
        args.data,
        args.split,
        resize=resize,
        num_classes=args.num_classes,
        mask_values=args.mask_values,
    )
    if args.num_samples is not None:
        source = source.take(args.num_samples)
    num_classes = args.num_classes or info.num_classes or int(model.output.shape[-1])
    val = kseg.data.make_pipeline(
        source, args.batch_size, augment=False, ignore_label=info.ignore_label
    )
    scores = task.evaluate(
        model,
        val,
        num_classes,
        ignore_label=info.ignore_label,
        **arguments.inference_options(args),
    )
    class_names = arguments.trained_class_names(args, recipe)
    if class_names is not None and len(class_names) != num_classes:
        raise SystemExit(
            f"kseg: error: {len(class_names)} class names for {num_classes} classes: "
            f"{', '.join(class_names)}"
        )
    class_names = class_names or info.class_names
    reports.print_scores(scores, class_names)
    if args.output:
        reports.write_scores(args.output, scores, class_names)


def _published_category_ids(model, recipe, categories, args):
    """COCO ids of a published COCO model's classes (class k is id k), checked against the data.

    None for a model trained by kseg, whose classes are the data's contiguous classes.
    """
    if not isinstance(recipe, pretrained_models.PretrainedSettings):
        return None
    if not hasattr(categories, "coco_ids"):
        raise SystemExit(
            f"kseg: error: {args.model} predicts COCO category ids; evaluate it on COCO-format "
            f"annotations (--data coco:ANNOTATIONS.json,IMAGE_DIR). Received: --data {args.data}"
        )
    names = recipe.class_names  # classes 1..K: class k is COCO id k
    mismatched = []
    for coco_id, name in zip(categories.coco_ids, categories.names):
        predicted = names[coco_id - 1] if 0 < coco_id <= len(names) else None
        if predicted != name:
            mismatched.append(f"id {coco_id} {name!r} (the model's id {coco_id}: {predicted!r})")
    if mismatched:
        raise SystemExit(
            f"kseg: error: {args.data} has categories that {args.model} does not predict under "
            f"the same COCO id: {', '.join(mismatched)}."
        )
    return list(range(1, model.num_classes))


def _evaluate_instances(model, task, args, recipe):
    arguments.refuse_semantic_flags(
        args,
        [
            ("--resize", args.resize is not None),
            ("--num-classes", args.num_classes is not None),
            ("--mask-values", args.mask_values is not None),
            ("--class-names", args.class_names is not None),
            *arguments.inference_flags_given(args),
        ],
    )
    examples, categories = instance_examples(args.data, args.split, args.num_samples)
    class_names = list(category_names(categories))
    detection_ids = _published_category_ids(model, recipe, categories, args)
    if detection_ids is None and len(class_names) + 1 != model.num_classes:
        raise SystemExit(
            f"kseg: error: {args.model} predicts {model.num_classes - 1} object classes but "
            f"{args.data} has {len(class_names)} ({', '.join(class_names)})."
        )
    scores = task.evaluate(
        model,
        examples,
        categories,
        batch_size=args.batch_size,
        detection_category_ids=detection_ids,
    )
    reports.print_instance_scores(scores)
    if args.output:
        reports.write_instance_scores(args.output, scores, class_names)


def add_parser(commands):
    """Adds `kseg evaluate` and its flags to the subcommands."""
    evaluate = commands.add_parser("evaluate", help=DESCRIPTION, description=DESCRIPTION)
    evaluate.add_argument(
        "--model",
        required=True,
        help="a .keras file, or a pretrained checkpoint's name (kseg list --pretrained)",
    )
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
        "--mask-values",
        help="image/mask folders: how mask values become labels: 'binary' (0/255 masks: 0 "
        "background, 255 foreground, 2 classes), 'labels' (class ids as stored, 255 ignored) "
        "or STORED:LABEL pairs, e.g. 1:1,2:0,3:255 for trimaps; without it, masks holding only "
        "0 and 255 are refused (see docs/own-data.md)",
    )
    evaluate.add_argument(
        "--num-samples",
        type=arguments.positive_int,
        help="evaluate the first N images only (shapes: generate N)",
    )
    evaluate.add_argument(
        "--num-classes", type=int, help="number of classes; None: the dataset's or the model's"
    )
    arguments.add_class_flags(
        evaluate,
        names_default="the model's recipe.json names, else the dataset's (CamVid, VOC, shapes) "
        "or the numbers",
        palette=False,
    )
    evaluate.add_argument("--batch-size", type=int, default=1, help="images per batch")
    evaluate.add_argument(
        "--resize",
        type=arguments.resize,
        help="resize every image and mask first and score at that size: HEIGHT,WIDTH, or none "
        "for the native size; None: the model's recipe.json resize, else native",
    )
    evaluate.add_argument("--output", help="write the scores as JSON; None writes no file")
    arguments.add_inference_flags(evaluate)
    evaluate.set_defaults(handler=run)
