"""Command-line arguments for the paths that differ from machine to machine.

Data sets, weight folders and the interpreters of peer environments live wherever a machine keeps
them, so no script has a default path of its own: each such flag falls back on an environment
variable, and without either the script stops and names both.
"""

import argparse
import os
import shutil
import tempfile


def location_argument(parser, flag, variable, help, required=True):
    """Adds `flag` to `parser`, defaulting to the environment variable `variable`.

    Args:
        parser: an `argparse.ArgumentParser`.
        flag: the option, e.g. `"--camvid"`.
        variable: the environment variable read when the flag is absent, e.g. `"KSEG_CAMVID"`.
        help: what the path is.
        required: whether parsing fails without flag or variable. Scripts that start themselves
            as worker subprocesses pass False and call `require_locations` where the path is
            needed, since their workers do not take every flag.

    Returns:
        The argparse action, for `require_locations`.
    """
    default = os.environ.get(variable) or None
    return parser.add_argument(
        flag,
        default=default,
        required=required and default is None,
        help=f"{help} (default: ${variable})",
    )


def torch_python_argument(parser):
    """Adds `--torch-python` (default `$KSEG_TORCH_PYTHON`), for scripts with a torch worker.

    Returns:
        The argparse action, for `require_locations`.
    """
    return location_argument(
        parser,
        "--torch-python",
        "KSEG_TORCH_PYTHON",
        "Python of a virtual environment with torch and torchvision",
        required=False,
    )


def require_locations(parser, args, *actions):
    """Stops with a usage error naming the first of `actions` that has no value in `args`."""
    for action in actions:
        if getattr(args, action.dest) is None:
            parser.error(f"{action.option_strings[0]} is required: {action.help}")


def run_with_torch_worker(parser, torch_python, main, torch_worker):
    """Parses the arguments, then runs `torch_worker` (with `--torch-worker`) or `main`.

    A benchmark against PyTorch starts itself again under `--torch-python` with the hidden
    `--torch-worker` flag for the torch side; only the main side needs `--torch-python`.

    Args:
        parser: the script's parser, its own flags added.
        torch_python: the action `torch_python_argument` returned.
        main: the benchmark, called with the parsed arguments.
        torch_worker: the torch side, called with the parsed arguments.
    """
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.torch_worker:
        torch_worker(arguments)
    else:
        require_locations(parser, arguments, torch_python)
        main(arguments)


def private_keras_home(weights_dir):
    """A fresh Keras cache folder holding the `.h5` files of `weights_dir`.

    keras.applications looks for its ImageNet files in `$KERAS_HOME/models` before downloading
    them; pointing `KERAS_HOME` here lets a run work without a network.

    Args:
        weights_dir: a folder with keras.applications' weight files.

    Returns:
        The path of the new cache, for `os.environ["KERAS_HOME"]`.
    """
    keras_home = tempfile.mkdtemp(prefix="kseg-keras-home-")
    os.makedirs(os.path.join(keras_home, "models"))
    for name in os.listdir(weights_dir):
        if name.endswith(".h5"):
            shutil.copy(os.path.join(weights_dir, name), os.path.join(keras_home, "models"))
    return keras_home
