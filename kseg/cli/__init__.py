"""The `kseg` command line: demo, train, evaluate, predict, export, list.

Flags map onto builder arguments: `--backbone`, `--output-stride`, `--backbone-weights`, and any
other builder keyword through `--model-arg NAME=VALUE` (e.g. `--model-arg alpha=0.35`, which
reaches the backbone of every model, Mask R-CNN's included).

TensorFlow's start-up lines and keras.applications' input-shape warning are left out unless
`--verbose` is given (`kseg.startup`); `--help` of each command shows every default.

`evaluate`, `predict` and `export` also take a saved `kseg.models.MaskRCNN`: evaluation then
reports COCO mask and box AP on `--data shapes` or `--data coco:ANNOTATIONS.json,IMAGE_DIR`,
prediction writes instance overlays and detection JSON files, and export writes the instance
SavedModel.

Each command is one module of this package with an `add_parser(commands)` and a `run(args)`;
what differs between semantic and instance models comes from `kseg.tasks`.
"""

import argparse
import sys
import warnings

import tensorflow as tf

import kseg.backbones
import kseg.data
from kseg.cli import arguments, demo, evaluate, export, listing, predict, train

COMMANDS = (demo, train, evaluate, predict, export, listing)
"""The command modules, in the order `kseg --help` lists them."""


def build_parser():
    """The `kseg` argument parser: one subcommand per module of `COMMANDS`.

    Returns:
        An `argparse.ArgumentParser` whose parsed arguments carry the command's `handler`.

    Example:
        >>> kseg.cli.build_parser().parse_args(["list"]).command
        'list'
    """
    parser = argparse.ArgumentParser(
        prog="kseg", description=__doc__.splitlines()[0], formatter_class=arguments.HelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    for subcommand in commands.choices.values():
        subcommand.formatter_class = arguments.HelpFormatter
        subcommand.add_argument(
            "--verbose",
            action="store_true",
            help="also show TensorFlow's start-up log and keras.applications' input-shape warning",
        )
    return parser


# keras.applications warns that ImageNet weights of 224 x 224 are loaded whenever a MobileNet
# is built for another input size; kseg's models take any size on purpose.
_INPUT_SHAPE_WARNING = r"`input_shape` is undefined or non-square"


def _pipeline_error_message(error):
    """The readable part of an error raised inside a tf.data pipeline or a graph assertion."""
    text = getattr(error, "message", str(error))
    for marker in ("DatasetError: ", "assertion failed: "):
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0]
    return text.splitlines()[0]


def main(argv=None):
    """Entry point of the `kseg` command.

    Args:
        argv: the arguments after `kseg`; None reads them from `sys.argv`.

    Returns:
        0 on success; errors raise `SystemExit` with their message.
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        if not args.verbose:
            warnings.filterwarnings("ignore", message=_INPUT_SHAPE_WARNING, category=UserWarning)
        return _run(args)


def _run(args):
    try:
        args.handler(args)
    except (kseg.data.DatasetError, kseg.backbones.WeightsDownloadError) as error:
        print(f"kseg: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except tf.errors.InvalidArgumentError as error:
        # A bad file met while streaming: checkpoints written so far are kept, so after a fix
        # the same command resumes.
        print(f"kseg: error: {_pipeline_error_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0
