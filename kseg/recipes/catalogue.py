"""The recipe catalogue: every registered model's `paper` and `finetune` recipes, and overrides."""

from pathlib import Path

from kseg.recipes.finetune_recipes import FINETUNE_RECIPES
from kseg.recipes.paper_recipes import PAPER_RECIPES
from kseg.recipes.recipe import PURPOSES, RECIPE_FILE, Recipe

_CATALOGUE = {(recipe.model, recipe.purpose): recipe for recipe in PAPER_RECIPES + FINETUNE_RECIPES}

# Builder arguments that describe the recipe's backbone: dropped when an override names another.
BACKBONE_SPECIFIC_ARGUMENTS = ("alpha", "backbone_weights")


def _model_key(model):
    from kseg.models.registry import list_models

    name = str(model).lower()
    if name in ("maskrcnn", "mask-rcnn"):
        name = "mask_rcnn"
    if name not in list_models():
        raise ValueError(
            f"Unknown model {model!r}: no recipe. Registered: {', '.join(list_models())}"
        )
    return name


def get(model, purpose="finetune"):
    """The catalogue's recipe of a registered model.

    Args:
        model: a name of `kseg.models.list_models()`.
        purpose: "finetune" (a short run from ImageNet weights on a CPU) or "paper".

    Returns:
        The `Recipe`.

    Raises:
        ValueError: for an unknown model or purpose.

    Example:
        >>> recipe = kseg.recipes.get("deeplabv3plus")
        >>> recipe.optimizer, recipe.model_args["backbone"], recipe.resize
        ('adam', 'mobilenetv2', (288, 384))
        >>> kseg.recipes.get("pspnet", "paper").crop_size
        (473, 473)
    """
    if purpose not in PURPOSES:
        raise ValueError(f"Unknown purpose. Expected one of {PURPOSES}. Received: {purpose!r}")
    return _CATALOGUE[(_model_key(model), purpose)]


def list_recipes(model=None):
    """Every catalogue recipe (of one model if given), paper before finetune, by model name.

    Example:
        >>> [recipe.purpose for recipe in kseg.recipes.list_recipes("unet")]
        ['paper', 'finetune']
    """
    names = sorted({name for name, _ in _CATALOGUE}) if model is None else [_model_key(model)]
    return [_CATALOGUE[(name, purpose)] for name in names for purpose in PURPOSES]


def _merge_model_args(base, overrides):
    """`base` updated with `overrides`; a different backbone drops the recipe's alpha/weights."""
    merged = dict(base)
    if "backbone" in overrides and overrides["backbone"] != base.get("backbone"):
        for name in BACKBONE_SPECIFIC_ARGUMENTS:
            merged.pop(name, None)
    merged.update(overrides)
    return merged


def resolve(model, purpose="finetune", **overrides):
    """The recipe a run uses: the catalogue's (or a saved one) with the given fields overridden.

    `model_args` overrides are merged into the recipe's builder arguments rather than replacing
    them; naming a different `backbone` there drops the recipe's `alpha` and
    `backbone_weights`, which describe the recipe's own backbone.

    Args:
        model: a registered model name; with a `recipe.json`, None keeps the file's model.
        purpose: "finetune", "paper", or the path of a `recipe.json` (or of its run folder).
        **overrides: recipe fields to change (see `Recipe`).

    Returns:
        The resolved `Recipe`.

    Raises:
        ValueError: for an unknown model, purpose or field, or a bad value.

    Example:
        >>> recipe = kseg.recipes.resolve(
        ...     "deeplabv3plus", epochs=2, model_args={"backbone": "tiny"}
        ... )
        >>> recipe.epochs, recipe.model_args, recipe.learning_rate
        (2, {'backbone': 'tiny'}, 0.001)
    """
    if purpose in PURPOSES:
        recipe = get(model, purpose)
    else:
        path = Path(purpose)
        path = path / RECIPE_FILE if path.is_dir() else path
        if not path.is_file():
            raise ValueError(
                f"A recipe is {' or '.join(PURPOSES)} or a recipe.json file. Received: {purpose!r}"
            )
        recipe = Recipe.from_json(path.read_text()).replace(class_names=None, palette=None)
        if model is not None:
            recipe = recipe.replace(model=_model_key(model))
    if "model_args" in overrides:
        overrides["model_args"] = _merge_model_args(recipe.model_args, overrides["model_args"])
    return recipe.replace(**overrides)
