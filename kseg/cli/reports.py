"""How the `kseg` commands print and write scores: IoU tables and COCO AP lines."""

import json
import math
from pathlib import Path


def _absent_classes(scores):
    """The classes neither labelled nor predicted: their IoU is NaN, the mean leaves them out."""
    if "absent_classes" in scores:
        return list(scores["absent_classes"])
    return [index for index, iou in enumerate(scores["iou"]) if math.isnan(iou)]


def mean_iou_coverage(scores, class_names=None):
    """What the mean IoU of `evaluate_model` scores averages, in words, to print beside it.

    A class absent from both ground truth and predictions has no IoU and is left out of the
    mean, so a mean over fewer classes than the model has can read perfect when the model
    learned nothing of the missing ones; this names them.

    Args:
        scores: the dict of `kseg.evaluation.evaluate_model`.
        class_names: one name per class; default the class ids.

    Returns:
        e.g. "over 1 of 2 classes; absent from labels and predictions: foreground".

    Example:
        >>> scores = kseg.metrics.confusion_matrix_scores([[5, 0], [0, 0]])
        >>> kseg.cli.reports.mean_iou_coverage(scores, ["background", "foreground"])
        'over 1 of 2 classes; absent from labels and predictions: foreground'
    """
    names = class_names or [str(i) for i in range(len(scores["iou"]))]
    absent = _absent_classes(scores)
    total = len(scores["iou"])
    text = f"over {total - len(absent)} of {total} classes"
    if absent:
        text += f"; absent from labels and predictions: {', '.join(names[i] for i in absent)}"
    return text


def print_scores(scores, class_names):
    """Prints each class's IoU, then the mean IoU with the classes it averages, and accuracies.

    A class absent from labels and predictions prints its IoU as "nan (absent)", and the mean
    IoU line says how many classes it averages and names the absent ones.
    """
    names = class_names or [str(i) for i in range(len(scores["iou"]))]
    absent = set(_absent_classes(scores))
    width = max(len(n) for n in names)
    for index, (name, iou) in enumerate(zip(names, scores["iou"])):
        note = "  (absent from labels and predictions)" if index in absent else ""
        print(f"  {name:{width}s}  IoU {iou:.4f}{note}")
    print(
        f"mean IoU {scores['mean_iou']:.4f} ({mean_iou_coverage(scores, names)})  "
        f"pixel accuracy {scores['pixel_accuracy']:.4f}  "
        f"mean accuracy {scores['mean_accuracy']:.4f}"
    )


def write_scores(path, scores, class_names):
    """Writes `evaluate_model` scores (confusion matrix included) and the class names as JSON.

    Besides every score, the record holds "present_classes" and "absent_classes" (class ids:
    the classes the mean IoU averages and those it leaves out) and "absent_class_names".
    """
    record = {
        key: (value.tolist() if hasattr(value, "tolist") else value)
        for key, value in scores.items()
    }
    absent = _absent_classes(scores)
    record["absent_classes"] = absent
    record["present_classes"] = [i for i in range(len(scores["iou"])) if i not in absent]
    names = class_names or [str(i) for i in range(len(scores["iou"]))]
    record["absent_class_names"] = [names[i] for i in absent]
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
