"""Train Mask R-CNN on the built-in shapes data and report COCO mask and box AP on a held-out split.

The shapes set (kseg.data.shapes_instance_examples) renders 1-4 circles, squares, triangles
and stars per image, with instance masks, so the whole instance-segmentation path (targets,
losses, RoIAlign, NMS, mask pasting, COCOeval) runs without a download. The default
configuration is sized for a CPU: 128x128 images, a MobileNetV2 (alpha 0.35) backbone from
ImageNet (the weights kseg ships, so no download), a 128-channel pyramid and anchors of
16-256 px (the objects are 26-56 px wide).

Usage:
    python examples/mask_rcnn_shapes.py --run-dir runs/mask_rcnn_shapes --max-train-minutes 60
    python examples/mask_rcnn_shapes.py --tiny          # a one-minute smoke run

Rerunning the same command after an interruption resumes from the last finished epoch; the
final metrics go to `<run-dir>/metrics.json`.
"""

import argparse
import json
import os

import keras

import kseg
import kseg.recipes


def backbone_weights(args):
    """None, a path, "imagenet", or for "bundled" the ImageNet file kseg ships (else "imagenet")."""
    if args.weights == "none":
        return None
    if args.weights == "bundled":
        bundled = kseg.backbones.bundled_weights_path(args.backbone, alpha=args.alpha)
        return str(bundled) if bundled else "imagenet"
    return args.weights


def build_model(args, num_classes):
    """Mask R-CNN at the example's size: the paper's structure with CPU-sized widths."""
    return kseg.models.MaskRCNN(
        num_classes=num_classes,
        backbone=args.backbone,
        backbone_weights=backbone_weights(args),
        backbone_kwargs={"alpha": args.alpha} if args.backbone.startswith("mobilenet") else {},
        fpn_channels=args.fpn_channels,
        box_fc_units=4 * args.fpn_channels,
        mask_channels=args.fpn_channels,
        anchor_sizes=(16, 32, 64, 128, 256),
        roi_batch_size=128,
        rpn_train_nms=(1000, 500),
        rpn_test_nms=(500, 100),
        detections_per_image=20,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/mask_rcnn_shapes")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--alpha", type=float, default=0.35, help="MobileNet width multiplier")
    parser.add_argument(
        "--weights",
        default="bundled",
        help="'bundled' (the ImageNet file kseg ships for MobileNetV2-0.35; 'imagenet' for other "
        "backbones), 'imagenet' (download), 'none' or a path",
    )
    parser.add_argument("--fpn-channels", type=int, default=128)
    parser.add_argument("--max-train-minutes", type=float, default=None)
    parser.add_argument("--tiny", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args()
    if args.tiny:
        args.image_size, args.train_images, args.val_images = 64, 8, 4
        args.epochs, args.steps_per_epoch, args.batch_size = 1, 2, 2
        args.backbone, args.weights, args.fpn_channels = "tiny", "none", 16

    keras.utils.set_random_seed(0)
    info = kseg.data.shapes_info()
    train = kseg.data.shapes_instance_examples(
        "train", num_samples=args.train_images, image_size=args.image_size
    )
    val = kseg.data.shapes_instance_examples(
        "val", num_samples=args.val_images, image_size=args.image_size
    )
    train_batches = kseg.data.pad_instance_batch(
        train.shuffle(args.train_images, seed=0).repeat(), args.batch_size
    )

    model = build_model(args, info.num_classes)
    train_seconds = kseg.recipes.fit_instances(
        model,
        train_batches,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        learning_rate=args.learning_rate,
        run_dir=args.run_dir,
        max_train_minutes=args.max_train_minutes,
    )
    metrics = kseg.detection.evaluate_instances(model, val, info, batch_size=args.batch_size)
    metrics["train_seconds_this_call"] = train_seconds
    print(
        f"mask AP {metrics['mask_AP']:.3f}  AP50 {metrics['mask_AP50']:.3f}  "
        f"AP75 {metrics['mask_AP75']:.3f}  box AP {metrics['box_AP']:.3f}  "
        f"({metrics['num_images']} held-out images)"
    )
    os.makedirs(args.run_dir, exist_ok=True)
    with open(os.path.join(args.run_dir, "metrics.json"), "w") as handle:
        json.dump({"args": vars(args), **metrics}, handle, indent=2)


if __name__ == "__main__":
    main()
