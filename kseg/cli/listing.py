"""`kseg list`: the registered models, by task, and the backbones."""

import kseg.backbones
import kseg.models

DESCRIPTION = "Lists the registered models and backbones."


def run(args):
    """Runs `kseg list` (see `DESCRIPTION`)."""
    print("models:    " + ", ".join(kseg.models.list_models(task="semantic")))
    instance = [
        f"{name} (kseg.models.{kseg.models.get_builder(name).__name__}; "
        "--model-arg sets its arguments)"
        for name in kseg.models.list_models(task="instance")
    ]
    print("instance:  " + ", ".join(instance))
    print("backbones: " + ", ".join(kseg.backbones.list_backbones()))


def add_parser(commands):
    """Adds `kseg list` to the subcommands."""
    listing = commands.add_parser("list", help=DESCRIPTION, description=DESCRIPTION)
    listing.set_defaults(handler=run)
