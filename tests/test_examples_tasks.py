"""The task examples (train, fine-tune, own folder, evaluate, export and serve) run end to end.

Each script runs in its own Python process with its `--tiny` settings, as a user would start it,
and the test checks its exit status, the files it promises and the figures it prints.
"""

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import kseg

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SHARED = REPO / ".." / "shared"
MOBILENET_V2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
TIMEOUT = 600


def _environment(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    # The scripts must import the kseg of this checkout, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_example(name, *args, cwd, **env):
    """Runs `examples/<name>.py` in a fresh process; returns its stdout, failing on an error."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *map(str, args)],
        cwd=cwd,
        env=_environment(**env),
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


def printed_miou(stdout):
    """The mIoU of the script's final `... mIoU 0.1234` line."""
    found = re.findall(r"mIoU (\d+\.\d{4})", stdout)
    assert found, f"no mIoU line in:\n{stdout}"
    return float(found[-1])


def assert_scores_consistent(scores, printed, num_classes):
    """mIoU is the mean of the per-class IoUs of the classes that occur (NaN ones left out)."""
    assert len(scores["iou"]) == num_classes
    present = [value for value in scores["iou"] if not math.isnan(value)]
    assert scores["mean_iou"] == pytest.approx(np.mean(present), abs=1e-6)
    assert 0.0 <= scores["mean_iou"] <= 1.0
    assert printed == pytest.approx(scores["mean_iou"], abs=5e-5)


@pytest.fixture(scope="module")
def trained_fcn8s(tmp_path_factory):
    """A tiny FCN-8s trained by train_semantic.py: its run folder and printed output."""
    out = tmp_path_factory.mktemp("train_semantic") / "run"
    stdout = run_example(
        "train_semantic", "--tiny", "--model", "fcn8s", "--out", out, cwd=out.parent
    )
    return out, stdout


def test_train_semantic_writes_a_reloadable_model_and_its_scores(trained_fcn8s):
    out, stdout = trained_fcn8s
    scores = json.loads((out / "scores.json").read_text())
    assert scores["model"] == "fcn8s"
    assert scores["class_names"] == list(kseg.data.shapes_info().class_names)
    assert_scores_consistent(scores, printed_miou(stdout), 5)
    assert Image.open(out / "curves.png").size[0] > 0
    model = keras.saving.load_model(out / "model.keras")
    logits = model.predict(np.zeros((1, 48, 80, 3), np.float32), verbose=0)
    assert logits.shape == (1, 48, 80, 5)


def test_finetune_imagenet_starts_from_the_imagenet_weights(tmp_path):
    weights = SHARED / "weights" / MOBILENET_V2_035
    if not weights.is_file():
        pytest.skip(f"shared ImageNet weights {weights} are absent")
    # A private Keras cache holding only this file: keras.applications finds it there, and with
    # no network a download attempt would fail the run.
    keras_home = tmp_path / "keras_home"
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(weights, keras_home / "models" / MOBILENET_V2_035)
    out = tmp_path / "run"
    stdout = run_example(
        "finetune_imagenet", "--tiny", "--out", out, cwd=tmp_path, KERAS_HOME=str(keras_home)
    )
    assert "phase 1" in stdout and "phase 2" in stdout
    scores = json.loads((out / "scores.json").read_text())
    assert_scores_consistent(scores, printed_miou(stdout), 5)

    tuned = keras.saving.load_model(out / "model.keras").get_layer("mobilenetv2_backbone")
    imagenet = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=str(weights), input_shape=(None, None, 3)
    )
    for name in ("Conv1", "block_16_project"):
        reference = imagenet.get_layer(name).kernel.numpy()
        # One Adam step at 2e-4 moves each weight by at most about 2e-4; the kernels themselves
        # are of order 0.05-0.1, so a random initialisation would be far off.
        np.testing.assert_allclose(
            tuned.get_layer(name).kernel.numpy(), reference, atol=1e-3, rtol=0
        )
        assert np.abs(reference).mean() > 0.02


def _write_folder(root, sizes_by_split, num_classes, seed=0):
    """Random JPEG images and PNG masks of classes 0..num_classes-1, some pixels ignored (255)."""
    rng = np.random.default_rng(seed)
    for split, sizes in sizes_by_split.items():
        for folder in ("images", "masks"):
            (root / folder / split).mkdir(parents=True)
        for index, (height, width) in enumerate(sizes):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            mask = rng.integers(0, num_classes, (height, width), dtype=np.uint8)
            mask[:2] = 255
            Image.fromarray(image).save(root / "images" / split / f"{split}{index}.jpg")
            Image.fromarray(mask).save(root / "masks" / split / f"{split}{index}.png")


def test_custom_dataset_trains_on_a_folder_of_images_and_masks(tmp_path):
    data = tmp_path / "my_data"
    # Images of different sizes, as real folders have; the crops and the batch-of-one
    # validation must cope with them.
    _write_folder(
        data,
        {"train": [(72, 96), (80, 64), (64, 64), (90, 70)], "val": [(66, 90), (70, 50)]},
        num_classes=3,
    )
    out = tmp_path / "run"
    stdout = run_example(
        "custom_dataset",
        "--data",
        data,
        "--num-classes",
        3,
        "--class-names",
        "sky,road,car",
        "--tiny",
        "--out",
        out,
        cwd=tmp_path,
    )
    assert "4 training and 2 validation pairs" in stdout
    scores = json.loads((out / "scores.json").read_text())
    assert scores["class_names"] == ["sky", "road", "car"]
    assert_scores_consistent(scores, printed_miou(stdout), 3)
    # Overlays follow the validation files in name order: prediction and ground truth side by side.
    first = np.asarray(Image.open(out / "predictions" / "val_0000_overlay.png"))
    second = np.asarray(Image.open(out / "predictions" / "val_0001_overlay.png"))
    assert first.shape == (66, 180, 3) and second.shape == (70, 100, 3)
    assert keras.saving.load_model(out / "model.keras").output.shape[-1] == 3


def test_evaluate_and_predict_scores_and_draws_with_inference_modes(trained_fcn8s, tmp_path):
    model_path = trained_fcn8s[0] / "model.keras"
    photo = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    out = tmp_path / "eval"
    stdout = run_example(
        "evaluate_and_predict",
        "--model",
        model_path,
        "--tiny",
        "--scales",
        "0.75,1",
        "--flip",
        "--window",
        48,
        "--images",
        tmp_path / "photo.png",
        "--out",
        out,
        cwd=tmp_path,
    )
    scores = json.loads((out / "scores.json").read_text())
    assert scores["inference"]["scales"] == [0.75, 1.0] and scores["inference"]["flip"]
    assert scores["inference"]["window"] == 48
    assert_scores_consistent(scores, printed_miou(stdout), 5)
    for index in range(2):
        overlay = np.asarray(Image.open(out / "overlays" / f"val_{index:04d}.png"))
        assert overlay.shape == (64, 128, 3)
        labels = np.asarray(Image.open(out / "labels" / f"val_{index:04d}.png"))
        assert labels.shape == (64, 64) and labels.max() < 5
    labels = np.asarray(Image.open(out / "predictions" / "photo_labels.png"))
    assert labels.shape == (50, 70) and labels.max() < 5
    assert np.asarray(Image.open(out / "predictions" / "photo_overlay.png")).shape == (50, 70, 3)


def test_export_and_serve_matches_keras_and_answers_http(trained_fcn8s, tmp_path):
    model_path = trained_fcn8s[0] / "model.keras"
    out = tmp_path / "export"
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "export_and_serve.py"),
                "--model",
                str(model_path),
                "--tiny",
                "--out",
                str(out),
                "--serve",
                "0",
                "--max-requests",
                "1",
            ],
            cwd=tmp_path,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("serving on "):
                break
        assert lines and lines[-1].startswith("serving on "), (
            "".join(lines) + errors.read_text()[-4000:]
        )
        url = lines[-1].split()[-1]
        photo = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
        Image.fromarray(photo).save(tmp_path / "photo.png")
        request = urllib.request.Request(url, data=(tmp_path / "photo.png").read_bytes())
        with urllib.request.urlopen(request, timeout=120) as reply:
            served = np.asarray(Image.open(reply))
        assert process.wait(timeout=120) == 0, errors.read_text()[-4000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    model = keras.saving.load_model(model_path)
    expected = np.argmax(model.predict(photo[None].astype(np.float32), verbose=0)[0], axis=-1)
    assert served.shape == (40, 56)
    assert np.mean(served == expected) > 0.99
    parity = json.loads((out / "parity.json").read_text())
    assert parity["images"] == 2
    assert parity["savedmodel"]["label_agreement"] == 1.0
    assert parity["savedmodel"]["max_abs_logit_difference"] < 1e-4
    assert parity["tflite"]["label_agreement"] > 0.99
    assert parity["tflite"]["max_abs_logit_difference"] < 1e-3
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "model.tflite").stat().st_size > 0


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_semantic_gives_a_mobilenet_only_to_models_built_on_the_backbone_registry():
    train_semantic = _load_example("train_semantic")
    defaults = train_semantic.parse_args([])
    unet = train_semantic.model_kwargs(defaults, 5)
    assert unet == {"num_classes": 5, "backbone": "mobilenetv2", "alpha": 0.35}
    # SegNet-Basic and FCN-AlexNet are their own encoders: their builders take no alpha.
    for name in ("segnet_basic", "fcn_alexnet"):
        kwargs = train_semantic.model_kwargs(train_semantic.parse_args(["--model", name]), 5)
        assert "alpha" not in kwargs and "backbone" not in kwargs
    kwargs = train_semantic.model_kwargs(
        train_semantic.parse_args(["--model", "segnet_basic", "--model-arg", "num_filters=4"]), 5
    )
    model = kseg.models.get_model("segnet_basic", **kwargs)
    assert model.predict(np.zeros((1, 32, 48, 3), np.float32), verbose=0).shape == (1, 32, 48, 5)
