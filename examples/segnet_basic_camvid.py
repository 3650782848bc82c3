"""Train SegNet-Basic on CamVid (train split) and score it on the val split at 180x240.

Badrinarayanan, Kendall & Cipolla (TPAMI 2017) train SegNet-Basic on CamVid's 367 training
images with class-balanced cross-entropy: each class is weighted by median frequency balancing
(Eigen & Fergus 2015), `w_c = median_freq / freq_c`, where `freq_c` is the number of pixels of
class c divided by the total number of pixels of the images in which c is present. The
frequencies are measured here on the training masks at the training resolution, void ignored
(`kseg.data.class_pixel_counts`, `kseg.data.median_frequency_weights`).
Images and masks are downsampled to 180x240 (bilinear / nearest) to fit a CPU budget. Reports
mIoU and class-average accuracy over the 11 classes (void ignored) and the run's length, and
writes them to `<out>/metrics.json`.

Usage:
    python examples/segnet_basic_camvid.py --data ../shared/data/camvid --out runs/segnet_basic
"""

import argparse
import json
import time
from pathlib import Path

import keras
import tensorflow as tf

import kseg

SIZE = (180, 240)


def downsampled(root, split, ignore_label):
    """CamVid `(image, mask)` pairs resized to `SIZE`."""
    dataset = kseg.data.camvid_dataset(root, split, ignore_label=ignore_label)
    return dataset.map(
        lambda image, mask: kseg.data.resize_pair(image, mask, SIZE),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def median_frequency_weights(masks_dataset, num_classes, ignore_label):
    """Median-frequency class weights (SegNet's balancing) from a dataset of `(image, mask)`."""
    counts = kseg.data.class_pixel_counts(masks_dataset, num_classes, ignore_label)
    return kseg.data.median_frequency_weights(counts)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", required=True, help="CamVid folder (train/, trainannot/, val/, ...)"
    )
    parser.add_argument("--out", default="runs/segnet_basic", help="run folder")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: one pass")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-filters", type=int, default=64, help="stage width (the paper's 64)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--val-images", type=int, default=None, help="score only the first N")
    parser.add_argument(
        "--max-train-minutes", type=float, default=0, help="stop training after this (0: no limit)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    """Train, evaluate on val, write `<out>/metrics.json`; returns the figures."""
    args = parse_args(argv)
    started = time.time()
    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = kseg.data.camvid_info()

    train_pairs = downsampled(args.data, "train", info.ignore_label).cache()
    class_weights = median_frequency_weights(train_pairs, info.num_classes, info.ignore_label)
    num_train = int(train_pairs.reduce(0, lambda count, _: count + 1))
    steps = args.steps_per_epoch or num_train // args.batch_size
    train = (
        train_pairs.shuffle(num_train, seed=args.seed)
        .repeat()
        .map(
            lambda image, mask: kseg.data.random_flip_left_right(
                image, mask, tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
            )
        )
        .batch(args.batch_size, drop_remainder=True)
        .prefetch(2)
    )
    val_pairs = downsampled(args.data, "val", info.ignore_label)
    if args.val_images:
        val_pairs = val_pairs.take(args.val_images)
    val = val_pairs.batch(args.batch_size)

    model = kseg.models.SegNetBasic(info.num_classes, num_filters=args.num_filters)
    kseg.training.compile_model(
        model,
        num_classes=info.num_classes,
        optimizer="adam",
        learning_rate=args.learning_rate,
        loss=kseg.losses.SegmentationCrossEntropy(
            ignore_label=info.ignore_label, class_weights=class_weights.tolist()
        ),
        metrics=[],
    )
    time_limit = kseg.training.TimeLimit(args.max_train_minutes)
    history = kseg.training.fit(
        model,
        train,
        epochs=args.epochs,
        steps_per_epoch=steps,
        run_dir=str(out),
        callbacks=[time_limit],
        tensorboard=False,
        verbose=2,
    )
    train_seconds = time.time() - started
    scores = kseg.evaluation.evaluate_model(
        model, val, info.num_classes, ignore_label=info.ignore_label, progress=False
    )
    figures = {
        "mean_iou": float(scores["mean_iou"]),
        "class_average_accuracy": float(scores["mean_accuracy"]),
        "global_accuracy": float(scores["pixel_accuracy"]),
        "class_iou": dict(zip(info.class_names, map(float, scores["iou"]))),
        "class_weights": dict(zip(info.class_names, map(float, class_weights))),
        "image_size": list(SIZE),
        "epochs": args.epochs,
        "epochs_run": len(history.epoch),
        "max_train_minutes": args.max_train_minutes,
        "steps_per_epoch": steps,
        "batch_size": args.batch_size,
        "num_filters": args.num_filters,
        "train_seconds": train_seconds,
        "total_seconds": time.time() - started,
    }
    (out / "metrics.json").write_text(json.dumps(figures, indent=2))
    print(
        f"val mIoU {figures['mean_iou']:.4f}  class-average accuracy "
        f"{figures['class_average_accuracy']:.4f}  ({train_seconds / 60:.1f} min training)"
    )
    return figures


if __name__ == "__main__":
    main()
