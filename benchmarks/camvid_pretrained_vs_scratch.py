"""DeepLabV3+ (MobileNetV2-0.35) on CamVid: ImageNet-initialised versus random-initialised.

Both runs share one recipe and one budget: CamVid train (367 images) -> val (101), images and
masks downsampled from 360x480 to 192x256 (image bilinear, mask nearest), random scale 0.75-1.5,
crop 192x256, horizontal flip, batch 8, Adam with a poly schedule, batch-norm momentum 0.9,
float32, the same number of steps. Validation mIoU is computed over the 11 classes at 192x256,
void ignored.

The ImageNet weights are keras.applications' own file; `--weights-dir` points at a folder that
holds it (copied into a private Keras cache), so the run works without a network.

`--camvid` (the CamVid root) and `--weights-dir` default to the environment variables
`KSEG_CAMVID` and `KSEG_WEIGHTS_DIR`; without flag or variable the script stops.

Usage:
    python benchmarks/camvid_pretrained_vs_scratch.py --camvid ../shared/data/camvid \
        --weights-dir ../shared/weights [--epochs 12] [--out benchmarks/results/camvid.json]
"""

import argparse
import os
import time

import results_io
from camvid_recipe import SIZE, camvid_pairs, camvid_training_batches, steps_per_epoch
from locations import location_argument, private_keras_home


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    location_argument(parser, "--camvid", "KSEG_CAMVID", "CamVid root")
    location_argument(
        parser, "--weights-dir", "KSEG_WEIGHTS_DIR", "folder holding keras.applications' .h5 files"
    )
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--num-filters", type=int, default=256)
    parser.add_argument("--only", choices=("imagenet", "scratch"))
    parser.add_argument("--out", default=results_io.result_path("camvid_pretrained_vs_scratch"))
    args = parser.parse_args()
    machine = results_io.machine_facts()

    os.environ["KERAS_HOME"] = private_keras_home(args.weights_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras

    import kseg

    info = kseg.data.camvid_info()
    train = camvid_training_batches(args.camvid, args.batch_size)
    val = kseg.data.make_pipeline(camvid_pairs(args.camvid, "val"), 8, augment=False)
    steps = steps_per_epoch(args.batch_size)

    results = {}
    runs = [args.only] if args.only else ["imagenet", "scratch"]
    for init in runs:
        keras.utils.set_random_seed(0)
        model = kseg.models.DeepLabV3Plus(
            num_classes=info.num_classes,
            backbone="mobilenetv2",
            alpha=0.35,
            backbone_weights="imagenet" if init == "imagenet" else None,
            num_filters=args.num_filters,
        )
        kseg.training.set_batchnorm_momentum(model, 0.9)
        kseg.training.compile_model(
            model,
            num_classes=info.num_classes,
            optimizer="adam",
            learning_rate=kseg.training.poly_schedule(args.learning_rate, args.epochs * steps),
            loss=kseg.losses.SegmentationCrossEntropy(),
            metrics=[kseg.metrics.MeanIoU(info.num_classes, name="mean_iou")],
            jit_compile=False,
        )
        start = time.perf_counter()
        history = model.fit(
            train,
            validation_data=val,
            epochs=args.epochs,
            steps_per_epoch=steps,
            verbose=2,
        )
        seconds = time.perf_counter() - start
        scores = kseg.evaluation.evaluate_model(model, val, info.num_classes, progress=False)
        results[init] = {
            "val_mean_iou": scores["mean_iou"],
            "val_pixel_accuracy": scores["pixel_accuracy"],
            "val_class_iou": dict(zip(info.class_names, scores["iou"].tolist())),
            "val_mean_iou_per_epoch": history.history["val_mean_iou"],
            "train_seconds": seconds,
            "steps": args.epochs * steps,
        }
        print(f"{init}: val mIoU {scores['mean_iou']:.4f} after {seconds:.0f} s", flush=True)

    report = {"config": vars(args) | {"size": SIZE}, "machine": machine, "results": results}
    print(f"wrote {results_io.write_result(args.out, report)}")


if __name__ == "__main__":
    main()
