"""MkDocs hook: fills `<!-- benchmark: NAME -->` markers with tables read from benchmarks/results.

A page writes the marker on a line of its own; at build time the line becomes a Markdown table
drawn from `benchmarks/results/NAME.json`, so the published figures are always the committed
measurements. A result that has not been recorded yet renders as a note saying so and naming
the script that records it. An unknown NAME stops the build.
"""

import json
import math
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
MARKER = re.compile(r"^<!-- benchmark: (?P<name>[\w-]+) -->[ \t]*$", re.MULTILINE)

ROI_ALIGN_CASES = (
    ("single_p2", "RoIAlign, every box on P2"),
    ("multilevel", "MultiLevelRoIAlign, P2..P5 by the FPN rule"),
)
SHAPES_METRICS = (
    ("mask_AP", "mask AP"),
    ("mask_AP50", "mask AP50"),
    ("mask_AP75", "mask AP75"),
    ("mask_APs", "mask AP small"),
    ("mask_APm", "mask AP medium"),
    ("mask_APl", "mask AP large"),
    ("box_AP", "box AP"),
    ("box_AP50", "box AP50"),
    ("box_AP75", "box AP75"),
)
SHAPES_SETTINGS = (
    ("image_size", "image size"),
    ("backbone", "backbone"),
    ("alpha", "width multiplier"),
    ("weights", "backbone start"),
    ("fpn_channels", "pyramid channels"),
    ("train_images", "training images"),
    ("val_images", "held-out images"),
    ("batch_size", "batch size"),
    ("epochs", "epochs"),
    ("steps_per_epoch", "steps per epoch"),
    ("learning_rate", "learning rate"),
    ("max_train_minutes", "time limit (minutes)"),
)

TRAINING_TIMES = (
    ("train_seconds", "training time (minutes)"),
    # examples/mask_rcnn_shapes.py resumes interrupted runs; this counts its last call only.
    ("train_seconds_this_call", "training time of the last call (minutes)"),
)


def _load(name):
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _load_note(machine):
    start, end = machine.get("load_average_start"), machine.get("load_average_end")
    if not start or not end:
        return ""
    # Other jobs shared the cores; both sides ran interleaved, so they shared the slowdown.
    return f", one-minute load average {start[0]:.1f} before and {end[0]:.1f} after"


def roi_align_table(results):
    """Median times and largest differences of kseg's RoIAlign against torchvision's."""
    rows = []
    for mode, label in ROI_ALIGN_CASES:
        for key, case in results.items():
            if not key.startswith(mode + "_") or not isinstance(case, dict):
                continue
            boxes, size = re.match(rf"{mode}_(\d+)boxes_(\d+x\d+)$", key).groups()
            rows.append(
                (
                    label,
                    boxes,
                    size.replace("x", "×"),
                    f"{1000 * case['kseg_median_s']:.0f}",
                    f"{1000 * case['torchvision_median_s']:.0f}",
                    f"{case['torchvision_median_s'] / case['kseg_median_s']:.1f}×",
                    f"{case['max_abs_diff_first_64_boxes']:.1e}",
                )
            )
    machine = results.get("machine", {})
    setting = results.get("input", {})
    note = (
        f"\n\n*`benchmarks/roi_align.py`: median of {results.get('repeats', '?')} calls, "
        f"{setting.get('channels', '?')}-channel pyramid of a {setting.get('image_size', '?')}² "
        f"image, sampling ratio {setting.get('sampling_ratio', '?')}, aligned; "
        f"TensorFlow {machine.get('tensorflow', '?')} on {machine.get('cpus', '?')} CPU cores "
        f"({machine.get('threads', '?')} threads each side){_load_note(machine)}. The last "
        "column is the largest absolute difference over the first 64 boxes.*"
    )
    header = (
        "case",
        "boxes",
        "output",
        "kseg (ms)",
        "torchvision (ms)",
        "kseg speed-up",
        "max abs. difference",
    )
    return _table(header, rows) + note


def _number(value):
    if isinstance(value, float):
        # COCOeval writes -1 for a size range without any ground-truth object.
        return "undefined" if math.isnan(value) or value < 0 else f"{value:.3f}"
    return str(value)


def mask_rcnn_shapes_table(results):
    """COCO AP of the shapes Mask R-CNN run, with the settings it was trained with."""
    metrics = results.get("metrics", results)
    settings = results.get("args", results.get("settings", {}))
    rows = [(label, _number(metrics[key])) for key, label in SHAPES_METRICS if key in metrics]
    if not rows:
        # An unexpected layout still shows every number the file holds.
        rows = [
            (key, _number(value))
            for key, value in results.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
    text = _table(("metric", "value"), rows)
    if "num_images" in metrics:
        text += f"\n\n*COCOeval on {metrics['num_images']} held-out shapes images.*"
    chosen = [(label, settings[key]) for key, label in SHAPES_SETTINGS if key in settings]
    for key, label in TRAINING_TIMES:
        if isinstance(results.get(key), (int, float)):
            chosen.append((label, f"{results[key] / 60:.0f}"))
    if chosen:
        text += "\n\n" + _table(("setting", "value"), chosen)
    return text


RENDERERS = {"roi_align": roi_align_table, "mask_rcnn_shapes": mask_rcnn_shapes_table}
RECORDED_BY = {
    "roi_align": "benchmarks/roi_align.py",
    "mask_rcnn_shapes": "examples/mask_rcnn_shapes.py",
}


def render(name):
    """The Markdown that replaces the marker of benchmark `name`."""
    if name not in RENDERERS:
        raise PluginError(
            f"unknown benchmark marker {name!r}; known: {', '.join(sorted(RENDERERS))}"
        )
    results = _load(name)
    if results is None:
        return (
            f'!!! note "Not measured yet"\n    `benchmarks/results/{name}.json` is not in this '
            f"checkout yet; `{RECORDED_BY[name]}` records it, and this section shows it once "
            "it is committed."
        )
    return RENDERERS[name](results)


def on_page_markdown(markdown, page, config, files):
    return MARKER.sub(lambda match: render(match["name"]), markdown)
