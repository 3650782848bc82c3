"""`kseg predict`: label maps and overlays per image, or Mask R-CNN drawings and detections."""

import json

import numpy as np
import pytest
from cli_helpers import write_tiny_coco
from PIL import Image

from kseg import cli


def test_predict_with_the_demo_model_writes_labels_and_overlay(demo_run, tmp_path):
    import keras

    import kseg

    out, _scores = demo_run
    model = str(out / "run" / "model.keras")
    image = np.random.default_rng(0).integers(0, 255, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    cli.main(
        ["predict", "--model", model, str(tmp_path / "photo.png"), "--out", str(tmp_path / "pred")]
    )
    labels = np.asarray(Image.open(tmp_path / "pred" / "photo_labels.png"))
    assert labels.shape == (30, 44) and labels.max() < 5
    logits = keras.saving.load_model(model).predict(image[None].astype("float32"), verbose=0)
    np.testing.assert_array_equal(labels, np.argmax(logits[0], axis=-1))
    overlay = np.asarray(Image.open(tmp_path / "pred" / "photo_overlay.png"))
    np.testing.assert_array_equal(overlay, kseg.viz.overlay(image, labels, kseg.viz.palette(5)))


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
    assert covered.any()
    untouched = ~covered & ~outlines
    # Pixels outside every mask and box are the photo's; masked pixels are tinted.
    np.testing.assert_array_equal(drawn[untouched], image[untouched])
    assert (drawn[covered] != image[covered]).any(axis=-1).mean() > 0.9
