"""`kseg demo`: trains, scores, draws and exports DeepLabV3+ on the shapes data."""

import numpy as np
import tensorflow as tf
from PIL import Image


def test_demo_writes_scores_overlay_model_and_saved_model(demo_run):
    out, scores = demo_run
    assert 0.0 <= scores["mean_iou"] <= 1.0
    assert len(scores["iou"]) == 5 and scores["class_names"][1] == "circle"
    overlay = np.asarray(Image.open(out / "overlay.png"))
    # A row per image (4 of 64 px): image, prediction, truth, 2 px apart (a column may widen
    # a little to its title); titles above and a legend below.
    assert 3 * 64 + 2 * 2 <= overlay.shape[1] < 3 * 64 + 2 * 2 + 20
    assert overlay.shape[0] > 4 * 64 + 3 * 2
    below_panels = overlay[-40:]
    for colour in ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25)):
        assert (below_panels == colour).all(-1).sum() >= 16, colour  # the legend's swatches
    serving = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    outputs = serving(images=tf.zeros((1, 40, 56, 3), tf.uint8))
    assert outputs["labels"].shape == (1, 40, 56)
    assert (out / "run" / "model.keras").is_file()


def test_demo_offline_with_weights_kseg_does_not_ship_is_one_error_line(
    tmp_path, monkeypatch, capsys
):
    import urllib.error

    import pytest
    from keras.src.utils import file_utils

    import kseg.cli
    import kseg.testing

    kseg.testing.offline_keras_cache(monkeypatch, tmp_path)

    def fail(url, *args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(file_utils, "urlretrieve", fail)
    argv = ["demo", "--alpha", "0.5", "--epochs", "1", "--train-samples", "4"]
    argv += ["--val-samples", "2", "--image-size", "48", "--out", str(tmp_path / "demo")]
    with pytest.raises(SystemExit) as raised:
        kseg.cli.main(argv)
    # The message is printed (exit status 2) or carried by SystemExit, which Python prints.
    code = raised.value.code
    printed = capsys.readouterr().err + (code if isinstance(code, str) else "")
    assert code == 2 or isinstance(code, str)
    lines = [line for line in printed.splitlines() if line.startswith("kseg:")]
    assert len(lines) == 1 and "mobilenet_v2_weights" in lines[0] and "0.5" in lines[0]
    assert str(tmp_path / "models") in lines[0]


def test_demo_refuses_an_image_size_the_shapes_generator_cannot_draw(capsys):
    import pytest

    import kseg.cli
    from kseg.data.shapes import SHAPES_MIN_IMAGE_SIZE

    with pytest.raises(SystemExit) as raised:
        kseg.cli.main(["demo", "--image-size", str(SHAPES_MIN_IMAGE_SIZE - 1)])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert f"at least {SHAPES_MIN_IMAGE_SIZE}" in error and "Traceback" not in error
