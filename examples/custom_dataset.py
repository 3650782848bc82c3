"""Train a segmentation model on your own folder of images and masks.

The folder is read by kseg's folder loader (`kseg.data.load_dataset`, which calls
`kseg.data.folder_dataset`): images and masks are paired by file name, and a mask is a grayscale
or palette PNG of the image's size whose pixel values are class ids (0, 1, 2, ...), 255 marking
pixels to ignore. Every mask value is checked against `--num-classes`, and a bad file is named.

    my_data/
      images/train/0001.jpg  images/train/0002.jpg  ...   images/val/0101.jpg ...
      masks/train/0001.png   masks/train/0002.png   ...   masks/val/0101.png ...

Without `--data`, a small folder in that layout is first written from kseg's shapes dataset
(`<out>/example_data`), so the script runs as is and shows the layout to copy.

The model is DeepLabV3+ on a MobileNetV2-0.35 backbone initialised from the ImageNet weights
that ship inside kseg (no download). The run folder receives `model.keras`, `scores.json` and,
in `predictions/`, an overlay per validation image (in file-name order): prediction left,
ground truth right.

Usage:
    python examples/custom_dataset.py                                   # writes a demo folder
    python examples/custom_dataset.py --data my_data --num-classes 3 \\
        --class-names background,cat,dog --crop-size 256 --epochs 20
    python examples/custom_dataset.py --data my_data --num-classes 3 --tiny --out /tmp/run
"""

import argparse
import json
from pathlib import Path

import keras
import numpy as np
from PIL import Image

import kseg
import kseg.recipes


def write_example_folder(root, *, train_images, val_images, image_size, seed=0):
    """Writes shapes images (PNG) and their class-id masks in the `images/` + `masks/` layout."""
    root = Path(root)
    for split, count in (("train", train_images), ("val", val_images)):
        arrays = kseg.data.shapes_arrays(split, count, image_size, seed=seed)
        for folder in ("images", "masks"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
        for index, (image, mask) in enumerate(zip(arrays["images"], arrays["masks"])):
            Image.fromarray(image).save(root / "images" / split / f"{split}_{index:04d}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{split}_{index:04d}.png")
    return root


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Folder layout and examples: see the top of this file.",
    )
    parser.add_argument(
        "--data",
        help="folder with images/ and masks/ (each with train/ and val/), or "
        "'IMAGES_DIR,MASKS_DIR'; default: write a demo folder from the shapes data",
    )
    parser.add_argument("--num-classes", type=int, help="classes in the masks (with --data)")
    parser.add_argument("--class-names", help="comma-separated names, for the printed scores")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--crop-size", type=int, default=128, help="training crop size")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: one pass")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adam, poly decay")
    parser.add_argument(
        "--scratch", action="store_true", help="random backbone instead of ImageNet weights"
    )
    parser.add_argument("--max-overlays", type=int, default=8, help="validation overlays written")
    parser.add_argument("--out", default="runs/custom_dataset", help="run folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="smoke-test size: tiny backbone, 64 px crops, one eager epoch of 2 steps",
    )
    args = parser.parse_args(argv)
    if args.data and args.num_classes is None:
        parser.error("--num-classes is required with --data (plain folders do not declare it)")
    if args.tiny:
        args.crop_size, args.epochs, args.steps_per_epoch = 64, 1, 2
        args.batch_size, args.max_overlays = 2, 2
    return args


def build_model(args, num_classes):
    if args.tiny:
        return kseg.models.DeepLabV3Plus(num_classes=num_classes, backbone="tiny", num_filters=16)
    weights = None if args.scratch else kseg.backbones.bundled_weights_path("mobilenetv2", 0.35)
    return kseg.models.DeepLabV3Plus(
        num_classes=num_classes,
        backbone="mobilenetv2",
        alpha=0.35,
        backbone_weights=str(weights) if weights else None,
        num_filters=64,
    )


def main(argv=None):
    """Train on the folder, evaluate, write overlays; returns the scores."""
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.data is None:
        size = 64 if args.tiny else 128
        counts = (8, 4) if args.tiny else (300, 40)
        args.data = str(
            write_example_folder(
                out / "example_data", train_images=counts[0], val_images=counts[1], image_size=size
            )
        )
        args.num_classes = kseg.data.shapes_info().num_classes
        args.class_names = ",".join(kseg.data.shapes_info().class_names)
        print(f"wrote a demo folder of {counts[0]} + {counts[1]} images to {args.data}")

    class_names = args.class_names.split(",") if args.class_names else None
    if class_names is not None and len(class_names) != args.num_classes:
        raise SystemExit(
            f"--class-names gives {len(class_names)} names for {args.num_classes} classes"
        )
    options = {"num_classes": args.num_classes, "class_names": class_names}
    train_source, info = kseg.data.load_dataset(
        args.data, args.train_split, with_info=True, shuffle_files=True, seed=args.seed, **options
    )
    val_source = kseg.data.load_dataset(args.data, args.val_split, **options)
    num_train = int(train_source.cardinality())
    print(
        f"{num_train} training and {int(val_source.cardinality())} validation pairs "
        f"from {args.data}"
    )

    # Batches of one: folder images may differ in size, and each is scored at full resolution.
    train, val, steps = kseg.recipes.semantic_batches(
        train_source,
        val_source,
        batch_size=args.batch_size,
        crop_size=args.crop_size,
        ignore_label=info.ignore_label,
        seed=args.seed,
        scale_range=(0.5, 2.0),
        val_batch_size=1,
        steps_per_epoch=args.steps_per_epoch,
    )

    model = build_model(args, args.num_classes)
    kseg.recipes.fit_semantic(
        model,
        train,
        val,
        num_classes=args.num_classes,
        epochs=args.epochs,
        steps_per_epoch=steps,
        learning_rate=args.learning_rate,
        run_dir=out,
        ignore_label=info.ignore_label,
        # A handful of smoke-test steps cost less run eagerly than traced into a graph.
        run_eagerly=args.tiny,
    )
    model.save(out / "model.keras")

    scores = kseg.evaluation.evaluate_model(
        model, val, args.num_classes, ignore_label=info.ignore_label, progress=False
    )
    record = {"data": args.data, **kseg.recipes.scores_record(scores, class_names)}
    for name, iou in zip(record["class_names"], record["iou"]):
        print(f"  {name:12s} IoU {iou:.4f}")
    (out / "scores.json").write_text(json.dumps(record, indent=2))

    palette = kseg.viz.palette(args.num_classes)
    for index, (image, mask) in enumerate(val_source.take(args.max_overlays)):
        labels = np.argmax(model.predict(image[None], verbose=0)[0], axis=-1)
        kseg.viz.save_overlay(
            out / "predictions" / f"{args.val_split}_{index:04d}_overlay.png",
            image.numpy(),
            labels,
            ground_truth=mask.numpy(),
            palette=palette,
        )
    print(f"val mIoU {record['mean_iou']:.4f}")
    print(f"wrote {out / 'model.keras'}, {out / 'scores.json'}, {out / 'predictions'}/")
    return record


if __name__ == "__main__":
    main()
