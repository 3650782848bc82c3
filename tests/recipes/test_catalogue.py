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


def test_deeplabv3plus_finetune_is_a_mobilenet_run_at_one_size():
    # The tuned numbers may change; what the run is may not: MobileNetV2-0.35 from the bundled
    # ImageNet file, every image resized to one size and cropped within it, BN momentum set.
    recipe = recipes.get("deeplabv3plus")
    assert recipe.model_args == {
        "backbone": "mobilenetv2",
        "alpha": 0.35,
        "backbone_weights": "imagenet",
    }
    assert recipe.resize is not None
    assert all(crop <= side for crop, side in zip(recipe.crop_size, recipe.resize))
    assert recipe.batchnorm_momentum is not None and recipe.flip


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


def test_the_docs_catalogue_table_is_drawn_from_the_catalogue():
    import importlib.util
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    spec = importlib.util.spec_from_file_location("recipe_tables", docs / "recipe_tables.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = hook.on_page_markdown((docs / "recipes.md").read_text())
    rows = [line.split(" | ") for line in page.splitlines() if line.startswith("| ")][1:]
    assert [(row[0][2:], row[1]) for row in rows] == [
        (recipe.model, recipe.purpose) for recipe in recipes.list_recipes()
    ]
    unet = recipes.get("unet", "paper")
    assert any(unet.source in " | ".join(row) for row in rows)
