"""`kseg train`: semantic models on folders (one device or mirrored), Mask R-CNN on shapes."""

import csv
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from cli_helpers import small_config_flags
from PIL import Image

import kseg
from kseg import cli


def test_train_on_folders_then_reports_a_bad_label_by_file(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (tmp_path / folder / split).mkdir(parents=True)
        for index in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "images" / split / f"{index}.png"
            )
            Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(
                tmp_path / "masks" / split / f"{index}.png"
            )
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tmp_path),
        "--num-classes",
        "3",
        "--backbone",
        "tiny",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--crop-size",
        "32",
        "--preview-images",
        "2",
        "--run-dir",
        str(run),
        "--precision",
        "float32",
    ]
    cli.main(args)
    assert (run / "model.keras").is_file()
    printed = capsys.readouterr().out
    assert "mean IoU" in printed
    # Output captured (not a terminal): one plain line per epoch, no progress bars.
    assert "\x1b" not in printed and "\r" not in printed
    epoch_lines = [line for line in printed.splitlines() if " - val_mean_iou: " in line]
    assert len(epoch_lines) == 2
    rows = _history_rows(run)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert all(0.0 <= float(row["val_mean_iou"]) <= 1.0 for row in rows)
    _assert_watched_run(run, epochs=2, preview_rows=2, image_size=32)

    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(tmp_path / "masks" / "train" / "2.png")
    with pytest.raises(SystemExit) as stop:
        cli.main(args[:-4] + ["--run-dir", str(tmp_path / "run2"), "--precision", "float32"])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert "2.png" in message and "7" in message


def _history_rows(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def _assert_watched_run(run, *, epochs, preview_rows, image_size):
    """best.keras, the newest checkpoint only, previews in PNG and TensorBoard, history.png."""
    import keras

    assert isinstance(keras.saving.load_model(run / "best.keras"), keras.Model)
    assert [p.name for p in (run / "checkpoints").iterdir()] == [f"epoch_{epochs:03d}.keras"]
    previews = sorted(p.name for p in (run / "previews").iterdir())
    assert previews == [f"epoch_{e:03d}.png" for e in range(1, epochs + 1)]
    picture = np.asarray(Image.open(run / "previews" / previews[-1]))
    # Rows of image | prediction | ground truth under column titles (and a legend).
    assert picture.shape[0] > preview_rows * image_size and picture.shape[1] >= 3 * image_size
    steps = []
    for path in (run / "logs").rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    steps.append(event.step)
                    png = tf.make_ndarray(value.tensor)[2]
                    assert tf.io.decode_png(png).shape == picture.shape
    assert sorted(steps) == list(range(epochs))
    assert Image.open(run / "history.png").size[0] > 0


def _tiny_folder_dataset(root, size=32, count=4):
    rng = np.random.default_rng(5)
    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (root / folder / split).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{index}.png"
            )
            Image.fromarray(rng.integers(0, 3, (size, size), dtype=np.uint8)).save(
                root / "masks" / split / f"{index}.png"
            )


def test_train_with_mirrored_strategy_end_to_end(tmp_path, capsys):
    import keras

    _tiny_folder_dataset(tmp_path)
    run = tmp_path / "run"
    cli.main(
        [
            "train",
            "--data",
            str(tmp_path),
            "--num-classes",
            "3",
            "--backbone",
            "tiny",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--crop-size",
            "32",
            "--run-dir",
            str(run),
            "--precision",
            "float32",
            "--strategy",
            "mirrored",
            "--scale-learning-rate",
            "--learning-rate",
            "0.02",
        ]
    )
    out = capsys.readouterr().out
    # One CPU is one replica: the global batch is the per-replica batch, the rate is unscaled.
    assert "strategy mirrored: 1 replica, global batch 2 (2 per replica), learning rate 0.02" in out
    scores = json.loads((run / "scores.json").read_text())
    assert len(scores["iou"]) == 3
    model = keras.saving.load_model(run / "model.keras")
    assert model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 32, 32, 3)
    assert (run / "backup").is_dir() and not (run / "workers").exists()


def test_train_multiworker_without_tf_config_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit, match="TF_CONFIG is not set"):
        cli.main(
            [
                "train",
                "--data",
                "shapes",
                "--strategy",
                "multiworker",
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
    assert not (tmp_path / "run").exists()


def test_train_tpu_strategy_without_a_tpu_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(SystemExit, match="no reachable TPU"):
        cli.main(
            ["train", "--data", "shapes", "--strategy", "tpu", "--run-dir", str(tmp_path / "run")]
        )


def test_train_mask_rcnn_on_shapes_then_evaluate_agrees(tmp_path, capsys):
    import keras

    from kseg.models.mask_rcnn import MaskRCNN

    run = tmp_path / "run"
    cli.main(
        [
            "train",
            "--model",
            "mask_rcnn",
            "--data",
            "shapes",
            "--num-samples",
            "4",
            *small_config_flags(),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--batch-size",
            "2",
            "--val-batch-size",
            "2",
            "--optimizer",
            "adam",
            "--learning-rate",
            "1e-3",
            "--precision",
            "float32",
            "--run-eagerly",
            "--preview-images",
            "1",
            "--run-dir",
            str(run),
        ]
    )
    printed = capsys.readouterr().out
    assert (
        "training MaskRCNN (tiny) on shapes (4 classes: circle, square, triangle, star)" in printed
    )
    model = keras.saving.load_model(run / "model.keras")
    assert isinstance(model, MaskRCNN) and model.num_classes == 5
    assert model.fpn_channels == 16 and model.anchor_sizes == (16.0, 32.0, 64.0, 128.0, 256.0)
    (row,) = _history_rows(run)  # one epoch
    for key in ("val_loss", "val_mask_loss", "val_rpn_objectness_loss"):
        assert math.isfinite(float(row[key])) and float(row[key]) > 0
    trained = json.loads((run / "scores.json").read_text())
    # The last epoch's AP is that of the final model, which `kseg train` scores again at the end.
    assert float(row["val_mask_AP"]) == pytest.approx(trained["mask_AP"])
    assert float(row["val_box_AP"]) == pytest.approx(trained["box_AP"])
    _assert_watched_run(run, epochs=1, preview_rows=1, image_size=128)
    assert trained["num_images"] == 4 and 0.0 <= trained["mask_AP"] <= 1.0

    # The saved model scores the same on the same held-out images through `kseg evaluate`.
    output = tmp_path / "again.json"
    cli.main(
        [
            "evaluate",
            "--model",
            str(run / "model.keras"),
            "--data",
            "shapes",
            "--split",
            "val",
            "--num-samples",
            "4",
            "--batch-size",
            "2",
            "--output",
            str(output),
        ]
    )
    assert json.loads(output.read_text()) == trained
    assert trained["class_names"] == ["circle", "square", "triangle", "star"]
    printed = capsys.readouterr().out
    for kind in ("mask", "box "):
        key = kind.strip()
        assert (
            f"{kind} AP {trained[f'{key}_AP']:.4f}  AP50 {trained[f'{key}_AP50']:.4f}  "
            f"AP75 {trained[f'{key}_AP75']:.4f}"
        ) in printed


def test_train_mask_rcnn_refuses_semantic_flags_and_mixed_up_data(tmp_path):
    base = ["train", "--model", "mask_rcnn", "--run-dir", str(tmp_path / "run")]
    with pytest.raises(
        SystemExit,
        match="--loss, --output-stride apply to semantic|--output-stride, --loss apply to semantic",
    ):
        cli.main([*base, "--data", "shapes", "--loss", "dice", "--output-stride", "16"])
    with pytest.raises(SystemExit, match="--val-data goes with --data coco"):
        cli.main([*base, "--data", "shapes", "--val-data", "coco:a.json,images"])
    with pytest.raises(SystemExit, match="train --model mask_rcnn on it"):
        cli.main(["train", "--data", "coco:a.json,images", "--run-dir", str(tmp_path / "r")])
    assert not (tmp_path / "run").exists() and not (tmp_path / "r").exists()


def test_recipe_flags_default_to_the_models_finetune_recipe_and_override_it(capsys):
    from kseg.cli.train import resolve_recipe

    parser = cli.build_parser()
    # No tuning flag: DeepLabV3+ MobileNetV2-0.35 from the ImageNet file kseg ships.
    name, recipe = resolve_recipe(parser.parse_args(["train", "--data", "camvid_root"]))
    assert name == "deeplabv3plus" and recipe == kseg.recipes.get("deeplabv3plus")
    args = recipe.model_args
    assert kseg.backbones.bundled_weights_path(args["backbone"], alpha=args["alpha"]).is_file()
    name, recipe = resolve_recipe(
        parser.parse_args(
            ["train", "--data", "d", "--model", "pspnet", "--recipe", "paper"]
            + ["--epochs", "2", "--resize", "none", "--scale-range", "0.8,1.2"]
            + ["--backbone-weights", "none", "--class-weighting", "median_frequency"]
        )
    )
    paper = kseg.recipes.get("pspnet", "paper")
    assert (recipe.learning_rate, recipe.batch_size) == (paper.learning_rate, paper.batch_size)
    assert (recipe.epochs, recipe.resize, recipe.scale_range) == (2, None, (0.8, 1.2))
    assert recipe.model_args["backbone_weights"] is None
    assert recipe.class_weighting == "median_frequency"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", "d", "--scale-range", "0.8,0.5"])
    assert "LOW,HIGH" in capsys.readouterr().err


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    """A one-step DeepLabV3+ run on shapes under its finetune recipe, resize and lr overridden."""
    run = tmp_path_factory.mktemp("recipe") / "run"
    cli.main(
        ["train", "--data", "shapes", "--num-samples", "4", "--backbone", "tiny"]
        + ["--resize", "40,40", "--crop-size", "32", "--learning-rate", "0.004"]
        + ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2"]
        + ["--preview-images", "0", "--run-eagerly", "--precision", "float32"]
        + ["--run-dir", str(run)]
    )
    return run


def test_train_prints_and_saves_the_resolved_recipe(recipe_run):
    saved = json.loads((recipe_run / "recipe.json").read_text())
    finetune = kseg.recipes.get("deeplabv3plus")
    # The flags given override; the rest is the recipe's.
    assert saved["learning_rate"] == 0.004 and saved["resize"] == [40, 40]
    assert saved["crop_size"] == [32, 32] and saved["model_args"] == {"backbone": "tiny"}
    assert saved["optimizer"] == finetune.optimizer == "adam"
    assert saved["batchnorm_momentum"] == finetune.batchnorm_momentum == 0.9
    assert saved["class_names"] == list(kseg.data.shapes_info().class_names)
    assert kseg.recipes.load(recipe_run / "model.keras").learning_rate == 0.004


def test_evaluate_scores_at_the_training_resize_and_says_when_overridden(recipe_run, capsys):
    model = str(recipe_run / "model.keras")
    base = ["evaluate", "--model", model, "--data", "shapes", "--num-samples", "2"]
    cli.main(base)
    printed = capsys.readouterr().out
    assert "scoring at 40x40" in printed and "trained with" not in printed
    cli.main([*base, "--resize", "48,48"])
    printed = capsys.readouterr().out
    assert "the model was trained with resize 40,40; 48,48 is used" in printed
    assert "scoring at 48x48" in printed


def test_predict_runs_at_the_training_resize_and_returns_full_size_labels(
    recipe_run, tmp_path, capsys
):
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "scene.png")
    model = str(recipe_run / "model.keras")
    out = tmp_path / "out"
    cli.main(["predict", "--model", model, str(tmp_path / "scene.png"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "predicting at 40x40" in printed
    assert Image.open(out / "scene_labels.png").size == (70, 50)
    names = ",".join(f"c{index}" for index in range(5))
    cli.main(
        ["predict", "--model", model, str(tmp_path / "scene.png"), "--out", str(out)]
        + ["--resize", "none", "--class-names", names]
    )
    printed = capsys.readouterr().out
    assert "the model was trained with resize 40,40; none (native size) is used" in printed
    assert "the model was trained with class names background, circle" in printed
    assert "predicting at" not in printed


def test_a_recipe_file_names_the_model_unless_model_is_given(tmp_path):
    from kseg.cli.train import resolve_recipe

    kseg.recipes.save(kseg.recipes.get("unet", "paper").replace(epochs=7), tmp_path)
    parser = cli.build_parser()
    base = ["train", "--data", "d", "--recipe", str(tmp_path / "recipe.json")]
    name, recipe = resolve_recipe(parser.parse_args(base))
    assert (name, recipe.epochs, recipe.momentum) == ("unet", 7, 0.99)
    name, recipe = resolve_recipe(parser.parse_args([*base, "--model", "fcn8s"]))
    assert (name, recipe.epochs) == ("fcn8s", 7)
    with pytest.raises(SystemExit, match="recipe.json"):
        resolve_recipe(parser.parse_args(["train", "--data", "d", "--recipe", "fast"]))
