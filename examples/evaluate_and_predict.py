"""Score a saved `.keras` model on a dataset split and write its predictions as PNG overlays.

The model is any `.keras` file written by kseg (`kseg train`, `model.save`, the other examples);
it reloads in Keras's safe mode once kseg is imported. Scores are per-class IoU, mean IoU and
accuracies (`kseg.evaluation.evaluate_model`), with the inference modes of
`kseg.inference.make_predictor`: several scales and left-right flips averaged (DeepLab v3's
evaluation), sliding windows (PSPNet's), and the dense CRF (DeepLab v1/v2's).

Written to `--out`: `scores.json`, `overlays/<split>_NNNN.png` (prediction over the image on the
left, ground truth on the right) and `labels/<split>_NNNN.png` (class ids); with `--images`, also
`predictions/<name>_overlay.png` and `predictions/<name>_labels.png` for each of those
unlabelled images (the names `kseg predict` uses).

Usage:
    python examples/train_semantic.py --out runs/train_semantic     # gives a model to score
    python examples/evaluate_and_predict.py --model runs/train_semantic/model.keras
    python examples/evaluate_and_predict.py --model runs/train_semantic/model.keras \\
        --scales 0.75,1,1.25 --flip --window 96 --overlap 0.33 --out runs/eval_ms
    python examples/evaluate_and_predict.py --model runs/camvid/model.keras \\
        --data ../shared/data/camvid --split test --crf --images photos/
"""

import argparse
import json
from pathlib import Path

import keras
import numpy as np
from PIL import Image

import kseg
import kseg.recipes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a .keras file")
    parser.add_argument(
        "--data", default="shapes", help="'shapes' or any source kseg.data.load_dataset reads"
    )
    parser.add_argument("--split", default="val")
    parser.add_argument("--num-classes", type=int, help="default: the model's output channels")
    parser.add_argument("--image-size", type=int, default=128, help="shapes image size")
    parser.add_argument("--num-samples", type=int, default=100, help="shapes images scored")
    parser.add_argument(
        "--scales", type=kseg.utils.parse_scales, default=(1.0,), help="e.g. 0.5,0.75,1,1.25"
    )
    parser.add_argument("--flip", action="store_true", help="also average mirrored images")
    parser.add_argument("--window", type=int, help="sliding-window size in pixels")
    parser.add_argument("--overlap", type=float, default=1 / 3, help="window overlap fraction")
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF")
    parser.add_argument("--images", nargs="*", default=(), help="unlabelled images or folders")
    parser.add_argument("--max-overlays", type=int, default=8, help="split images drawn")
    parser.add_argument("--out", default="runs/evaluate_and_predict", help="output folder")
    parser.add_argument(
        "--tiny", action="store_true", help="smoke-test size: 4 shapes images of 64 px"
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.image_size, args.num_samples, args.max_overlays = 64, 4, 2
    return args


def load_split(args):
    shapes = {"num_samples": args.num_samples, "image_size": args.image_size}
    options = shapes if args.data == "shapes" else {}
    return kseg.data.load_split(args.data, args.split, num_classes=args.num_classes, **options)


def write_prediction(labels_path, overlay_path, image, labels, palette, ground_truth=None):
    labels_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8)).save(labels_path)
    kseg.viz.save_overlay(overlay_path, image, labels, ground_truth=ground_truth, palette=palette)


def main(argv=None):
    """Evaluate, write overlays and label maps; returns the scores."""
    args = parse_args(argv)
    if not Path(args.model).is_file():
        raise SystemExit(f"model file not found: {args.model}")
    model = keras.saving.load_model(args.model)
    num_classes = args.num_classes or int(model.output.shape[-1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    source, info = load_split(args)
    predict = kseg.inference.make_predictor(
        model,
        scales=args.scales,
        flip=args.flip,
        window=args.window,
        overlap=args.overlap,
        crf=args.crf,
    )
    # Batches of one: images keep their own size, as the sliding window and the CRF expect.
    batches = kseg.data.make_pipeline(source, 1, augment=False, ignore_label=info.ignore_label)
    scores = kseg.evaluation.evaluate_model(
        model,
        batches,
        num_classes,
        ignore_label=info.ignore_label,
        predict_fn=predict,
        progress=False,
    )
    mode = (
        f"scales {','.join(f'{s:g}' for s in args.scales)}, flip {args.flip}, "
        f"window {args.window}, crf {args.crf}"
    )
    record = {
        "model": str(args.model),
        "data": args.data,
        "split": args.split,
        "inference": {
            "scales": list(args.scales),
            "flip": args.flip,
            "window": args.window,
            "overlap": args.overlap,
            "crf": args.crf,
        },
        **kseg.recipes.scores_record(scores, info.class_names),
    }
    for name, iou in zip(record["class_names"], record["iou"]):
        print(f"  {name:12s} IoU {iou:.4f}")
    (out / "scores.json").write_text(json.dumps(record, indent=2))

    palette = info.palette or kseg.viz.palette(num_classes)
    for index, (image, mask) in enumerate(source.take(args.max_overlays)):
        image, name = image.numpy(), f"{args.split}_{index:04d}.png"
        write_prediction(
            out / "labels" / name,
            out / "overlays" / name,
            image,
            predict(image[None])[0],
            palette,
            ground_truth=mask.numpy(),
        )
    for path in kseg.data.image_files(args.images) if args.images else ():
        image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        folder = out / "predictions"
        write_prediction(
            folder / f"{path.stem}_labels.png",
            folder / f"{path.stem}_overlay.png",
            image,
            predict(image[None])[0],
            palette,
        )
    print(f"{args.split} mIoU {record['mean_iou']:.4f} ({mode})")
    print(
        f"wrote {out / 'scores.json'}, {out / 'overlays'}/, {out / 'labels'}/"
        + (f", {out / 'predictions'}/" if args.images else "")
    )
    return record


if __name__ == "__main__":
    main()
