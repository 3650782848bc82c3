"""Train DeepLabV3+ (MobileNetV2 backbone) on CamVid with kseg's Python API.

Usage:
    python examples/camvid_deeplabv3plus.py --camvid ../shared/data/camvid [--weights imagenet]

Rerunning the same command after an interruption resumes from the last finished epoch.
"""

import argparse

import kseg


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", required=True, help="CamVid folder (train/, trainannot/, ...)")
    parser.add_argument("--weights", default=None, help="backbone weights: None or 'imagenet'")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--run-dir", default="runs/camvid")
    args = parser.parse_args()

    kseg.training.set_precision("auto")
    info = kseg.data.camvid_info()
    train = kseg.data.make_pipeline(
        kseg.data.camvid_dataset(args.camvid, "train", shuffle_files=True, seed=0),
        args.batch_size,
        crop_size=(352, 480),
        seed=0,
        repeat=True,
    )
    val = kseg.data.make_pipeline(kseg.data.camvid_dataset(args.camvid, "val"), 4, augment=False)
    steps = 367 // args.batch_size

    model = kseg.models.DeepLabV3Plus(
        num_classes=info.num_classes,
        backbone="mobilenetv2",
        alpha=1.0,
        backbone_weights=args.weights,
    )
    kseg.training.compile_model(
        model,
        num_classes=info.num_classes,
        optimizer="adam",
        learning_rate=kseg.training.poly_schedule(1e-3, args.epochs * steps),
        loss=kseg.losses.SegmentationCrossEntropy(ignore_label=info.ignore_label),
        metrics=kseg.metrics.per_class_iou_metrics(info.num_classes, info.class_names)
        + [kseg.metrics.MeanIoU(info.num_classes, name="mean_iou")],
    )
    history = kseg.training.fit(
        model, train, val, epochs=args.epochs, steps_per_epoch=steps, run_dir=args.run_dir
    )
    kseg.viz.plot_history(history, f"{args.run_dir}/curves.png")
    scores = kseg.evaluation.evaluate_model(model, val, info.num_classes)
    for name, iou in zip(info.class_names, scores["iou"]):
        print(f"{name:12s} {iou:.3f}")
    print(f"val mIoU {scores['mean_iou']:.4f}")


if __name__ == "__main__":
    main()
