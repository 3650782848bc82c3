"""The Mask R-CNN examples run end to end with --tiny, as a user would start them.

Each script runs in its own Python process; the test checks its exit status, the files it
promises and that the AP it prints is the one it wrote.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TIMEOUT = 600


def run_example(name, *args, cwd):
    """Runs `examples/<name>.py` in a fresh process; returns its stdout, failing on an error."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{name}.py exited with {result.returncode}\n{result.stdout[-2000:]}\n"
        f"{result.stderr[-4000:]}"
    )
    return result.stdout


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_coco(root, **kwargs):
    """tests/cli's tiny COCO-format folder (PNGs with polygons, sparse category ids)."""
    helpers = load_module(REPO / "tests" / "cli" / "cli_helpers.py", "cli_helpers")
    return helpers.write_tiny_coco(root, **kwargs)


def assert_printed_ap_matches(stdout, metrics):
    found = re.search(
        r"mask AP (\d\.\d{3})  AP50 (\d\.\d{3})  AP75 (\d\.\d{3})  box AP (\d\.\d{3})", stdout
    )
    assert found, f"no AP line in:\n{stdout}"
    keys = ("mask_AP", "mask_AP50", "mask_AP75", "box_AP")
    for key, printed in zip(keys, found.groups()):
        assert 0.0 <= metrics[key] <= 1.0
        assert float(printed) == pytest.approx(metrics[key], abs=5e-4)


def test_mask_rcnn_coco_example_trains_evaluates_and_saves(tmp_path):
    import keras

    from kseg.models.mask_rcnn import MaskRCNN

    train = write_tiny_coco(tmp_path / "train", count=4)
    val = write_tiny_coco(tmp_path / "val", count=2, seed=1)
    run = tmp_path / "run"
    stdout = run_example(
        "mask_rcnn_coco",
        "--tiny",
        "--annotations",
        train[0],
        "--images",
        train[1],
        "--val-annotations",
        val[0],
        "--val-images",
        val[1],
        "--run-dir",
        run,
        cwd=tmp_path,
    )
    assert "4 categories: block, wedge, bar, dot" in stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 2
    assert_printed_ap_matches(stdout, metrics)
    model = keras.saving.load_model(run / "model.keras")
    assert isinstance(model, MaskRCNN) and model.num_classes == 5
    assert (run / "history.csv").read_text().count("\n") == 2  # header and one epoch


def test_resize_long_side_keeps_boxes_on_the_mask_extents(tmp_path):
    import kseg

    example_module = load_module(EXAMPLES / "mask_rcnn_coco.py", "mask_rcnn_coco")
    annotations, image_dir = write_tiny_coco(tmp_path, count=2)
    for example in kseg.data.coco_instance_dataset(annotations, image_dir):
        resized = example_module.resize_long_side(example, 40)
        assert tuple(resized["image"].shape) == (32, 40, 3)  # 64x80 at half size
        assert resized["image"].dtype == tf.uint8
        masks = resized["masks"].numpy()
        assert masks.shape[1:] == (32, 40) and set(np.unique(masks)) <= {0, 1}
        np.testing.assert_array_equal(resized["classes"], example["classes"])
        for mask, box in zip(masks, resized["boxes"].numpy()):
            rows, cols = np.nonzero(mask)
            np.testing.assert_array_equal(
                box, [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
            )
        # Halving the image halves the boxes, up to the pixel grid.
        np.testing.assert_allclose(resized["boxes"], example["boxes"].numpy() / 2, atol=1.0)
        image_id = resized["image_id"]
        assert int(image_id) == int(example["image_id"])
    empty = {
        "image": tf.zeros((30, 10, 3), tf.uint8),
        "boxes": tf.zeros((0, 4)),
        "classes": tf.zeros((0,), tf.int32),
        "masks": tf.zeros((0, 30, 10), tf.uint8),
    }
    resized = example_module.resize_long_side(empty, 60)
    assert tuple(resized["image"].shape) == (60, 20, 3) and tuple(resized["masks"].shape) == (
        0,
        60,
        20,
    )


@pytest.mark.slow  # its --tiny run traces the full training graph: ~15 s of CPU, more when shared
def test_mask_rcnn_shapes_example_runs_tiny(tmp_path):
    run = tmp_path / "run"
    stdout = run_example("mask_rcnn_shapes", "--tiny", "--run-dir", run, cwd=tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 4
    assert_printed_ap_matches(stdout, metrics)
