"""Train DeepLabV3+ on CamVid from Python with the model's finetune recipe, as `kseg train` does.

The recipe (`kseg.recipes.get("deeplabv3plus")`) is the same data the command line reads:
MobileNetV2-0.35 from the ImageNet file kseg ships, the image size, augmentation, optimizer,
schedule, class weighting and length of the run. `kseg.recipes.fit_recipe` trains it and saves
`recipe.json` beside the checkpoints, so `kseg evaluate --model RUN_DIR/model.keras` and
`kseg predict` run the model the way it was trained. Any field can be changed with
`recipe.replace(...)`, as the `--epochs` flag here shows.

Usage:
    python examples/camvid_deeplabv3plus.py --camvid ../shared/data/camvid --run-dir runs/camvid_api

Rerunning the same command after an interruption resumes from the last finished epoch.
"""

import argparse
import json
import time
from pathlib import Path

import kseg


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", required=True, help="CamVid folder (train/, trainannot/, ...)")
    parser.add_argument("--run-dir", default="runs/camvid_api")
    parser.add_argument("--epochs", type=int, default=None, help="None: the recipe's")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="None: the recipe's")
    parser.add_argument(
        "--num-samples", type=int, default=None, help="use the first N images of each split"
    )
    args = parser.parse_args()

    recipe = kseg.recipes.get("deeplabv3plus", "finetune")
    overrides = {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch}
    recipe = recipe.replace(**{key: value for key, value in overrides.items() if value is not None})
    print(recipe.summary())

    info = kseg.data.camvid_info()
    train = kseg.data.camvid_dataset(args.camvid, "train")
    val = kseg.data.camvid_dataset(args.camvid, "val")
    if args.num_samples:
        train, val = train.take(args.num_samples), val.take(args.num_samples)
    start = time.perf_counter()
    model = kseg.recipes.fit_recipe(
        recipe,
        train,
        val,
        num_classes=info.num_classes,
        run_dir=args.run_dir,
        class_names=info.class_names,
        palette=info.palette_array()[: info.num_classes].tolist(),
        monitor="val_mean_iou",
    )
    seconds = time.perf_counter() - start
    model.save(Path(args.run_dir) / "model.keras")

    # Scored as trained: validation images at the recipe's size.
    val = val.map(lambda image, mask: kseg.data.resize_pair(image, mask, recipe.resize))
    val_batches = kseg.data.make_pipeline(val, 4, augment=False)
    scores = kseg.evaluation.evaluate_model(model, val_batches, info.num_classes)
    for name, iou in zip(info.class_names, scores["iou"]):
        print(f"{name:12s} {iou:.3f}")
    print(f"val mIoU {scores['mean_iou']:.4f} after {seconds / 60:.1f} min of fit_recipe")
    record = {"mean_iou": float(scores["mean_iou"]), "iou": [float(v) for v in scores["iou"]]}
    record |= {"class_names": list(info.class_names), "fit_seconds": seconds}
    (Path(args.run_dir) / "scores.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
