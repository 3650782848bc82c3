"""Train Mask R-CNN on a COCO-format dataset and report COCO mask and box AP on a validation split.

Any dataset in the COCO format (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV
2014) works: one JSON file per split with `images`, `annotations` (polygons or RLE masks) and
`categories`, and a folder of the images. kseg.data.coco_instance_dataset reads it, each image
is scaled so that its long side is `--image-size` pixels (masks and boxes follow), and
kseg.data.pad_instance_batch pads the batches for kseg.models.MaskRCNN. Training runs through
kseg.training.fit, so rerunning the same command resumes after an interruption; the final
metrics (COCOeval through kseg.detection.evaluate_instances) go to `<run-dir>/metrics.json` and
the model to `<run-dir>/model.keras`.

The model follows examples/mask_rcnn_shapes.py: the paper's structure (He et al., 2017) with
CPU-sized widths and a MobileNetV2 (alpha 0.35) backbone from ImageNet. Full COCO needs the
paper's ResNet-50 (`--backbone resnet50 --fpn-channels 256`) and a GPU.

Usage:
    python examples/mask_rcnn_coco.py \\
        --annotations data/coco/annotations/instances_train2017.json \\
        --images data/coco/train2017 \\
        --val-annotations data/coco/annotations/instances_val2017.json \\
        --val-images data/coco/val2017 \\
        --run-dir runs/mask_rcnn_coco --image-size 512 --max-train-minutes 600
    python examples/mask_rcnn_coco.py --annotations A.json --images DIR --tiny   # smoke run

Afterwards the command line scores, applies and exports the trained model:
    kseg evaluate --model runs/mask_rcnn_coco/model.keras --data coco:VAL.json,VAL_IMAGES
    kseg predict --model runs/mask_rcnn_coco/model.keras photos/ --out predictions
"""

import argparse
import json
import os

import keras
import tensorflow as tf

import kseg
import kseg.recipes


def resize_long_side(example, size):
    """Scale an instance example so that its long side is `size` pixels.

    The image is resized bilinearly; the masks with nearest-neighbour sampling so that they
    stay binary, and the boxes are recomputed as the extents of the resized masks
    (`kseg.detection.boxes.boxes_from_masks`), the same definition `coco_instance_dataset` uses,
    so boxes and masks agree exactly. Instances whose mask vanishes at the new size (a sliver
    thinner than a pixel after shrinking) are dropped with their class.

    Args:
        example: a dict from `kseg.data.coco_instance_dataset` ("image" `(H, W, 3)`, "boxes",
            "classes", "masks" `(N, H, W)`, other keys kept unchanged).
        size: target length of the longer image side, in pixels.

    Returns:
        The example at the new size; `image` stays uint8 and `masks` uint8.

    Example:
        >>> ds = kseg.data.coco_instance_dataset("train.json", "images")  # doctest: +SKIP
        >>> ds = ds.map(lambda example: resize_long_side(example, 512))  # doctest: +SKIP
    """
    shape = tf.shape(example["image"])
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.maximum(height, width)
    new_size = tf.maximum(tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32), 1)
    image = tf.image.resize(example["image"], new_size, method="bilinear")
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    # tf.image.resize takes channels last, so instances become channels; it refuses zero
    # channels, so an extra empty one keeps images without instances working.
    masks = tf.transpose(tf.cast(example["masks"], tf.uint8), (1, 2, 0))
    masks = tf.concat([masks, tf.zeros([shape[0], shape[1], 1], tf.uint8)], axis=-1)
    masks = tf.image.resize(masks, new_size, method="nearest")[..., :-1]
    masks = tf.transpose(tf.cast(masks, tf.uint8), (2, 0, 1))
    visible = tf.reduce_any(masks > 0, axis=[1, 2])
    resized = dict(example)
    resized["image"] = image
    resized["masks"] = tf.boolean_mask(masks, visible)
    resized["classes"] = tf.boolean_mask(example["classes"], visible)
    resized["boxes"] = kseg.detection.boxes.boxes_from_masks(resized["masks"])
    if "is_crowd" in example:
        resized["is_crowd"] = tf.boolean_mask(example["is_crowd"], visible)
    return resized


def load_split(annotations, images, categories, image_size, *, shuffle=False):
    """A COCO split as resized instance examples, numbered with the training categories."""
    examples = kseg.data.coco_instance_dataset(
        annotations, images, category_ids=categories.coco_ids, shuffle=shuffle, seed=0
    )
    return examples.map(
        lambda example: resize_long_side(example, image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def build_model(args, num_classes):
    """Mask R-CNN at the example's size: the paper's structure with CPU-sized widths."""
    return kseg.models.MaskRCNN(
        num_classes=num_classes,
        backbone=args.backbone,
        backbone_weights=None if args.weights == "none" else args.weights,
        backbone_kwargs={"alpha": args.alpha} if args.backbone.startswith("mobilenet") else {},
        fpn_channels=args.fpn_channels,
        box_fc_units=4 * args.fpn_channels,
        mask_channels=args.fpn_channels,
        anchor_sizes=(32, 64, 128, 256, 512),
        roi_batch_size=args.roi_batch_size,
        rpn_train_nms=(2000, 1000),
        rpn_test_nms=(1000, 1000),
        detections_per_image=100,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", required=True, help="COCO JSON of the training split")
    parser.add_argument("--images", required=True, help="folder of the training images")
    parser.add_argument("--val-annotations", help="COCO JSON of the validation split")
    parser.add_argument("--val-images", help="folder of the validation images")
    parser.add_argument("--run-dir", default="runs/mask_rcnn_coco")
    parser.add_argument("--image-size", type=int, default=512, help="long image side, pixels")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--steps-per-epoch", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--alpha", type=float, default=0.35, help="MobileNet width multiplier")
    parser.add_argument("--weights", default="imagenet", help="'imagenet', 'none' or a path")
    parser.add_argument("--fpn-channels", type=int, default=128)
    parser.add_argument("--roi-batch-size", type=int, default=256, help="regions per image")
    parser.add_argument(
        "--max-instances",
        type=int,
        default=100,
        help="instances kept per training image (COCO has up to ~90)",
    )
    parser.add_argument("--max-val-images", type=int, help="score the first N validation images")
    parser.add_argument("--max-train-minutes", type=float, default=None)
    parser.add_argument("--tiny", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args()
    if (args.val_annotations is None) != (args.val_images is None):
        parser.error("--val-annotations and --val-images go together")
    if args.tiny:
        args.image_size, args.epochs, args.steps_per_epoch, args.batch_size = 64, 1, 2, 2
        args.backbone, args.weights, args.fpn_channels, args.roi_batch_size = "tiny", "none", 16, 32

    keras.utils.set_random_seed(0)
    categories = kseg.data.coco_categories(args.annotations)
    print(
        f"{categories.num_classes - 1} categories: {', '.join(categories.names[:10])}"
        f"{' ...' if categories.num_classes > 11 else ''}"
    )
    train = load_split(args.annotations, args.images, categories, args.image_size, shuffle=True)
    train_batches = kseg.data.pad_instance_batch(
        train.repeat(),
        args.batch_size,
        max_instances=args.max_instances,
        num_classes=categories.num_classes,
    ).prefetch(tf.data.AUTOTUNE)

    model = build_model(args, categories.num_classes)
    train_seconds = kseg.recipes.fit_instances(
        model,
        train_batches,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        learning_rate=args.learning_rate,
        run_dir=args.run_dir,
        max_train_minutes=args.max_train_minutes,
        # Two smoke-test steps cost less run eagerly than traced into a graph.
        run_eagerly=args.tiny,
    )
    os.makedirs(args.run_dir, exist_ok=True)
    model.save(os.path.join(args.run_dir, "model.keras"))

    metrics = {"args": vars(args), "train_seconds_this_call": train_seconds}
    if args.val_annotations:
        val = load_split(args.val_annotations, args.val_images, categories, args.image_size)
        if args.max_val_images:
            val = val.take(args.max_val_images)
        scores = kseg.detection.evaluate_instances(
            model, val, categories, batch_size=args.batch_size
        )
        metrics.update(scores)
        print(
            f"mask AP {scores['mask_AP']:.3f}  AP50 {scores['mask_AP50']:.3f}  "
            f"AP75 {scores['mask_AP75']:.3f}  box AP {scores['box_AP']:.3f}  "
            f"AP50 {scores['box_AP50']:.3f}  AP75 {scores['box_AP75']:.3f}  "
            f"({scores['num_images']} validation images)"
        )
    else:
        print("no --val-annotations/--val-images given: training only, no AP")
    with open(os.path.join(args.run_dir, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=2)


if __name__ == "__main__":
    main()
