"""The context family on CamVid, one recipe: mIoU plain, with the dense CRF, multi-scale + flip.

Every architecture gets the same backbone, data, schedule and budget, so the table compares the
context modules and decoders rather than backbones: MobileNetV2 (alpha 0.35) initialised from
keras.applications' ImageNet file (the one ImageNet backbone available offline here; the papers
use VGG16 or ResNet-101, which this CPU cannot train in a session), CamVid train (367 images)
-> val (101) downsampled from 360x480 to 192x256, random scale 0.75-1.5, crop 192x256,
horizontal flip, batch 8, Adam with a poly schedule, batch-norm momentum 0.9, float32.

Each trained model is scored on val (11 classes, void ignored) three ways:
  plain        argmax of the logits;
  crf          `kseg.inference.dense_crf` on the softmax (DeepLab v1/v2's post-processing);
  ms_flip      `kseg.inference.multiscale_predict`, scales 0.5-1.75 with horizontal flips.

Results are written after every model, and models already in the output file are skipped, so an
interrupted run continues where it stopped.

`--camvid` (the CamVid root) and `--weights-dir` default to the environment variables
`KSEG_CAMVID` and `KSEG_WEIGHTS_DIR`; without flag or variable the script stops.

Usage:
    python benchmarks/camvid_context_family.py --camvid ../shared/data/camvid \
        --weights-dir ../shared/weights [--epochs 6] [--models pspnet,deeplabv3]
"""

import argparse
import os
import time

import results_io
from camvid_recipe import SIZE, camvid_pairs, camvid_training_batches, steps_per_epoch
from locations import location_argument, private_keras_home

# Cheapest first, so that a shortened run still fills most of the table.
MODELS = (
    "deeplabv3plus",
    "deeplabv2",
    "deeplabv3",
    "pspnet",
    "deeplabv1",
    "refinenet",
    "dilatednet",
)

# Builder options that are not shared: each model on the same backbone with its paper's head.
MODEL_OPTIONS = {
    # The paper's 7x7 fc6 of 4096 channels reads the backbone's last 1280 channels here: 274M
    # parameters, beyond a CPU session. 1024 channels (DeepLab-LargeFOV's width) still takes
    # 15 s a step on 2 cores, so the table's run uses 512 (about 33M parameters, 7 s a step).
    "dilatednet": {"num_filters": 512},
    "pspnet": {"auxiliary_loss_weight": 0.4},
    "deeplabv2": {"input_scales": (1.0, 0.75, 0.5)},
}

# Training options that are not shared. RefineNet's decoder has no batch norm, and Adam's first
# step moves every weight by about the learning rate whatever its gradient: over its wide 3x3
# convolutions and thirty residual sums that step alone took the loss from 3.1 to 2.6e5 (one
# seeded run; see issue 4). A linear warm-up over the first epoch (45 steps) keeps the
# shared schedule's peak and length.
TRAINING_OPTIONS = {"refinenet": {"warmup_steps": 45}}

MS_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def confusion_from_labels(predicted, masks, num_classes, ignore_label=255):
    import numpy as np

    keep = masks != ignore_label
    index = masks[keep].astype(np.int64) * num_classes + predicted[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def score_modes(model, val_pairs, num_classes):
    """Confusion-matrix scores of the plain, CRF and multi-scale + flip predictions."""
    import numpy as np
    import tensorflow as tf

    import kseg

    modes = ("plain", "crf", "ms_flip")
    confusion = {mode: np.zeros((num_classes, num_classes), np.int64) for mode in modes}
    seconds = dict.fromkeys(modes, 0.0)
    for image, mask in val_pairs.as_numpy_iterator():
        batch = image[None].astype("float32")
        start = time.perf_counter()
        probabilities = tf.nn.softmax(model(batch, training=False), axis=-1).numpy()[0]
        seconds["plain"] += time.perf_counter() - start
        confusion["plain"] += confusion_from_labels(probabilities.argmax(-1), mask, num_classes)

        start = time.perf_counter()
        refined = kseg.inference.dense_crf(image.astype("uint8"), probabilities)
        seconds["crf"] += time.perf_counter() - start
        confusion["crf"] += confusion_from_labels(np.asarray(refined).argmax(-1), mask, num_classes)

        start = time.perf_counter()
        averaged = kseg.inference.multiscale_predict(model, batch, scales=MS_SCALES, flip=True)
        seconds["ms_flip"] += time.perf_counter() - start
        confusion["ms_flip"] += confusion_from_labels(
            np.asarray(averaged)[0].argmax(-1), mask, num_classes
        )
    results = {}
    for mode in modes:
        scores = kseg.metrics.confusion_matrix_scores(confusion[mode])
        results[mode] = {
            "mean_iou": float(scores["mean_iou"]),
            "pixel_accuracy": float(scores["pixel_accuracy"]),
            "seconds": seconds[mode],
        }
    return results


def plain_scores(model, val_pairs, num_classes):
    """mIoU and pixel accuracy of the argmax of the logits."""
    import numpy as np

    import kseg

    confusion = np.zeros((num_classes, num_classes), np.int64)
    for image, mask in val_pairs.as_numpy_iterator():
        logits = model(image[None].astype("float32"), training=False)
        confusion += confusion_from_labels(np.asarray(logits)[0].argmax(-1), mask, num_classes)
    scores = kseg.metrics.confusion_matrix_scores(confusion)
    return {
        "mean_iou": float(scores["mean_iou"]),
        "pixel_accuracy": float(scores["pixel_accuracy"]),
    }


def extra_modes(name, model, val_pairs, num_classes):
    """Scores a paper evaluates its model with beyond the shared three."""
    if name != "deeplabv3":
        return {}
    from kseg.models.deeplab_v3 import with_output_stride

    # DeepLab v3 trains at output stride 16 and evaluates at 8 with the same weights.
    return {"plain_os8": plain_scores(with_output_stride(model, 8), val_pairs, num_classes)}


def train_and_score(name, args, train, val_pairs, info):
    import keras

    import kseg

    # The trained model is kept beside the results, so scoring can be redone without training.
    saved = os.path.join(os.path.dirname(os.path.abspath(args.out)), f"{name}.keras")
    steps = steps_per_epoch(args.batch_size)
    if os.path.exists(saved):
        model = keras.saving.load_model(saved)
        modes = score_modes(model, val_pairs, info.num_classes)
        modes.update(extra_modes(name, model, val_pairs, info.num_classes))
        return {"parameters": int(model.count_params()), "reloaded_from": saved, **modes}
    keras.utils.set_random_seed(0)
    model = kseg.models.get_model(
        name,
        num_classes=info.num_classes,
        backbone="mobilenetv2",
        alpha=0.35,
        backbone_weights="imagenet",
        **MODEL_OPTIONS.get(name, {}),
    )
    kseg.training.set_batchnorm_momentum(model, 0.9)
    warmup_steps = TRAINING_OPTIONS.get(name, {}).get("warmup_steps", 0)
    kseg.training.compile_model(
        model,
        num_classes=info.num_classes,
        optimizer="adam",
        learning_rate=kseg.training.poly_schedule(
            args.learning_rate,
            args.epochs * steps - warmup_steps,
            warmup_steps=warmup_steps,
        ),
        loss=kseg.losses.SegmentationCrossEntropy(),
        metrics=[],
        jit_compile=False,
    )
    start = time.perf_counter()
    model.fit(train, epochs=args.epochs, steps_per_epoch=steps, verbose=2)
    train_seconds = time.perf_counter() - start
    model.save(saved)
    modes = score_modes(model, val_pairs, info.num_classes)
    modes.update(extra_modes(name, model, val_pairs, info.num_classes))
    return {
        "parameters": int(model.count_params()),
        "train_seconds": train_seconds,
        "steps": args.epochs * steps,
        "warmup_steps": warmup_steps,
        **modes,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    location_argument(parser, "--camvid", "KSEG_CAMVID", "CamVid root")
    location_argument(
        parser, "--weights-dir", "KSEG_WEIGHTS_DIR", "folder holding keras.applications' .h5 files"
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--val-images", type=int, default=None, help="score only the first N")
    parser.add_argument("--out", default=results_io.result_path("camvid_context_family"))
    parser.add_argument(
        "--rescore", action="store_true", help="score the saved models again (no training)"
    )
    args = parser.parse_args()

    os.environ["KERAS_HOME"] = private_keras_home(args.weights_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import kseg

    names = [name for name in args.models.split(",") if name]
    unknown = sorted(set(names) - set(kseg.models.list_models()))
    if unknown:
        raise SystemExit(f"Unknown models {unknown}; registered: {kseg.models.list_models()}")

    info = kseg.data.camvid_info()
    train = camvid_training_batches(args.camvid, args.batch_size)
    val_pairs = camvid_pairs(args.camvid, "val")
    if args.val_images:
        val_pairs = val_pairs.take(args.val_images)

    report = {
        "config": vars(args) | {"size": SIZE, "ms_scales": MS_SCALES},
        "machine": results_io.machine_facts(),
        "results": results_io.read_result(args.out).get("results", {}),
    }
    for name in names:
        if name in report["results"] and args.rescore:
            previous = report["results"][name]
            report["results"][name] = train_and_score(name, args, train, val_pairs, info)
            for key in ("train_seconds", "steps"):
                if key in previous:
                    report["results"][name][key] = previous[key]
        elif name in report["results"]:
            print(f"{name}: already in {args.out}, skipped", flush=True)
            continue
        else:
            report["results"][name] = train_and_score(name, args, train, val_pairs, info)
        row = report["results"][name]
        print(
            f"{name}: plain {row['plain']['mean_iou']:.4f}  crf {row['crf']['mean_iou']:.4f}  "
            f"ms+flip {row['ms_flip']['mean_iou']:.4f}  "
            f"({row.get('train_seconds', 0):.0f} s training)",
            flush=True,
        )
        results_io.write_result(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
