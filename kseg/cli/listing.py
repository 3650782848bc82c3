"""`kseg list`: models by task and backbones; `--recipes` recipes, `--pretrained` checkpoints."""

import kseg.backbones
import kseg.models
import kseg.pretrained
import kseg.recipes

DESCRIPTION = (
    "Lists the registered models and backbones (--recipes: the training recipes; --pretrained: "
    "the published checkpoints)."
)


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


def pretrained_line(entry):
    """One registry checkpoint: name, task, whether kseg loads it, the publisher's figures.

    Example:
        >>> print(kseg.cli.listing.pretrained_line(kseg.pretrained.get("deeplabv3_resnet50")))
        ... # doctest: +ELLIPSIS
        deeplabv3_resnet50 (semantic, loads as deeplabv3): 21 classes, ...
            publisher's COCO-val2017-VOC-labels: miou 66.4, pixel_acc 92.4; licence: ...
    """
    if entry.status == "loadable":
        status = f"loads as {entry.builder}"
    else:
        status = "not loadable yet"
    metrics = "; ".join(
        f"publisher's {data}: " + ", ".join(f"{key} {value:g}" for key, value in figures.items())
        for data, figures in entry.publisher_metrics.items()
    )
    licence = entry.licence.split(";")[0]
    return (
        f"{entry.name} ({entry.task}, {status}): {len(entry.class_names)} classes, "
        f"{entry.published_file_size_mib:g} MiB, resize {entry.resize}\n"
        f"    {metrics}; licence: {licence} (kseg.pretrained.get({entry.name!r}) has the rest)"
    )


def run(args):
    """Runs `kseg list` (see `DESCRIPTION`)."""
    if args.pretrained:
        for name in kseg.pretrained.list_pretrained():
            print(pretrained_line(kseg.pretrained.get(name)))
        return
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
    listing.add_argument(
        "--pretrained",
        action="store_true",
        help="list the published checkpoints of kseg.pretrained (source, classes, the "
        "publisher's metrics, licence, whether kseg loads them)",
    )
    listing.set_defaults(handler=run)
