"""`kseg predict`: label maps, overlays and side-by-sides, or instance drawings and detections."""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

import kseg.data
import kseg.tasks
import kseg.validation
import kseg.viz
from kseg.cli import arguments, pretrained_models

DESCRIPTION = """Writes, for every input image, NAME_labels.png (the class of each pixel) and
NAME_overlay.png (the classes blended over the image, with a legend of class names and colours);
given --ground-truth, also NAME_side_by_side.png (image | prediction | ground truth; mask values
beyond the classes, such as a void or border label, in the ignore colour).
For a MaskRCNN model: NAME_instances.png (each detection's mask, box, class and score) and
NAME_instances.json (boxes, classes, scores).

A semantic model trained by `kseg train` is run the way it was trained: with recipe.json beside
the model file, each image is resized to the recipe's resize, predicted, and the label map
resized back to the image's own size (nearest neighbour); the recipe's class names and palette
draw the legend. --resize, --class-names and --palette override them, with a message.

--model also takes a published checkpoint's name (`kseg list --pretrained`), e.g.
deeplabv3_resnet50: its weights are downloaded once into the Keras cache and converted, and the
checkpoint's class names, palette and resize (its shorter-side size) stand in for the recipe's.
"""

MAX_LEGEND_CLASSES = 32
"""Above this many classes a legend lists only the classes present in the picture."""


def _read_image(path, dtype):
    try:
        return np.asarray(Image.open(path).convert("RGB"), dtype=dtype)
    except (UnidentifiedImageError, OSError) as error:
        raise SystemExit(f"cannot read image {path}: {error}") from None


def _semantic_class_names(args, recipe, num_classes):
    names = arguments.trained_class_names(args, recipe)
    if names is None:
        return [str(label) for label in range(num_classes)]
    if len(names) != num_classes:
        raise SystemExit(
            f"kseg: error: {len(names)} class names ({', '.join(names)}) but the model "
            f"predicts {num_classes} classes."
        )
    return names


def at_size(predict, size):
    """`predict` run on images resized to `size`, its labels resized back (nearest neighbour).

    Args:
        predict: a function of one float image `(H, W, 3)` to uint8 labels `(h, w)`.
        size: `(height, width)`; a function of an image's height and width giving one (e.g.
            `kseg.pretrained.resize.MinSideResize`); or None to run images as they are.

    Returns:
        A function of one image to labels of the image's own size.

    Example:
        >>> halves = lambda image: (image[..., 0] > 100).astype(np.uint8)
        >>> image = np.zeros((4, 6, 3), np.float32)
        >>> image[:, 3:] = 255
        >>> kseg.cli.predict.at_size(halves, (2, 2))(image).tolist()[0]
        [0, 0, 0, 1, 1, 1]
    """
    if size is None:
        return predict

    def resized_predict(image):
        height, width = image.shape[:2]
        target = size(height, width) if callable(size) else size
        small = tf.image.resize(image, target, method="bilinear").numpy()
        labels = predict(small)
        return np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))

    return resized_predict


def _ground_truth_files(folder):
    """The mask files of `folder` by file stem, or None without `--ground-truth`."""
    if folder is None:
        return None
    if not Path(folder).is_dir():
        raise SystemExit(f"kseg: error: --ground-truth takes a folder of masks: {folder}")
    return {path.stem: path for path in sorted(Path(folder).iterdir()) if path.is_file()}


def _read_mask(path, colors):
    """Integer labels of a mask file; an RGB mask is read back through the palette."""
    try:
        mask = np.asarray(Image.open(path))
    except (UnidentifiedImageError, OSError) as error:
        raise SystemExit(f"cannot read mask {path}: {error}") from None
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        try:
            return kseg.viz.decolorize(mask[..., :3], colors)
        except ValueError as error:
            raise SystemExit(
                f"kseg: error: {path} is an RGB mask off the palette: {error}"
            ) from None
    return mask


def _legend_classes(labels, num_classes):
    return None if num_classes <= MAX_LEGEND_CLASSES else np.unique(labels)


def run(args):
    """Runs `kseg predict` with the parsed arguments (see `DESCRIPTION`)."""
    model, recipe = pretrained_models.load_model(args.model)
    task = kseg.tasks.for_model(model)
    if task is kseg.tasks.INSTANCE:
        return _predict_instances(model, task, args, arguments.image_files(args.inputs), recipe)
    num_classes = int(model.output.shape[-1])
    names = _semantic_class_names(args, recipe, num_classes)
    colors = arguments.trained_palette(args, recipe, num_classes)
    truths = _ground_truth_files(args.ground_truth)
    resize = arguments.trained_resize(args, recipe)
    predict = at_size(task.predictor(model, **arguments.inference_options(args)), resize)
    if resize is not None:
        print(
            f"predicting at {arguments.resize_text(resize)}; label maps resized back to each "
            "image's size"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unmatched = []
    files = arguments.image_files(args.inputs)
    # No progress bar in a redirected log (tqdm stays quiet when stderr is not a terminal).
    for path in tqdm(files, desc="predicting", unit="image", disable=None):
        image = _read_image(path, np.float32)
        labels = predict(image)
        Image.fromarray(labels).save(out / f"{path.stem}_labels.png")
        blended = task.draw(image, labels, palette=colors)
        legend_classes = _legend_classes(labels, num_classes)
        Image.fromarray(kseg.viz.draw_legend(blended, names, colors, classes=legend_classes)).save(
            out / f"{path.stem}_overlay.png", format="PNG"
        )
        if truths is None:
            continue
        if path.stem not in truths:
            unmatched.append(path.name)
            continue
        _write_side_by_side(
            out / f"{path.stem}_side_by_side.png", image, labels, truths, path, names, colors
        )
    print(f"wrote label maps and overlays to {out}")
    if unmatched:
        print(
            f"no mask named like {len(unmatched)} image(s) in {args.ground_truth}, so no "
            f"side-by-side for: {', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}"
        )


def _write_side_by_side(target, image, labels, truths, path, names, colors):
    truth = _read_mask(truths[path.stem], colors)
    if truth.shape != labels.shape:
        raise SystemExit(
            f"kseg: error: mask {truths[path.stem]} is {truth.shape[1]}x{truth.shape[0]} but "
            f"image {path} is {labels.shape[1]}x{labels.shape[0]}."
        )
    # Values beyond the classes (CamVid's void 11, VOC's border 255) are not scored: drawn in
    # the ignore colour.
    truth = np.where(truth < len(colors), truth, kseg.validation.IGNORE_LABEL)
    truth_colors = kseg.viz.colorize(truth, colors)
    present = np.union1d(np.unique(labels), np.unique(truth[truth < len(colors)]))
    picture = kseg.viz.compose_panels(
        [[image, kseg.viz.colorize(labels, colors), truth_colors]],
        names,
        colors,
        titles=("image", "prediction", "ground truth"),
        classes=_legend_classes(present, len(names)),
    )
    Image.fromarray(picture).save(target, format="PNG")


def _instance_class_names(text, num_classes):
    """`--class-names` of a MaskRCNN model: names of classes 1..K, or a COCO annotation file."""
    if text is None:
        return None
    if text.endswith(".json"):
        names = list(kseg.data.coco_categories(text).names)
    else:
        names = arguments.class_names(text)
    if len(names) != num_classes - 1:
        raise SystemExit(
            f"kseg: error: --class-names gives {len(names)} names but the model predicts "
            f"{num_classes - 1} object classes. Received: {text!r}"
        )
    return names


def _detections_record(path, image, detections, names, min_score):
    """The JSON record of one image's detections."""
    return {
        "image": str(path),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "box_format": "[y1, x1, y2, x2] in pixels, max exclusive",
        "min_score": min_score,
        "detections": [
            {
                "box": [round(float(v), 2) for v in box],
                "class": int(label),
                **({"class_name": names[int(label) - 1]} if names else {}),
                "score": round(float(score), 4),
                "mask_area": int(mask.sum()),
            }
            for box, label, score, mask in zip(
                detections["boxes"],
                detections["classes"],
                detections["scores"],
                detections["masks"],
            )
        ],
    }


def detection_captions(detections, names=None):
    """A caption per detection: its class name (or "class K") and score, e.g. "dog 0.93".

    Args:
        detections: a dict with `classes (N,)` (1..K) and `scores (N,)`.
        names: names of classes 1..K, or None.

    Returns:
        A list of N strings.

    Example:
        >>> detections = {"classes": np.array([2, 1]), "scores": np.array([0.931, 0.5])}
        >>> kseg.cli.predict.detection_captions(detections, ["cat", "dog"])
        ['dog 0.93', 'cat 0.50']
    """
    return [
        f"{names[int(label) - 1] if names else f'class {int(label)}'} {float(score):.2f}"
        for label, score in zip(detections["classes"], detections["scores"])
    ]


def _predict_instances(model, task, args, files, recipe):
    arguments.refuse_semantic_flags(
        args,
        [
            *arguments.inference_flags_given(args),
            ("--ground-truth", args.ground_truth is not None),
            ("--palette", args.palette is not None),
            ("--resize", args.resize is not None),
        ],
    )
    names = _instance_class_names(args.class_names, model.num_classes)
    if names is None and recipe is not None and recipe.class_names is not None:
        if len(recipe.class_names) == model.num_classes - 1:
            names = list(recipe.class_names)
    predict = task.predictor(model, mask_threshold=args.mask_threshold, min_score=args.min_score)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="predicting", unit="image", disable=None):
        image = _read_image(path, np.uint8)
        detections = predict(image)
        record = _detections_record(path, image, detections, names, args.min_score)
        (out / f"{path.stem}_instances.json").write_text(json.dumps(record, indent=2))
        drawn = task.draw(image, detections, captions=detection_captions(detections, names))
        Image.fromarray(drawn).save(out / f"{path.stem}_instances.png")
    print(f"wrote instance overlays and detections to {out}")


def add_parser(commands):
    """Adds `kseg predict` and its flags to the subcommands."""
    predict = commands.add_parser("predict", help=DESCRIPTION, description=DESCRIPTION)
    predict.add_argument(
        "--model",
        required=True,
        help="a .keras file, or a pretrained checkpoint's name (kseg list --pretrained)",
    )
    predict.add_argument("inputs", nargs="+", help="image files or folders")
    predict.add_argument("--out", default="predictions", help="output folder")
    arguments.add_class_flags(
        predict,
        names_default="the model's recipe.json names, else the class numbers",
        instance=True,
    )
    predict.add_argument(
        "--resize",
        type=arguments.resize,
        help="semantic models: predict on images resized to HEIGHT,WIDTH and resize the labels "
        "back, or none for the native size; None: the model's recipe.json resize, else native",
    )
    predict.add_argument(
        "--ground-truth",
        metavar="MASKS_DIR",
        help="folder of label masks named like the images (matched by file stem): also write "
        "image | prediction | ground truth side-by-sides",
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
    arguments.add_inference_flags(predict)
    predict.set_defaults(handler=run)
