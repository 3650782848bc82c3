"""MkDocs hook: fills the `<!-- recipes: catalogue -->` marker with the table of kseg.recipes.

The table is drawn from `kseg.recipes.list_recipes()` at build time, so the published catalogue
is always the code's: a recipe retuned in `kseg/recipes/` needs no page edit.
"""

import re

MARKER = re.compile(r"^<!-- recipes: catalogue -->[ \t]*$", re.MULTILINE)


def _size(value):
    return "native" if value is None else f"{value[0]}x{value[1]}"


def _backbone(args):
    text = str(args.get("backbone", "as built"))
    if "alpha" in args:
        text += f" {args['alpha']}"
    weights = args.get("backbone_weights")
    return text + (f" ({weights})" if weights else " (random)")


def _training(recipe):
    extra = []
    if recipe.batchnorm_momentum is not None:
        extra.append(f"BN momentum {recipe.batchnorm_momentum:g}")
    if recipe.warmup_steps:
        extra.append(f"warm-up {recipe.warmup_steps}")
    if recipe.weight_decay:
        extra.append(f"weight decay {recipe.weight_decay:g}")
    if recipe.optimizer == "sgd":
        extra.append(f"momentum {recipe.momentum:g}")
    if recipe.class_weighting != "none":
        extra.append(recipe.class_weighting.replace("_", "-") + " weights")
    text = f"{recipe.optimizer} {recipe.learning_rate:g} {recipe.schedule}"
    return text + ("; " + ", ".join(extra) if extra else "")


def catalogue_table():
    """The Markdown table of every recipe: training, batch, crop, resize, length, source."""
    import kseg.recipes

    lines = [
        "| model | recipe | training | batch | crop | resize | length | backbone | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe in kseg.recipes.list_recipes():
        if recipe.steps_per_epoch is None:
            length = f"{recipe.epochs} epochs"
        else:
            length = f"{recipe.epochs} x {recipe.steps_per_epoch} steps"
        cells = (
            recipe.model,
            recipe.purpose,
            _training(recipe),
            str(recipe.batch_size),
            _size(recipe.crop_size),
            _size(recipe.resize),
            length,
            _backbone(recipe.model_args),
            recipe.source.replace("|", "/"),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def on_page_markdown(markdown, **kwargs):
    """Replaces the catalogue marker of a page with the table."""
    if not MARKER.search(markdown):
        return markdown
    return MARKER.sub(lambda _: catalogue_table(), markdown)
