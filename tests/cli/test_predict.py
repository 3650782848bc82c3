"""`kseg predict`: label maps and overlays per image, or Mask R-CNN drawings and detections."""

import json

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
