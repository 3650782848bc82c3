"""How far each exported artifact is from the Keras model, for every registered semantic model.

Builds every model small (the parity tests' configuration, random weights), exports the uint8
serving signature with logits, and compares with `model(images)` on two 64x64 random images:
SavedModel, TFLite float32 / float16 / int8 dynamic-range / int8 full-integer (calibrated on 8
random images), and ONNX when tf2onnx and onnxruntime are installed. For the full-integer file
it lists the TFLite ops whose outputs stay float32. Models whose TFLite file needs TF Select
(Flex) ops are converted but not run: tensorflow's pip interpreter has no Flex delegate.

Usage:
    python benchmarks/export_parity.py [--models fcn8s pspnet] \
        [--out benchmarks/results/export_parity.json]
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import results_io
from kseg import export

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "export"))
from test_export_parity import (
    IMAGE_SIZE,
    MODELS,
    NEEDS_FIXED_SIZE,
    NEEDS_SELECT_TF_OPS,
    build,
)


def _interpreter(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(model_path=str(path))


def _compare(logits, labels, expected):
    error = np.abs(logits - expected)
    return {
        "max_abs": float(error.max()),
        "max_abs_over_max_logit": float(error.max() / np.abs(expected).max()),
        "mean_abs_over_mean_logit": float(error.mean() / np.abs(expected).mean()),
        "label_agreement": float((labels == expected.argmax(-1)).mean()),
    }


def _float_ops(path):
    interpreter = _interpreter(path)
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    return sorted(
        {
            op["op_name"]
            for op in interpreter._get_ops_details()
            if any(dtypes.get(i) == np.float32 for i in op["outputs"])
        }
    )


def measure(name, folder, images, representative):
    model = build(name)
    expected = np.asarray(model(images.astype("float32"), training=False))
    image_size = IMAGE_SIZE if name in NEEDS_FIXED_SIZE else None
    start = time.perf_counter()
    saved = export.saved_model(model, folder / "sm", include_logits=True, image_size=image_size)
    row = {"image_size": image_size, "saved_model_seconds": time.perf_counter() - start}
    served = tf.saved_model.load(str(saved)).signatures["serving_default"](images=images)
    row["saved_model"] = _compare(served["logits"].numpy(), served["labels"].numpy(), expected)
    variants = {
        "float32": {},
        "float16": {"quantization": "float16"},
        "int8_dynamic": {"quantization": "int8"},
        "int8_full": {"quantization": "int8", "representative_images": representative},
    }
    select_ops = name in NEEDS_SELECT_TF_OPS
    row["select_tf_ops"] = select_ops
    for variant, kwargs in variants.items():
        if select_ops and variant == "int8_full":
            row[f"tflite_{variant}"] = {"error": "calibration needs the Flex delegate"}
            continue
        start = time.perf_counter()
        path = export.tflite_from_saved_model(
            saved, folder / f"{variant}.tflite", allow_select_tf_ops=select_ops, **kwargs
        )
        entry = {"seconds": time.perf_counter() - start, "bytes": path.stat().st_size}
        if not select_ops:
            outputs = _interpreter(path).get_signature_runner("serving_default")(images=images)
            entry.update(_compare(outputs["logits"], outputs["labels"], expected))
        if variant == "int8_full":
            entry["float32_ops"] = _float_ops(path)
        row[f"tflite_{variant}"] = entry
    try:
        import onnxruntime
    except ImportError:
        return row
    onnx_size = IMAGE_SIZE if name == "unet" else image_size
    try:
        path = export.onnx(model, folder / "model.onnx", include_logits=True, image_size=onnx_size)
    except (ImportError, ValueError) as error:
        row["onnx"] = {"error": str(error)[:200]}
        return row
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, {"images": images}))
    )
    row["onnx"] = _compare(outputs["logits"], outputs["labels"], expected)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--out", default=results_io.result_path("export_parity"))
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, *IMAGE_SIZE, 3)).astype("uint8")
    representative = [rng.integers(0, 256, (1, *IMAGE_SIZE, 3)).astype("uint8") for _ in range(8)]
    # Runs over a subset of the models update the stored table instead of replacing it.
    results = results_io.read_result(args.out)
    results["machine"] = results_io.machine_facts()
    results.pop("command", None)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = Path(tmp) / name
            folder.mkdir()
            results[name] = measure(name, folder, images, lambda: iter(representative))
            print(name, json.dumps(results[name]), flush=True)
    print(f"wrote {results_io.write_result(args.out, results)}")


if __name__ == "__main__":
    main()
