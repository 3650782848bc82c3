"""How the `kseg` commands print and write scores: IoU tables and COCO AP lines."""

import json
from pathlib import Path


def print_scores(scores, class_names):
    """Prints each class's IoU and the mean IoU and accuracies of `evaluate_model` scores."""
    names = class_names or [str(i) for i in range(len(scores["iou"]))]
    width = max(len(n) for n in names)
    for name, iou in zip(names, scores["iou"]):
        print(f"  {name:{width}s}  IoU {iou:.4f}")
    print(
        f"mean IoU {scores['mean_iou']:.4f}  pixel accuracy {scores['pixel_accuracy']:.4f}  "
        f"mean accuracy {scores['mean_accuracy']:.4f}"
    )


def write_scores(path, scores, class_names):
    """Writes `evaluate_model` scores (confusion matrix included) and the class names as JSON."""
    record = {
        key: (value.tolist() if hasattr(value, "tolist") else value)
        for key, value in scores.items()
    }
    record["class_names"] = list(class_names) if class_names else None
    Path(path).write_text(json.dumps(record, indent=2, allow_nan=True))


def print_instance_scores(scores):
    """Prints the mask and box AP, AP50 and AP75 of `evaluate_instances` scores."""
    for kind in ("mask", "box"):
        print(
            f"{kind:4s} AP {scores[f'{kind}_AP']:.4f}  AP50 {scores[f'{kind}_AP50']:.4f}  "
            f"AP75 {scores[f'{kind}_AP75']:.4f}"
        )
    print(f"({scores['num_images']} images)")


def write_instance_scores(path, scores, class_names):
    """Writes `evaluate_instances` scores and the object class names as JSON."""
    record = {key: float(value) for key, value in scores.items()}
    record["num_images"] = int(scores["num_images"])
    record["class_names"] = list(class_names)
    Path(path).write_text(json.dumps(record, indent=2, allow_nan=True))
