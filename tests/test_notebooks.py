"""The notebooks are stored without outputs and run top to bottom with their tiny settings."""

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat (dev extra)")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbclient (dev extra)")
pytest.importorskip("ipykernel", reason="the notebook tests need ipykernel (dev extra)")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT = 300


def execute(name, workdir, monkeypatch):
    """Runs notebook `name` in `workdir` with KSEG_NOTEBOOK_TINY=1; returns (stdout, notebook)."""
    monkeypatch.setenv("KSEG_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.delenv("KSEG_DATA_DIR", raising=False)
    # The kernel must import the kseg of this checkout, installed or not.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    ), notebook


def printed_scores(stdout):
    """Per-class IoUs and the mIoU printed by the notebook's evaluation cell."""
    lines = re.findall(r"^\S+ +IoU (nan|\d\.\d{3})$", stdout, re.MULTILINE)
    ious = [float(value) for value in lines]
    miou = float(re.findall(r"val mIoU (\d\.\d{4})", stdout)[-1])
    return ious, miou


def assert_miou_is_mean_of_present_classes(ious, miou, num_classes):
    assert len(ious) == num_classes
    present = [value for value in ious if not math.isnan(value)]
    assert 0.0 <= miou <= 1.0
    # The per-class figures are printed to 3 decimals.
    assert miou == pytest.approx(np.mean(present), abs=6e-4)


@pytest.mark.parametrize("name", ["quickstart", "bring_your_own_data", "mask_rcnn", "pretrained"])
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    if name == "pretrained":
        return  # nothing to shrink: the test serves a narrow stand-in checkpoint instead
    # One parameters cell holds the switch to tiny sizes.
    switches = [cell for cell in code if "KSEG_NOTEBOOK_TINY" in cell.source]
    assert len(switches) == 1


def test_quickstart_trains_evaluates_plots_and_exports(tmp_path, monkeypatch):
    stdout, notebook = execute("quickstart", tmp_path, monkeypatch)
    ious, miou = printed_scores(stdout)
    assert_miou_is_mean_of_present_classes(ious, miou, 5)
    assert "labels match the Keras model's on 100.00% of pixels" in stdout
    run = tmp_path / "runs" / "quickstart"
    assert (run / "saved_model" / "saved_model.pb").is_file()
    assert (run / "model.keras").is_file()
    figures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    # Data samples, training curves and predictions.
    assert len(figures) >= 3


def test_bring_your_own_data_writes_a_folder_trains_and_predicts(tmp_path, monkeypatch):
    stdout, _ = execute("bring_your_own_data", tmp_path, monkeypatch)
    assert "6 training and 3 validation pairs" in stdout
    ious, miou = printed_scores(stdout)
    assert_miou_is_mean_of_present_classes(ious, miou, 5)
    images = sorted((tmp_path / "example_data" / "images" / "val").iterdir())
    predictions = tmp_path / "runs" / "bring_your_own_data" / "predictions"
    for image_path in images:
        labels = np.asarray(Image.open(predictions / f"{image_path.stem}_labels.png"))
        assert labels.shape == Image.open(image_path).size[::-1]
        assert labels.max() < 5
    header = (tmp_path / "runs" / "bring_your_own_data" / "history.csv").read_text().split()[0]
    assert "loss" in header.split(",")


def printed_coco_metrics(stdout):
    """The AP figures printed by the Mask R-CNN notebook's evaluation cell."""
    return {
        name: float(value)
        for name, value in re.findall(
            r"^((?:mask|box)_AP(?:50|75)?) +(-?\d\.\d{3})$", stdout, re.MULTILINE
        )
    }


def test_mask_rcnn_trains_evaluates_exports_and_serves_one_image(tmp_path, monkeypatch):
    stdout, notebook = execute("mask_rcnn", tmp_path, monkeypatch)
    metrics = printed_coco_metrics(stdout)
    assert set(metrics) == {
        f"{kind}_AP{suffix}" for kind in ("mask", "box") for suffix in ("", "50", "75")
    }
    # COCO AP lies in [0, 1]; AP at the lenient IoU 0.50 is never below the stricter ones.
    for kind in ("mask", "box"):
        assert 0.0 <= metrics[f"{kind}_AP75"] <= metrics[f"{kind}_AP50"] <= 1.0
        assert metrics[f"{kind}_AP"] <= metrics[f"{kind}_AP50"]
    assert "scored on 4 validation images" in stdout
    assert re.search(r"returns the Keras model's \d+ detections for a 64x64 uint8 image", stdout)
    run = tmp_path / "runs" / "mask_rcnn"
    assert (run / "saved_model" / "saved_model.pb").is_file()
    figures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    # Ground-truth samples, the loss curves and the predictions.
    assert len(figures) >= 3


# Run in the notebook's kernel at start-up (a `sitecustomize` on its PYTHONPATH): the published
# "deeplabv3_resnet50" entry now serves the committed narrow torchvision DeepLabv3 (3 classes)
# from a file:// URL, so the notebook's own cells download, verify, convert and cache it offline.
STAND_IN = """
import dataclasses

from kseg.pretrained import registry

registry._REGISTRY["deeplabv3_resnet50"] = dataclasses.replace(
    registry._REGISTRY["deeplabv3_resnet50"],
    url={url!r},
    hash_prefix={prefix!r},
    builder_kwargs={kwargs!r},
    class_names=("bg", "sky", "tree"),
    resize="min_side 40",
)
"""


def test_pretrained_segments_a_photo_in_three_lines(tmp_path, monkeypatch):
    import hashlib
    import shutil

    from kseg.pretrained.convert_torchvision_segmentation import TORCHVISION_SEGMENTATION_CONFIGS

    notebook = nbformat.read(NOTEBOOKS / "pretrained.ipynb", as_version=4)
    three_lines = [c.source for c in notebook.cells if "kseg.pretrained.segment(" in c.source][0]
    assert len(three_lines.splitlines()) == 3
    fixture = REPO / "tests" / "fixtures" / "torchvision_deeplabv3_small.pth"
    digest = hashlib.sha256(fixture.read_bytes()).hexdigest()
    served = tmp_path / "served" / f"deeplabv3_small-{digest[:8]}.pth"
    served.parent.mkdir()
    shutil.copyfile(fixture, served)
    _, kwargs = TORCHVISION_SEGMENTATION_CONFIGS["deeplabv3_resnet50"]
    kwargs = {**kwargs, "base_channels": 2, "num_filters": 8, "dilation_rates": (2, 3, 5)}
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        STAND_IN.format(url=served.as_uri(), prefix=digest[:8], kwargs={**kwargs, "num_classes": 3})
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    # The photo is where keras.utils.get_file keeps it, so nothing is downloaded.
    keras_home = tmp_path / "keras_home"
    (keras_home / "datasets").mkdir(parents=True)
    photo = np.random.default_rng(0).integers(0, 256, (60, 45, 3), dtype=np.uint8)
    Image.fromarray(photo).save(keras_home / "datasets" / "grace_hopper.jpg", format="PNG")
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    workdir = tmp_path / "work"
    workdir.mkdir()
    stdout, _ = execute("pretrained", workdir, monkeypatch)
    shares = re.findall(r"^(bg|sky|tree) +(\d+\.\d\d)% of the pixels$", stdout, re.MULTILINE)
    assert shares and sum(float(share) for _, share in shares) == pytest.approx(100, abs=0.02)
    assert "same labels: True" in stdout
    assert "reloaded model agrees: True" in stdout
    assert (workdir / "deeplabv3_resnet50.keras").is_file()
    assert list((keras_home / "kseg" / "pretrained").glob("deeplabv3_small-*.pth"))
