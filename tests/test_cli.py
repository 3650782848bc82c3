import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kseg import cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    status = cli.main([
        "demo", "--out", str(out), "--epochs", "1", "--train-samples", "32", "--val-samples", "8",
        "--image-size", "64", "--backbone", "tiny", "--num-filters", "16", "--quiet-progress",
        "--scratch",
    ])
    assert status == 0
    return out, json.loads((out / "scores.json").read_text())


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


def test_evaluate_predict_export_on_the_demo_model(demo_run, tmp_path, capsys):
    out, _scores = demo_run
    model = str(out / "run" / "model.keras")
    cli.main(["evaluate", "--model", model, "--data", "shapes", "--split", "val",
              "--output", str(tmp_path / "eval.json")])
    assert "mean IoU" in capsys.readouterr().out
    image = np.random.default_rng(0).integers(0, 255, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    cli.main(["predict", "--model", model, str(tmp_path / "photo.png"), "--out", str(tmp_path / "pred")])
    labels = np.asarray(Image.open(tmp_path / "pred" / "photo_labels.png"))
    assert labels.shape == (30, 44) and labels.max() < 5
    cli.main(["export", "--model", model, "--out", str(tmp_path / "exported")])
    assert (tmp_path / "exported" / "saved_model.pb").is_file()


def test_evaluate_and_predict_with_inference_modes(demo_run, tmp_path):
    import keras

    from kseg.inference import make_predictor

    out, _scores = demo_run
    model_path = str(out / "run" / "model.keras")
    model = keras.saving.load_model(model_path)
    rng = np.random.default_rng(3)
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "masks" / "val").mkdir(parents=True)
    images = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    masks = rng.integers(0, 5, (2, 64, 64), dtype=np.uint8)
    for index, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(tmp_path / "images" / "val" / f"{index}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / "val" / f"{index}.png")
    scores_path = tmp_path / "scores.json"
    cli.main(["evaluate", "--model", model_path, "--data", str(tmp_path), "--num-classes", "5",
              "--scales", "0.75,1,1.25", "--flip", "--crf", "--output", str(scores_path)])
    predict = make_predictor(model, scales=(0.75, 1.0, 1.25), flip=True, crf=True)
    labels = predict(images.astype("float32"))
    expected = np.bincount(
        masks.astype(np.int64).ravel() * 5 + labels.ravel(), minlength=25
    ).reshape(5, 5)
    np.testing.assert_array_equal(json.loads(scores_path.read_text())["confusion_matrix"], expected)

    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    cli.main(["predict", "--model", model_path, str(tmp_path / "photo.png"), "--out",
              str(tmp_path / "pred"), "--window", "48", "--overlap", "0.5"])
    labels = np.asarray(Image.open(tmp_path / "pred" / "photo_labels.png"))
    np.testing.assert_array_equal(labels, cli_free_sliding_window(model, image))


def cli_free_sliding_window(model, image):
    from kseg.inference.sliding_window import sliding_window_predict

    return sliding_window_predict(
        model, image.astype("float32"), window=48, overlap=0.5, output="labels"
    )


@pytest.mark.parametrize("flag", [["--scales", "0,1"], ["--scales", "a"], ["--window", "0"]])
def test_bad_inference_flags_are_named(flag, capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--model", "m.keras", "--data", "shapes", *flag])
    assert flag[0] in capsys.readouterr().err


def test_train_on_folders_then_reports_a_bad_label_by_file(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (tmp_path / folder / split).mkdir(parents=True)
        for index in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "images" / split / f"{index}.png")
            Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(
                tmp_path / "masks" / split / f"{index}.png")
    run = tmp_path / "run"
    args = ["train", "--data", str(tmp_path), "--num-classes", "3", "--backbone", "tiny",
            "--epochs", "1", "--batch-size", "2", "--crop-size", "32", "--run-dir", str(run),
            "--precision", "float32"]
    cli.main(args)
    assert (run / "model.keras").is_file()
    assert "mean IoU" in capsys.readouterr().out

    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(tmp_path / "masks" / "train" / "2.png")
    with pytest.raises(SystemExit) as stop:
        cli.main(args[:-4] + ["--run-dir", str(tmp_path / "run2"), "--precision", "float32"])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert "2.png" in message and "7" in message


def test_unknown_model_file_is_named(tmp_path):
    with pytest.raises(SystemExit, match="missing.keras"):
        cli.main(["export", "--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "x")])


def _tiny_folder_dataset(root, size=32, count=4):
    rng = np.random.default_rng(5)
    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (root / folder / split).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{index}.png")
            Image.fromarray(rng.integers(0, 3, (size, size), dtype=np.uint8)).save(
                root / "masks" / split / f"{index}.png")


def test_train_with_mirrored_strategy_end_to_end(tmp_path, capsys):
    import keras

    _tiny_folder_dataset(tmp_path)
    run = tmp_path / "run"
    cli.main(["train", "--data", str(tmp_path), "--num-classes", "3", "--backbone", "tiny",
              "--epochs", "1", "--batch-size", "2", "--crop-size", "32", "--run-dir", str(run),
              "--precision", "float32", "--strategy", "mirrored", "--scale-learning-rate",
              "--learning-rate", "0.02"])
    out = capsys.readouterr().out
    # One CPU is one replica: the global batch is the per-replica batch, the rate is unscaled.
    assert "strategy mirrored: 1 replica, global batch 2 (2 per replica), learning rate 0.02" in out
    scores = json.loads((run / "scores.json").read_text())
    assert len(scores["iou"]) == 3
    model = keras.saving.load_model(run / "model.keras")
    assert model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 32, 32, 3)
    assert (run / "backup").is_dir() and not (run / "workers").exists()


def test_train_multiworker_without_tf_config_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit, match="TF_CONFIG is not set"):
        cli.main(["train", "--data", "shapes", "--strategy", "multiworker",
                  "--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_train_tpu_strategy_without_a_tpu_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(SystemExit, match="no reachable TPU"):
        cli.main(["train", "--data", "shapes", "--strategy", "tpu",
                  "--run-dir", str(tmp_path / "run")])


def test_export_formats_write_files_that_run(demo_run, tmp_path):
    out, _scores = demo_run
    model = str(out / "run" / "model.keras")
    target = tmp_path / "model_int8.tflite"
    cli.main(["export", "--model", model, "--format", "tflite", "--out", str(target),
              "--quantization", "int8", "--calibration-data", "shapes",
              "--calibration-split", "val", "--calibration-steps", "2"])
    interpreter = tf.lite.Interpreter(model_path=str(target))
    runner = interpreter.get_signature_runner("serving_default")
    outputs = runner(images=np.zeros((1, 32, 48, 3), np.uint8))
    assert outputs["labels"].shape == (1, 32, 48) and outputs["labels"].max() < 5


def test_export_onnx_when_tf2onnx_is_installed(demo_run, tmp_path):
    pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    out, _scores = demo_run
    target = tmp_path / "model.onnx"
    cli.main(["export", "--model", str(out / "run" / "model.keras"), "--format", "onnx",
              "--out", str(target), "--image-size", "32,48"])
    session = onnxruntime.InferenceSession(str(target))
    feeds = {session.get_inputs()[0].name: np.zeros((1, 32, 48, 3), np.uint8)}
    names = [output.name for output in session.get_outputs()]
    labels = dict(zip(names, session.run(None, feeds)))["labels"]
    assert labels.shape == (1, 32, 48)
