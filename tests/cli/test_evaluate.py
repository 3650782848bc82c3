"""`kseg evaluate`: IoU scores of semantic models, COCO AP of Mask R-CNN, and its errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import COCO_CATEGORIES, mask_rcnn_small_config, write_tiny_coco
from PIL import Image

from kseg import cli


def test_evaluate_the_demo_model_prints_and_writes_scores(demo_run, tmp_path, capsys):
    out, _scores = demo_run
    model = str(out / "run" / "model.keras")
    cli.main(
        [
            "evaluate",
            "--model",
            model,
            "--data",
            "shapes",
            "--split",
            "val",
            "--output",
            str(tmp_path / "eval.json"),
        ]
    )
    assert "mean IoU" in capsys.readouterr().out
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["class_names"][1] == "circle" and len(written["iou"]) == 5


def test_evaluate_with_inference_modes_counts_the_predictor_labels(demo_run, tmp_path):
    import keras

    from kseg.inference import make_predictor

    out, _scores = demo_run
    model_path = str(out / "run" / "model.keras")
    model = keras.saving.load_model(model_path)
    rng = np.random.default_rng(3)
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "masks" / "val").mkdir(parents=True)
    images = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    masks = rng.integers(0, 5, (2, 64, 64), dtype=np.uint8)
    for index, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(tmp_path / "images" / "val" / f"{index}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / "val" / f"{index}.png")
    scores_path = tmp_path / "scores.json"
    cli.main(
        [
            "evaluate",
            "--model",
            model_path,
            "--data",
            str(tmp_path),
            "--num-classes",
            "5",
            "--scales",
            "0.75,1,1.25",
            "--flip",
            "--crf",
            "--output",
            str(scores_path),
        ]
    )
    predict = make_predictor(model, scales=(0.75, 1.0, 1.25), flip=True, crf=True)
    labels = predict(images.astype("float32"))
    expected = np.bincount(
        masks.astype(np.int64).ravel() * 5 + labels.ravel(), minlength=25
    ).reshape(5, 5)
    np.testing.assert_array_equal(json.loads(scores_path.read_text())["confusion_matrix"], expected)


@pytest.mark.parametrize("flag", [["--scales", "0,1"], ["--scales", "a"], ["--window", "0"]])
def test_bad_inference_flags_are_named(flag, capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--model", "m.keras", "--data", "shapes", *flag])
    assert flag[0] in capsys.readouterr().err


def spy_on_evaluate_instances(monkeypatch):
    """Records the arguments and the result of every evaluate_instances call of kseg.tasks."""
    import kseg.tasks

    calls = []
    real = kseg.tasks.evaluate_instances

    def recording(model, examples, categories, **kwargs):
        images = [example["image"] for example in examples.as_numpy_iterator()]
        result = real(model, examples, categories, **kwargs)
        calls.append(
            {
                "model": model,
                "images": images,
                "categories": categories,
                "kwargs": kwargs,
                "result": result,
            }
        )
        return result

    monkeypatch.setattr(kseg.tasks, "evaluate_instances", recording)
    return calls


def test_evaluate_mask_rcnn_on_a_coco_folder(mask_rcnn_file, tmp_path, capsys, monkeypatch):
    import kseg

    calls = spy_on_evaluate_instances(monkeypatch)
    annotations, image_dir = write_tiny_coco(tmp_path)
    output = tmp_path / "scores.json"
    cli.main(
        [
            "evaluate",
            "--model",
            str(mask_rcnn_file),
            "--data",
            f"coco:{annotations},{image_dir}",
            "--output",
            str(output),
        ]
    )
    scores = json.loads(output.read_text())
    (call,) = calls
    assert call["categories"] == kseg.data.coco_categories(annotations)
    assert call["categories"].coco_ids == (2, 5, 9, 11)
    for index, image in enumerate(call["images"]):
        np.testing.assert_array_equal(
            image, np.asarray(Image.open(image_dir / f"scene_{index}.png"))
        )
    assert scores["num_images"] == 3
    assert scores["class_names"] == [c["name"] for c in COCO_CATEGORIES]
    for key in ("mask_AP", "mask_AP75", "box_AP", "box_AP50"):
        assert scores[key] == call["result"][key]
    assert "(3 images)" in capsys.readouterr().out


def test_instance_evaluation_errors_name_the_problem(mask_rcnn_file, demo_run, tmp_path, capsys):
    annotations, image_dir = write_tiny_coco(tmp_path)
    model = str(mask_rcnn_file)
    with pytest.raises(SystemExit) as stop:
        cli.main(
            [
                "evaluate",
                "--model",
                model,
                "--data",
                f"coco:{tmp_path / 'missing.json'},{image_dir}",
            ]
        )
    assert stop.value.code == 2 and "missing.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(
            ["evaluate", "--model", model, "--data", f"coco:{annotations},{tmp_path / 'no_images'}"]
        )
    assert stop.value.code == 2 and "no_images" in capsys.readouterr().err
    (image_dir / "scene_1.png").unlink()
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "--model", model, "--data", f"coco:{annotations},{image_dir}"])
    assert "scene_1.png" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="coco:ANNOTATIONS.json,IMAGE_DIR"):
        cli.main(["evaluate", "--model", model, "--data", f"coco:{annotations}"])
    with pytest.raises(SystemExit, match="'shapes' or|--data shapes or"):
        cli.main(["evaluate", "--model", model, "--data", str(tmp_path)])
    with pytest.raises(SystemExit, match="--scales, --flip apply to semantic"):
        cli.main(["evaluate", "--model", model, "--data", "shapes", "--scales", "1,2", "--flip"])
    semantic = str(demo_run[0] / "run" / "model.keras")
    with pytest.raises(SystemExit, match="only MaskRCNN models"):
        cli.main(["evaluate", "--model", semantic, "--data", f"coco:{annotations},{image_dir}"])


def test_evaluate_refuses_a_class_count_that_differs_from_the_data(tmp_path):
    from kseg.models.mask_rcnn import MaskRCNN

    path = tmp_path / "three.keras"
    MaskRCNN(num_classes=3, **mask_rcnn_small_config()).save(path)
    with pytest.raises(SystemExit, match="predicts 2 object classes but shapes has 4"):
        cli.main(["evaluate", "--model", str(path), "--data", "shapes", "--num-samples", "1"])


def test_evaluate_a_pretrained_name_scores_at_the_entrys_min_side(tmp_path, monkeypatch, capsys):
    import tensorflow as tf
    from test_pretrained_models import TOY_CLASS_NAMES, TOY_MIN_SIDE, register_toy_checkpoint

    from kseg.pretrained.convert_torchvision_segmentation import (
        load_torchvision_segmentation_checkpoint,
    )

    toy, cache_dir = register_toy_checkpoint(tmp_path, monkeypatch)
    rng = np.random.default_rng(4)
    (tmp_path / "data" / "images" / "val").mkdir(parents=True)
    (tmp_path / "data" / "masks" / "val").mkdir(parents=True)
    pairs = []
    # Shorter sides of 30 and 20 become 32, the longer 60 and 40 64: multiples of 32, which the
    # evaluation pipeline then does not pad.
    for index, size in enumerate([(30, 60), (40, 20)]):
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        mask = rng.integers(0, 3, size, dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / "data" / "images" / "val" / f"{index}.png")
        Image.fromarray(mask).save(tmp_path / "data" / "masks" / "val" / f"{index}.png")
        pairs.append((image, mask))
    scores_path = tmp_path / "scores.json"
    cli.main(
        ["evaluate", "--model", "toy", "--data", str(tmp_path / "data")]
        + ["--mask-values", "labels", "--output", str(scores_path)]
    )
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and f"min_side {TOY_MIN_SIDE}" in printed
    scores = json.loads(scores_path.read_text())
    assert scores["class_names"] == list(TOY_CLASS_NAMES)
    model = load_torchvision_segmentation_checkpoint(
        toy, cache_dir / "kseg" / "pretrained" / Path(toy.url).name
    )
    expected = np.zeros((3, 3), np.int64)
    for image, mask in pairs:
        # Image (bilinear) and mask (nearest) resized so the shorter side is TOY_MIN_SIDE.
        scale = TOY_MIN_SIDE / min(mask.shape)
        size = (int(mask.shape[0] * scale), int(mask.shape[1] * scale))
        assert sorted(size) == [32, 64]
        small = tf.image.resize(image.astype("float32"), size, method="bilinear")
        small_mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0].numpy()
        labels = np.argmax(model.predict(small[None], verbose=0)[0], axis=-1)
        expected += np.bincount(
            small_mask.astype(np.int64).ravel() * 3 + labels.ravel(), minlength=9
        ).reshape(3, 3)
    np.testing.assert_array_equal(scores["confusion_matrix"], expected)


def _toy_coco(tmp_path, names):
    """write_tiny_coco's folder with its categories renumbered 1..4 and named `names`."""
    annotations, image_dir = write_tiny_coco(tmp_path)
    data = json.loads(annotations.read_text())
    renumber = {category["id"]: index + 1 for index, category in enumerate(COCO_CATEGORIES)}
    for annotation in data["annotations"]:
        annotation["category_id"] = renumber[annotation["category_id"]]
    data["categories"] = [{"id": index + 1, "name": name} for index, name in enumerate(names)]
    annotations.write_text(json.dumps(data))
    return annotations, image_dir


def test_a_published_coco_model_is_scored_by_category_id_on_any_subset(tmp_path, monkeypatch):
    from toy_pretrained import register_toy_mask_rcnn

    # torchvision's COCO checkpoints predict category ids (class k is id k, "N/A" where COCO
    # has no category), not the data's contiguous classes.
    register_toy_mask_rcnn(tmp_path, monkeypatch, ("__background__", "cat", "N/A", "car", "tree"))
    calls = spy_on_evaluate_instances(monkeypatch)
    annotations, image_dir = _toy_coco(tmp_path, ["cat", "N/A", "car", "tree"])
    data = json.loads(annotations.read_text())
    # The data holds ids 1, 3 and 4 only: kseg's contiguous classes 1..3.
    data["categories"] = [c for c in data["categories"] if c["name"] != "N/A"]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 2]
    annotations.write_text(json.dumps(data))
    output = tmp_path / "scores.json"
    data_flag = f"coco:{annotations},{image_dir}"
    args = ["evaluate", "--model", "toy_instances", "--data", data_flag, "--output", str(output)]
    assert cli.main(args) == 0
    (call,) = calls
    assert call["categories"].coco_ids == (1, 3, 4)
    assert call["kwargs"]["detection_category_ids"] == [1, 2, 3, 4]
    scores = json.loads(output.read_text())
    assert scores["num_images"] == 3 and scores["class_names"] == ["cat", "car", "tree"]


def test_a_published_coco_model_refuses_data_whose_ids_name_other_things(tmp_path, monkeypatch):
    from toy_pretrained import register_toy_mask_rcnn

    register_toy_mask_rcnn(tmp_path, monkeypatch, ("__background__", "cat", "dog", "car", "tree"))
    annotations, image_dir = _toy_coco(tmp_path, ["cat", "dog", "bus", "tree"])
    data_flag = f"coco:{annotations},{image_dir}"
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "--model", "toy_instances", "--data", data_flag])
    assert "id 3 'bus' (the model's id 3: 'car')" in str(stop.value.code)
