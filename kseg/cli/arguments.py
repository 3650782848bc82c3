"""Flags and argument readers the `kseg` commands share, and the model file they load."""

import argparse
import zipfile
from pathlib import Path

import keras
import numpy as np

import kseg.data
import kseg.utils
import kseg.viz
from kseg.data import shapes
from kseg.inference.dense_crf import DEEPLAB_CRF_DEFAULTS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` with each option's default after its help, descriptions kept as written.

    Required options show no default, having none.
    """

    def _get_help_string(self, action):
        if action.required:
            return action.help
        return super()._get_help_string(action)


def positive_int(text):
    """Argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def shapes_image_size(text):
    """Argparse type: an image side the shapes generator accepts (48 pixels or more)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < shapes.SHAPES_MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(
            f"expected an integer of at least {shapes.SHAPES_MIN_IMAGE_SIZE}. Received: {text!r}"
        )
    return value


NATIVE_SIZE = "none"
"""The `--resize` value that keeps images at their own size, whatever the recipe says."""


def size(text):
    """Argparse type: `SIZE` or `HEIGHT,WIDTH` (also `HEIGHTxWIDTH`) as a `(height, width)`."""
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHT,WIDTH. Received: {text!r}")
    return tuple(parts)


def resize(text):
    """Argparse type of `--resize`: `size`, or "none" (`NATIVE_SIZE`) for the native size."""
    return NATIVE_SIZE if text.strip().lower() == NATIVE_SIZE else size(text)


def scale_range(text):
    """Argparse type: `LOW,HIGH` random rescaling factors (0 < LOW <= HIGH), or "none"."""
    if text.strip().lower() == "none":
        return NATIVE_SIZE
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        low = high = 0.0
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(
            f"expected LOW,HIGH with 0 < LOW <= HIGH, or none. Received: {text!r}"
        )
    return (low, high)


def scales(text):
    """Argparse type: comma-separated positive image scales (`kseg.utils.parse_scales`)."""
    try:
        return kseg.utils.parse_scales(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def model_args(args):
    """The `--model-arg NAME=VALUE` flags as builder keyword arguments."""
    try:
        return kseg.utils.parse_model_args(args.model_arg)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def _read_lines(path):
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def class_names(text):
    """`--class-names`: a file with one name per line, or comma-separated names; None stays None.

    Example:
        >>> kseg.cli.arguments.class_names("background, cat,dog")
        ['background', 'cat', 'dog']
    """
    if text is None:
        return None
    if Path(text).is_file():
        return _read_lines(text)
    return [name.strip() for name in text.split(",")]


def _palette_file(path):
    """The colours of a palette file (one `r,g,b` line per class), or exit naming the format."""
    if not Path(path).is_file():
        raise SystemExit(f"kseg: error: --palette takes voc, camvid or a file. Received: {path!r}")
    try:
        colors = np.asarray(
            [[int(v) for v in line.replace(" ", "").split(",")] for line in _read_lines(path)]
        )
    except ValueError:
        colors = np.zeros((0,))
    if colors.ndim != 2 or colors.shape[1] != 3 or colors.min() < 0 or colors.max() > 255:
        raise SystemExit(
            f"kseg: error: a palette file holds one 'r,g,b' line (0-255) per class: {path}"
        )
    return colors


def dataset_class_names(args, dataset_names, num_classes):
    """The class names of a report: `--class-names` if given, else the dataset's own.

    Stops with a message when `--class-names` does not give `num_classes` names.
    """
    names = class_names(args.class_names)
    if names is None:
        return dataset_names
    if len(names) != num_classes:
        raise SystemExit(
            f"kseg: error: --class-names gives {len(names)} names for {num_classes} classes. "
            f"Received: {args.class_names!r}"
        )
    return names


def palette(text, num_classes):
    """`--palette`: 'voc', 'camvid' or a file of one `r,g,b` line per class, as (num_classes, 3).

    Example:
        >>> kseg.cli.arguments.palette("voc", 2).tolist()
        [[0, 0, 0], [128, 0, 0]]
    """
    if text in (None, "voc"):
        return kseg.viz.palette(num_classes)
    colors = kseg.viz.CAMVID_PALETTE if text == "camvid" else _palette_file(text)
    if len(colors) < num_classes:
        raise SystemExit(
            f"kseg: error: --palette {text} has {len(colors)} colours for {num_classes} classes."
        )
    return np.asarray(colors[:num_classes], dtype=np.uint8)


def add_class_flags(parser, *, names_default, instance=False, palette=True):
    """Adds `--class-names` (and `--palette`): the names and colours of legends and reports.

    Args:
        parser: the command's parser.
        names_default: where names come from without the flag, for the help text.
        instance: also describe a MaskRCNN model's names (classes 1..K, or a COCO file).
        palette: also add `--palette`.
    """
    what = "names of classes 0..K-1"
    if instance:
        what += " (MaskRCNN: of classes 1..K, or the COCO annotation file it was trained on)"
    parser.add_argument(
        "--class-names",
        metavar="NAMES|FILE",
        help=f"{what}, comma-separated or a file with one name per line; None: {names_default}",
    )
    if palette:
        parser.add_argument(
            "--palette",
            metavar="voc|camvid|FILE",
            help="class colours: the VOC or CamVid palette, or a file of one r,g,b line per "
            "class; None: the model's recipe.json palette, else voc",
        )


def image_files(inputs):
    """The image files named by `inputs` (`kseg.data.image_files`), or exit naming the problem."""
    try:
        return kseg.data.image_files(inputs)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None


def load_model(path):
    """Loads a `.keras` model file, or exits naming a missing file or one that is not a model."""
    if not Path(path).exists():
        raise SystemExit(f"model file not found: {path}")
    if str(path).endswith(".keras") and not zipfile.is_zipfile(path):
        raise SystemExit(f"not a .keras model archive (a zip file saved by model.save): {path}")
    return keras.saving.load_model(path)


def refuse_semantic_flags(args, flags):
    """Stops with a message naming the semantic-only flags given for an instance model.

    Args:
        args: the parsed arguments (their `model` names the model in the message).
        flags: `(flag, given)` pairs.
    """
    given = [flag for flag, value in flags if value]
    if given:
        raise SystemExit(
            f"kseg: error: {', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to "
            f"semantic segmentation models only; {args.model} is a MaskRCNN."
        )


DEFAULT_MODEL = "deeplabv3plus"
"""The model `kseg train` trains without `--model` (and without a recipe file naming one)."""

FROM_RECIPE = "None: the recipe's"


def add_model_flags(parser):
    """Adds `--model`, `--backbone`, `--backbone-weights`, `--output-stride`, `--model-arg`."""
    parser.add_argument(
        "--model",
        help=f"registered model name (see `kseg list`), or mask_rcnn; None: the --recipe file's "
        f"model, else {DEFAULT_MODEL}",
    )
    parser.add_argument(
        "--backbone",
        help=f"backbone name (see `kseg list`); {FROM_RECIPE} (another backbone than the "
        "recipe's drops the recipe's alpha and backbone weights)",
    )
    parser.add_argument(
        "--backbone-weights",
        help=f"none (random), 'imagenet' or a weights file; {FROM_RECIPE}",
    )
    parser.add_argument(
        "--output-stride",
        type=int,
        choices=(8, 16, 32),
        help=f"backbone output stride (atrous models); {FROM_RECIPE}, else the model's default",
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        metavar="NAME=VALUE",
        help="any other builder argument, repeatable: a Python literal or a bare word, e.g. "
        "num_filters=64, alpha=0.35 (reaches the backbone, Mask R-CNN's too), "
        "rpn_test_nms=2000,1000 (a tuple); added to the recipe's",
    )


def add_recipe_flags(parser, losses):
    """Adds `--recipe` and the flags that override its fields (all None: the recipe's value).

    Args:
        parser: the `kseg train` parser.
        losses: the loss names `--loss` accepts.
    """
    parser.add_argument(
        "--recipe",
        default="finetune",
        metavar="finetune|paper|FILE",
        help="the training recipe (`kseg list --recipes`): the model's finetune recipe (a short "
        "run from ImageNet weights on a CPU), its paper's, or a recipe.json; the flags below "
        "override its fields",
    )
    parser.add_argument("--epochs", type=positive_int, help=f"training epochs; {FROM_RECIPE}")
    parser.add_argument(
        "--steps-per-epoch",
        type=positive_int,
        help=f"steps per epoch; {FROM_RECIPE} (the recipe's None: one pass over the split)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"global batch per step, split evenly over the replicas; {FROM_RECIPE}",
    )
    parser.add_argument(
        "--crop-size", type=size, help=f"training crop, SIZE or HEIGHT,WIDTH; {FROM_RECIPE}"
    )
    parser.add_argument(
        "--resize",
        type=resize,
        help="resize every image first, in training and (from recipe.json) at evaluation and "
        f"prediction: HEIGHT,WIDTH, or none for the native size; {FROM_RECIPE}",
    )
    parser.add_argument(
        "--scale-range",
        type=scale_range,
        metavar="LOW,HIGH",
        help=f"random rescaling of training images before the crop, or none; {FROM_RECIPE}",
    )
    parser.add_argument(
        "--optimizer", choices=("sgd", "adam", "adamw"), help=f"optimizer; {FROM_RECIPE}"
    )
    parser.add_argument(
        "--learning-rate", type=float, help=f"initial (peak) learning rate; {FROM_RECIPE}"
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        help=f"steps of linear learning-rate warm-up before the decay; {FROM_RECIPE}",
    )
    parser.add_argument("--weight-decay", type=float, help=f"decoupled weight decay; {FROM_RECIPE}")
    parser.add_argument(
        "--batchnorm-momentum",
        type=float,
        help=f"momentum set on every batch normalisation (semantic models); {FROM_RECIPE}",
    )
    parser.add_argument("--loss", choices=losses, help=f"semantic models: the loss; {FROM_RECIPE}")
    parser.add_argument(
        "--class-weighting",
        choices=("none", "median_frequency", "sqrt_median_frequency"),
        help="semantic models: weight the cross-entropy by median class frequency (Eigen & "
        "Fergus 2015, counted on the training masks), by its square root, or not; "
        f"{FROM_RECIPE}",
    )


_RECIPE_FLAGS = (
    "epochs",
    "steps_per_epoch",
    "batch_size",
    "crop_size",
    "resize",
    "scale_range",
    "optimizer",
    "learning_rate",
    "warmup_steps",
    "weight_decay",
    "batchnorm_momentum",
    "loss",
    "class_weighting",
)


def recipe_overrides(args):
    """The recipe fields the user's flags set, for `kseg.recipes.resolve`.

    Flags left at None are not fields to change; `--resize none` and `--scale-range none` set
    the field to None. `--backbone`, `--backbone-weights`, `--output-stride` and `--model-arg`
    become `model_args` entries.
    """
    overrides = {}
    for name in _RECIPE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            overrides[name] = None if value == NATIVE_SIZE else value
    builder = {}
    if args.backbone:
        builder["backbone"] = args.backbone
    if args.backbone_weights:
        weights = args.backbone_weights
        builder["backbone_weights"] = None if weights.lower() == "none" else weights
    if args.output_stride:
        builder["output_stride"] = args.output_stride
    builder.update(model_args(args))
    if builder:
        overrides["model_args"] = builder
    return overrides


def saved_recipe(model_path):
    """The recipe saved beside a model file (`kseg.recipes.load`), or None; exits on a bad one."""
    import kseg.recipes

    try:
        return kseg.recipes.load(model_path)
    except ValueError as error:
        raise SystemExit(f"kseg: error: {error}") from None


def trained_resize(args, recipe):
    """The resize to run a model at: `--resize`, else its recipe's; says so when they differ.

    Returns:
        `(height, width)`, a policy giving each image's size from its own (a pretrained
        checkpoint's `kseg.pretrained.resize.MinSideResize`), or None (native size).
    """
    trained = None if recipe is None else recipe.resize
    if args.resize is None:
        return trained
    chosen = None if args.resize == NATIVE_SIZE else args.resize
    if recipe is not None and chosen != trained:
        print(
            f"the model was trained with resize {_size_text(trained)}; {_size_text(chosen)} is used"
        )
    return chosen


def resize_text(resize):
    """How commands name the size they run a model at: "HxW", or a per-image policy.

    Example:
        >>> kseg.cli.arguments.resize_text((288, 384))
        '288x384'
        >>> kseg.cli.arguments.resize_text(kseg.cli.pretrained_models.MinSideResize(520))
        'min_side 520 (shorter side)'
    """
    return f"{resize} (shorter side)" if callable(resize) else f"{resize[0]}x{resize[1]}"


def _size_text(value):
    if value is None:
        return "none (native size)"
    # A policy sizing each image from its own (kseg.cli.pretrained_models) names itself.
    return str(value) if callable(value) else f"{value[0]},{value[1]}"


def trained_class_names(args, recipe):
    """`--class-names` if given, else the recipe's (or None); says so when they differ."""
    names = class_names(args.class_names)
    trained = None if recipe is None or recipe.class_names is None else list(recipe.class_names)
    if names is None:
        return trained
    if trained is not None and names != trained:
        print(
            f"the model was trained with class names {', '.join(trained)}; "
            f"{', '.join(names)} are used"
        )
    return names


def trained_palette(args, recipe, num_classes):
    """`--palette` if given, else the recipe's, else VOC's, as `(num_classes, 3)` uint8."""
    trained = None if recipe is None or recipe.palette is None else recipe.palette
    if args.palette is None:
        if trained is not None and len(trained) >= num_classes:
            return np.asarray(trained[:num_classes], dtype=np.uint8)
        return palette("voc", num_classes)
    if trained is not None:
        print(f"the model was trained with its dataset's palette; --palette {args.palette} is used")
    return palette(args.palette, num_classes)


def add_inference_flags(parser):
    """Adds the semantic inference modes: `--scales`, `--flip`, `--window`, `--overlap`, `--crf`."""
    parser.add_argument(
        "--scales",
        type=scales,
        default="1",
        help="average over these image scales, e.g. 0.5,0.75,1,1.25,1.5,1.75",
    )
    parser.add_argument(
        "--flip", action="store_true", help="also average over left-right mirrored images"
    )
    parser.add_argument(
        "--window",
        type=size,
        help="sliding-window inference with this window (SIZE or HEIGHT,WIDTH); None runs "
        "whole images",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=1 / 3,
        help="sliding window: fraction shared by neighbouring windows (default: %(default).3g)",
    )
    parser.add_argument(
        "--crf", action="store_true", help="refine with the dense CRF (kseg.inference.dense_crf)"
    )
    crf_help = {
        "iterations": "CRF: mean-field iterations",
        "sxy_gaussian": "CRF: smoothness kernel width theta_gamma, pixels",
        "compat_gaussian": "CRF: smoothness kernel weight w2",
        "sxy_bilateral": "CRF: appearance kernel width theta_alpha, pixels",
        "srgb_bilateral": "CRF: appearance kernel colour width theta_beta (0-255)",
        "compat_bilateral": "CRF: appearance kernel weight w1",
    }
    for name, default in DEEPLAB_CRF_DEFAULTS.items():
        parser.add_argument(
            "--crf-" + name.replace("_", "-"),
            type=type(default),
            default=default,
            help=crf_help[name] + " (DeepLab v2's value)",
        )


def crf_options(args):
    """The `--crf-*` flags as keyword arguments of `kseg.inference.dense_crf`.

    Stops with a message when one is changed without `--crf`.
    """
    options = {name: getattr(args, "crf_" + name) for name in DEEPLAB_CRF_DEFAULTS}
    changed = [
        "--crf-" + name.replace("_", "-")
        for name, value in options.items()
        if value != DEEPLAB_CRF_DEFAULTS[name]
    ]
    if changed and not args.crf:
        raise SystemExit(f"kseg: error: {', '.join(changed)} set the CRF of --crf; add --crf.")
    return options


def inference_options(args):
    """The inference-mode flags as keyword arguments of `kseg.tasks.SemanticTask.inference`."""
    return {
        "scales": args.scales,
        "flip": args.flip,
        "window": args.window,
        "overlap": args.overlap,
        "crf": args.crf,
        "crf_options": crf_options(args),
    }


def inference_flags_given(args):
    """`(flag, given)` pairs of the inference-mode flags, for `refuse_semantic_flags`."""
    return [
        ("--scales", args.scales != (1.0,)),
        ("--flip", args.flip),
        ("--window", args.window is not None),
        ("--crf", args.crf),
        *[
            ("--crf-" + name.replace("_", "-"), getattr(args, "crf_" + name) != default)
            for name, default in DEEPLAB_CRF_DEFAULTS.items()
        ],
    ]
