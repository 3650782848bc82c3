"""kseg.recipes catalogue: a paper and a finetune recipe per registered model, and overrides."""

import pytest

import kseg
from kseg import recipes


def test_every_registered_model_has_a_cited_paper_and_finetune_recipe():
    for model in kseg.models.list_models():
        for purpose in ("paper", "finetune"):
            recipe = recipes.get(model, purpose)
            assert (recipe.model, recipe.purpose) == (model, purpose)
            assert len(recipe.source.strip()) > 20, f"{model}/{purpose} has no source"
    listed = {(recipe.model, recipe.purpose) for recipe in recipes.list_recipes()}
    assert len(listed) == 2 * len(kseg.models.list_models())


def test_finetune_imagenet_weights_are_the_file_kseg_ships():
    # A finetune run needs no network: "imagenet" is only asked of a backbone kseg bundles.
    for recipe in recipes.list_recipes():
        args = recipe.model_args
        if recipe.purpose == "finetune" and args.get("backbone_weights") == "imagenet":
            path = kseg.backbones.bundled_weights_path(args["backbone"], alpha=args.get("alpha"))
            assert path is not None and path.is_file(), recipe.model


def test_deeplabv3plus_finetune_is_the_camvid_recipe():
    recipe = recipes.get("deeplabv3plus")
    assert recipe.model_args == {
        "backbone": "mobilenetv2",
        "alpha": 0.35,
        "backbone_weights": "imagenet",
    }
    assert (recipe.resize, recipe.crop_size, recipe.scale_range) == ((192, 256),) * 2 + (
        (0.75, 1.5),
    )
    assert (recipe.optimizer, recipe.learning_rate, recipe.schedule) == ("adam", 1e-3, "poly")
    assert (recipe.batchnorm_momentum, recipe.batch_size, recipe.epochs) == (0.9, 8, 13)
    assert recipe.steps_per_epoch is None and recipe.flip and not recipe.jitter


def test_paper_recipes_carry_the_papers_constants():
    pspnet = recipes.get("pspnet", "paper")
    assert (pspnet.learning_rate, pspnet.weight_decay, pspnet.batch_size) == (0.01, 1e-4, 16)
    deeplab = recipes.get("deeplabv3", "paper")
    assert (deeplab.learning_rate, deeplab.batchnorm_momentum) == (0.007, 0.9997)
    assert recipes.get("segnet", "paper").class_weighting == "median_frequency"
    mask_rcnn = recipes.get("maskrcnn", "paper")  # an alias of mask_rcnn
    assert mask_rcnn.epochs * mask_rcnn.steps_per_epoch == 160_000


def test_get_names_an_unknown_model_or_purpose():
    with pytest.raises(ValueError, match="no_such_net"):
        recipes.get("no_such_net")
    with pytest.raises(ValueError, match="purpose"):
        recipes.get("unet", "fast")


def test_resolve_applies_overrides_and_merges_builder_arguments():
    recipe = recipes.resolve("pspnet", "finetune", epochs=2, model_args={"output_stride": 16})
    assert recipe.epochs == 2 and recipe.learning_rate == recipes.get("pspnet").learning_rate
    assert recipe.model_args == {**recipes.get("pspnet").model_args, "output_stride": 16}
    # Another backbone drops the alpha and weights that described the recipe's own.
    other = recipes.resolve("deeplabv3plus", model_args={"backbone": "tiny"})
    assert other.model_args == {"backbone": "tiny"}
    kept = recipes.resolve("deeplabv3plus", model_args={"backbone": "mobilenetv2", "alpha": 0.5})
    assert kept.model_args["alpha"] == 0.5 and kept.model_args["backbone_weights"] == "imagenet"
    with pytest.raises(ValueError, match="'epoch'"):
        recipes.resolve("unet", epoch=3)


def test_resolve_reads_a_saved_recipe_file(tmp_path):
    saved = recipes.get("unet").replace(epochs=3, class_names=("a", "b"))
    path = recipes.save(saved, tmp_path)
    for source in (path, tmp_path):
        recipe = recipes.resolve(None, str(source), batch_size=2)
        assert (recipe.model, recipe.epochs, recipe.batch_size) == ("unet", 3, 2)
        assert recipe.class_names is None  # names come from the new run's data
    with pytest.raises(ValueError, match="recipe.json"):
        recipes.resolve("unet", str(tmp_path / "missing.json"))


def test_the_docs_catalogue_table_lists_every_recipe_with_its_source():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "recipes.md").read_text()
    rows = {
        line.split("|")[1].strip() + "/" + line.split("|")[2].strip(): line
        for line in page.splitlines()
        if line.startswith("| ") and line.count("|") > 8
    }
    for recipe in recipes.list_recipes():
        row = rows[f"{recipe.model}/{recipe.purpose}"]
        assert recipe.source in row, f"docs/recipes.md: {recipe.model}/{recipe.purpose} drifted"
