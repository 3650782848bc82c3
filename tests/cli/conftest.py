"""Fixtures of the `kseg` command tests: a demo run and a saved tiny Mask R-CNN, made once."""

import json

import pytest
from cli_helpers import mask_rcnn_small_config

from kseg import cli


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    status = cli.main(
        [
            "demo",
            "--out",
            str(out),
            "--epochs",
            "1",
            # Two steps of 4 images, 4 validation images: the overlay's 4 rows.
            "--train-samples",
            "8",
            "--batch-size",
            "4",
            "--val-samples",
            "4",
            "--image-size",
            "64",
            "--backbone",
            "tiny",
            "--num-filters",
            "16",
            "--quiet-progress",
            "--scratch",
        ]
    )
    assert status == 0
    return out, json.loads((out / "scores.json").read_text())


@pytest.fixture(scope="session")
def mask_rcnn_file(tmp_path_factory):
    """A tiny untrained MaskRCNN (5 classes as the shapes data) saved as .keras."""
    import keras

    from kseg.models.mask_rcnn import MaskRCNN

    path = tmp_path_factory.mktemp("mask_rcnn") / "mask_rcnn.keras"
    keras.utils.set_random_seed(0)
    # Every region scores above 0, so the untrained model still returns detections.
    MaskRCNN(num_classes=5, score_threshold=0.0, **mask_rcnn_small_config()).save(path)
    return path
