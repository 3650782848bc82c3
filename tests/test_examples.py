"""The U-Net/ISBI and SegNet-Basic/CamVid example scripts run end to end on a tiny budget."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(name):
    folder = SHARED / "data" / name
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} is absent")
    return folder


def test_cell_instances_gives_one_id_per_connected_cell():
    unet_isbi = _load_example("unet_isbi")
    mask = np.zeros((9, 12), np.int32)
    mask[1:4, 1:5] = 1
    mask[5:8, 1:3] = 1
    mask[1:8, 7:11] = 1
    mask[4, 9] = 0  # a notch does not split a cell
    instances = unet_isbi.cell_instances(mask)
    assert set(np.unique(instances)) == {0, 1, 2, 3}
    assert np.array_equal(instances > 0, mask > 0)
    for block in (
        instances[1:4, 1:5],
        instances[5:8, 1:3],
        instances[1:8, 7:11][mask[1:8, 7:11] > 0],
    ):
        assert len(np.unique(block)) == 1


def test_median_frequency_weights_match_the_definition():
    segnet_example = _load_example("segnet_basic_camvid")
    first = np.array([[0, 0, 1, 255]])
    second = np.array([[0, 2, 2, 2]])
    pairs = tf.data.Dataset.from_tensor_slices((np.zeros((2, 1, 4, 3)), np.stack([first, second])))
    weights = segnet_example.median_frequency_weights(pairs, 3, 255)
    # freq_c = pixels of c / pixels of the images containing c (void left out): 3/7, 1/3, 3/4.
    frequency = np.array([3 / 7, 1 / 3, 3 / 4])
    np.testing.assert_allclose(weights, np.median(frequency) / frequency)


def test_unet_isbi_example_reports_cell_iou_and_pixel_error(tmp_path):
    data = _data("isbi2012-membrane")
    unet_isbi = _load_example("unet_isbi")
    out = tmp_path / "unet"
    argv = ["--data", str(data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2"]
    figures = unet_isbi.main(argv + ["--tile", "64", "--padded", "--num-filters", "4"])
    written = json.loads((out / "metrics.json").read_text())
    assert written["cell_iou"] == pytest.approx(figures["cell_iou"])
    assert 0.0 <= written["cell_iou"] <= 1.0
    assert 0.0 <= written["pixel_error"] <= 1.0
    assert written["held_out_slices"] == [20, 21, 22, 23]
    assert not set(written["train_slices"]) & set(written["held_out_slices"])


def test_segnet_basic_example_reports_miou_and_class_accuracy(tmp_path):
    data = _data("camvid")
    segnet_example = _load_example("segnet_basic_camvid")
    out = tmp_path / "segnet"
    argv = ["--data", str(data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2"]
    segnet_example.main(argv + ["--batch-size", "2", "--num-filters", "4", "--val-images", "4"])
    written = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= written["mean_iou"] <= 1.0
    assert 0.0 <= written["class_average_accuracy"] <= 1.0
    assert written["image_size"] == [180, 240]
    assert written["train_seconds"] > 0
    weights = written["class_weights"]
    assert len(weights) == 11
    # SegNet's CamVid weights (Badrinarayanan et al. 2017, Sec. 4.1 implementation) put road,
    # building and sky far below 1 and the thin or rare classes far above it.
    assert max(weights["Road"], weights["Building"], weights["Sky"]) < 0.5
    assert (
        min(weights["Pole"], weights["SignSymbol"], weights["Pedestrian"], weights["Bicyclist"])
        > 2.0
    )
