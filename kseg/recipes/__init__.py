"""Training recipes: what a run needs, as data, and the calls that train with it.

A `Recipe` names the model, its builder arguments, the optimizer and schedule, the batch,
crop, resize and augmentation, the epochs and the loss of a run, with the source it comes from.
Every registered model has a `paper` recipe (its paper's settings, cited) and a `finetune`
recipe (a short run from ImageNet weights on a CPU). `get` and `list_recipes` read the
catalogue, `resolve` applies a user's overrides, `save` and `load` keep the resolved recipe as
`recipe.json` in a run folder so that evaluation and prediction run the model the way it was
trained, and `fit_recipe` trains a semantic model end to end from a recipe.

The calls the command line and example scripts share stay here too: `semantic_batches`,
`segmentation_loss`, `fit_semantic` and `scores_record` for semantic models,
`clipped_optimizer` and `fit_instances` for Mask R-CNN.
"""

from kseg.recipes.catalogue import get, list_recipes, resolve
from kseg.recipes.instance_fitting import clipped_optimizer, fit_instances
from kseg.recipes.recipe import (
    CLASS_WEIGHTINGS,
    PURPOSES,
    RECIPE_FILE,
    Recipe,
    load,
    save,
)
from kseg.recipes.recipe_fitting import fit_recipe, recipe_loss
from kseg.recipes.semantic_fitting import (
    LOSSES,
    SCHEDULES,
    fit_semantic,
    learning_rate_schedule,
    scores_record,
    segmentation_loss,
    semantic_batches,
)

__all__ = [
    "CLASS_WEIGHTINGS",
    "LOSSES",
    "PURPOSES",
    "RECIPE_FILE",
    "SCHEDULES",
    "Recipe",
    "clipped_optimizer",
    "fit_instances",
    "fit_recipe",
    "fit_semantic",
    "get",
    "learning_rate_schedule",
    "list_recipes",
    "load",
    "recipe_loss",
    "resolve",
    "save",
    "scores_record",
    "segmentation_loss",
    "semantic_batches",
]
