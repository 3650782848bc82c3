"""Train one segmentation model from full masks, scribbles, tags, boxes or a mix, and compare mIoU.

Every run uses the same model and recipe as `kseg demo` (DeepLabV3+ on the MobileNetV2-0.35
ImageNet weights kseg ships, Adam at 2e-3 with poly decay, batch-norm momentum 0.9) on the built-in
shapes data, or on CamVid with `--camvid PATH`. Only the labels and the loss change:

- full: the masks, pixel cross-entropy with ignore label 255;
- scribbles: `kseg.weak.scribbles_from_mask` strokes, then ScribbleSup (Lin et al., CVPR 2016):
  `kseg.weak.scribblesup_rounds` alternates superpixel graph-cut propagation and training for three
  rounds; `--scribble-method partial` trains on the raw scribbles with the ignore label instead;
- tags, tags+sizes: image-level tags (`kseg.weak.weak_label_dataset(..., "tags")`) with the
  Constrained CNN loss (Pathak et al., ICCV 2015, `kseg.weak.ConstrainedCrossEntropy`) or, with
  `--tag-method em-adapt`, EM-Adapt (Papandreou et al., ICCV 2015, `kseg.weak.EMAdaptCrossEntropy`);
  tags+sizes adds each class's area fraction as size constraints (Constrained CNN only);
- boxes: `kseg.weak.boxes_from_mask` boxes turned into Bbox-Seg pseudo-masks by the dense CRF
  (`kseg.weak.bbox_seg_labels`) and then ordinary training, or EM-Fixed on the boxes'
  allowed-class maps with `--box-method em-fixed`;
- mixed: `--strong-images` images keep their masks and the rest only have boxes (or tags, with
  `--mixed-weak tags`), in one `kseg.weak.mixed_supervision_dataset` trained with
  `kseg.weak.EMFixedCrossEntropy` (Papandreou et al.'s semi-supervised setting).

The script evaluates the trained model on the validation split with `kseg.evaluation.evaluate_model`
and writes `<out>/<supervision>.json`: mIoU, per-class IoU, the quality (mIoU against the true
masks) of any pseudo-labels it trained on, the time from weak labels to trained model (making
pseudo-labels included) and the settings. CamVid has no background class (every
class is "stuff"), so there the tag losses run with `background=None`, and box supervision, which
needs a background outside the boxes, is refused.

Usage:
    python examples/weak_supervision.py --supervision full
    python examples/weak_supervision.py --supervision scribbles
    python examples/weak_supervision.py --supervision tags --tag-method em-adapt
    python examples/weak_supervision.py --supervision tags+sizes
    python examples/weak_supervision.py --supervision boxes
    python examples/weak_supervision.py --supervision mixed --strong-images 200
    python examples/weak_supervision.py --supervision tags --camvid ../shared/data/camvid
    python examples/weak_supervision.py --supervision boxes --tiny --out /tmp/weak  # seconds
"""

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import kseg
import kseg.evaluation
import kseg.metrics
import kseg.training
import kseg.weak

SUPERVISIONS = ("full", "scribbles", "tags", "tags+sizes", "boxes", "mixed")
IGNORE_LABEL = 255


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--supervision", choices=SUPERVISIONS, default="full")
    parser.add_argument(
        "--tag-method",
        choices=("ccnn", "em-adapt"),
        default="ccnn",
        help="tags: Constrained CNN or EM-Adapt",
    )
    parser.add_argument(
        "--scribble-method",
        choices=("scribblesup", "partial"),
        default="scribblesup",
        help="scribbles: ScribbleSup rounds, or partial cross-entropy on the raw scribbles",
    )
    parser.add_argument(
        "--box-method",
        choices=("bbox-seg", "em-fixed"),
        default="bbox-seg",
        help="boxes: dense-CRF pseudo-masks, or EM-Fixed on allowed-class maps",
    )
    parser.add_argument(
        "--mixed-weak",
        choices=("boxes", "tags"),
        default="boxes",
        help="mixed: the weak labels of the images without masks",
    )
    parser.add_argument(
        "--strong-images", type=int, default=200, help="mixed: images that keep their full mask"
    )
    parser.add_argument("--rounds", type=int, default=3, help="ScribbleSup rounds (the paper: 3)")
    parser.add_argument(
        "--superpixels",
        type=int,
        default=150,
        help="ScribbleSup SLIC superpixels per image (the paper: ~1000 on 500x375 images)",
    )
    parser.add_argument(
        "--scribble-width", type=int, default=3, help="thickness of the generated scribbles"
    )
    parser.add_argument(
        "--camvid", type=Path, default=None, help="a CamVid folder instead of the shapes data"
    )
    parser.add_argument(
        "--camvid-size",
        type=int,
        nargs=2,
        default=(180, 240),
        metavar=("HEIGHT", "WIDTH"),
        help="CamVid images are resized to this",
    )
    parser.add_argument("--image-size", type=int, default=128, help="shapes image size")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--val-samples", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adam, poly decay")
    parser.add_argument("--num-filters", type=int, default=64, help="ASPP and decoder channels")
    parser.add_argument("--out", type=Path, default=Path("runs/weak_supervision"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="smoke-test size: tiny backbone, 64 px, 8 images, eager, 1 epoch (2 ScribbleSup "
        "rounds)",
    )
    args = parser.parse_args(argv)
    if args.supervision == "tags+sizes" and args.tag_method != "ccnn":
        parser.error("--supervision tags+sizes uses the Constrained CNN's size constraints only")
    if args.camvid is not None and "boxes" in (
        args.supervision,
        args.mixed_weak if args.supervision == "mixed" else None,
    ):
        parser.error(
            "box supervision needs a background class outside the boxes and CamVid has none; "
            "use --mixed-weak tags or another supervision"
        )
    if args.tiny:
        args.image_size, args.train_samples, args.val_samples = 64, 8, 4
        args.epochs, args.batch_size, args.rounds = 1, 4, 2
        args.superpixels, args.strong_images = 30, 2
        args.camvid_size = (64, 80)
    for name in ("train_samples", "val_samples", "epochs", "batch_size", "rounds", "superpixels"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.supervision == "mixed" and not 0 < args.strong_images < args.train_samples:
        parser.error("--strong-images must lie between 0 and --train-samples (both excluded)")
    return args


def load_arrays(args, split, num_samples):
    """`(images float32 (N, H, W, 3), masks uint8 (N, H, W), instances or None, info)`."""
    if args.camvid is None:
        arrays = kseg.data.shapes_arrays(split, num_samples, args.image_size, seed=args.seed)
        return (
            arrays["images"].astype(np.float32),
            arrays["masks"],
            arrays["instance_masks"],
            kseg.data.shapes_info(),
        )
    dataset, info = kseg.data.load_dataset(str(args.camvid), split, with_info=True)
    images, masks = [], []
    for image, mask in dataset.take(num_samples):
        if mask.shape.rank == 2:
            mask = mask[..., None]
        resized = tf.image.resize(image, args.camvid_size, antialias=True)
        # The antialiasing kernel overshoots a little at sharp edges; SLIC wants [0, 255].
        images.append(np.clip(resized.numpy(), 0.0, 255.0))
        masks.append(tf.image.resize(mask, args.camvid_size, method="nearest").numpy()[..., 0])
    return np.stack(images), np.stack(masks).astype(np.uint8), None, info


def build_model(args, num_classes):
    if args.tiny:
        kwargs = {"backbone": "tiny", "num_filters": 16}
    else:
        # The ImageNet file kseg ships, as `kseg demo` uses: no download needed.
        kwargs = {
            "backbone": "mobilenetv2",
            "alpha": 0.35,
            "backbone_weights": kseg.backbones.bundled_weights_path("mobilenetv2", alpha=0.35),
            "num_filters": args.num_filters,
        }
    model = kseg.models.get_model(
        "deeplabv3plus", num_classes=num_classes, output_stride=16, **kwargs
    )
    kseg.training.set_batchnorm_momentum(model, 0.9)
    return model


def compile_for(model, args, loss, total_steps, num_classes, with_miou):
    kseg.training.compile_model(
        model,
        num_classes=num_classes,
        optimizer="adam",
        learning_rate=kseg.training.poly_schedule(args.learning_rate, total_steps),
        loss=loss,
        # A mean-IoU metric needs masks; weak y_true (tags, allowed-class maps) has none.
        metrics=None if with_miou else [],
        ignore_label=IGNORE_LABEL,
        run_eagerly=args.tiny,
    )


def label_quality(labels, masks, num_classes):
    """mIoU of pseudo-labels against the true masks (pixels ignored in either left out)."""
    valid = (masks != IGNORE_LABEL) & (labels != IGNORE_LABEL)
    confusion = np.bincount(
        masks[valid].astype(np.int64) * num_classes + labels[valid].astype(np.int64),
        minlength=num_classes * num_classes,
    ).reshape(num_classes, num_classes)
    scores = kseg.metrics.confusion_matrix_scores(confusion)
    return {
        "mean_iou": float(scores["mean_iou"]),
        "pixel_accuracy": float(scores["pixel_accuracy"]),
        "labelled_fraction": float(np.mean(labels != IGNORE_LABEL)),
    }


def boxes_of(masks, instances, background):
    """Boxes and classes per image: one per shape instance, or per connected region."""
    result = []
    for index, mask in enumerate(masks):
        instance = None if instances is None else instances[index]
        result.append(
            kseg.weak.boxes_from_mask(mask, instance_mask=instance, background=background)
        )
    return result


def allowed_maps(masks, instances, kind, num_classes, background):
    """EM-Fixed's allowed-class maps (N, H, W, K) from boxes or tags."""
    height, width = masks.shape[1:3]
    if kind == "tags":
        return np.stack(
            [
                kseg.weak.tag_label_map(kseg.weak.tags_from_mask(m, num_classes), height, width)
                for m in masks
            ]
        )
    return np.stack(
        [
            kseg.weak.box_label_map(boxes, classes, height, width, num_classes)
            for boxes, classes in boxes_of(masks, instances, background)
        ]
    )


def batches(dataset, args, repeat=True):
    dataset = dataset.shuffle(args.train_samples, seed=args.seed)
    dataset = dataset.repeat() if repeat else dataset
    return dataset.batch(args.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def train(args, images, masks, instances, info):
    """Trains per `--supervision`; returns `(model, method name, pseudo-label quality or None)`."""
    num_classes = info.num_classes
    background = None if args.camvid is not None else 0
    steps = max(1, len(images) // args.batch_size)
    total_steps = steps * args.epochs
    model = build_model(args, num_classes)
    cross_entropy = kseg.losses.SegmentationCrossEntropy(ignore_label=IGNORE_LABEL)
    quality = None

    def fit_on(labels, loss, with_miou):
        compile_for(model, args, loss, total_steps, num_classes, with_miou)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        model.fit(batches(dataset, args), epochs=args.epochs, steps_per_epoch=steps, verbose=2)

    kind = args.supervision
    if kind == "full":
        fit_on(masks, cross_entropy, True)
        return model, "cross-entropy on full masks", None

    if kind == "scribbles":
        scribbles = np.stack(
            [
                kseg.weak.scribbles_from_mask(
                    mask, width=args.scribble_width, seed=[args.seed, index]
                )
                for index, mask in enumerate(masks)
            ]
        )
        quality = label_quality(scribbles, masks, num_classes)
        if args.scribble_method == "partial":
            fit_on(scribbles, cross_entropy, True)
            return model, "partial cross-entropy on scribbles", {"scribbles": quality}
        epochs_per_round = max(1, args.epochs // args.rounds)
        compile_for(
            model, args, cross_entropy, steps * epochs_per_round * args.rounds, num_classes, True
        )
        result = kseg.weak.scribblesup_rounds(
            model,
            images,
            scribbles,
            rounds=args.rounds,
            epochs_per_round=epochs_per_round,
            batch_size=args.batch_size,
            n_segments=args.superpixels,
            verbose=2,
        )
        rounds = {
            f"round_{i + 1}": label_quality(labels, masks, num_classes)
            for i, labels in enumerate(result.labels)
        }
        return model, "ScribbleSup", {"scribbles": quality, **rounds}

    if kind in ("tags", "tags+sizes"):
        dataset = tf.data.Dataset.from_tensor_slices((images, masks))
        tagged = kseg.weak.weak_label_dataset(
            dataset, "tags", num_classes=num_classes, with_sizes=kind == "tags+sizes"
        )
        if args.tag_method == "ccnn":
            # With sizes: hard latent labels (the authors' setting) and, given a background,
            # object classes shared softly (see ConstrainedCrossEntropy).
            sized = kind == "tags+sizes"
            loss = kseg.weak.ConstrainedCrossEntropy(
                background=background,
                hardness=1000.0 if sized else 1.0,
                soft_object_classes=sized and background is not None,
            )
            method = "CCNN"
        else:
            loss, method = kseg.weak.EMAdaptCrossEntropy(background_class=background), "EM-Adapt"
        compile_for(model, args, loss, total_steps, num_classes, False)
        model.fit(batches(tagged, args), epochs=args.epochs, steps_per_epoch=steps, verbose=2)
        return model, method, None

    if kind == "boxes" and args.box_method == "bbox-seg":
        pseudo = np.stack(
            [
                kseg.weak.bbox_seg_labels(image, boxes, classes, num_classes)
                for image, (boxes, classes) in zip(images, boxes_of(masks, instances, background))
            ]
        )
        quality = {"bbox_seg": label_quality(pseudo, masks, num_classes)}
        fit_on(pseudo, cross_entropy, True)
        return model, "Bbox-Seg", quality

    if kind == "boxes":
        allowed = allowed_maps(masks, instances, "boxes", num_classes, background)
        loss = kseg.weak.EMFixedCrossEntropy(background_class=background)
        fit_on(allowed, loss, False)
        return model, "EM-Fixed (boxes)", None

    strong = args.strong_images
    allowed = allowed_maps(
        masks[strong:],
        None if instances is None else instances[strong:],
        args.mixed_weak,
        num_classes,
        background,
    )
    mixed = kseg.weak.mixed_supervision_dataset(
        tf.data.Dataset.from_tensor_slices((images[:strong], masks[:strong])),
        tf.data.Dataset.from_tensor_slices((images[strong:], allowed)),
        num_classes,
    )
    compile_for(
        model,
        args,
        kseg.weak.EMFixedCrossEntropy(background_class=background),
        total_steps,
        num_classes,
        False,
    )
    model.fit(batches(mixed, args), epochs=args.epochs, steps_per_epoch=steps, verbose=2)
    return model, f"EM-Fixed, {strong} masks + {len(images) - strong} {args.mixed_weak}", None


def main(argv=None):
    """Train with the chosen supervision, evaluate on val, write the JSON; returns its dict."""
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    images, masks, instances, info = load_arrays(args, "train", args.train_samples)
    val_images, val_masks, _, _ = load_arrays(args, "val", args.val_samples)
    print(
        f"{args.supervision} supervision: DeepLabV3+ on {len(images)} "
        f"{'CamVid' if args.camvid else 'shapes'} images of {images.shape[1]}x{images.shape[2]}, "
        f"{args.epochs} epochs"
    )
    started = time.perf_counter()
    model, method, quality = train(args, images, masks, instances, info)
    seconds = time.perf_counter() - started

    val = tf.data.Dataset.from_tensor_slices((val_images, val_masks)).batch(args.batch_size)
    scores = kseg.evaluation.evaluate_model(
        model, val, info.num_classes, ignore_label=IGNORE_LABEL, progress=False
    )
    iou = {name: float(v) for name, v in zip(info.class_names, scores["iou"])}
    result = {
        "supervision": args.supervision,
        "method": method,
        "mean_iou": float(scores["mean_iou"]),
        "pixel_accuracy": float(scores["pixel_accuracy"]),
        "iou": {name: (None if np.isnan(v) else v) for name, v in iou.items()},
        "pseudo_label_quality": quality,
        "train_seconds": round(seconds, 1),
        "settings": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        },
    }
    path = args.out / f"{args.supervision.replace('+', '_')}.json"
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    print(f"{method}: validation mIoU {result['mean_iou']:.4f} ({seconds:.0f} s of training)")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
