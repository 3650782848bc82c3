"""Train U-Net on the ISBI 2012 membrane slices and score the cells on held-out slices.

Ronneberger, Fischer & Brox 2015 trained on the 30 ISBI 2012 slices; this folder holds 24
512x512 slices (image/N.png, label/N.png with 255 = cell interior, 0 = membrane). The split is
fixed: slices 0-19 (by number) train, slices 20-23 are held out. Labels become cell = 1,
membrane = 0. Augmentation follows the paper as far as it is cheap here: random flips, 90-degree
rotations and a random rescale (0.8-1.25) before taking a training tile; elastic deformation is
left out. `--weight-map` trains with the paper's pixel-weight map (eq. 2, w0 = 10, sigma = 5 px).
The unpadded network is evaluated with overlap-tile inference, the padded one on whole slices.
Reports the foreground (cell) IoU and the pixel error (fraction of misclassified pixels) on the
held-out slices and writes them to `<out>/metrics.json`.

Usage:
    python examples/unet_isbi.py --data ../shared/data/isbi2012-membrane --out runs/unet_isbi
"""

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import kseg
from kseg.inference import overlap_tile_predict
from kseg.models.unet import unet_output_size

TRAIN_SLICES = range(20)
HELD_OUT_SLICES = range(20, 24)


def read_slices(root, numbers):
    """Grayscale slices and binary cell masks as `(N, H, W, 1)` float32 and `(N, H, W)` int32."""
    root = Path(root)
    images, masks = [], []
    for number in numbers:
        image_path, mask_path = root / "image" / f"{number}.png", root / "label" / f"{number}.png"
        for path in (image_path, mask_path):
            if not path.is_file():
                raise FileNotFoundError(f"ISBI slice missing. Received: path={str(path)!r}")
        image = tf.io.decode_png(tf.io.read_file(str(image_path)), channels=1).numpy()
        raw = tf.io.decode_png(tf.io.read_file(str(mask_path)), channels=1).numpy()[..., 0]
        unexpected = np.setdiff1d(np.unique(raw), [0, 255])
        if unexpected.size:
            raise ValueError(
                f"ISBI labels must be 0 (membrane) or 255 (cell). "
                f"Received: values {unexpected.tolist()} in {str(mask_path)!r}"
            )
        images.append(image.astype(np.float32))
        masks.append((raw == 255).astype(np.int32))
    return np.stack(images), np.stack(masks)


def cell_instances(mask):
    """Connected cells (4-connectivity) of a binary mask, one positive id each, 0 for membrane.

    Every cell pixel starts with its own id and repeatedly takes the largest id among itself
    and its cell neighbours, so each connected cell ends with a single id.
    """
    cell = mask > 0
    ids = np.where(cell, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    while True:
        padded = np.pad(ids, 1)
        neighbours = np.stack(
            [ids, padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
        )
        grown = np.where(cell, neighbours.max(axis=0), 0)
        if np.array_equal(grown, ids):
            break
        ids = grown
    _, compact = np.unique(ids, return_inverse=True)
    return compact.reshape(mask.shape).astype(np.int32)


def training_tiles(images, masks, weights, tile_size, output_size, batch_size, seed):
    """Endless batches of augmented `(tile, labels, weights)`; labels cover the output region."""
    margin = (tile_size - output_size) // 2
    pad = ((0, 0), (margin, margin), (margin, margin))
    stacked = np.stack(
        [
            np.pad(images[..., 0], pad, mode="symmetric"),
            np.pad(masks.astype(np.float32), pad, mode="symmetric"),
            np.pad(weights, pad, mode="symmetric"),
        ],
        axis=-1,
    )
    generator = tf.random.Generator.from_seed(seed)

    def augment(sample):
        scale = generator.uniform([], 0.8, 1.25)
        size = tf.cast(tf.round(tf.cast(tf.shape(sample)[:2], tf.float32) * scale), tf.int32)
        size = tf.maximum(size, tile_size)
        image = tf.image.resize(sample[..., :1], size, method="bilinear")
        # Labels and weights stay exact values: nearest neighbour keeps 0/1 and the weight levels.
        rest = tf.image.resize(sample[..., 1:], size, method="nearest")
        sample = tf.concat([image, rest], axis=-1)
        sample = tf.image.stateless_random_crop(
            sample, [tile_size, tile_size, 3], seed=generator.uniform_full_int([2], tf.int32)
        )
        sample = tf.image.rot90(sample, generator.uniform([], 0, 4, tf.int32))
        sample = tf.cond(
            generator.uniform([]) < 0.5, lambda: tf.reverse(sample, [1]), lambda: sample
        )
        centre = sample[margin : margin + output_size, margin : margin + output_size]
        return sample[..., :1], tf.cast(tf.round(centre[..., 1]), tf.int32), centre[..., 2]

    dataset = tf.data.Dataset.from_tensor_slices(stacked).shuffle(len(stacked), seed=seed)
    return dataset.repeat().map(augment).batch(batch_size, drop_remainder=True).prefetch(2)


def score(predicted, masks):
    """Cell IoU and pixel error of 0/1 predictions against 0/1 masks."""
    predicted, masks = predicted.astype(bool), masks.astype(bool)
    union = np.logical_or(predicted, masks).sum()
    iou = float(np.logical_and(predicted, masks).sum() / union) if union else 1.0
    return iou, float(np.mean(predicted != masks))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with image/ and label/")
    parser.add_argument("--out", default="runs/unet_isbi", help="run folder")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--tile", type=int, default=252, help="training/inference tile (572 in the paper)"
    )
    parser.add_argument(
        "--padded", action="store_true", help="'same' convolutions (keeps the size)"
    )
    parser.add_argument("--num-filters", type=int, default=64, help="first-level width (64)")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="Adam learning rate")
    parser.add_argument(
        "--weight-map",
        action="store_true",
        help="the paper's pixel-weight map (computed up front, about 15 s per slice on CPU)",
    )
    parser.add_argument(
        "--max-train-minutes", type=float, default=0, help="stop training after this (0: no limit)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    """Train, evaluate on the held-out slices, write `<out>/metrics.json`; returns the figures."""
    args = parse_args(argv)
    started = time.time()
    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_images, train_masks = read_slices(args.data, TRAIN_SLICES)
    test_images, test_masks = read_slices(args.data, HELD_OUT_SLICES)

    if args.weight_map:
        # Class balancing from the whole training set, as the paper precomputes it.
        cell_fraction = float(train_masks.mean())
        balance = (0.5 / (1.0 - cell_fraction), 0.5 / cell_fraction)
        weights = np.stack(
            [
                kseg.data.unet_weight_map(cell_instances(m), class_weights=balance)
                for m in train_masks
            ]
        )
    else:
        weights = np.ones(train_masks.shape, np.float32)

    padding = "same" if args.padded else "valid"
    output_size = unet_output_size(args.tile, padding=padding)
    model = kseg.models.UNet(
        num_classes=2,
        input_shape=(None, None, 1),
        num_filters=args.num_filters,
        padding=padding,
    )
    kseg.training.compile_model(
        model,
        num_classes=2,
        optimizer="adam",
        learning_rate=args.learning_rate,
        loss=kseg.losses.SegmentationCrossEntropy(ignore_label=None),
        metrics=[],
        ignore_label=None,
    )
    train = training_tiles(
        train_images, train_masks, weights, args.tile, output_size, args.batch_size, args.seed
    )
    kseg.training.fit(
        model,
        train,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        run_dir=str(out),
        callbacks=[kseg.training.TimeLimit(args.max_train_minutes)],
        tensorboard=False,
        verbose=2,
    )
    train_seconds = time.time() - started

    if args.padded:
        logits = model.predict(test_images, batch_size=1, verbose=0)
    else:
        logits = overlap_tile_predict(model, test_images, tile_size=args.tile, batch_size=2)
    cell_iou, pixel_error = score(np.argmax(logits, axis=-1), test_masks)
    figures = {
        "cell_iou": cell_iou,
        "pixel_error": pixel_error,
        "train_slices": list(TRAIN_SLICES),
        "held_out_slices": list(HELD_OUT_SLICES),
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "batch_size": args.batch_size,
        "tile": args.tile,
        "padding": padding,
        "num_filters": args.num_filters,
        "weight_map": args.weight_map,
        "max_train_minutes": args.max_train_minutes,
        "train_seconds": train_seconds,
        "total_seconds": time.time() - started,
    }
    (out / "metrics.json").write_text(json.dumps(figures, indent=2))
    print(f"held-out cell IoU {cell_iou:.4f}  pixel error {pixel_error:.4f}")
    return figures


if __name__ == "__main__":
    main()
