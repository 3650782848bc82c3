"""Which exported form to deploy on a CPU: speed and agreement of SavedModel and TFLite files.

For DeepLabV3+ (MobileNetV2 width 0.35 from kseg's bundled ImageNet weights, output stride 16,
512x512 images) and U-Net (the finetune recipe's padded form, 64 filters, 256x256 images), in
one process:

1. Each model is built with 5 classes: DeepLabV3+ with its ImageNet backbone and a random
   decoder, U-Net random (it has no pretrained encoder); `--model-file NAME=FILE.keras` exports
   a trained model instead (for DeepLabV3+, the `model.keras` of `kseg train --data CAMVID`,
   whose default recipe is this MobileNetV2-0.35 form). A short training on the shapes data
   (150 steps, a minute) still labelled every 512x512 pixel background, so the script does no
   training of its own. Agreement is reported over all pixels and over the "clear" pixels whose
   two largest Keras logits differ by more than 5% of the largest logit: a random decoder leaves
   many near-ties, where rounding swaps labels without the export being wrong.
2. Each is exported with kseg's public functions at a fixed image size, batch 1, uint8 in:
   `kseg.export.saved_model` (batch norm folded, as kseg exports by default) and
   `kseg.export.tflite_from_saved_model` as float32, float16 weights, int8 dynamic range and
   int8 full-integer (calibrated on `--calibration-images` images of the same size).
3. Speed: images/second of one image per call, the median of `--repeats` timed calls after
   warm-up calls. The SavedModel runs through `tf.saved_model.load(...).signatures
   ["serving_default"]` on TensorFlow's default thread pools (all cores); each TFLite file runs
   in `tf.lite.Interpreter` with `num_threads` 2 and 1. The pip interpreter applies the XNNPACK
   delegate by default; the run records, per file, how many "DELEGATE" nodes it left in the
   graph (0: nothing delegated) and also times the float32 file with
   `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES` (no XNNPACK) for comparison.
4. Agreement with the Keras model on `--eval-images` images of the same size (CamVid val images
   resized, with `--camvid`; else shapes images; calibration likewise from CamVid train or
   shapes): the share of pixels whose label matches the Keras argmax (all pixels, and the
   clear ones), and the largest absolute logit difference over the largest absolute logit.

Speeds are only meaningful on an idle machine: the file records the load average at the start,
before each model and at the end.

Usage:
    python benchmarks/deployment_speed.py [--camvid ../shared/data/camvid] \
        [--model-file deeplabv3plus_mobilenetv2=RUN/model.keras]
    python benchmarks/deployment_speed.py --quick  # smoke run: small sizes, few calls
"""

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import kseg
import results_io
from kseg import export

SEED = 0
SHAPES_CLASSES = kseg.data.shapes_info().num_classes
MODELS = {
    "deeplabv3plus_mobilenetv2": {
        "builder": "deeplabv3plus",
        "kwargs": {
            "backbone": "mobilenetv2",
            "alpha": 0.35,
            "backbone_weights": "imagenet",
            "output_stride": 16,
        },
        "image_size": 512,
    },
    "unet": {
        "builder": "unet",
        "kwargs": {"padding": "same"},
        "image_size": 256,
    },
}
VARIANTS = {
    "float32": {},
    "float16": {"quantization": "float16"},
    "int8_dynamic": {"quantization": "int8"},
    "int8_full": {"quantization": "int8"},  # plus representative images
}
THREADS = (2, 1)
CLEAR_MARGIN = 0.05


def shapes_images(split, count, size):
    """`count` uint8 shapes images of `size` x `size`, as (count, size, size, 3)."""
    pairs = kseg.data.shapes_dataset(split, num_samples=count, image_size=size, seed=SEED)
    images = np.stack([image.numpy() for image, _ in pairs])
    return images.round().clip(0, 255).astype("uint8")


def camvid_images(root, split, count, size):
    """The first `count` CamVid images of `split`, resized to `size` x `size`, as uint8."""
    pairs = kseg.data.camvid_dataset(root, split).take(count)
    images = np.stack([tf.image.resize(image, (size, size)).numpy() for image, _ in pairs])
    return images.round().clip(0, 255).astype("uint8")


def sample_images(args, role, count, size):
    """Agreement ("eval") or calibration images: CamVid val/train with `--camvid`, else shapes."""
    if args.camvid:
        return camvid_images(args.camvid, "val" if role == "eval" else "train", count, size)
    return shapes_images("test" if role == "eval" else "calibration", count, size)


def model_and_weights(name, spec, args):
    """The model to export and what its weights are: a `--model-file` or a fresh build."""
    path = dict(args.model_file or {}).get(name)
    if path:
        return keras.saving.load_model(path), f"trained: {path}"
    keras.utils.set_random_seed(SEED)
    model = kseg.models.get_model(spec["builder"], num_classes=SHAPES_CLASSES, **spec["kwargs"])
    if spec["kwargs"].get("backbone_weights") == "imagenet":
        return model, "bundled ImageNet MobileNetV2-0.35 backbone, random decoder"
    return model, "random"


def model_file(text):
    """`NAME=PATH` of `--model-file`, checked."""
    name, _, path = text.partition("=")
    if name not in MODELS or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.keras with NAME in {list(MODELS)}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"model file not found: {path}")
    return name, path


def agreement(labels, logits, expected):
    """Label agreement and relative logit difference of an exported output with Keras's.

    Untrained heads leave many pixels with near-equal top logits, where any rounding may swap
    the label; agreement is therefore also given over the pixels whose two largest Keras logits
    differ by more than `CLEAR_MARGIN` of the largest absolute logit.
    """
    scale = np.abs(expected).max()
    top_two = np.sort(expected, axis=-1)[..., -2:]
    clear = (top_two[..., 1] - top_two[..., 0]) > CLEAR_MARGIN * scale
    same = labels == expected.argmax(-1)
    return {
        "label_agreement": float(same.mean()),
        "clear_pixel_share": float(clear.mean()),
        "label_agreement_clear_pixels": float(same[clear].mean()) if clear.any() else None,
        "max_abs_logit_difference_relative": float(np.abs(logits - expected).max() / scale),
    }


def timed(call, image, warmup, repeats):
    """Images/second (one image per call) from the median of `repeats` calls after `warmup`."""
    for _ in range(warmup):
        call(image)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(image)
        seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "img_s": 1 / statistics.median(seconds)}


def tflite_interpreter(path, threads, xnnpack=True):
    """A `tf.lite.Interpreter` of the file at `path`: default delegates, or none."""
    options = {"model_path": str(path), "num_threads": threads}
    if not xnnpack:
        resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        options["experimental_op_resolver_type"] = resolver
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(**options)


def delegation(interpreter):
    """How many graph nodes a delegate took: its nodes appear as "DELEGATE" ops."""
    interpreter.allocate_tensors()
    names = [op["op_name"] for op in interpreter._get_ops_details()]
    return {"delegate_nodes": names.count("DELEGATE"), "nodes": len(names)}


def tflite_rate(path, threads, image, args, xnnpack=True):
    runner = tflite_interpreter(path, threads, xnnpack).get_signature_runner("serving_default")
    return timed(lambda x: runner(images=x)["labels"], image, args.warmup, args.repeats)


def measure(name, spec, args, folder):
    size = spec["image_size"] if not args.quick else min(spec["image_size"], 128)
    row = {
        "builder": spec["builder"],
        "kwargs": spec["kwargs"],
        "image_size": [size, size],
        "batch": 1,
        "load_average_before": results_io.load_average(),
    }
    model, row["weights"] = model_and_weights(name, spec, args)
    row["images"] = "CamVid val (calibration: train)" if args.camvid else "shapes"
    images = sample_images(args, "eval", args.eval_images, size)
    expected = np.asarray(model.predict(images.astype("float32"), batch_size=1, verbose=0))
    calibration = sample_images(args, "calibration", args.calibration_images, size)
    image = images[:1]

    keras_call = tf.function(lambda x: model(x, training=False))
    row["keras"] = timed(
        lambda x: keras_call(tf.cast(x, tf.float32)).numpy(), image, args.warmup, args.repeats
    )
    saved = export.saved_model(model, folder / "saved_model", include_logits=True, image_size=size)
    serving = tf.saved_model.load(str(saved)).signatures["serving_default"]
    outputs = [serving(images=images[i : i + 1]) for i in range(len(images))]
    row["saved_model"] = agreement(
        np.concatenate([o["labels"].numpy() for o in outputs]),
        np.concatenate([o["logits"].numpy() for o in outputs]),
        expected,
    )
    row["saved_model"].update(
        timed(lambda x: serving(images=x)["labels"].numpy(), image, args.warmup, args.repeats)
    )
    print(f"{name} saved_model {row['saved_model']}", flush=True)

    for variant, options in VARIANTS.items():
        start = time.perf_counter()
        if variant == "int8_full":
            options = dict(options, representative_images=[c[None] for c in calibration])
        path = export.tflite_from_saved_model(saved, folder / f"{variant}.tflite", **options)
        entry = {"convert_seconds": time.perf_counter() - start, "bytes": path.stat().st_size}
        interpreter = tflite_interpreter(path, THREADS[0])
        # The default (XNNPACK) delegate replaces the nodes it runs by "DELEGATE" nodes.
        entry["default_delegates"] = delegation(interpreter)
        runner = interpreter.get_signature_runner("serving_default")
        outputs = [runner(images=images[i : i + 1]) for i in range(len(images))]
        entry.update(
            agreement(
                np.concatenate([o["labels"] for o in outputs]),
                np.concatenate([o["logits"] for o in outputs]),
                expected,
            )
        )
        for threads in THREADS:
            entry[f"threads_{threads}"] = tflite_rate(path, threads, image, args)
        if variant == "float32":
            entry[f"threads_{THREADS[0]}_without_xnnpack"] = tflite_rate(
                path, THREADS[0], image, args, xnnpack=False
            )
        row[f"tflite_{variant}"] = entry
        print(f"{name} tflite_{variant} {entry}", flush=True)
    keras.backend.clear_session()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--model-file",
        type=model_file,
        action="append",
        metavar="NAME=FILE",
        help="a trained .keras model to export instead of the built one, e.g. "
        "deeplabv3plus_mobilenetv2=RUN/model.keras from `kseg train --data CAMVID` (repeatable)",
    )
    parser.add_argument(
        "--camvid",
        default=os.environ.get("KSEG_CAMVID"),
        help="CamVid root: agreement and calibration images from it, resized to each model's "
        "size (default: $KSEG_CAMVID; without either, shapes images)",
    )
    parser.add_argument("--eval-images", type=int, default=4)
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: images at most 128x128, few steps and calls, result in the temp folder",
    )
    parser.add_argument("--out", default=None, help="result file (default: see --quick)")
    args = parser.parse_args()
    if args.quick:
        args.eval_images, args.calibration_images, args.warmup, args.repeats = 2, 2, 1, 2
    out = args.out or (
        os.path.join(tempfile.gettempdir(), "deployment_speed_quick.json")
        if args.quick
        else results_io.result_path("deployment_speed")
    )
    report = {
        "config": {
            "clear_margin": CLEAR_MARGIN,
            "eval_images": args.eval_images,
            "calibration_images": args.calibration_images,
            "warmup_calls": args.warmup,
            "timed_calls": args.repeats,
            "quick": args.quick,
            "tflite_threads": list(THREADS),
            "saved_model_threads": "TensorFlow default (all cores)",
        },
        "machine": results_io.machine_facts(
            threads="2 and 1 (TFLite) and TensorFlow's default (SavedModel, Keras)"
        ),
    }
    report["under_load"] = report["machine"]["load_average_start"][0] > 0.5
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = Path(tmp) / name
            folder.mkdir()
            report[name] = measure(name, MODELS[name], args, folder)
            results_io.write_result(out, report)
    print(f"wrote {results_io.write_result(out, report)}")


if __name__ == "__main__":
    main()
