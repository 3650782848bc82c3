"""MkDocs hook: fills `<!-- benchmark: NAME -->` markers with tables read from benchmarks/results.

A page writes the marker on a line of its own; at build time the line becomes Markdown tables
drawn from `benchmarks/results/NAME.json`, so the published figures are always the committed
measurements. Each known layout has its own formatter (ratios as `1.19×`, times in ms/s/min,
IoU to three decimals) that ends with the machine conditions the file records; any other file
gets a generic table of every value it holds. A result that has not been recorded yet renders
as a note saying so and naming the script that records it.

Two wider forms exist: `<!-- benchmark: PREFIX* -->` renders every `PREFIX*.json` (results a
run writes one file per setting), and `<!-- benchmark: * -->` renders every result file that no
other marker of the page names, so a new file shows up without a page edit. An unknown NAME
with no file stops the build.
"""

import json
import math
import re
import statistics
from pathlib import Path

from mkdocs.exceptions import PluginError

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
MARKER = re.compile(r"^<!-- benchmark: (?P<name>[\w-]+\*?|\*) -->[ \t]*$", re.MULTILINE)
MISSING = "—"
NOT_MEASURED = "not measured yet"

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
VERSIONS = (
    ("python", "Python"),
    ("tensorflow", "TensorFlow"),
    ("keras", "Keras"),
    ("keras_cv", "keras-cv"),
    ("kseg", "kseg"),
    ("numpy", "NumPy"),
    ("torch", "torch"),
    ("torchvision", "torchvision"),
)
CONTEXT_MODES = (
    ("plain", "plain"),
    ("crf", "+ dense CRF"),
    ("ms_flip", "multi-scale + flip"),
)
CONTEXT_EXTRA_LABELS = {"plain_os8": "plain, output stride 8"}
THROUGHPUT_MODELS = {
    "keras_cv": "keras-cv DeepLabV3Plus (output stride 32)",
    "kseg_os16": "kseg DeepLabV3Plus, output stride 16",
    "kseg_os32": "kseg DeepLabV3Plus, output stride 32",
}
KERNELS = {
    "conv3x3_256_gflops": "3×3 convolution, 256 → 256 channels",
    "matmul_2048_gflops": "2048 × 2048 matrix product",
}
EXPORT_FORMATS = (
    ("saved_model", "SavedModel"),
    ("tflite_float32", "TFLite float32"),
    ("tflite_float16", "TFLite float16"),
    ("tflite_int8_dynamic", "TFLite int8 dynamic"),
    ("tflite_int8_full", "TFLite int8 full"),
    ("onnx", "ONNX"),
)
CRF_SETTING_LABELS = {
    "deeplab_10it": "DeepLab v2's",
    "readme_5it": "pydensecrf README's",
}
MASK_RCNN_ROI_CALLS = {
    "train_box": "training, box branch (forward + backward)",
    "train_mask": "training, mask branch (forward + backward)",
    "infer_box": "inference, box branch",
    "infer_mask": "inference, mask branch on the detections",
    "infer_mask_top_proposals": "inference, mask branch on the top proposals",
    "train_box_forward_only": "training boxes, forward only",
    "train_mask_forward_only": "training mask rows, forward only",
}
# benchmarks/weak_vs_full.py's rows in its order, with the labels and method each uses.
WEAK_ROWS = {
    "full": ("full masks", "cross-entropy"),
    "scribbles": ("scribbles", "ScribbleSup"),
    "scribbles_ce": ("scribbles", "cross-entropy on scribbled pixels"),
    "tags_ccnn": ("tags", "Constrained CNN"),
    "tags_size_ccnn": ("tags + sizes", "Constrained CNN"),
    "tags_em_adapt": ("tags", "EM-Adapt"),
    "boxes_bbox_rect": ("boxes", "Bbox-Rect + cross-entropy"),
    "boxes_bbox_rect_unambiguous": ("boxes", "Bbox-Rect, ambiguous pixels ignored"),
    "boxes_bbox_seg": ("boxes", "Bbox-Seg + cross-entropy"),
    "boxes_em_fixed": ("boxes", "EM-Fixed"),
    "semi_mixed": ("few masks + boxes", "EM-Fixed (semi-supervised)"),
    "unified_tags": ("tags", "unified (Xu et al.) + cross-entropy"),
    "unified_boxes": ("boxes", "unified (Xu et al.) + cross-entropy"),
    "unified_scribbles": ("scribbles", "unified (Xu et al.) + cross-entropy"),
    "unified_mix": ("tags / boxes / scribbles", "unified (Xu et al.) + cross-entropy"),
}
# Keys that describe how a run was made rather than what it measured.
METADATA_KEYS = (
    "machine",
    "environment",
    "versions",
    "config",
    "settings",
    "args",
    "command",
    "note",
)


def _load(name):
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise PluginError(f"benchmarks/results/{name}.json is not valid JSON: {error}") from error


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _get(mapping, *keys):
    """`mapping[k1][k2]...`, or None where a level is absent (a partly written result)."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _cell(formatter, value):
    return formatter(value) if _is_number(value) else MISSING


def ratio(value):
    """`1.19×`: how many times one side's figure is the other's (fewer decimals when large)."""

    def text(v):
        if abs(v) >= 100:
            return f"{v:,.0f}×"
        return f"{v:.1f}×" if abs(v) >= 10 else f"{v:.2f}×"

    return _cell(text, value)


def duration(seconds):
    """Seconds as ms below one second, s below two minutes, min above."""

    def text(value):
        if value < 0.01:
            return f"{1000 * value:.1f} ms"
        if value < 1:
            return f"{1000 * value:.0f} ms"
        if value < 120:
            return f"{value:.1f} s"
        return f"{value / 60:.1f} min"

    return _cell(text, seconds)


def score(value):
    """IoU, accuracy or AP to three decimals."""
    return _cell(lambda v: f"{v:.3f}", value)


def percent(fraction, digits=1):
    return _cell(lambda v: f"{100 * v:.{digits}f}%", fraction)


def mebibytes(value):
    return _cell(lambda v: f"{v:,.0f} MiB", value)


def millions(value):
    return _cell(lambda v: f"{v / 1e6:.1f}M", value)


def rate(value):
    """Images or GFLOPs per second to three significant digits."""
    return _cell(lambda v: f"{v:.3g}", value)


def scientific(value):
    return _cell(lambda v: "0" if v == 0 else f"{v:.1e}", value)


def _number(value):
    if isinstance(value, float):
        # COCOeval writes -1 for a size range without any ground-truth object.
        return "undefined" if math.isnan(value) or value < 0 else f"{value:.3f}"
    return str(value)


def _plain(value):
    """Any JSON value as a short cell for the generic table."""
    if isinstance(value, bool) or value is None:
        return "yes" if value else ("no" if value is False else MISSING)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.4g}"
    if isinstance(value, list):
        if value and all(_is_number(v) for v in value):
            if len(value) <= 4:
                return "[" + ", ".join(_plain(v) for v in value) + "]"
            return f"{len(value)} values, median {_plain(float(statistics.median(value)))}"
        return ", ".join(_plain(v) for v in value) if len(value) <= 6 else f"{len(value)} items"
    return " ".join(str(value).split()).replace("|", "\\|")


def _code(text):
    return f"`{text}`"


def _command(text):
    """A recorded command as run from the repository root."""
    text = " ".join(str(text).split())
    # A trailing parenthesis is a remark about the run, not part of the command.
    command, _, remark = text.partition(" (")
    if re.match(r"^[\w-]+\.py\b", command):
        command = "python benchmarks/" + command
    return _code(command) + (f" ({remark}" if remark else "")


def _load_text(start, end):
    if start and end:
        return f"one-minute load average {start[0]:.1f} at the start and {end[0]:.1f} at the end"
    if start:
        return f"one-minute load average {start[0]:.1f} at the start"
    return ""


def conditions(results, versions=None, load=None, threads=None):
    """The machine conditions a result file records, as one italic paragraph.

    Reads the file's `machine`, `environment` and `versions` entries and its notes, and says which
    of load average, thread count and library versions the file does not record.

    Args:
        results: the parsed result file.
        versions: more `{package: version}` a formatter found elsewhere in the file.
        load: the load-average text, when the file keeps it outside `machine`.
        threads: the thread-count text, when the file keeps it outside `machine`.

    Returns:
        A Markdown paragraph in italics.
    """
    machine = {}
    for key in ("environment", "machine", "versions"):
        if isinstance(results.get(key), dict):
            machine.update(results[key])
    machine.update(versions or {})
    parts = []
    cpus = machine.get("cpus", machine.get("cpu_count"))
    if cpus:
        parts.append(f"{cpus} CPU cores")
    if threads is None:
        threads = machine.get("threads", machine.get("tensorflow_intra_op_threads"))
        if threads is None:
            threads = _get(results, "config", "threads")
        if threads is not None:
            threads = f"{threads} intra-op threads"
    if threads:
        parts.append(threads)
    if load is None:
        load = _load_text(machine.get("load_average_start"), machine.get("load_average_end"))
    if load:
        parts.append(load)
    found = [
        f"{label} {machine[key]}"
        for key, label in VERSIONS
        if machine.get(key) not in (None, "", "unknown")
    ]
    if found:
        parts.append(", ".join(found))
    for key in ("processor", "platform", "machine"):
        if isinstance(machine.get(key), str) and machine[key]:
            parts.append(machine[key])
            break
    when = machine.get("started_utc", machine.get("measured_at_utc"))
    if when:
        parts.append(f"started {when}")
    absent = [
        what
        for what, present in (
            ("load average", load),
            ("thread count", threads),
            ("library versions", found),
        )
        if not present
    ]
    text = (
        "Conditions recorded: " + "; ".join(parts)
        if parts
        else "The file records no machine conditions"
    )
    if absent and parts:
        text += f" (not recorded: {', '.join(absent)})"
    text += "."
    extra = [machine.get("note"), machine.get("contention"), results.get("note")]
    for note in extra:
        if isinstance(note, str) and note:
            # Capitalised unless it opens with a JSON key such as `train_seconds`.
            first = note.split()[0]
            note = note if "_" in first else note[0].upper() + note[1:]
            text += " " + note.rstrip(".") + "."
    return f"*{text}*"


def _join(*blocks):
    return "\n\n".join(block for block in blocks if block)


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
    return _join(text, conditions(results))


def peer_throughput_table(results):
    """kseg against packaged peers: images/s, paired ratios, parameters and work per case."""
    cases = results.get("cases", {})
    speed, models, commands = [], [], {}
    loads = []
    versions = {}
    for name, case in cases.items():
        kseg, peer = case.get("kseg", {}), case.get("peer", {})
        size = case.get("input_size")
        shape = f"{size[0]}×{size[1]}" if size else MISSING
        speed.append(
            (
                _code(name),
                f"{shape}, batch {case.get('batch', MISSING)}",
                rate(_get(kseg, "train", "images_per_second")),
                rate(_get(peer, "train", "images_per_second")),
                ratio(case.get("train_paired_ratio_median")),
                rate(_get(kseg, "predict", "images_per_second")),
                rate(_get(peer, "predict", "images_per_second")),
                ratio(case.get("predict_paired_ratio_median")),
            )
        )
        peer_versions = {
            key: value
            for key, value in peer.get("versions", {}).items()
            if key not in ("python", "tensorflow", "keras", "tf-keras")
        }
        library = ", ".join(f"{key} {value}" for key, value in peer_versions.items())
        models.append(
            (
                _code(name),
                _code(kseg.get("description", MISSING)),
                _code(peer.get("description", MISSING)) + (f" ({library})" if library else ""),
                f"{millions(kseg.get('parameters'))} / {millions(peer.get('parameters'))}",
                " / ".join(rate(side.get("forward_gflops_per_image")) for side in (kseg, peer)),
            )
        )
        load = case.get("load_average_1min") or {}
        if _is_number(load.get("min")) and _is_number(load.get("max")):
            loads += [load["min"], load["max"]]
        if case.get("command"):
            commands.setdefault(case["command"], []).append(name)
        versions = versions or kseg.get("versions", {})
    if not speed:
        return f"*{NOT_MEASURED}: the file holds no case.*"
    speed_table = _table(
        (
            "case",
            "input",
            "train kseg (img/s)",
            "train peer (img/s)",
            "train kseg / peer",
            "predict kseg (img/s)",
            "predict peer (img/s)",
            "predict kseg / peer",
        ),
        speed,
    )
    model_table = _table(
        (
            "case",
            "kseg model",
            "peer model",
            "parameters kseg / peer",
            "forward GFLOPs/image kseg / peer",
        ),
        models,
    )
    ran = "; ".join(
        f"{_command(command)} ({', '.join(names)})" for command, names in commands.items()
    )
    load_text = (
        f"one-minute load average between {min(loads):.1f} and {max(loads):.1f} during the blocks"
        if loads
        else ""
    )
    threads = {case.get("kseg", {}).get("intra_op_threads") for case in cases.values()} - {None}
    thread_text = (
        "TensorFlow's default thread pools on both sides (all cores)"
        if threads == {0}
        else (f"{', '.join(map(str, sorted(threads)))} intra-op threads" if threads else None)
    )
    return _join(
        speed_table,
        "*Images per second are medians over the alternating timed blocks; a ratio is the median "
        "of the per-round kseg / peer ratios (above 1: kseg is faster).*",
        model_table,
        f"*Measured by {ran}.*" if ran else "",
        conditions(results, versions=versions, load=load_text, threads=thread_text),
    )


def throughput_table(results):
    """kseg's DeepLabV3+ against keras-cv's: images/s under float32 and mixed_bfloat16."""
    measured = results.get("results", {})
    rows, precision_rows = [], []
    for key, entry in measured.items():
        model, _, precision = key.partition("/")
        reference = measured.get(f"keras_cv/{precision}", {})
        rows.append(
            (
                THROUGHPUT_MODELS.get(model, model),
                precision,
                millions(entry.get("params")),
                rate(entry.get("train_img_s")),
                rate(entry.get("inference_img_s")),
                MISSING if model == "keras_cv" else _over(entry, reference, "train_img_s"),
                MISSING if model == "keras_cv" else _over(entry, reference, "inference_img_s"),
            )
        )
        if precision == "mixed_bfloat16" and f"{model}/float32" in measured:
            single = measured[f"{model}/float32"]
            precision_rows.append(
                (
                    THROUGHPUT_MODELS.get(model, model),
                    _over(entry, single, "train_img_s"),
                    _over(entry, single, "inference_img_s"),
                )
            )
    if not rows:
        return f"*{NOT_MEASURED}: the file holds no model.*"
    config = results.get("config", {})
    setting = (
        f"*{config.get('size', '?')}×{config.get('size', '?')} inputs, batch "
        f"{config.get('batch_size', '?')}, {config.get('steps', '?')} timed steps per figure; "
        "a ratio above 1 means kseg processes more images per second than keras-cv.*"
    )
    return _join(
        _table(
            (
                "model",
                "precision",
                "parameters",
                "train (img/s)",
                "inference (img/s)",
                "train vs keras-cv",
                "inference vs keras-cv",
            ),
            rows,
        ),
        setting,
        _table(("model", "train bf16 / fp32", "inference bf16 / fp32"), precision_rows)
        if precision_rows
        else "",
        conditions(results),
    )


def _over(entry, reference, key):
    top, bottom = entry.get(key), reference.get(key)
    return ratio(top / bottom) if _is_number(top) and _is_number(bottom) and bottom else MISSING


def bf16_kernels_table(results):
    """GFLOP/s of one convolution and one matmul in float32 and bfloat16."""
    single, half = results.get("float32", {}), results.get("bfloat16", {})
    rows = [
        (
            KERNELS.get(key, key),
            rate(single.get(key)),
            rate(half.get(key)),
            _over(half, single, key),
        )
        for key in dict.fromkeys([*single, *half])
    ]
    return _join(
        _table(("kernel", "float32 (GFLOP/s)", "bfloat16 (GFLOP/s)", "bf16 / fp32"), rows),
        conditions(results),
    )


def _steps_with_warmup(entry):
    steps = str(entry.get("steps", MISSING))
    warmup = entry.get("warmup_steps")
    return f"{steps} ({warmup} warm-up)" if warmup else steps


def camvid_context_family_table(results):
    """CamVid val mIoU of the context family: plain, with the dense CRF, multi-scale + flip."""
    config = results.get("config", {})
    measured = results.get("results", {})
    planned = [name for name in str(config.get("models", "")).split(",") if name]
    names = list(dict.fromkeys([*planned, *measured]))
    extras = list(
        dict.fromkeys(
            key
            for entry in measured.values()
            for key, value in entry.items()
            if isinstance(value, dict) and key not in dict(CONTEXT_MODES)
        )
    )
    modes = [*CONTEXT_MODES, *((key, CONTEXT_EXTRA_LABELS.get(key, key)) for key in extras)]
    iou_rows, detail_rows = [], []
    for name in names:
        entry = measured.get(name)
        if entry is None:
            iou_rows.append((_code(name), NOT_MEASURED, *[MISSING] * (2 + len(modes))))
            continue
        iou_rows.append(
            (
                _code(name),
                millions(entry.get("parameters")),
                _steps_with_warmup(entry),
                duration(entry.get("train_seconds")),
                *(score(_get(entry, key, "mean_iou")) for key, _ in modes),
            )
        )
        detail_rows.append(
            (
                _code(name),
                *(score(_get(entry, key, "pixel_accuracy")) for key, _ in CONTEXT_MODES),
                *(duration(_get(entry, key, "seconds")) for key, _ in CONTEXT_MODES),
            )
        )
    if not names:
        return f"*{NOT_MEASURED}: the file holds no model.*"
    size = config.get("size") or ["?", "?"]
    scales = ", ".join(f"{s:g}" for s in config.get("ms_scales", []))
    setting = (
        f"*{config.get('epochs', '?')} epochs, batch {config.get('batch_size', '?')}, learning "
        f"rate {config.get('learning_rate', '?')}, {size[0]}×{size[1]} crops; multi-scale "
        f"scales {scales or '?'}. The first columns are CamVid val mIoU (11 classes).*"
    )
    return _join(
        _table(
            (
                "model",
                "parameters",
                "steps",
                "training time",
                *(f"mIoU {label}" for _, label in modes),
            ),
            iou_rows,
        ),
        setting,
        _table(
            (
                "model",
                *(f"pixel accuracy {label}" for _, label in CONTEXT_MODES),
                *(f"val time {label}" for _, label in CONTEXT_MODES),
            ),
            detail_rows,
        )
        if detail_rows
        else "",
        conditions(results),
    )


def _class_table(columns):
    """Per-class IoU, one column per run: `columns` maps a header to {class: IoU}."""
    classes = list(dict.fromkeys(name for values in columns.values() for name in values))
    rows = [(name, *(score(values.get(name)) for values in columns.values())) for name in classes]
    return _table(("class", *columns), rows)


def camvid_pretrained_vs_scratch_table(results):
    """ImageNet-initialised against random-initialised DeepLabV3+ on CamVid val."""
    measured = results.get("results", {})
    labels = {"imagenet": "ImageNet", "scratch": "random (scratch)"}
    rows = []
    for key, entry in measured.items():
        curve = entry.get("val_mean_iou_per_epoch") or []
        best = (
            f"{max(curve):.3f} (epoch {curve.index(max(curve)) + 1} of {len(curve)})"
            if curve
            else MISSING
        )
        rows.append(
            (
                labels.get(key, key),
                score(entry.get("val_mean_iou")),
                score(entry.get("val_pixel_accuracy")),
                best,
                str(entry.get("steps", MISSING)),
                duration(entry.get("train_seconds")),
            )
        )
    for key, label in labels.items():
        if key not in measured:
            rows.append((label, NOT_MEASURED, *[MISSING] * 4))
    config = results.get("config", {})
    size = config.get("size") or ["?", "?"]
    classes = {
        f"IoU, {labels.get(key, key)}": entry["val_class_iou"]
        for key, entry in measured.items()
        if isinstance(entry.get("val_class_iou"), dict)
    }
    return _join(
        _table(
            (
                "initialisation",
                "val mIoU (last epoch)",
                "pixel accuracy",
                "best epoch mIoU",
                "steps",
                "training time",
            ),
            rows,
        ),
        f"*{config.get('epochs', '?')} epochs, batch {config.get('batch_size', '?')}, learning "
        f"rate {config.get('learning_rate', '?')}, {size[0]}×{size[1]} inputs.*",
        _class_table(classes) if classes else "",
        conditions(results),
    )


def segnet_basic_camvid_table(results):
    """SegNet-Basic on CamVid: the paper's three scores, per-class IoU and class weights."""
    metrics = (
        ("global_accuracy", "global accuracy"),
        ("class_average_accuracy", "class average accuracy"),
        ("mean_iou", "mean IoU"),
    )
    rows = [(label, score(results.get(key))) for key, label in metrics if key in results]
    classes = {}
    if isinstance(results.get("class_iou"), dict):
        classes["IoU"] = results["class_iou"]
    per_class = _class_table(classes) if classes else ""
    weights = results.get("class_weights")
    if classes and isinstance(weights, dict):
        per_class = _table(
            ("class", "IoU", "loss weight (median frequency)"),
            [
                (name, score(iou), _cell(lambda v: f"{v:.2f}", weights.get(name)))
                for name, iou in classes["IoU"].items()
            ],
        )
    size = results.get("image_size") or ["?", "?"]
    epochs = results.get("epochs_completed_total", results.get("epochs_run"))
    settings = [
        ("image size", f"{size[0]}×{size[1]}"),
        ("epochs completed (of the planned)", f"{epochs} (of {results.get('epochs', '?')})"),
        ("steps per epoch", results.get("steps_per_epoch", MISSING)),
        ("batch size", results.get("batch_size", MISSING)),
        ("width of the first stage", results.get("num_filters", MISSING)),
        ("training time", duration(results.get("train_seconds"))),
    ]
    return _join(
        _table(("metric", "value"), rows),
        per_class,
        _table(("setting", "value"), settings),
        f"*Command: {_command(results['command'])}.*" if results.get("command") else "",
        conditions(results),
    )


RECIPE_ROWS = (
    ("deeplabv3plus_camvid", "DeepLabV3+ MobileNetV2-0.35 (ImageNet), CamVid train → val"),
    ("segnet_basic_camvid", "SegNet-Basic (from scratch), CamVid train → val"),
    ("unet_isbi", "U-Net, ISBI 2012 slices 0-19 → 20-23"),
    ("mask_rcnn_shapes", "Mask R-CNN MobileNetV2-0.35 FPN, shapes"),
)


def _recipe_summary(recipe):
    """The recipe fields a reader compares, in one cell."""
    if not isinstance(recipe, dict):
        return MISSING
    parts = []
    size = recipe.get("resize") or recipe.get("crop_size")
    if size:
        parts.append("×".join(str(v) for v in size) if isinstance(size, list) else str(size))
    if recipe.get("optimizer"):
        parts.append(f"{recipe['optimizer']} {recipe.get('learning_rate', '?'):g}")
    if recipe.get("batch_size"):
        parts.append(f"batch {recipe['batch_size']}")
    if recipe.get("epochs"):
        parts.append(f"{recipe['epochs']} epochs")
    if recipe.get("class_weighting") not in (None, "none"):
        parts.append(str(recipe["class_weighting"]).replace("_", " ") + " weights")
    return ", ".join(parts)


def _recipe_metric(scores):
    """The headline validation figure of a row: mean IoU, or mask AP for instance models."""
    if not isinstance(scores, dict):
        return MISSING, MISSING
    if "mean_iou" in scores:
        return "val mean IoU", score(scores["mean_iou"])
    for key in ("mask_AP", "segm_AP"):
        if key in scores:
            return "val mask AP", score(scores[key])
    return MISSING, MISSING


def _recipe_classes(scores):
    """Per-class IoU (or box and mask AP50 for instance rows) as `name value` pairs."""
    if not isinstance(scores, dict):
        return MISSING
    iou = scores.get("iou")
    if isinstance(iou, list):
        names = scores.get("class_names") or [str(i) for i in range(len(iou))]
        return ", ".join(f"{name} {score(value)}" for name, value in zip(names, iou))
    pairs = [
        (label, scores.get(key))
        for key, label in (("mask_AP50", "mask AP50"), ("box_AP", "box AP"))
    ]
    return (
        ", ".join(f"{label} {score(value)}" for label, value in pairs if _is_number(value))
        or MISSING
    )


def recipe_results_table(results):
    """The `finetune` recipes as `kseg train` runs them with no tuning flag: time and scores."""
    rows = []
    commands = []
    for key, label in RECIPE_ROWS:
        entry = _get(results, "results", key)
        if not isinstance(entry, dict):
            rows.append((label, MISSING, MISSING, NOT_MEASURED, MISSING, MISSING, MISSING))
            continue
        metric, value = _recipe_metric(entry.get("scores"))
        load = entry.get("load_average_before")
        rows.append(
            (
                label,
                _recipe_summary(entry.get("recipe")),
                duration(entry.get("wall_seconds")),
                f"{value} ({metric})" if value != MISSING else MISSING,
                score(_get(entry, "native_resolution", "scores", "mean_iou")),
                _recipe_classes(entry.get("scores")),
                f"{load[0]:.1f}" if isinstance(load, list) and load else MISSING,
            )
        )
        if entry.get("command"):
            commands.append(f"- {label}: {_code(entry['command'])}")
        native_command = _get(entry, "native_resolution", "command")
        if native_command:
            commands.append(f"- the same model scored at the labels' size: {_code(native_command)}")
    return _join(
        _table(
            (
                "run",
                "recipe (finetune)",
                "wall time of the command",
                "score at the recipe's size",
                "mean IoU at the labels' size",
                "per class",
                "load before",
            ),
            rows,
        ),
        "\n".join(commands),
        conditions(results),
    )


def _crf_setting(values):
    return (
        f"{values.get('iterations', '?')} iterations, θα {values.get('sxy_bilateral', 0):g}, "
        f"θβ {values.get('srgb_bilateral', 0):g}, w1 {values.get('compat_bilateral', 0):g}, "
        f"θγ {values.get('sxy_gaussian', 0):g}, w2 {values.get('compat_gaussian', 0):g}"
    )


def dense_crf_table(results):
    """kseg's dense CRF against pydensecrf: 512×512 time and agreement, 2048×2048 memory."""
    rows = []
    for key, values in results.get("settings", {}).items():
        entry = results.get(key, {})
        rows.append(
            (
                CRF_SETTING_LABELS.get(key, key),
                _crf_setting(values),
                duration(entry.get("kseg_median_s")),
                duration(entry.get("pydensecrf_median_s")),
                ratio(entry.get("time_ratio_kseg_over_pydensecrf")),
                percent(entry.get("label_agreement_with_pydensecrf"), 2),
            )
        )
    speed = _table(
        (
            "settings",
            "parameters",
            "kseg (median)",
            "pydensecrf (median)",
            "time kseg / pydensecrf",
            "same label as pydensecrf",
        ),
        rows,
    )
    memory = results.get("memory_2048") or {}
    memory_rows = [
        (
            side,
            duration(_get(memory, side, "seconds")),
            mebibytes(_get(memory, side, "peak_rss_mib")),
            mebibytes(_get(memory, side, "peak_rss_before_crf_mib")),
        )
        for side in ("kseg", "pydensecrf")
        if isinstance(memory.get(side), dict)
    ]
    source = results.get("input", {})
    size = source.get("size") or ["?", "?"]
    repeats = {
        len(entry["kseg_seconds"])
        for key in results.get("settings", {})
        if isinstance(entry := results.get(key), dict)
        and isinstance(entry.get("kseg_seconds"), list)
    }
    equal_threads = any(_get(results, key, "threads") == 1 for key in results.get("settings", {}))
    threads_text = (
        "kseg and pydensecrf each on one thread"
        if equal_threads
        else "previous method: kseg's TensorFlow on all cores against single-threaded "
        "pydensecrf (the script now runs both on one thread)"
    )
    note = (
        f"*Input: CamVid `{source.get('image', '?')}` resized to {size[0]}×{size[1]}, "
        f"{source.get('labels', '?')} synthetic label scores; {threads_text}; median of "
        f"{'/'.join(map(str, sorted(repeats))) or '?'} alternating runs per side. A time ratio "
        "below 1 means kseg is faster.*"
    )
    scaling_rows = [
        (
            CRF_SETTING_LABELS.get(key, key),
            name.split("_")[1],
            duration(_get(results, key, "kseg_median_s")),
            duration(scaling.get("kseg_median_s")),
            ratio(scaling.get("speedup_over_1_thread")),
            ratio(scaling.get("time_ratio_kseg_over_pydensecrf_1_thread")),
            percent(scaling.get("label_agreement_with_kseg_1_thread"), 2),
        )
        for key in results.get("settings", {})
        for name, scaling in (results.get(key) or {}).items()
        if name.startswith("kseg_") and name.endswith("_threads") and isinstance(scaling, dict)
    ]
    scaling_text = ""
    if scaling_rows:
        scaling_text = _join(
            _table(
                (
                    "settings",
                    "kseg threads",
                    "kseg, 1 thread",
                    "kseg, more threads",
                    "speed-up",
                    "time / pydensecrf on 1 thread",
                    "same label as kseg on 1 thread",
                ),
                scaling_rows,
            ),
            "*Thread scaling of kseg, timed in the same alternating run; not part of the "
            "equal-thread comparison above.*",
        )
    memory_text = ""
    if memory_rows:
        overlap = memory.get("label_histogram_overlap")
        one_thread = all(
            _get(memory, side, "threads") == 1
            for side in ("kseg", "pydensecrf")
            if isinstance(memory.get(side), dict)
        )
        memory_text = _join(
            _table(
                ("2048×2048, DeepLab settings", "time", "peak RSS", "peak RSS before the CRF"),
                memory_rows,
            ),
            f"*Each side alone in a fresh process{', on one thread' if one_thread else ''}; "
            f"label histograms overlap {percent(overlap, 3)}.*"
            if _is_number(overlap)
            else "",
        )
    return _join(speed, note, scaling_text, memory_text, conditions(results))


def _parity_cell(entry, select_tf_ops):
    if not isinstance(entry, dict):
        return MISSING
    if "error" in entry:
        # Converter messages run long and list graph nodes; their first clause says why.
        return f"not run: {str(entry['error']).split(' (')[0].split(':')[0][:100]}"
    if "max_abs_over_max_logit" not in entry:
        return "converted, not run (needs Flex ops)" if select_tf_ops else MISSING
    text = scientific(entry["max_abs_over_max_logit"])
    agreement = entry.get("label_agreement")
    if _is_number(agreement) and agreement < 1:
        text += f" (labels {percent(agreement, 1)})"
    return text


def export_parity_table(results):
    """Largest export error relative to the largest logit, per model and format, and file sizes."""
    models = {
        name: entry
        for name, entry in results.items()
        if isinstance(entry, dict) and name not in METADATA_KEYS
    }
    rows, sizes = [], []
    for name, entry in models.items():
        flex = bool(entry.get("select_tf_ops"))
        rows.append(
            (_code(name), *(_parity_cell(entry.get(key), flex) for key, _ in EXPORT_FORMATS))
        )
        sizes.append(
            (
                _code(name),
                *(
                    _cell(lambda v: f"{v / 1024:,.0f} kB", _get(entry, key, "bytes"))
                    for key, _ in EXPORT_FORMATS[1:5]
                ),
                ", ".join(_get(entry, "tflite_int8_full", "float32_ops") or []) or MISSING,
            )
        )
    return _join(
        _table(("model", *(label for _, label in EXPORT_FORMATS)), rows),
        "*Each cell: the largest absolute difference from the Keras model's logits divided by the "
        "largest absolute logit, on two 64×64 random images with random weights; labels agree on "
        "every pixel unless a percentage says otherwise.*",
        _table(
            (
                "model",
                *(f"{label} size" for _, label in EXPORT_FORMATS[1:5]),
                "float32 ops left in int8 full",
            ),
            sizes,
        ),
        conditions(results),
    )


def memory_growth_table(results):
    """Resident memory at the start and end of many training steps and predictions."""
    rows = [
        ("model", results.get("model", MISSING)),
        ("batch", "×".join(map(str, results.get("input", []))) or MISSING),
        ("measured after", results.get("measured_after", MISSING)),
        ("training steps", results.get("train_steps", MISSING)),
        ("predictions", results.get("predictions", MISSING)),
        ("resident memory at the start", mebibytes(results.get("rss_start_mib"))),
        ("after training", mebibytes(results.get("rss_after_training_mib"))),
        ("at the end", mebibytes(results.get("rss_end_mib"))),
        ("growth", percent(results.get("growth_fraction"), 1)),
        ("target", f"at most {percent(results.get('growth_target'), 0)}"),
        ("within target", {True: "yes", False: "no"}.get(results.get("within_target"), MISSING)),
        ("training time", duration(results.get("train_seconds"))),
        ("prediction time", duration(results.get("predict_seconds"))),
    ]
    trace = results.get("trace") or []
    trace_text = ""
    if trace:
        body = _table(
            ("phase", "step", "resident memory"),
            [(t.get("phase"), t.get("step"), mebibytes(t.get("rss_mib"))) for t in trace],
        )
        trace_text = '??? note "Resident memory along the run"\n' + "\n".join(
            "    " + line for line in body.splitlines()
        )
    return _join(
        _table(("", "value"), rows),
        trace_text,
        f"*Command: {_command(results['command'])}.*" if results.get("command") else "",
        conditions(results),
    )


def patch_vs_fcn_table(results):
    """Patch-by-patch labelling against the FCN on the same weights: time and memory per image."""
    patch, fcn = results.get("patch", {}), results.get("fcn", {})
    size = results.get("image_size") or ["?", "?"]
    rows = [
        (
            "patch by patch",
            duration(patch.get("seconds_per_image")),
            mebibytes(patch.get("peak_increment_mib")),
            f"{patch.get('measured_pixels', '?')} pixels timed, extrapolated to all"
            if patch.get("extrapolated")
            else "every pixel timed",
        ),
        (
            "FCN",
            duration(fcn.get("seconds_per_image")),
            mebibytes(fcn.get("peak_increment_mib")),
            f"median of {fcn.get('timed_runs', '?')} runs",
        ),
        (
            "patch / FCN",
            ratio(results.get("time_ratio_patch_over_fcn")),
            ratio(results.get("peak_memory_ratio_patch_over_fcn")),
            "",
        ),
    ]
    classifier = results.get("classifier", {})
    return _join(
        _table(
            (f"{size[0]}×{size[1]} image", "time per image", "peak memory above baseline", "how"),
            rows,
        ),
        f"*One `{classifier.get('type', '?')}` ({classifier.get('patch_size', '?')}×"
        f"{classifier.get('patch_size', '?')} patches, {millions(classifier.get('parameters'))} "
        f"parameters, {classifier.get('num_classes', '?')} classes) on both sides; patches in "
        f"batches of {results.get('patch_batch_size', '?')}.*",
        conditions(results),
    )


def sliding_window_memory_table(results):
    """Sliding-window against whole-image inference: time, peak memory, label agreement."""
    whole = results.get("whole_image") or {}
    rows = []
    if whole:
        rows.append(
            (
                "whole image",
                whole.get("window", MISSING),
                whole.get("windows", MISSING),
                MISSING,
                duration(whole.get("seconds")),
                mebibytes(whole.get("peak_rss_above_baseline_mib")),
                "1.00×",
                "1.00×",
                "100%",
            )
        )
    for entry in results.get("sliding_window") or []:
        rows.append(
            (
                "sliding window",
                entry.get("window", MISSING),
                entry.get("windows", MISSING),
                entry.get("batch_size", MISSING),
                duration(entry.get("seconds")),
                mebibytes(entry.get("peak_rss_above_baseline_mib")),
                ratio(entry.get("time_ratio_over_whole")),
                ratio(entry.get("memory_ratio_over_whole_above_baseline")),
                percent(entry.get("label_agreement_with_whole"), 1),
            )
        )
    image = results.get("image") or ["?", "?"]
    return _join(
        _table(
            (
                "mode",
                "window",
                "windows",
                "windows per call",
                "time",
                "peak memory above baseline",
                "time vs whole",
                "memory vs whole",
                "same label as whole",
            ),
            rows,
        ),
        f"*{results.get('model', '?')} on a {image[0]}×{image[1]} image, overlap "
        f"{results.get('overlap', '?')}, {results.get('weighting', '?')} weighting.*",
        f"*Command: {_command(results['command'])}.*" if results.get("command") else "",
        conditions(results),
    )


def mask_rcnn_timing_table(results):
    """Mask R-CNN step and inference times, and RoIAlign's share against torchvision's."""
    runs = results.get("runs") or []
    if not runs:
        return f"*{NOT_MEASURED}: the file holds no finished batch size.*"
    config = results.get("config", {})
    steps, calls = [], []
    torch_versions = {}
    for run in runs:
        batch = run.get("batch_size", MISSING)
        fractions = run.get("fractions", {})
        steps.append(
            (
                batch,
                duration(_get(run, "train_step", "median_s")),
                duration(_get(run, "inference", "median_s")),
                duration(_get(run, "inference", "median_per_image_s")),
                duration(_get(run, "paste_masks", "median_per_image_s")),
                percent(fractions.get("train_roi_align_fraction")),
                percent(fractions.get("inference_roi_align_fraction")),
                duration(fractions.get("train_step_if_torchvision_speed_s")),
                duration(fractions.get("inference_if_torchvision_speed_s")),
            )
        )
        for name, entry in (run.get("roi_align") or {}).items():
            shape = _get(run, "captured", "boxes", name.replace("_forward_only", ""), "shape")
            diff = next((v for k, v in entry.items() if k.startswith("max_abs_diff")), None)
            calls.append(
                (
                    batch,
                    MASK_RCNN_ROI_CALLS.get(name, name),
                    "×".join(map(str, shape[:2])) if shape else MISSING,
                    duration(entry.get("kseg_median_s")),
                    duration(entry.get("per_level_median_s")),
                    duration(entry.get("multiscale_median_s")),
                    ratio(entry.get("kseg_over_torchvision_per_level")),
                    scientific(diff),
                )
            )
        torch_versions = torch_versions or run.get("torch_versions", {})
    size = config.get("image_size", "?")
    return _join(
        _table(
            (
                "batch",
                "train step",
                "inference",
                "inference per image",
                "paste masks per image",
                "RoIAlign share of the train step",
                "RoIAlign share of inference",
                "train step at torchvision's RoIAlign speed",
                "inference at torchvision's RoIAlign speed",
            ),
            steps,
        ),
        f"*`kseg.models.MaskRCNN(num_classes={config.get('num_classes', '?')}, "
        f'backbone="{config.get("backbone", "?")}")`, {size}×{size} images, '
        f"{config.get('dtype', '?')}, {config.get('weights', '?')} weights, "
        f"{config.get('optimizer', '?')}; medians of {config.get('repeats', '?')} calls after "
        f"{config.get('warmup', '?')} warm-up calls.*",
        _table(
            (
                "batch",
                "RoIAlign call",
                "boxes",
                "kseg",
                "torchvision per level",
                "torchvision MultiScaleRoIAlign",
                "kseg / torchvision per level",
                "max abs. difference",
            ),
            calls,
        )
        if calls
        else "",
        conditions(
            results,
            versions={k: v for k, v in torch_versions.items() if k in ("torch", "torchvision")},
        ),
    )


def weak_vs_full_table(results):
    """One model trained from each kind of weak label, against the same model on full masks."""
    measured = results.get("results", {})
    names = list(dict.fromkeys([*WEAK_ROWS, *measured]))
    rows = []
    for name in names:
        record = measured.get(name)
        labels, method = WEAK_ROWS.get(name, (MISSING, MISSING))
        if record is None:
            rows.append((_code(name), labels, method, NOT_MEASURED, *[MISSING] * 5))
            continue
        labels, method = record.get("labels", labels), record.get("method", method)
        if "mean_iou" not in record:
            reason = record.get("not_applicable", "")
            rows.append(
                (_code(name), labels, method, f"not applicable {reason}".strip(), *[MISSING] * 5)
            )
            continue
        target = record.get("target_ratio")
        met = record.get("meets_target")
        rows.append(
            (
                _code(name),
                labels,
                method,
                score(record.get("mean_iou")),
                percent(record.get("ratio_to_full"), 0),
                f"≥ {percent(target, 0)}" if _is_number(target) else MISSING,
                {True: "yes", False: "no"}.get(met, MISSING),
                score(record.get("pseudo_label_miou")),
                duration(record.get("train_seconds")),
            )
        )
    config = results.get("config", {})
    size = config.get("size") or ["?", "?"]
    setting = (
        f"*Dataset `{config.get('dataset', '?')}` at {size[0]}×{size[1]}, "
        f"{config.get('train_samples') or 'all'} training and {config.get('val_samples') or 'all'} "
        f"validation images; {config.get('model', '?')} on {config.get('backbone', '?')} "
        f"(width {config.get('alpha', '?')}, {config.get('backbone_weights', '?')}), "
        f"{config.get('epochs', '?')} epochs per row, batch {config.get('batch_size', '?')}, "
        f"learning rate {config.get('learning_rate', '?')}. mIoU on the validation masks; "
        "the ratio is to the full-mask row.*"
    )
    if config.get("tiny"):
        setting += "\n\n*A smoke run (`--tiny`): its figures say nothing about the methods.*"
    return _join(
        _table(
            (
                "row",
                "labels",
                "method",
                "val mIoU",
                "of full-mask mIoU",
                "target",
                "target met",
                "pseudo-label mIoU",
                "training time",
            ),
            rows,
        ),
        setting,
        conditions(results),
    )


def _load_span(start, end):
    """`1.4 → 1.6`: one-minute load averages at a row's start and end."""
    if not (start and end and _is_number(start[0]) and _is_number(end[0])):
        return MISSING
    return f"{start[0]:.1f} → {end[0]:.1f}"


def _pretrained_semantic_row(name, size, image):
    return (
        _code(name),
        size.replace("x", "×"),
        duration(image.get("kseg_median_s")),
        duration(image.get("predict_path_kseg_median_s")),
        duration(image.get("torchvision_median_s")),
        ratio(image.get("time_ratio_kseg_over_torchvision")),
        ratio(image.get("predict_path_time_ratio_kseg_over_torchvision")),
        scientific(image.get("max_abs_diff")),
        scientific(image.get("max_abs_diff_over_max_logit")),
        "100%" if image.get("argmax_agreement") == 1 else percent(image.get("argmax_agreement"), 4),
    )


def _pretrained_instance_row(name, size, image):
    same = image.get("same_labels_and_order")
    return (
        _code(name),
        size.replace("x", "×"),
        duration(image.get("kseg_median_s")),
        duration(image.get("torchvision_median_s")),
        ratio(image.get("time_ratio_kseg_over_torchvision")),
        f"{image.get('detections_kseg', MISSING)} / {image.get('detections_torchvision', MISSING)}",
        {True: "yes", False: "no"}.get(same, MISSING),
        str(image.get("near_tie_swaps", MISSING)),
        scientific(image.get("boxes_max_abs_px")),
        scientific(image.get("boxes_max_abs_px_ties_paired")),
        scientific(image.get("scores_max_abs")),
        percent(image.get("mask_pixels_equal"), 3),
        percent(image.get("mask_pixels_equal_ties_paired"), 3),
    )


def pretrained_load_table(results):
    """Load times of full-size torchvision checkpoints, then kseg against torchvision per image.

    Semantic rows compare logits; Mask R-CNN rows (their images carry `boxes_max_abs_px`)
    compare detections. Rows can come from different runs, so the load table gives each
    row's own one-minute load average at its start and end.
    """
    models = results.get("models") if isinstance(results.get("models"), dict) else {}
    loads, semantic, instance = [], [], []
    for name, entry in models.items():
        loads.append(
            (
                _code(name),
                mebibytes(_quotient(entry.get("checkpoint_bytes"), 2**20)),
                duration(entry.get("read_torch_checkpoint_s")),
                duration(entry.get("first_load_s")),
                duration(entry.get("cached_load_s")),
                ratio(_quotient(entry.get("first_load_s"), entry.get("cached_load_s"))),
                _load_span(entry.get("load_average_start"), entry.get("load_average_end")),
            )
        )
        for size, image in (entry.get("images") or {}).items():
            if "boxes_max_abs_px" in image:
                instance.append(_pretrained_instance_row(name, size, image))
            else:
                semantic.append(_pretrained_semantic_row(name, size, image))
    if not loads:
        return _join(_table(("model", "load"), [(MISSING, NOT_MEASURED)]), conditions(results))
    repeats = _get(results, "input", "repeats")
    instance_repeats = _get(results, "instance_input", "repeats")
    return _join(
        _table(
            (
                "model",
                "checkpoint",
                "read_torch_checkpoint",
                "first load (verify + convert + cache)",
                "cached load",
                "first over cached",
                "load average (start → end)",
            ),
            loads,
        ),
        semantic
        and _table(
            (
                "model",
                "image",
                "kseg (eager)",
                "kseg (predict: folded, compiled)",
                "torchvision",
                "eager over torchvision",
                "predict over torchvision",
                "max abs diff",
                "over largest logit",
                "argmax agrees",
            ),
            semantic,
        ),
        semantic
        and "*Semantic models: inference times are the median of "
        f"{repeats or 'the'} calls per image after a warm-up; kseg eager is `model(image)`, "
        "kseg predict is what `kseg predict` runs: the batch-norm-folded copy in a compiled "
        "`tf.function`. Below 1× kseg takes less time.*",
        instance
        and _table(
            (
                "model",
                "image (resized to a shorter side of 800)",
                "kseg",
                "torchvision",
                "kseg over torchvision",
                "detections kseg / torchvision",
                "same labels, same order",
                "near-tie swaps",
                "boxes max abs (px)",
                "boxes, ties paired (px)",
                "scores max abs",
                "mask pixels equal",
                "mask pixels, ties paired",
            ),
            instance,
        ),
        instance
        and f"*Mask R-CNN: inference times are the median of {instance_repeats or 'the'} calls "
        "per image after a warm-up: `kseg.detection.instance_predictor` (compiled, masks pasted at "
        "the photo's size) against torchvision's `model([image])` (its transform and mask "
        "pasting included); smooth-noise images at photo sizes, the random weights rescaled so "
        "the network detects objects (tests/fixtures/torchvision_mask_rcnn_reference.py). "
        "Detections are compared row by row; a near-tie swap is two detections of one label "
        "whose scores differ by less than 1e-5 coming out of the score sort in the other order, "
        "and the paired columns compare such rows across the swap.*",
        "*Random weights with random BatchNorm statistics, written by torchvision with "
        "`torch.save`; loads from a `file://` URL into an empty cache. The two sides alternate "
        "call by call on the same intra-op threads.*",
        conditions(results),
    )


def _quotient(numerator, denominator):
    if _is_number(numerator) and _is_number(denominator) and denominator:
        return numerator / denominator
    return None


def _flatten(value, prefix=""):
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _matrix(entries):
    """A dict of flat dicts as one table (rows: outer keys), or None when it is not that shape."""
    if len(entries) < 2 or not all(isinstance(v, dict) and v for v in entries.values()):
        return None
    flat = {name: dict(_flatten(entry)) for name, entry in entries.items()}
    columns = list(dict.fromkeys(key for row in flat.values() for key in row))
    if len(columns) > 10:
        return None
    rows = [(_code(name), *(_plain(row.get(key)) for key in columns)) for name, row in flat.items()]
    return _table(("", *(column.replace("_", " ") for column in columns)), rows)


def generic_table(results):
    """Every value of a result file of unknown layout, grouped where the layout allows it."""
    if not isinstance(results, dict):
        return _table(("value",), [(_plain(results),)])
    blocks, loose = [], {}
    for key, value in results.items():
        if key in METADATA_KEYS:
            continue
        matrix = _matrix(value) if isinstance(value, dict) else None
        if matrix:
            blocks.append(f"**{key.replace('_', ' ')}**\n\n{matrix}")
        else:
            loose[key] = value
    if loose:
        rows = [(key.replace("_", " "), _plain(value)) for key, value in _flatten(loose)]
        blocks.insert(0, _table(("measurement", "value"), rows))
    settings = {
        key: results[key]
        for key in ("config", "settings", "args")
        if isinstance(results.get(key), dict)
    }
    if settings:
        rows = [
            (key.split(".", 1)[-1].replace("_", " "), _plain(value))
            for key, value in _flatten(settings)
        ]
        blocks.append(_table(("setting", "value"), rows))
    if results.get("command"):
        blocks.append(f"*Command: {_command(results['command'])}.*")
    blocks.append(conditions(results))
    return _join(*blocks)


def efficiency_table(results):
    """Ceilings, each model's share of the convolution ceiling (as built, BN folded, and frozen
    as `make_predictor` runs it), and the op profile."""
    ceilings = results.get("ceilings", {})
    after = results.get("ceilings_after_models", {})
    ceiling_rows = [
        (
            name,
            _plain(entry.get("shape") or entry.get("input_shape")),
            rate(entry.get("gflop_s")),
            rate(after.get(name, {}).get("gflop_s")),
        )
        for name, entry in ceilings.items()
    ]
    model_rows = [
        (
            name,
            rate(entry.get("gflop_per_image")),
            rate(entry.get("inference_img_s")),
            percent(entry.get("inference_share_of_conv_ceiling"), 0),
            rate(entry.get("folded_img_s")),
            ratio(entry.get("folded_over_unfolded")),
            percent(entry.get("folded_share_of_conv_ceiling"), 0),
            rate(entry.get("predict_path_img_s")),
            percent(entry.get("predict_path_share_of_conv_ceiling"), 0),
            rate(entry.get("train_img_s")),
            percent(entry.get("train_share_of_conv_ceiling"), 0),
        )
        for name, entry in results.get("models", {}).items()
    ]
    if not ceiling_rows and not model_rows:
        return f"*{NOT_MEASURED}: the file holds no measurement.*"
    blocks = []  # `conditions` repeats the file's note on the load and a tiny run
    if ceiling_rows:
        header = ("float32 ceiling", "shape", "GFLOP/s before the models", "after them")
        blocks.append(_table(header, ceiling_rows))
        if results.get("conv_ceiling_gflop_s"):
            blocks.append(
                f"Shares are of the higher convolution ceiling, "
                f"{results['conv_ceiling_gflop_s']:.0f} GFLOP/s."
            )
    if model_rows:
        header = (
            "model",
            "GFLOP/image",
            "inference (img/s)",
            "share of conv ceiling",
            "BN folded (img/s)",
            "folded / as built",
            "folded share",
            "predict path, folded and frozen (img/s)",
            "predict path share",
            "train (img/s)",
            "train share (3 passes)",
        )
        blocks.append(_table(header, model_rows))
    # Older files hold one profile under "profile"; newer ones a list under "profiles".
    profiles = results.get("profiles") or ([results["profile"]] if "profile" in results else [])
    for profile in profiles:
        blocks.extend(_op_profile_blocks(profile))
    blocks.append(conditions(results))
    return _join(*blocks)


def _op_profile_blocks(profile):
    """A caption and a table of op-time shares by type, one column per profiled variant."""
    variants = [v for v in ("unfolded", "folded", "training") if v in profile]
    if not variants:
        return []
    shares = {
        variant: {row["type"]: row["share"] for row in profile[variant]["by_type"]}
        for variant in variants
    }
    kinds = list(
        dict.fromkeys(
            row["type"] for variant in variants for row in profile[variant]["by_type"][:8]
        )
    )
    rows = [
        (kind, *(percent(shares[variant].get(kind), 1) for variant in variants)) for kind in kinds
    ]
    walls = ", ".join(
        f"{variant} {profile[variant].get('wall_ms_per_step', 0):.0f} ms" for variant in variants
    )
    caption = (
        f"*Op time by type, {profile.get('name') or profile.get('model')} "
        f"{_plain(profile.get('kwargs'))} at {profile.get('size')}×{profile.get('size')}, batch "
        f"{profile.get('batch_size')} (wall time per step: {walls}).*"
    )
    isolated = profile.get("isolated_convolutions")
    if isolated:
        caption += (
            f" *Its convolutions, each timed alone at its shape: {isolated['sum_ms']:.0f} ms "
            f"together ({isolated['gflop_s']:.0f} GFLOP/s).*"
        )
    return [caption, _table(("op type", *(f"share ({v})" for v in variants)), rows)]


DEPLOYMENT_FORMS = (
    ("keras", "Keras model (`tf.function`)"),
    ("saved_model", "SavedModel"),
    ("tflite_float32", "TFLite float32"),
    ("tflite_float16", "TFLite float16 weights"),
    ("tflite_int8_dynamic", "TFLite int8 dynamic range"),
    ("tflite_int8_full", "TFLite int8 full integer"),
)


def deployment_speed_table(results):
    """Per model: images/second, size and agreement with Keras of each exported form."""
    blocks = []
    for name, entry in results.items():
        if not isinstance(entry, dict) or "saved_model" not in entry:
            continue
        size = "×".join(map(str, entry.get("image_size") or [])) or MISSING
        rows = []
        for key, label in DEPLOYMENT_FORMS:
            form = entry.get(key) or {}
            two = form.get("threads_2", form)
            megabytes = form.get("bytes") / 2**20 if _is_number(form.get("bytes")) else None
            delegated = _get(form, "default_delegates", "delegate_nodes")
            rows.append(
                (
                    label,
                    rate(two.get("img_s")),
                    rate(_get(form, "threads_1", "img_s")),
                    _cell(lambda v: f"{v:.1f} MB", megabytes),
                    percent(form.get("label_agreement"), 2),
                    percent(form.get("label_agreement_clear_pixels"), 2),
                    scientific(form.get("max_abs_logit_difference_relative")),
                    MISSING if delegated is None else ("yes" if delegated else "no"),
                )
            )
        without = _get(entry, "tflite_float32", "threads_2_without_xnnpack", "img_s")
        rows.append(
            ("TFLite float32 without XNNPACK", rate(without), MISSING, "", "", "", "", "no")
        )
        clear = _get(entry, "saved_model", "clear_pixel_share")
        blocks.append(
            f"**{name}** ({size}, batch 1, {entry.get('weights', 'weights not recorded')}; "
            + (f"agreement on {entry['images']} images; " if entry.get("images") else "")
            + f"clear pixels: {percent(clear, 0)} of all)"
        )
        blocks.append(
            _table(
                (
                    "form",
                    "img/s, 2 threads",
                    "img/s, 1 thread",
                    "file",
                    "labels as Keras",
                    "same, clear pixels",
                    "max logit difference / max logit",
                    "XNNPACK",
                ),
                rows,
            )
        )
    blocks.append(
        "*SavedModel and Keras rows run on TensorFlow's default thread pools (all cores), in the "
        "2-thread column.*"
    )
    blocks.append(conditions(results))
    return _join(*blocks)


def input_pipeline_table(results):
    """Images/second of the training pipeline against the training step it feeds."""
    rows = []
    for name, entry in results.items():
        if not isinstance(entry, dict) or "pipeline" not in entry:
            continue
        crop = "×".join(map(str, entry.get("crop_size") or [])) or MISSING
        models = entry.get("models") or {"": {}}
        for model, rates in models.items():
            rows.append(
                (
                    f"`{name}`",
                    crop,
                    entry.get("batch_size", MISSING),
                    rate(_get(entry, "source", "img_s")),
                    rate(_get(entry, "pipeline", "img_s")),
                    model or MISSING,
                    rate(rates.get("train_img_s")),
                    rate(rates.get("fed_train_img_s")),
                    ratio(rates.get("pipeline_over_train")),
                    ratio(rates.get("fed_over_fixed")),
                    _cell(lambda v: f"{v:.1f}", _get(entry, "pipeline", "cpu_ms_per_image")),
                    percent(rates.get("pipeline_core_share_at_train_rate"), 0),
                )
            )
    header = (
        "setting",
        "crop",
        "batch",
        "decoded img/s",
        "pipeline img/s",
        "model",
        "train img/s",
        "train img/s, fed",
        "pipeline / train",
        "fed / fixed batch",
        "pipeline CPU ms/image",
        "cores it takes at the train rate",
    )
    return _join(_table(header, rows), conditions(results))


def torchvision_training_step_table(results):
    """One SGD step of torchvision's semantic models in kseg and in torchvision, per model."""
    rows = []
    for name, entry in (results.get("models") or {}).items():
        torch_versions = (
            f"torch {entry.get('torch', MISSING)}, torchvision {entry.get('torchvision', MISSING)}"
        )
        rows.append(
            (
                _code(name),
                duration(entry.get("kseg_median_s")),
                duration(entry.get("torchvision_median_s")),
                rate(entry.get("kseg_img_s")),
                rate(entry.get("torchvision_img_s")),
                ratio(entry.get("speedup_kseg_over_torchvision")),
                torch_versions,
            )
        )
    if not rows:
        return _join(_table(("model", "step"), [(MISSING, NOT_MEASURED)]), conditions(results))
    size = _get(results, "input", "size")
    batch = _get(results, "input", "batch_size")
    header = (
        "model",
        "kseg step",
        "torchvision step",
        "kseg (img/s)",
        "torchvision (img/s)",
        "kseg speed-up",
        "reference",
    )
    caption = (
        f"*Median of {_get(results, 'input', 'repeats') or 'the'} steps each, batch {batch} of "
        f"{size}×{size} images, taking turns step by step.*"
    )
    return _join(_table(header, rows), caption, conditions(results))


RENDERERS = {
    "roi_align": roi_align_table,
    "mask_rcnn_shapes": mask_rcnn_shapes_table,
    "mask_rcnn_timing": mask_rcnn_timing_table,
    "peer_throughput": peer_throughput_table,
    "throughput": throughput_table,
    "bf16_kernels": bf16_kernels_table,
    "camvid_context_family": camvid_context_family_table,
    "camvid_pretrained_vs_scratch": camvid_pretrained_vs_scratch_table,
    "segnet_basic_camvid": segnet_basic_camvid_table,
    "dense_crf": dense_crf_table,
    "export_parity": export_parity_table,
    "memory_growth": memory_growth_table,
    "patch_vs_fcn": patch_vs_fcn_table,
    "sliding_window_memory": sliding_window_memory_table,
    "weak_vs_full": weak_vs_full_table,
    "recipe_results": recipe_results_table,
    "pretrained_load": pretrained_load_table,
    "efficiency": efficiency_table,
    "deployment_speed": deployment_speed_table,
    "input_pipeline": input_pipeline_table,
    "torchvision_training_step": torchvision_training_step_table,
}
RECORDED_BY = {
    "roi_align": "benchmarks/roi_align.py",
    "mask_rcnn_shapes": "examples/mask_rcnn_shapes.py",
    "mask_rcnn_timing": "benchmarks/mask_rcnn_timing.py",
    "peer_throughput": "benchmarks/peer_throughput.py",
    "throughput": "benchmarks/throughput.py",
    "bf16_kernels": "benchmarks/bf16_kernels.py",
    "camvid_context_family": "benchmarks/camvid_context_family.py",
    "camvid_pretrained_vs_scratch": "benchmarks/camvid_pretrained_vs_scratch.py",
    "segnet_basic_camvid": "examples/segnet_basic_camvid.py",
    "dense_crf": "benchmarks/dense_crf.py",
    "export_parity": "benchmarks/export_parity.py",
    "memory_growth": "benchmarks/memory_growth.py",
    "patch_vs_fcn": "benchmarks/patch_vs_fcn.py",
    "sliding_window_memory": "benchmarks/sliding_window_memory.py",
    "weak_vs_full": "benchmarks/weak_vs_full.py",
    "recipe_results": "benchmarks/recipe_results.py",
    "pretrained_load": "benchmarks/pretrained_load.py",
    "efficiency": "benchmarks/efficiency.py",
    "deployment_speed": "benchmarks/deployment_speed.py",
    "input_pipeline": "benchmarks/input_pipeline.py",
    "torchvision_training_step": "benchmarks/torchvision_training_step.py",
}


def _family(name, table):
    """The entry of `table` for `name` or its longest `<key>_...` prefix (one file per setting)."""
    if name in table:
        return table[name]
    prefixes = [key for key in table if name.startswith(key + "_")]
    return table[max(prefixes, key=len)] if prefixes else None


def formatter_for(name):
    """The formatter of result `name`: its own, its family's, or the generic table."""
    return _family(name, RENDERERS) or generic_table


def _not_measured(name, pattern=None):
    source = _family(name, RECORDED_BY)
    by = (
        f"{source if ' ' in source else _code(source)} records it"
        if source
        else "its script records it"
    )
    return (
        f'!!! note "Not measured yet"\n    `benchmarks/results/{pattern or name + ".json"}` is '
        f"not in this checkout yet; {by}, and this section shows it once it is committed."
    )


def _render_file(name, with_title):
    results = _load(name)
    formatter = formatter_for(name)
    try:
        text = formatter(results)
    # A file still being filled in by a running script can lack what its formatter expects;
    # its values are then shown as they are rather than failing the build.
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError):
        text = generic_table(results)
    if with_title:
        text = f"**`benchmarks/results/{name}.json`**\n\n{text}"
    return text


def render(name):
    """The Markdown that replaces the marker of benchmark `name` (`NAME` or `PREFIX*`)."""
    if name.endswith("*"):
        prefix = name[:-1]
        found = sorted(path.stem for path in RESULTS.glob(f"{prefix}*.json"))
        if not found:
            return _not_measured(prefix, pattern=f"{prefix}*.json")
        return "\n\n".join(_render_file(stem, with_title=True) for stem in found)
    if not (RESULTS / f"{name}.json").is_file():
        if _family(name, RECORDED_BY) is None:
            raise PluginError(
                f"unknown benchmark marker {name!r}: no benchmarks/results/{name}.json and no "
                f"script known to record it; known: {', '.join(sorted(RECORDED_BY))}"
            )
        return _not_measured(name)
    return _render_file(name, with_title=False)


def unclaimed(names):
    """Result files that none of the marker `names` (exact or `PREFIX*`) renders."""
    exact = {name for name in names if not name.endswith("*")}
    prefixes = [name[:-1] for name in names if name.endswith("*") and name != "*"]
    return [
        path.stem
        for path in sorted(RESULTS.glob("*.json"))
        if path.stem not in exact and not any(path.stem.startswith(p) for p in prefixes)
    ]


def render_rest(names):
    """What `<!-- benchmark: * -->` becomes: every result file the page's other markers miss."""
    rest = unclaimed(names)
    if not rest:
        return "*None at present: every result file has its own section.*"
    return "\n\n".join(_render_file(stem, with_title=True) for stem in rest)


def on_page_markdown(markdown, page, config, files):
    names = [match["name"] for match in MARKER.finditer(markdown)]
    return MARKER.sub(
        lambda match: render_rest(names) if match["name"] == "*" else render(match["name"]),
        markdown,
    )
