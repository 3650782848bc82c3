"""kseg.recipes.fit_recipe: a semantic model trained end to end the way its recipe says."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg import recipes


def _pairs(count, size=(40, 56)):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (count, *size, 3)).astype(np.float32)
    masks = np.zeros((count, *size), np.int32)
    masks[:, : size[0] // 4] = 1  # class 1: a quarter of every image, class 0 the rest
    return tf.data.Dataset.from_tensor_slices((images, masks))


def test_fit_recipe_trains_with_the_recipes_choices_and_saves_it(tmp_path):
    recipe = recipes.resolve(
        "segnet_basic",
        model_args={"num_filters": 4},
        resize=(32, 32),
        crop_size=(32, 32),
        batch_size=2,
        epochs=1,
        steps_per_epoch=1,
        optimizer="sgd",
        momentum=0.5,
        weight_decay=1e-3,
    )
    model = recipes.fit_recipe(
        recipe,
        _pairs(4),
        _pairs(2),
        num_classes=2,
        run_dir=tmp_path,
        class_names=["ground", "sky"],
        palette=[[0, 0, 0], [0, 0, 255]],
        run_eagerly=True,
        verbose=0,
    )
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == 0.5 and model.optimizer.weight_decay == 1e-3
    # Median-frequency weights: class 1 covers 1/4 of every image, class 0 3/4.
    np.testing.assert_allclose(model.loss.class_weights, [2 / 3, 2.0], rtol=1e-6)
    saved = json.loads((tmp_path / "recipe.json").read_text())
    assert saved["resize"] == [32, 32] and saved["class_names"] == ["ground", "sky"]
    assert recipes.load(tmp_path).palette == ((0, 0, 0), (0, 0, 255))
    assert (tmp_path / "history.csv").is_file()


def test_fit_recipe_refuses_mask_rcnn(tmp_path):
    with pytest.raises(ValueError, match="fit_instances"):
        recipes.fit_recipe(
            recipes.get("mask_rcnn"), _pairs(2), _pairs(2), num_classes=2, run_dir=tmp_path
        )


def test_recipe_loss_without_weighting_is_the_named_loss():
    recipe = recipes.get("deeplabv3plus").replace(loss="dice", class_weighting="none")
    loss = recipes.recipe_loss(recipe, 3)
    assert isinstance(loss, kseg.losses.DiceLoss)


def test_square_root_weighting_softens_the_median_frequency_weights():
    recipe = recipes.get("deeplabv3plus").replace(class_weighting="sqrt_median_frequency")
    masks = _pairs(2).map(lambda image, mask: mask)
    loss = recipes.recipe_loss(recipe, 2, masks)
    # Class 1 covers 1/4 of every image, class 0 3/4: weights sqrt(2/3) and sqrt(2).
    np.testing.assert_allclose(loss.class_weights, [np.sqrt(2 / 3), np.sqrt(2.0)], rtol=1e-6)
