"""Fine-tune DeepLabV3+ or U-Net from an ImageNet-pretrained MobileNetV2 backbone.

The backbone is built with `backbone_weights="imagenet"`, so keras.applications downloads its
ImageNet weights on first use (into `~/.keras/models`, or `$KERAS_HOME/models`) and reuses them
afterwards. Training has the usual two phases: first the new decoder alone, with the pretrained
backbone frozen (its batch-norm statistics kept as on ImageNet), then the whole network at a
tenth of the learning rate. Data default to kseg's built-in shapes dataset; `--data` takes
anything `kseg.data.load_dataset` reads.

The run folder receives `model.keras`, `scores.json` and one sub-folder of checkpoints and logs
per phase.

Usage:
    python examples/finetune_imagenet.py                       # DeepLabV3+, MobileNetV2-0.35
    python examples/finetune_imagenet.py --model unet --alpha 1.0 --epochs 6
    python examples/finetune_imagenet.py --data my_data --num-classes 3 --image-size 256
    python examples/finetune_imagenet.py --tiny --out /tmp/kseg_finetune   # seconds, for CI
"""

import argparse
import json
from pathlib import Path

import keras

import kseg
import kseg.recipes

MODELS = ("deeplabv3plus", "unet")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="deeplabv3plus", choices=MODELS)
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.35,
        help="MobileNetV2 width with ImageNet weights: 0.35, 0.5, 0.75, 1.0, 1.3 or 1.4",
    )
    parser.add_argument(
        "--data", default="shapes", help="'shapes' or any source kseg.data.load_dataset reads"
    )
    parser.add_argument("--num-classes", type=int, help="needed for plain image/mask folders")
    parser.add_argument("--image-size", type=int, default=128, help="shapes size / crop size")
    parser.add_argument("--train-samples", type=int, default=1000, help="shapes training images")
    parser.add_argument("--val-samples", type=int, default=100, help="shapes validation images")
    parser.add_argument(
        "--frozen-epochs", type=int, default=2, help="epochs with the backbone frozen (phase 1)"
    )
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the whole network")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: one pass")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="phase-1 Adam rate")
    parser.add_argument("--num-filters", type=int, default=64, help="decoder channels")
    parser.add_argument("--out", default="runs/finetune_imagenet", help="run folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--run-eagerly",
        action="store_true",
        help="skip graph compilation: slower steps, but no tracing cost for a handful of them",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="smoke-test size: 64 px, 8 images, one eager step per phase, narrow decoder",
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.image_size, args.train_samples, args.val_samples = 64, 8, 4
        args.frozen_epochs, args.epochs, args.steps_per_epoch = 1, 1, 1
        args.batch_size, args.num_filters, args.run_eagerly = 4, 8, True
    return args


def build_model(args, num_classes):
    """The chosen architecture on an ImageNet MobileNetV2 (downloaded by keras.applications)."""
    builder = kseg.models.DeepLabV3Plus if args.model == "deeplabv3plus" else kseg.models.UNet
    return builder(
        num_classes=num_classes,
        backbone="mobilenetv2",
        alpha=args.alpha,
        backbone_weights="imagenet",
        num_filters=args.num_filters,
    )


def load_split(args, split, num_samples):
    """`(dataset, info)` of one split; the shapes data is rendered at `--image-size`."""
    shapes = {"num_samples": num_samples, "image_size": args.image_size, "seed": args.seed}
    options = shapes if args.data == "shapes" else {}
    return kseg.data.load_split(args.data, split, num_classes=args.num_classes, **options)


def main(argv=None):
    """Fine-tune in two phases, evaluate, write the run folder; returns the scores."""
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train_source, info = load_split(args, "train", args.train_samples)
    val_source, _ = load_split(args, "val", args.val_samples)
    num_classes = args.num_classes or info.num_classes
    if num_classes is None:
        raise SystemExit(f"the number of classes of {args.data!r} is unknown: pass --num-classes")
    train, val, steps = kseg.recipes.semantic_batches(
        train_source,
        val_source,
        batch_size=args.batch_size,
        crop_size=args.image_size,
        ignore_label=info.ignore_label,
        seed=args.seed,
        steps_per_epoch=args.steps_per_epoch,
    )

    model = build_model(args, num_classes)
    backbone = kseg.models.backbone_of(model)
    print(
        f"{args.model} on ImageNet MobileNetV2-{args.alpha}: {model.count_params():,} "
        f"parameters, {backbone.count_params():,} of them pretrained"
    )

    if args.frozen_epochs:
        backbone.trainable = False
        print(f"phase 1: decoder only, {args.frozen_epochs} epochs")
        # fit_semantic compiles again, which is what makes Keras pick up the `trainable` change.
        kseg.recipes.fit_semantic(
            model,
            train,
            val,
            num_classes=num_classes,
            epochs=args.frozen_epochs,
            steps_per_epoch=steps,
            learning_rate=args.learning_rate,
            run_dir=out / "frozen",
            ignore_label=info.ignore_label,
            run_eagerly=args.run_eagerly,
        )
    backbone.trainable = True
    print(f"phase 2: whole network, {args.epochs} epochs")
    kseg.recipes.fit_semantic(
        model,
        train,
        val,
        num_classes=num_classes,
        epochs=args.epochs,
        steps_per_epoch=steps,
        learning_rate=args.learning_rate / 10,
        run_dir=out / "finetune",
        ignore_label=info.ignore_label,
        run_eagerly=args.run_eagerly,
    )
    model.save(out / "model.keras")

    scores = kseg.evaluation.evaluate_model(
        model, val, num_classes, ignore_label=info.ignore_label, progress=False
    )
    record = {
        "model": args.model,
        "backbone": f"mobilenetv2-{args.alpha}",
        **kseg.recipes.scores_record(scores, info.class_names),
    }
    for name, iou in zip(record["class_names"], record["iou"]):
        print(f"  {name:12s} IoU {iou:.4f}")
    (out / "scores.json").write_text(json.dumps(record, indent=2))
    print(f"val mIoU {record['mean_iou']:.4f}")
    print(f"wrote {out / 'model.keras'}, {out / 'scores.json'}")
    return record


if __name__ == "__main__":
    main()
