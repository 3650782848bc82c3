"""`kseg demo`: trains, scores, draws and exports DeepLabV3+ on the shapes data."""

import numpy as np
import tensorflow as tf
from PIL import Image


def test_demo_writes_scores_overlay_model_and_saved_model(demo_run):
    out, scores = demo_run
    assert 0.0 <= scores["mean_iou"] <= 1.0
    assert len(scores["iou"]) == 5 and scores["class_names"][1] == "circle"
    overlay = np.asarray(Image.open(out / "overlay.png"))
    assert overlay.shape == (192, 256, 3)  # rows image, prediction, truth; 4 images of 64 px
    serving = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    outputs = serving(images=tf.zeros((1, 40, 56, 3), tf.uint8))
    assert outputs["labels"].shape == (1, 40, 56)
    assert (out / "run" / "model.keras").is_file()
