"""`kseg predict`: label maps and overlays per image, or Mask R-CNN drawings and detections."""

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import write_tiny_coco
from PIL import Image

from kseg import cli


def _find(picture, panel):
    """The (row, column) where `panel` sits in `picture`, or None."""
    height, width = panel.shape[:2]
    for top in range(picture.shape[0] - height + 1):
        for left in range(picture.shape[1] - width + 1):
            if np.array_equal(picture[top : top + height, left : left + width], panel):
                return top, left
    return None


def test_predict_writes_labels_overlays_with_legend_and_side_by_sides(demo_run, tmp_path, capsys):
    import keras

    import kseg

    out, _scores = demo_run
    model = str(out / "run" / "model.keras")
    rng = np.random.default_rng(0)
    images = {"photo": (30, 44), "other": (24, 20), "unmatched": (16, 16)}
    (tmp_path / "in").mkdir()
    (tmp_path / "masks").mkdir()
    for stem, size in images.items():
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            tmp_path / "in" / f"{stem}.png"
        )
        if stem != "unmatched":
            mask = rng.integers(0, 5, size, dtype=np.uint8)
            mask[0, :4] = 255  # the ignore label is drawn in the ignore colour
            Image.fromarray(mask).save(tmp_path / "masks" / f"{stem}.png")
    names = ["bg", "circle", "square", "triangle", "star"]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    colours = kseg.viz.palette(8)[3:8]
    (tmp_path / "palette.txt").write_text("\n".join(",".join(map(str, c)) for c in colours))
    cli.main(
        [
            "predict",
            "--model",
            model,
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "pred"),
            "--ground-truth",
            str(tmp_path / "masks"),
            "--class-names",
            str(tmp_path / "names.txt"),
            "--palette",
            str(tmp_path / "palette.txt"),
        ]
    )
    printed = capsys.readouterr().out
    assert "no side-by-side for: unmatched.png" in printed
    loaded = keras.saving.load_model(model)
    for stem, (height, width) in images.items():
        image = np.asarray(Image.open(tmp_path / "in" / f"{stem}.png"))
        labels = np.asarray(Image.open(tmp_path / "pred" / f"{stem}_labels.png"))
        logits = loaded.predict(image[None].astype("float32"), verbose=0)
        np.testing.assert_array_equal(labels, np.argmax(logits[0], axis=-1))

        # The overlay is the blend on top and a legend strip of every class colour under it.
        overlay = np.asarray(Image.open(tmp_path / "pred" / f"{stem}_overlay.png"))
        strip = kseg.viz.legend(names, colours, width)
        assert overlay.shape == (height + strip.shape[0], max(width, strip.shape[1]), 3)
        np.testing.assert_array_equal(
            overlay[:height, :width], kseg.viz.overlay(image, labels, colours)
        )
        for colour in colours:
            assert (overlay[height:] == colour).all(-1).sum() >= 16, colour

        side_by_side = tmp_path / "pred" / f"{stem}_side_by_side.png"
        if stem == "unmatched":
            assert not side_by_side.exists()
            continue
        picture = np.asarray(Image.open(side_by_side))
        truth = np.asarray(Image.open(tmp_path / "masks" / f"{stem}.png"))
        spots = [
            _find(picture, panel)
            for panel in (
                image,
                kseg.viz.colorize(labels, colours),
                kseg.viz.colorize(truth, colours),
            )
        ]
        # Image, prediction and ground truth from left to right on one row.
        assert None not in spots
        assert spots[0][0] == spots[1][0] == spots[2][0]
        assert spots[0][1] < spots[1][1] < spots[2][1]


def test_predict_with_a_sliding_window(demo_run, tmp_path):
    import keras

    out, _scores = demo_run
    model_path = str(out / "run" / "model.keras")
    model = keras.saving.load_model(model_path)
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    cli.main(
        [
            "predict",
            "--model",
            model_path,
            str(tmp_path / "photo.png"),
            "--out",
            str(tmp_path / "pred"),
            "--window",
            "48",
            "--overlap",
            "0.5",
        ]
    )
    labels = np.asarray(Image.open(tmp_path / "pred" / "photo_labels.png"))
    np.testing.assert_array_equal(labels, cli_free_sliding_window(model, image))


def cli_free_sliding_window(model, image):
    from kseg.inference.sliding_window import sliding_window_predict

    return sliding_window_predict(
        model, image.astype("float32"), window=48, overlap=0.5, output="labels"
    )


def test_predict_refuses_class_names_that_do_not_match_the_model(mask_rcnn_file, tmp_path):
    _annotations, image_dir = write_tiny_coco(tmp_path)
    model = str(mask_rcnn_file)
    with pytest.raises(SystemExit, match="--class-names gives 2 names but the model predicts 4"):
        cli.main(["predict", "--model", model, str(image_dir), "--class-names", "a,b"])


def test_predict_with_mask_rcnn_writes_overlays_and_detections(mask_rcnn_file, tmp_path):
    import keras

    import kseg

    # Sides that are multiples of 64: no padding, so no detection can fall in a padded margin
    # outside the photo (where an untrained model may put all of them).
    image = np.random.default_rng(4).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    out = tmp_path / "pred"
    cli.main(
        [
            "predict",
            "--model",
            str(mask_rcnn_file),
            str(tmp_path / "photo.png"),
            "--out",
            str(out),
            "--min-score",
            "0",
            "--class-names",
            "a,b,c,d",
            "--mask-threshold",
            "0.01",
        ]
    )
    record = json.loads((out / "photo_instances.json").read_text())
    # An untrained mask head sits near probability 0.5 everywhere, so the default threshold
    # could leave every mask empty; a low one makes each mask fill its box and the tint visible.
    serve = kseg.detection.instance_serving_function(
        keras.saving.load_model(mask_rcnn_file), mask_threshold=0.01
    )
    expected = {key: value.numpy() for key, value in serve(image).items()}
    count = int(expected["num_detections"])
    detections = record["detections"]
    assert (record["height"], record["width"]) == (64, 128) and len(detections) == count > 0
    np.testing.assert_allclose(
        [d["box"] for d in detections], expected["boxes"][:count], atol=0.006
    )
    np.testing.assert_allclose(
        [d["score"] for d in detections], expected["scores"][:count], atol=6e-5
    )
    assert [d["class"] for d in detections] == expected["classes"][:count].tolist()
    assert [d["class_name"] for d in detections] == [
        "abcd"[c - 1] for c in expected["classes"][:count]
    ]
    assert [d["mask_area"] for d in detections] == expected["masks"][:count].sum((1, 2)).tolist()

    drawn = np.asarray(Image.open(out / "photo_instances.png"))
    assert drawn.shape == image.shape
    covered = expected["masks"][:count].any(axis=0)
    outlines = np.zeros(covered.shape, bool)
    for y1, x1, y2, x2 in expected["boxes"][:count]:
        rows = slice(int(y1), int(np.ceil(y2)) + 1)
        cols = slice(int(x1), int(np.ceil(x2)) + 1)
        outlines[rows, cols] = True  # the box and its outline, generously
        outlines[int(y1) : int(y1) + 16, int(x1) :] = True  # its caption, generously
    assert covered.any()
    untouched = ~covered & ~outlines
    # Pixels outside every mask, box and caption are the photo's; masked pixels are tinted.
    np.testing.assert_array_equal(drawn[untouched], image[untouched])
    assert (drawn[covered] != image[covered]).any(axis=-1).mean() > 0.9
    # Each detection is captioned with its class name and score, as the JSON records them.
    captions = [f"{d['class_name']} {d['score']:.2f}" for d in detections]
    expected_drawing = kseg.viz.draw_instances(
        image, expected["masks"][:count], expected["boxes"][:count], captions
    )
    assert (drawn != expected_drawing).any(-1).mean() < 0.01  # box rounding aside
    uncaptioned = kseg.viz.draw_instances(
        image, expected["masks"][:count], expected["boxes"][:count]
    )
    assert (drawn != uncaptioned).any()


def test_predict_passes_the_crf_settings_to_dense_crf(demo_run, tmp_path):
    import keras

    import kseg

    out, _scores = demo_run
    model_path = str(out / "run" / "model.keras")
    image = np.random.default_rng(3).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    settings = ["--crf-iterations", "2", "--crf-sxy-bilateral", "20", "--crf-compat-gaussian", "1"]
    base = ["predict", "--model", model_path, str(tmp_path / "photo.png")]
    cli.main([*base, "--out", str(tmp_path / "pred"), "--crf", *settings])
    labels = np.asarray(Image.open(tmp_path / "pred" / "photo_labels.png"))
    options = {"iterations": 2, "sxy_bilateral": 20.0, "compat_gaussian": 1.0}
    predict = kseg.inference.make_predictor(
        keras.saving.load_model(model_path), crf=True, crf_options=options
    )
    np.testing.assert_array_equal(labels, predict(image[None].astype("float32"))[0])
    with pytest.raises(SystemExit, match="--crf-iterations, --crf-compat-gaussian set the CRF"):
        cli.main(
            [
                *base,
                "--out",
                str(tmp_path / "other"),
                "--crf-iterations",
                "2",
                "--crf-compat-gaussian",
                "1",
            ]
        )


def test_predict_as_a_command_writes_no_tensorflow_start_up_lines(demo_run, tmp_path):
    import os
    import subprocess
    import sys

    out, _scores = demo_run
    rng = np.random.default_rng(5)
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(
            tmp_path / f"image{index}.png"
        )
    command = [sys.executable, "-m", "kseg.cli", "predict", "--model"]
    command += [str(out / "run" / "model.keras"), str(tmp_path), "--out", str(tmp_path / "pred")]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(path.name for path in (tmp_path / "pred").iterdir()) == [
        "image0_labels.png",
        "image0_overlay.png",
        "image1_labels.png",
        "image1_overlay.png",
    ]
    noisy = ("oneDNN", "cpu_feature_guard", "absl::InitializeLog", "non-square")
    assert not [line for line in result.stderr.splitlines() if any(n in line for n in noisy)]
    # stderr is a pipe here, not a terminal: no progress bar either.
    assert "predicting" not in result.stderr


def test_predict_with_a_pretrained_name_uses_the_entrys_names_palette_and_resize(
    tmp_path, monkeypatch, capsys
):
    import tensorflow as tf
    from test_pretrained_models import TOY_CLASS_NAMES, TOY_MIN_SIDE, register_toy_checkpoint

    import kseg
    from kseg.pretrained.convert_torchvision_segmentation import (
        load_torchvision_segmentation_checkpoint,
    )

    toy, cache_dir = register_toy_checkpoint(tmp_path, monkeypatch)
    rng = np.random.default_rng(1)
    sizes = {"wide": (30, 44), "tall": (26, 20)}
    (tmp_path / "in").mkdir()
    for stem, size in sizes.items():
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            tmp_path / "in" / f"{stem}.png"
        )
    status = cli.main(
        ["predict", "--model", "toy", str(tmp_path / "in"), "--out", str(tmp_path / "pred")]
    )
    assert status == 0
    assert f"min_side {TOY_MIN_SIDE}" in capsys.readouterr().out
    model = load_torchvision_segmentation_checkpoint(
        toy, cache_dir / "kseg" / "pretrained" / Path(toy.url).name
    )
    colours = kseg.viz.palette(3)
    for stem, (height, width) in sizes.items():
        image = np.asarray(Image.open(tmp_path / "in" / f"{stem}.png"))
        labels = np.asarray(Image.open(tmp_path / "pred" / f"{stem}_labels.png"))
        assert labels.shape == (height, width)
        # Predicted with the shorter side at TOY_MIN_SIDE, labels brought back by nearest neighbour.
        scale = TOY_MIN_SIDE / min(height, width)
        small_size = (int(height * scale), int(width * scale))
        assert min(small_size) == TOY_MIN_SIDE
        small = tf.image.resize(image.astype("float32"), small_size, method="bilinear")
        small_labels = np.argmax(model.predict(small[None], verbose=0)[0], axis=-1)
        expected = Image.fromarray(small_labels.astype(np.uint8)).resize(
            (width, height), Image.NEAREST
        )
        np.testing.assert_array_equal(labels, np.asarray(expected))
        # The legend names the entry's classes in the VOC colours.
        overlay = np.asarray(Image.open(tmp_path / "pred" / f"{stem}_overlay.png"))
        blended = kseg.viz.overlay(image, labels, colours)
        np.testing.assert_array_equal(
            overlay, kseg.viz.draw_legend(blended, list(TOY_CLASS_NAMES), colours)
        )
        assert not np.array_equal(overlay, kseg.viz.draw_legend(blended, ["0", "1", "2"], colours))


def test_predict_with_explicit_flags_overrides_the_entry(tmp_path, monkeypatch, capsys):
    from test_pretrained_models import register_toy_checkpoint

    register_toy_checkpoint(tmp_path, monkeypatch)
    Image.fromarray(np.full((18, 24, 3), 90, np.uint8)).save(tmp_path / "a.png")
    cli.main(
        ["predict", "--model", "toy", str(tmp_path / "a.png"), "--out", str(tmp_path / "pred")]
        + ["--resize", "none", "--class-names", "x,y,z", "--palette", "camvid"]
    )
    printed = capsys.readouterr().out
    assert "trained with resize min_side 32; none (native size) is used" in printed
    assert "the model was trained with class names bg, sky, tree; x, y, z are used" in printed
    assert "--palette camvid is used" in printed
    assert np.asarray(Image.open(tmp_path / "pred" / "a_labels.png")).shape == (18, 24)


def test_predict_with_a_checkpoint_kseg_cannot_load_downloads_nothing(tmp_path, monkeypatch):
    import dataclasses

    from keras.src.utils import file_utils
    from test_pretrained_models import register_toy_checkpoint

    import kseg
    from kseg.pretrained import registry

    toy, cache_dir = register_toy_checkpoint(tmp_path, monkeypatch)
    # An entry kseg cannot load, whatever the registry holds today.
    unloadable = dataclasses.replace(
        toy,
        name="toy_unloadable",
        builder=None,
        builder_kwargs={},
        converter=None,
        status="not_loadable",
        missing="a builder for the toy architecture",
    )
    monkeypatch.setitem(registry._REGISTRY, "toy_unloadable", unloadable)
    assert kseg.pretrained.get("toy_unloadable").status == "not_loadable"

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"the test tried to download {url}")

    monkeypatch.setattr(file_utils, "urlretrieve", refuse)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as stop:
        cli.main(["predict", "--model", "toy_unloadable", str(tmp_path / "a.png")])
    message = str(stop.value.code)
    assert "kseg cannot load 'toy_unloadable' yet: it needs a builder for the toy" in message
    assert not cache_dir.exists()


def test_predict_with_an_unknown_model_names_files_and_the_registry(tmp_path):
    import kseg

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as stop:
        cli.main(["predict", "--model", str(tmp_path / "none.keras"), str(tmp_path / "a.png")])
    message = str(stop.value.code)
    assert "model file or a pretrained checkpoint name" in message
    assert ", ".join(kseg.pretrained.list_pretrained()) in message


def test_predict_with_a_pretrained_mask_rcnn_name_reproduces_torchvision(tmp_path, monkeypatch):
    from toy_pretrained import register_toy_mask_rcnn

    # The narrow torchvision Mask R-CNN of tests/fixtures/torchvision_mask_rcnn_reference.py,
    # registered as a published checkpoint served from a file:// URL.
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    names = ("__background__", "cat", "dog", "car", "tree")
    register_toy_mask_rcnn(tmp_path, monkeypatch, names)
    reference = np.load(fixtures / "torchvision_mask_rcnn_small.npz")
    (tmp_path / "in").mkdir()
    for index in (0, 3):
        Image.fromarray(reference[f"image{index}"][0]).save(tmp_path / "in" / f"im{index}.png")
    out = tmp_path / "pred"
    arguments = ["predict", "--model", "toy_instances", str(tmp_path / "in"), "--out", str(out)]
    assert cli.main([*arguments, "--min-score", "0.9"]) == 0
    for index in (0, 3):
        record = json.loads((out / f"im{index}_instances.json").read_text())
        keep = reference[f"scores{index}"] >= 0.9
        assert len(record["detections"]) == int(keep.sum()) > 0
        boxes = np.array([detection["box"] for detection in record["detections"]])
        # torchvision's boxes [x1, y1, x2, y2] in the image's pixels, JSON rounded to 0.01.
        expected = reference[f"boxes{index}"][keep][:, [1, 0, 3, 2]]
        np.testing.assert_allclose(boxes, expected, atol=0.0051)
        labels = reference[f"labels{index}"][keep]
        assert [d["class_name"] for d in record["detections"]] == [names[i] for i in labels]
        areas = [d["mask_area"] for d in record["detections"]]
        assert areas == reference[f"masks{index}"][keep].sum(axis=(1, 2)).tolist()
        assert (out / f"im{index}_instances.png").is_file()
