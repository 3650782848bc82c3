"""`kseg export`: SavedModel, TFLite and ONNX files that run; Mask R-CNN as SavedModel only."""

import numpy as np
import pytest
import tensorflow as tf

from kseg import cli


def test_export_the_demo_model_as_saved_model(demo_run, tmp_path):
    out, _scores = demo_run
    model = str(out / "run" / "model.keras")
    cli.main(["export", "--model", model, "--out", str(tmp_path / "exported")])
    assert (tmp_path / "exported" / "saved_model.pb").is_file()
    serving = tf.saved_model.load(str(tmp_path / "exported")).signatures["serving_default"]
    assert serving(images=tf.zeros((1, 24, 40, 3), tf.uint8))["labels"].shape == (1, 24, 40)


def test_unknown_model_file_is_named(tmp_path):
    with pytest.raises(SystemExit, match="missing.keras"):
        cli.main(
            ["export", "--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "x")]
        )


def test_export_formats_write_files_that_run(demo_run, tmp_path):
    out, _scores = demo_run
    model = str(out / "run" / "model.keras")
    target = tmp_path / "model_int8.tflite"
    cli.main(
        [
            "export",
            "--model",
            model,
            "--format",
            "tflite",
            "--out",
            str(target),
            "--quantization",
            "int8",
            "--calibration-data",
            "shapes",
            "--calibration-split",
            "val",
            "--calibration-steps",
            "2",
        ]
    )
    interpreter = tf.lite.Interpreter(model_path=str(target))
    runner = interpreter.get_signature_runner("serving_default")
    outputs = runner(images=np.zeros((1, 32, 48, 3), np.uint8))
    assert outputs["labels"].shape == (1, 32, 48) and outputs["labels"].max() < 5


def test_export_onnx_when_tf2onnx_is_installed(demo_run, tmp_path):
    pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    out, _scores = demo_run
    target = tmp_path / "model.onnx"
    cli.main(
        [
            "export",
            "--model",
            str(out / "run" / "model.keras"),
            "--format",
            "onnx",
            "--out",
            str(target),
            "--image-size",
            "32,48",
        ]
    )
    session = onnxruntime.InferenceSession(str(target))
    feeds = {session.get_inputs()[0].name: np.zeros((1, 32, 48, 3), np.uint8)}
    names = [output.name for output in session.get_outputs()]
    labels = dict(zip(names, session.run(None, feeds)))["labels"]
    assert labels.shape == (1, 32, 48)


@pytest.mark.parametrize(
    "flags",
    [
        ["--format", "tflite", "--out", "m.tflite"],
        ["--format", "onnx", "--out", "m.onnx"],
        ["--out", "saved", "--tflite", "m.tflite"],
    ],
)
def test_export_of_mask_rcnn_refuses_tflite_and_onnx(mask_rcnn_file, tmp_path, flags):
    with pytest.raises(SystemExit, match="not supported for instance segmentation models"):
        cli.main(
            [
                "export",
                "--model",
                str(mask_rcnn_file),
                *[str(tmp_path / f) if f.startswith(("m.", "saved")) else f for f in flags],
            ]
        )
    assert not any(tmp_path.iterdir())
