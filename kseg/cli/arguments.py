"""Flags and argument readers the `kseg` commands share, and the model file they load."""

import argparse
import zipfile
from pathlib import Path

import keras

import kseg.data
import kseg.utils


def positive_int(text):
    """Argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def size(text):
    """Argparse type: `SIZE` or `HEIGHT,WIDTH` (also `HEIGHTxWIDTH`) as a `(height, width)`."""
    parts = [int(p) for p in text.replace("x", ",").split(",")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHT,WIDTH. Received: {text!r}")
    return tuple(parts)


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


def add_model_flags(parser):
    """Adds `--model`, `--backbone`, `--backbone-weights`, `--output-stride`, `--model-arg`."""
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


def add_inference_flags(parser):
    """Adds the semantic inference modes: `--scales`, `--flip`, `--window`, `--overlap`, `--crf`."""
    parser.add_argument(
        "--scales",
        type=scales,
        default=(1.0,),
        help="average over these image scales, e.g. 0.5,0.75,1,1.25,1.5,1.75",
    )
    parser.add_argument("--flip", action="store_true", help="also average over mirrored images")
    parser.add_argument(
        "--window",
        type=size,
        help="sliding-window inference with this window (SIZE or HEIGHT,WIDTH)",
    )
    parser.add_argument(
        "--overlap", type=float, default=1 / 3, help="fraction shared by neighbouring windows"
    )
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF")


def inference_options(args):
    """The inference-mode flags as keyword arguments of `kseg.tasks.SemanticTask.inference`."""
    return {
        "scales": args.scales,
        "flip": args.flip,
        "window": args.window,
        "overlap": args.overlap,
        "crf": args.crf,
    }


def inference_flags_given(args):
    """`(flag, given)` pairs of the inference-mode flags, for `refuse_semantic_flags`."""
    return [
        ("--scales", args.scales != (1.0,)),
        ("--flip", args.flip),
        ("--window", args.window is not None),
        ("--crf", args.crf),
    ]
