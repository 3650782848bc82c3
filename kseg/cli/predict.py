"""`kseg predict`: label maps and overlays, or instance drawings and detections, per image."""

import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

import kseg.data
import kseg.tasks
import kseg.viz
from kseg.cli import arguments

DESCRIPTION = """Writes a label PNG and a colour overlay for every input image; for a MaskRCNN
model, an instance overlay PNG and a JSON of boxes, classes and scores.
"""


def _read_image(path, dtype):
    try:
        return np.asarray(Image.open(path).convert("RGB"), dtype=dtype)
    except (UnidentifiedImageError, OSError) as error:
        raise SystemExit(f"cannot read image {path}: {error}") from None


def run(args):
    """Runs `kseg predict` with the parsed arguments (see `DESCRIPTION`)."""
    model = arguments.load_model(args.model)
    task = kseg.tasks.for_model(model)
    if task is kseg.tasks.INSTANCE:
        return _predict_instances(model, task, args, arguments.image_files(args.inputs))
    num_classes = int(model.output.shape[-1])
    predict = task.predictor(model, **arguments.inference_options(args))
    palette = kseg.viz.CAMVID_PALETTE if args.palette == "camvid" else kseg.viz.palette(num_classes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(arguments.image_files(args.inputs), desc="predicting", unit="image"):
        image = _read_image(path, np.float32)
        labels = predict(image)
        Image.fromarray(labels).save(out / f"{path.stem}_labels.png")
        Image.fromarray(task.draw(image, labels, palette=palette)).save(
            out / f"{path.stem}_overlay.png", format="PNG"
        )
    print(f"wrote predictions to {out}")


def _class_names(text, num_classes):
    """`--class-names`: comma-separated names of classes 1..K, or a COCO annotation file."""
    if text is None:
        return None
    if text.endswith(".json"):
        names = list(kseg.data.coco_categories(text).names)
    else:
        names = [name.strip() for name in text.split(",")]
    if len(names) != num_classes - 1:
        raise SystemExit(
            f"kseg: error: --class-names gives {len(names)} names but the model predicts "
            f"{num_classes - 1} object classes. Received: {text!r}"
        )
    return names


def _detections_record(path, image, detections, names, min_score):
    """The JSON record of one image's detections."""
    return {
        "image": str(path),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "box_format": "[y1, x1, y2, x2] in pixels, max exclusive",
        "min_score": min_score,
        "detections": [
            {
                "box": [round(float(v), 2) for v in box],
                "class": int(label),
                **({"class_name": names[int(label) - 1]} if names else {}),
                "score": round(float(score), 4),
                "mask_area": int(mask.sum()),
            }
            for box, label, score, mask in zip(
                detections["boxes"],
                detections["classes"],
                detections["scores"],
                detections["masks"],
            )
        ],
    }


def _predict_instances(model, task, args, files):
    arguments.refuse_semantic_flags(args, arguments.inference_flags_given(args))
    names = _class_names(args.class_names, model.num_classes)
    predict = task.predictor(model, mask_threshold=args.mask_threshold, min_score=args.min_score)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="predicting", unit="image"):
        image = _read_image(path, np.uint8)
        detections = predict(image)
        record = _detections_record(path, image, detections, names, args.min_score)
        (out / f"{path.stem}_instances.json").write_text(json.dumps(record, indent=2))
        Image.fromarray(task.draw(image, detections)).save(out / f"{path.stem}_instances.png")
    print(f"wrote instance overlays and detections to {out}")


def add_parser(commands):
    """Adds `kseg predict` and its flags to the subcommands."""
    predict = commands.add_parser("predict", help=DESCRIPTION, description=DESCRIPTION)
    predict.add_argument("--model", required=True, help="a .keras file")
    predict.add_argument("inputs", nargs="+", help="image files or folders")
    predict.add_argument("--out", default="predictions")
    predict.add_argument("--palette", default="voc", choices=("voc", "camvid"))
    predict.add_argument(
        "--class-names",
        help="MaskRCNN: names of classes 1..K, comma-separated, or the COCO "
        "annotation file the model was trained on",
    )
    predict.add_argument(
        "--min-score",
        type=float,
        default=0.5,
        help="MaskRCNN: keep detections scoring at least this",
    )
    predict.add_argument(
        "--mask-threshold",
        type=float,
        default=0.5,
        help="MaskRCNN: mask probability at which a pixel belongs to the instance",
    )
    arguments.add_inference_flags(predict)
    predict.set_defaults(handler=run)
