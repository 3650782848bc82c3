"""`kseg train` / `kseg evaluate` on own data: 0/255 masks, absent classes, offline weights."""

import json
import urllib.error

import keras
import numpy as np
import pytest
from PIL import Image

import kseg.testing
from kseg import cli


@pytest.fixture
def binary_folder(tmp_path):
    """images/ and masks/ of three 16x16 pairs whose masks hold 0 and 255 only."""
    rng = np.random.default_rng(4)
    masks = []
    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for index in range(3):
        image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        mask = np.where(rng.random((16, 16)) < 0.3, 255, 0).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / "data" / "images" / f"{index}.png")
        Image.fromarray(mask).save(tmp_path / "data" / "masks" / f"{index}.png")
        masks.append(mask)
    return tmp_path / "data", np.stack(masks)


@pytest.fixture
def background_model(tmp_path):
    """A saved 2-class model that predicts class 0 at every pixel."""
    inputs = keras.Input((None, None, 3))
    logits = keras.layers.Conv2D(
        2, 1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant([4.0, 0.0])
    )(inputs)
    path = tmp_path / "background.keras"
    keras.Model(inputs, logits).save(path)
    return path


def test_evaluate_refuses_0_255_masks_and_says_how_to_fix_it(
    binary_folder, background_model, capsys
):
    data, _ = binary_folder
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "--model", str(background_model), "--data", str(data)])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("kseg: error: ") and error.count("\n") == 1
    assert "[0, 255]" in error and "0.png" in error and "--mask-values binary" in error


def test_a_mean_over_the_background_alone_names_the_absent_foreground(
    binary_folder, background_model, tmp_path, capsys
):
    # 255 read as the ignore label: only background is labelled, and only it is predicted.
    data, _ = binary_folder
    output = tmp_path / "scores.json"
    cli.main(
        ["evaluate", "--model", str(background_model), "--data", str(data)]
        + ["--mask-values", "labels", "--output", str(output)]
    )
    printed = capsys.readouterr().out
    mean_line = next(line for line in printed.splitlines() if line.startswith("mean IoU"))
    assert mean_line.startswith(
        "mean IoU 1.0000 (over 1 of 2 classes; absent from labels and predictions: 1)"
    )
    scores = json.loads(output.read_text())
    assert scores["present_classes"] == [0] and scores["absent_classes"] == [1]
    assert scores["iou"][0] == 1.0 and np.isnan(scores["iou"][1])


def test_binary_mask_values_score_the_foreground(binary_folder, background_model, tmp_path):
    data, masks = binary_folder
    output = tmp_path / "scores.json"
    cli.main(
        ["evaluate", "--model", str(background_model), "--data", str(data)]
        + ["--mask-values", "0:0,255:1", "--output", str(output)]
    )
    scores = json.loads(output.read_text())
    # Everything predicted background: its IoU is its share of the pixels, the foreground's 0.
    background_share = float(np.mean(masks == 0))
    np.testing.assert_allclose(scores["iou"], [background_share, 0.0], rtol=1e-9)
    np.testing.assert_allclose(scores["mean_iou"], background_share / 2, rtol=1e-9)
    assert scores["absent_classes"] == []


def test_train_refuses_0_255_masks_before_building_anything(binary_folder, tmp_path, capsys):
    data, _ = binary_folder
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--data", str(data), "--backbone", "tiny", "--run-dir", str(tmp_path)])
    assert stop.value.code == 2
    assert "--mask-values binary" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_train_offline_imagenet_failure_is_one_line(binary_folder, tmp_path, monkeypatch, capsys):
    from keras.src.utils import file_utils

    kseg.testing.offline_keras_cache(monkeypatch, tmp_path / "keras")

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    data, _ = binary_folder
    with pytest.raises(SystemExit) as stop:
        cli.main(
            ["train", "--data", str(data), "--mask-values", "binary", "--epochs", "1"]
            + ["--backbone", "mobilenetv2", "--backbone-weights", "imagenet"]
            + ["--model-arg", "alpha=0.5", "--run-dir", str(tmp_path / "run")]
        )
    # Binary masks: two classes without --num-classes.
    printed = capsys.readouterr()
    assert "(2 classes" in printed.out
    # kseg's top-level handler prints the one line and exits with status 2.
    assert stop.value.code == 2
    message = printed.err.strip().splitlines()[-1]
    file_name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
    assert message.startswith("kseg: error: could not download") and "\n" not in message
    assert str(tmp_path / "keras" / "models" / file_name) in message
    assert "https://storage.googleapis.com/" in message and "name resolution" in message
