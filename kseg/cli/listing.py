"""`kseg list`: the registered models, by task, and the backbones; `--recipes` the recipes."""

import kseg.backbones
import kseg.models
import kseg.recipes

DESCRIPTION = "Lists the registered models and backbones (--recipes: the training recipes)."


def _size(value):
    return "native" if value is None else f"{value[0]}x{value[1]}"


def recipe_line(recipe):
    """One catalogue recipe in a line: model, purpose, the key fields, then its source.

    Example:
        >>> print(kseg.cli.listing.recipe_line(kseg.recipes.get("pspnet", "paper")))
        ... # doctest: +ELLIPSIS
        pspnet/paper: sgd 0.01 poly, batch 16, crop 473x473, resize native, 30x1000 steps, ...
            source: Zhao, Shi, Qi, Wang & Jia, CVPR 2017, sec. 5.1: ...
    """
    steps = "" if recipe.steps_per_epoch is None else f"x{recipe.steps_per_epoch} steps"
    epochs = f"{recipe.epochs}{steps}" if steps else f"{recipe.epochs} epochs"
    backbone = recipe.model_args.get("backbone")
    weights = recipe.model_args.get("backbone_weights")
    model = "" if backbone is None else f", {backbone}" + ("" if weights is None else f" {weights}")
    return (
        f"{recipe.model}/{recipe.purpose}: {recipe.optimizer} {recipe.learning_rate:g} "
        f"{recipe.schedule}, batch {recipe.batch_size}, crop {_size(recipe.crop_size)}, "
        f"resize {_size(recipe.resize)}, {epochs}{model}\n    source: {recipe.source}"
    )


def run(args):
    """Runs `kseg list` (see `DESCRIPTION`)."""
    if args.recipes:
        for recipe in kseg.recipes.list_recipes():
            print(recipe_line(recipe))
        return
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
    listing.add_argument(
        "--recipes",
        action="store_true",
        help="list the training recipes (model/purpose, key fields, source) that "
        "`kseg train --recipe` uses",
    )
    listing.set_defaults(handler=run)
