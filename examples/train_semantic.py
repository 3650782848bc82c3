"""Train any registered kseg model for semantic segmentation and report its validation mIoU.

By default the data is kseg's built-in procedural shapes dataset (nothing to download) and the
model is DeepLabV3+ on a MobileNetV2 backbone of width 0.35, trained from scratch: a few minutes
on a laptop CPU. `--model` picks any architecture that `kseg list` names (fcn8s, unet, segnet,
pspnet, deeplabv3plus, ...) and `--backbone` its encoder; `--data` takes anything
`kseg.data.load_dataset` reads (a VOC or CamVid folder, image/mask folders, "tfds:NAME").

The run folder receives the trained `model.keras`, `scores.json` (per-class IoU, mIoU,
accuracies), `curves.png` (loss and mIoU per epoch) and kseg's checkpoints and logs; rerunning the
same command resumes an interrupted run.

Usage:
    python examples/train_semantic.py                                  # DeepLabV3+ on shapes
    python examples/train_semantic.py --model unet --epochs 8           # U-Net, MobileNetV2 encoder
    python examples/train_semantic.py --model pspnet --backbone resnet50 --image-size 96
    python examples/train_semantic.py --model segnet_basic --model-arg num_filters=32
    python examples/train_semantic.py --model fcn8s --model-arg num_filters=512 \
        --epochs 8                                                      # fc6/fc7 512 wide
    python examples/train_semantic.py --data ../shared/data/camvid --crop-size 256 --epochs 20
    python examples/train_semantic.py --tiny --out /tmp/kseg_tiny      # seconds, for CI
"""

import argparse
import inspect
import json
from pathlib import Path

import keras

import kseg
import kseg.recipes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data", default="shapes", help="'shapes' or any source kseg.data.load_dataset reads"
    )
    parser.add_argument("--num-classes", type=int, help="needed for plain image/mask folders")
    parser.add_argument("--model", default="deeplabv3plus", help="a name from `kseg list`")
    parser.add_argument(
        "--backbone",
        help="a backbone from `kseg list`; default: mobilenetv2 for models built on the backbone "
        "registry, the model's own encoder for SegNet, SegNet-Basic and FCN-AlexNet",
    )
    parser.add_argument("--alpha", type=float, default=0.35, help="width of a MobileNet backbone")
    parser.add_argument(
        "--backbone-weights", default=None, help="None, 'imagenet' or a weights file"
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        metavar="NAME=VALUE",
        help="any other builder argument, e.g. num_filters=64 (repeatable)",
    )
    parser.add_argument("--image-size", type=int, default=128, help="shapes image size")
    parser.add_argument("--train-samples", type=int, default=1000, help="shapes training images")
    parser.add_argument("--val-samples", type=int, default=100, help="shapes validation images")
    parser.add_argument(
        "--crop-size", type=int, default=None, help="training crop (default: --image-size)"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: one pass")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adam, poly decay")
    parser.add_argument("--out", default="runs/train_semantic", help="run folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--run-eagerly",
        action="store_true",
        help="skip graph compilation: slower steps, but no tracing cost for a handful of them",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="smoke-test size: tiny backbone, 64 px, 8 images, 1 eager epoch of 2 steps",
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.image_size, args.train_samples, args.val_samples = 64, 8, 4
        args.epochs, args.steps_per_epoch, args.batch_size = 1, 2, 4
        args.run_eagerly = True
    args.crop_size = args.crop_size or args.image_size
    return args


def takes_registry_backbone(model_name):
    """Whether a builder forwards backbone options (e.g. `alpha`) to `kseg.backbones`."""
    parameters = inspect.signature(kseg.models.get_builder(model_name)).parameters.values()
    return any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters)


def model_kwargs(args, num_classes):
    """Builder arguments: the backbone choice plus `--model-arg`s (small widths with --tiny)."""
    kwargs = {"num_classes": num_classes}
    if args.tiny:
        # The smallest configuration kseg's own tests use for each architecture.
        kwargs.update(backbone="tiny", **kseg.testing.SMALL_MODEL_CONFIGS.get(args.model, {}))
    else:
        backbone = args.backbone or ("mobilenetv2" if takes_registry_backbone(args.model) else None)
        if backbone:
            kwargs["backbone"] = backbone
            if backbone.startswith("mobilenet"):
                kwargs["alpha"] = args.alpha
        if args.backbone_weights:
            kwargs["backbone_weights"] = args.backbone_weights
    kwargs.update(kseg.utils.parse_model_args(args.model_arg))
    return kwargs


def load_split(args, split, num_samples):
    """`(dataset, info)` of one split; the shapes data is rendered at `--image-size`."""
    shapes = {"num_samples": num_samples, "image_size": args.image_size, "seed": args.seed}
    options = shapes if args.data == "shapes" else {}
    return kseg.data.load_split(args.data, split, num_classes=args.num_classes, **options)


def main(argv=None):
    """Train, evaluate on the validation split, write the run folder; returns the scores."""
    args = parse_args(argv)
    semantic = kseg.models.list_models(task="semantic")
    if args.model.lower() not in semantic:
        raise SystemExit(f"unknown model {args.model!r}; registered: {', '.join(semantic)}")
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
        crop_size=args.crop_size,
        ignore_label=info.ignore_label,
        seed=args.seed,
        steps_per_epoch=args.steps_per_epoch,
    )

    kwargs = model_kwargs(args, num_classes)
    model = kseg.models.get_model(args.model, **kwargs)
    print(
        f"{args.model} {kwargs}: {model.count_params():,} parameters; "
        f"{args.epochs} epochs of {steps} steps on {args.data}"
    )
    kseg.recipes.fit_semantic(
        model,
        train,
        val,
        num_classes=num_classes,
        epochs=args.epochs,
        steps_per_epoch=steps,
        learning_rate=args.learning_rate,
        run_dir=out,
        ignore_label=info.ignore_label,
        run_eagerly=args.run_eagerly,
    )
    model.save(out / "model.keras")
    # From the run's CSV log, so a resumed run plots all its epochs.
    kseg.viz.plot_history(out, out / "curves.png")

    scores = kseg.evaluation.evaluate_model(
        model, val, num_classes, ignore_label=info.ignore_label, progress=False
    )
    record = {
        "model": args.model,
        "data": args.data,
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
