"""`kseg demo`: DeepLabV3+ trained on the built-in shapes data, end to end."""

from pathlib import Path

import numpy as np
from PIL import Image

import kseg.backbones
import kseg.data
import kseg.export
import kseg.tasks
import kseg.training
import kseg.viz
from kseg.cli import arguments, reports
from kseg.cli.train import train_semantic_model

DESCRIPTION = "Trains DeepLabV3+ on the built-in shapes data and reports validation mIoU."
MODEL = "deeplabv3plus"


def run(args):
    """Runs `kseg demo` with the parsed arguments (see `DESCRIPTION`); returns the scores."""
    policy = kseg.training.set_precision(args.precision)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = kseg.data.shapes_info()
    weights = None
    if not args.scratch:
        # The ImageNet file kseg ships, so the demo fine-tunes without a network; other
        # backbones download theirs through keras.applications.
        weights = kseg.backbones.bundled_weights_path(args.backbone, args.alpha) or "imagenet"
    print(
        f"kseg demo: DeepLabV3+ ({args.backbone}, alpha {args.alpha}, "
        f"{'random' if weights is None else 'ImageNet'} initialisation) on {args.train_samples} "
        f"shapes images of {args.image_size}px, {args.epochs} epochs, precision {policy}"
    )
    train = kseg.data.make_pipeline(
        kseg.data.shapes_dataset("train", args.train_samples, args.image_size, seed=args.seed),
        args.batch_size,
        crop_size=args.image_size,
        scale_range=(0.75, 1.25),
        jitter=False,
        seed=args.seed,
    )
    val_source = kseg.data.shapes_dataset("val", args.val_samples, args.image_size, seed=args.seed)
    val = kseg.data.make_pipeline(val_source, 50, augment=False)
    model = train_semantic_model(
        MODEL,
        dict(
            num_classes=info.num_classes,
            backbone=args.backbone,
            output_stride=16,
            num_filters=args.num_filters,
            backbone_weights=weights,
            **({"alpha": args.alpha} if args.backbone.startswith("mobilenet") else {}),
        ),
        train.repeat(),
        val,
        num_classes=info.num_classes,
        run_dir=out / "run",
        epochs=args.epochs,
        steps_per_epoch=args.train_samples // args.batch_size,
        learning_rate=args.learning_rate,
        optimizer="adam",
        loss="ce",
        ignore_label=info.ignore_label,
        batchnorm_momentum=0.9,
        jit_compile=False,
        verbose=2 if args.quiet_progress else "auto",
    )
    task = kseg.tasks.for_model(model)
    scores = task.evaluate(model, val, info.num_classes)
    reports.print_scores(scores, info.class_names)
    reports.write_scores(out / "scores.json", scores, info.class_names)

    images, masks = next(iter(val.unbatch().batch(4)))
    predictions = np.argmax(model.predict(images, verbose=0), axis=-1)
    rows = [
        [image, kseg.viz.colorize(labels, info.palette), kseg.viz.colorize(mask, info.palette)]
        for image, labels, mask in zip(images.numpy(), predictions, masks.numpy())
    ]
    picture = kseg.viz.compose_panels(
        rows, info.class_names, info.palette, titles=("image", "prediction", "ground truth")
    )
    Image.fromarray(picture).save(out / "overlay.png")
    task.export(model, out / "saved_model")
    print(f"validation mIoU {scores['mean_iou']:.4f}")
    print(
        f"wrote {out / 'overlay.png'} (a row per image: image, prediction, ground truth; "
        "a legend of the classes), "
        f"{out / 'saved_model'}, {out / 'run' / 'model.keras'}"
    )
    return scores


def add_parser(commands):
    """Adds `kseg demo` and its flags to the subcommands."""
    demo = commands.add_parser("demo", help=DESCRIPTION, description=DESCRIPTION)
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--epochs", type=int, default=6, help="training epochs")
    demo.add_argument("--train-samples", type=int, default=2000, help="shapes images to train on")
    demo.add_argument("--val-samples", type=int, default=200, help="shapes images to validate on")
    demo.add_argument(
        "--image-size",
        type=arguments.shapes_image_size,
        default=128,
        help=f"side of the square images, at least {kseg.data.shapes.SHAPES_MIN_IMAGE_SIZE}",
    )
    demo.add_argument("--batch-size", type=int, default=16, help="images per training step")
    demo.add_argument("--backbone", default="mobilenetv2", help="backbone name (see `kseg list`)")
    demo.add_argument("--alpha", type=float, default=0.35, help="width of a MobileNet backbone")
    demo.add_argument(
        "--scratch",
        action="store_true",
        help="random backbone initialisation instead of ImageNet weights",
    )
    demo.add_argument("--num-filters", type=int, default=64, help="ASPP and decoder channels")
    demo.add_argument("--learning-rate", type=float, default=2e-3, help="Adam learning rate")
    demo.add_argument(
        "--precision",
        default="float32",
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
        help="Keras dtype policy; auto picks mixed precision where the hardware gains from it",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the augmentation")
    demo.add_argument("--quiet-progress", action="store_true", help="one line per epoch")
    demo.set_defaults(handler=run)
