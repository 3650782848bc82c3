"""kseg.recipes.Recipe: validated overrides, JSON round trip, recipe.json in a run folder."""

import dataclasses
import json

import pytest

from kseg import recipes


def test_replace_changes_one_field_and_validates():
    recipe = recipes.get("deeplabv3plus")
    changed = recipe.replace(learning_rate=0.05, crop_size=[64, 96])
    assert changed.learning_rate == 0.05 and changed.crop_size == (64, 96)
    assert recipe.learning_rate == 1e-3  # the catalogue's recipe is unchanged
    with pytest.raises(ValueError, match="'learnig_rate'"):
        recipe.replace(learnig_rate=0.05)
    for bad in ({"optimizer": "rmsprop"}, {"loss": "hinge"}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            recipe.replace(**bad)
    with pytest.raises(ValueError, match="scale_range"):
        recipe.replace(scale_range=(2.0, 1.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.epochs = 3


def test_every_catalogue_recipe_survives_a_json_round_trip():
    for recipe in recipes.list_recipes():
        text = recipe.to_json()
        assert json.loads(text)["model"] == recipe.model  # plain JSON
        assert recipes.Recipe.from_json(text) == recipe
    with pytest.raises(ValueError, match="'speed'"):
        recipes.Recipe.from_json(json.dumps({"model": "unet", "speed": 3}))


def test_load_finds_recipe_json_beside_a_model_or_above_a_checkpoint(tmp_path):
    recipe = recipes.get("fcn8s").replace(class_names=["sky", "road"], palette=[[1, 2, 3]] * 2)
    recipes.save(recipe, tmp_path)
    (tmp_path / "checkpoints").mkdir()
    for path in (tmp_path, tmp_path / "model.keras", tmp_path / "checkpoints" / "epoch_001.keras"):
        assert recipes.load(path) == recipe
    assert recipes.load(tmp_path / "checkpoints" / "epoch_001.keras").class_names == (
        "sky",
        "road",
    )
    assert recipes.load(tmp_path / "elsewhere" / "model.keras") is None
    (tmp_path / "recipe.json").write_text('{"model": "fcn8s", "purpose": "fast"}')
    with pytest.raises(ValueError, match="not a kseg recipe"):
        recipes.load(tmp_path)
