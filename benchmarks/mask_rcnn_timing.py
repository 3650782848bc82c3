"""Mask R-CNN training step and inference times at 512x512 on the CPU, and RoIAlign's share of them.

The model is `kseg.models.MaskRCNN(num_classes=81, backbone="resnet50")` with the paper's
settings (He et al. 2017, "Mask R-CNN", with the FPN of Lin et al. 2017): a 256-channel pyramid,
2000 proposals and 512 sampled RoIs per image in training (a quarter of them, 128, go through the
mask branch), 1000 proposals and 100 detections at test time, RoIAlign with `sampling_ratio=2` to
7x7 (box head) and 14x14 (mask head). Weights are random (`backbone_weights=None`), float32; the
batch norm of the backbone is frozen, as in the paper. Images are 512x512 renderings of the
built-in shapes set (`kseg.data.shapes_instance_examples`, 1-4 instances each) padded by
`kseg.data.pad_instance_batch`; training uses the paper's SGD (momentum 0.9, weight decay 1e-4)
with a learning rate of 1e-5 instead of 0.02, at which the random weights diverge to NaN within
ten steps (NaN features and boxes would make the measured work meaningless); the cost of the
update does not depend on its size. A run whose losses are not finite stops with an error.

Measured per batch size (default 1):

- `train_step`: `model.train_on_batch` (the compiled `tf.function` train step, no XLA), the
  median of `--repeats` calls after `--warmup` untimed ones.
- `inference`: `model.predict_on_batch` (compiled `model(images)`: backbone, FPN, RPN, proposal
  NMS, box head, detection NMS, mask head), the same way; per image = batch time / batch size.
- `paste_masks`: `kseg.detection.paste_masks` of the 100 predicted 28x28 masks to full 512x512
  binary masks, in a `tf.function`; this is not part of `predict`.
- RoIAlign: one forward pass through the model's own pieces (`model.backbone`,
  `model.feature_pyramid`, `model.rpn_head`, `kseg.detection.select_proposals`,
  `kseg.detection.roi_targets`, `model.box_head`, `kseg.detection.detect`, in the order of
  `MaskRCNN.compute_losses` and `MaskRCNN.call`) captures the pyramid P2..P5 and the boxes each
  RoIAlign layer pools in a real step: the 512 sampled RoIs (box branch) and the 128 rows picked
  for the mask branch in training, the 1000 proposals and the 100 detection rows at inference
  (rows that are padding are pooled too, as in the model). `model.box_roi_align` and
  `model.mask_roi_align` are then timed on exactly those inputs, each in its own `tf.function`:
  forward only for inference, forward plus the gradient with respect to the four feature maps
  for training (an upstream gradient of ones). Their sum divided by the step's median time
  is the reported RoIAlign fraction. The layer includes its level assignment, gathers and the
  `dynamic_stitch` that restores box order, not only the sampling kernels.
- Profiler cross-check (`--profile-steps`, 0 to skip): `tf.profiler.experimental` traces a few
  train steps and inference calls; the duration of every executed op whose name lies under the
  `box_roi_align` / `mask_roi_align` scopes (forward and gradient) is summed, along with the
  CropAndResize, CropAndResizeGradImage, AvgPool and AvgPoolGrad kernels among them, and divided
  by the traced wall time and by the summed duration of all ops. Ops on the two inter-op threads
  run side by side and share the intra-op threads, so their durations overlap and stretch; this
  is a cross-check only, the direct timing above is the figure reported.
- torchvision: the same feature maps and boxes go to a subprocess running `--torch-python`
  (torch / torchvision CPU) with the same intra-op thread count.
  `per_level`: the recipe of `torchvision.ops.poolers` (one `roi_align(aligned=True,
  sampling_ratio=2)` per level on the boxes kseg assigns to it, rows scattered back in box order),
  i.e. the same work as kseg's layer. `multiscale`: the stock `torchvision.ops.MultiScaleRoIAlign`
  (its own level mapper, which agrees with kseg's except within 1e-6 of a level boundary, and
  `aligned=False`). Timed calls alternate between the two processes, one untimed warm-up per
  side; the largest difference between kseg and `per_level` forward outputs is recorded.

`benchmarks/roi_align.py` times the layers alone on synthetic boxes; its torch worker only runs
single-image forward passes, so this script has its own worker with batch indices and backward.

`--torch-python` (the interpreter of a virtual environment with CPU torch and torchvision)
defaults to the environment variable `KSEG_TORCH_PYTHON`; without flag or variable the script
stops.

Usage (the committed result):
    python benchmarks/mask_rcnn_timing.py --batch-sizes 1 2 [--repeats 7] [--threads 2]
Quick check of the script (a few minutes):
    python benchmarks/mask_rcnn_timing.py --backbone tiny --image-size 128 --repeats 2 \\
        --out mask_rcnn_timing_tiny.json
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import results_io
from locations import run_with_torch_worker, torch_python_argument

LEVELS = (2, 3, 4, 5)
MASK_SIZE = 28
COMPARED_ROWS = 64
ROI_SCOPES = ("box_roi_align", "mask_roi_align")
KERNEL_TYPES = ("CropAndResize", "CropAndResizeGradImage", "AvgPool", "AvgPoolGrad")


def median(values):
    return float(np.median(values))


# ----------------------------------------------------------------------------- torch side


def torch_worker(args):
    """Answers one timed RoIAlign call per stdin line (a JSON case); saves forward rows at EOF."""
    import torch
    import torchvision
    from torchvision.ops import MultiScaleRoIAlign, roi_align

    torch.set_num_threads(args.threads)
    data = np.load(args.inputs)
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "intra_op_threads": torch.get_num_threads(),
                "inter_op_threads": torch.get_num_interop_threads(),
            }
        ),
        flush=True,
    )
    names = [f"p{level}" for level in LEVELS]
    pyramids = {
        prefix: [
            torch.from_numpy(data[f"{prefix}_{n}"].transpose(0, 3, 1, 2).copy()) for n in names
        ]
        for prefix in ("train", "infer")
    }
    image_hw = tuple(int(v) for v in data["image_hw"])
    stock_poolers = {}

    def per_level(pyramid, rois, levels, size):
        # torchvision.ops.poolers' recipe, with the levels kseg assigned.
        result = torch.zeros(
            (len(rois), pyramid[0].shape[1], size, size),
            dtype=pyramid[0].dtype,
        )
        for index, level in enumerate(LEVELS):
            selected = torch.where(levels == level)[0]
            result[selected] = roi_align(
                pyramid[index], rois[selected], (size, size), 2.0**-level, 2, True
            )
        return result

    def multiscale(pyramid, boxes_xyxy, size):
        if size not in stock_poolers:
            stock_poolers[size] = MultiScaleRoIAlign(names, size, 2)
        features = dict(zip(names, pyramid))
        return stock_poolers[size](features, boxes_xyxy, [image_hw] * len(boxes_xyxy))

    def inputs_for(case):
        boxes = data[f"{case['boxes']}_boxes"]  # (B, N, 4) [y1, x1, y2, x2]
        batch, count = boxes.shape[:2]
        xyxy = torch.from_numpy(boxes[..., [1, 0, 3, 2]].copy())
        rois = torch.cat(
            [
                torch.arange(batch, dtype=torch.float32).repeat_interleave(count)[:, None],
                xyxy.reshape(-1, 4),
            ],
            1,
        )
        levels = torch.from_numpy(data[f"{case['boxes']}_levels"].reshape(-1).astype(np.int64))
        return rois, levels, list(xyxy)

    prepared = {}
    forward_rows = {}
    for line in sys.stdin:
        if not line.strip():
            break
        case = json.loads(line)
        key = (case["boxes"], case["recipe"], case["mode"])
        if key not in prepared:
            prepared[key] = inputs_for(case)
        rois, levels, boxes_xyxy = prepared[key]
        pyramid = pyramids[case["features"]]
        backward = case["mode"] == "forward_backward"
        if backward:
            pyramid = [p.detach().requires_grad_(True) for p in pyramid]
        start = time.perf_counter()
        with torch.set_grad_enabled(backward), torch.inference_mode(not backward):
            if case["recipe"] == "per_level":
                out = per_level(pyramid, rois, levels, case["size"])
            else:
                out = multiscale(pyramid, boxes_xyxy, case["size"])
            if backward:
                out.backward(torch.ones_like(out))
        seconds = time.perf_counter() - start
        if case["recipe"] == "per_level" and not backward:
            forward_rows[case["boxes"]] = (
                out[:COMPARED_ROWS].detach().numpy().transpose(0, 2, 3, 1).copy()
            )
        print(json.dumps({"seconds": seconds}), flush=True)
    np.savez(args.outputs, **forward_rows)


class TorchProcess:
    """The torch worker as a subprocess that runs one timed case per `time` call."""

    def __init__(self, args, inputs, outputs):
        self.outputs = outputs
        self.process = subprocess.Popen(
            [
                args.torch_python,
                str(Path(__file__).resolve()),
                "--torch-worker",
                "--inputs",
                inputs,
                "--outputs",
                outputs,
                "--threads",
                str(args.threads),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.versions = json.loads(self.process.stdout.readline())

    def time(self, case):
        self.process.stdin.write(json.dumps(case) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the torch worker stopped (exit code {self.process.wait()})")
        return json.loads(answer)["seconds"]

    def finish(self):
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        if self.process.wait() != 0:
            raise RuntimeError(f"the torch worker failed (exit code {self.process.returncode})")
        return dict(np.load(self.outputs))


# ----------------------------------------------------------------------------- TensorFlow side


def make_batch(image_size, batch_size):
    import kseg

    examples = kseg.data.shapes_instance_examples(
        "train", num_samples=batch_size, image_size=image_size, seed=0
    )
    images, targets = next(iter(kseg.data.pad_instance_batch(examples, batch_size)))
    targets = {name: targets[name] for name in ("gt_boxes", "gt_classes", "gt_masks")}
    return images, targets


def timed_calls(call, warmup, repeats):
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def capture_roi_inputs(model, images, targets):
    """The feature maps and boxes each RoIAlign layer pools in one training and one test pass."""
    import tensorflow as tf

    from kseg.detection import detect, generate_anchors, roi_targets, select_proposals
    from kseg.models.mask_rcnn import SIZE_DIVISOR
    from kseg.utils import pad_bottom_right_to_multiple

    images = pad_bottom_right_to_multiple(tf.cast(images, model.compute_dtype), SIZE_DIVISOR)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    anchors = generate_anchors(
        height, width, sizes=model.anchor_sizes, aspect_ratios=model.aspect_ratios
    )

    def pyramid_and_proposals(training, nms_counts):
        features = model.backbone(images, training=training)
        pyramid = model.feature_pyramid([features[f"P{level}"] for level in LEVELS])
        objectness, deltas = model.rpn_head(pyramid)
        proposals, _ = select_proposals(
            objectness,
            deltas,
            anchors,
            height,
            width,
            pre_nms_top_n=nms_counts[0],
            post_nms_top_n=nms_counts[1],
            nms_iou=model.rpn_nms_iou,
        )
        return pyramid[: len(LEVELS)], proposals

    train_pyramid, proposals = pyramid_and_proposals(True, model.rpn_train_nms)
    sampled = roi_targets(
        proposals,
        tf.cast(targets["gt_boxes"], tf.float32),
        tf.cast(targets["gt_classes"], tf.int32),
        targets["gt_masks"],
        num_samples=model.roi_batch_size,
        positive_fraction=model.roi_positive_fraction,
        mask_size=MASK_SIZE,
    )
    rois = sampled["rois"]
    # MaskRCNN.compute_losses sends the first round(512 * 0.25) rows, positives first, to the
    # mask branch.
    mask_rows = max(1, round(model.roi_batch_size * model.roi_positive_fraction))
    _, order = tf.math.top_k(tf.cast(sampled["classes"] > 0, tf.float32), k=mask_rows)
    mask_rois = tf.gather(rois, order, batch_dims=1)

    infer_pyramid, test_proposals = pyramid_and_proposals(False, model.rpn_test_nms)
    class_logits, box_deltas = model.box_head(model.box_roi_align([*infer_pyramid, test_proposals]))
    detections = detect(
        test_proposals,
        class_logits,
        box_deltas,
        height,
        width,
        score_threshold=model.score_threshold,
        nms_iou=model.detection_nms_iou,
        max_detections=model.detections_per_image,
    )
    return {
        "image_hw": (int(height), int(width)),
        "pyramids": {"train": train_pyramid, "infer": infer_pyramid},
        "boxes": {
            "train_box": rois,
            "train_mask": mask_rois,
            "infer_box": test_proposals,
            "infer_mask": detections["boxes"],
            # A trained model's detections are real boxes; a random one may find none, so
            # the mask branch would pool padding rows only.
            "infer_mask_top_proposals": test_proposals[:, : model.detections_per_image],
        },
        "counts": {
            "sampled_rois": int(tf.reduce_sum(tf.cast(sampled["classes"] >= 0, tf.int32))),
            "positive_rois": int(tf.reduce_sum(tf.cast(sampled["classes"] > 0, tf.int32))),
            "proposals_non_empty": int(
                tf.reduce_sum(tf.cast(tf.reduce_any(test_proposals != 0, -1), tf.int32))
            ),
            "detections": [int(n) for n in detections["num_detections"]],
        },
    }


def roi_align_cases(model):
    """(name, layer, features, boxes, output size, mode) for every RoIAlign call of a step."""
    return [
        ("train_box", model.box_roi_align, "train", 7, "forward_backward"),
        ("train_mask", model.mask_roi_align, "train", 14, "forward_backward"),
        ("infer_box", model.box_roi_align, "infer", 7, "forward"),
        ("infer_mask", model.mask_roi_align, "infer", 14, "forward"),
        ("infer_mask_top_proposals", model.mask_roi_align, "infer", 14, "forward"),
        ("train_box_forward_only", model.box_roi_align, "train", 7, "forward"),
        ("train_mask_forward_only", model.mask_roi_align, "train", 14, "forward"),
    ]


def kseg_roi_call(layer, pyramid, boxes, mode):
    import tensorflow as tf

    if mode == "forward":
        forward = tf.function(lambda features, rois: layer([*features, rois]))
        return lambda: forward(pyramid, boxes)

    @tf.function
    def forward_backward(features, rois, upstream):
        with tf.GradientTape() as tape:
            tape.watch(features)
            pooled = layer([*features, rois])
        return pooled, tape.gradient(pooled, features, output_gradients=upstream)

    pooled_shape = layer.compute_output_shape([p.shape for p in pyramid] + [boxes.shape])
    upstream = tf.ones(pooled_shape, tf.float32)
    return lambda: forward_backward(pyramid, boxes, upstream)


def _op_of(plane, event):
    """(op name, op type) of a TensorFlow op event in a host trace, else None."""
    name = plane.event_metadata[event.metadata_id].name
    if name == "ExecutorState::ProcessAsync::Start":
        # Asynchronous kernels (CropAndResize and its gradients on CPU) run inside this event;
        # the op is named in its stats.
        stats = {}
        for stat in event.stats:
            value = stat.str_value or (
                plane.stat_metadata[stat.ref_value].name if stat.ref_value else ""
            )
            stats[plane.stat_metadata[stat.metadata_id].name] = value
        if stats.get("name") and stats.get("kernel_type"):
            return stats["name"], stats["kernel_type"]
        return None
    # Synchronous op events are named "<op name>:<op type>"; executor and thread-pool events
    # (which enclose ops) contain "::".
    if "::" in name or ":" not in name:
        return None
    op_name, op_type = name.rsplit(":", 1)
    return (op_name, op_type) if op_type[:1].isalpha() or op_type.startswith("_") else None


def profile_op_times(logdir):
    """Summed op durations (seconds) under the RoIAlign scopes in the trace written to logdir."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    if not paths:
        raise RuntimeError(f"no .xplane.pb trace under {logdir}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(paths[0]).read_bytes())
    per_scope = dict.fromkeys(ROI_SCOPES, 0.0)
    per_kernel = dict.fromkeys(KERNEL_TYPES, 0.0)
    every_op = 0.0
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                op = _op_of(plane, event)
                if op is None:
                    continue
                op_name, op_type = op
                seconds = event.duration_ps * 1e-12
                every_op += seconds
                scopes = [scope for scope in ROI_SCOPES if scope in op_name]
                if not scopes:
                    continue
                per_scope[scopes[0]] += seconds
                # oneDNN builds rename pooling kernels (_MklNativeAvgPool).
                op_type = op_type.removeprefix("_MklNative").removeprefix("_Mkl")
                if op_type in per_kernel:
                    per_kernel[op_type] += seconds
    return {
        "roi_align_scopes_s": sum(per_scope.values()),
        "per_scope_s": per_scope,
        "per_kernel_type_s": per_kernel,
        "all_ops_s": every_op,
    }


def profiled(call, calls, folder):
    import tensorflow as tf

    logdir = tempfile.mkdtemp(dir=folder)
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(calls):
        call()
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    result = profile_op_times(logdir)
    result["calls"] = calls
    result["wall_s"] = wall
    result["roi_align_fraction"] = result["roi_align_scopes_s"] / wall
    result["kernel_fraction"] = sum(result["per_kernel_type_s"].values()) / wall
    # Ops on the two inter-op threads overlap and slow each other down, so their summed
    # durations exceed the wall time; the RoIAlign share of all op time corrects for that.
    result["roi_align_share_of_op_time"] = result["roi_align_scopes_s"] / result["all_ops_s"]
    return result


def level_counts(boxes):
    from kseg.layers.roi_align import assign_levels

    levels = np.asarray(assign_levels(boxes)).reshape(-1)
    return {f"P{level}": int((levels == level).sum()) for level in LEVELS}


def measure(args, batch_size, folder):
    import keras
    import tensorflow as tf

    import kseg
    from kseg.layers.roi_align import assign_levels

    keras.utils.set_random_seed(0)
    images, targets = make_batch(args.image_size, batch_size)
    model = kseg.models.MaskRCNN(num_classes=81, backbone=args.backbone)
    model.compile(
        optimizer=keras.optimizers.SGD(1e-5, momentum=0.9, weight_decay=1e-4),
        jit_compile=False,
    )
    result = {
        "batch_size": batch_size,
        "image_shape": list(images.shape[1:3]),
        "instances_per_image": [
            int(n) for n in tf.reduce_sum(tf.cast(targets["gt_classes"] > 0, tf.int32), 1)
        ],
        "parameters": model.count_params(),
        "model_config": {k: v for k, v in model.get_config().items() if k != "name"},
        "load_average_start": results_io.load_average(),
    }
    print(f"batch {batch_size}: training steps", flush=True)
    last_logs = {}

    def train_step():
        last_logs.update(model.train_on_batch(images, targets, return_dict=True))

    seconds = timed_calls(train_step, args.warmup, args.repeats)
    result["train_step"] = {
        "seconds": seconds,
        "median_s": median(seconds),
        "last_losses": {k: float(v) for k, v in last_logs.items()},
    }
    if not all(np.isfinite(list(result["train_step"]["last_losses"].values()))):
        raise FloatingPointError(
            f"training diverged: losses {result['train_step']['last_losses']}; the captured "
            "features and boxes would be NaN"
        )

    print(f"batch {batch_size}: inference", flush=True)
    predictions = {}

    def predict():
        predictions.update(model.predict_on_batch(images))

    seconds = timed_calls(predict, args.warmup, args.repeats)
    result["inference"] = {
        "seconds": seconds,
        "median_s": median(seconds),
        "median_per_image_s": median(seconds) / batch_size,
        "detections": [int(n) for n in predictions["num_detections"]],
    }

    height, width = result["image_shape"]
    paste = tf.function(
        lambda masks, boxes: kseg.detection.paste_masks(masks, boxes, height, width)
    )
    masks = tf.constant(predictions["masks"])
    boxes = tf.constant(predictions["boxes"])
    seconds = timed_calls(lambda: paste(masks, boxes), args.warmup, args.repeats)
    result["paste_masks"] = {
        "masks": list(masks.shape),
        "output": [*masks.shape[:2], height, width],
        "seconds": seconds,
        "median_s": median(seconds),
        "median_per_image_s": median(seconds) / batch_size,
    }
    result["load_average_after_model"] = results_io.load_average()

    print(f"batch {batch_size}: RoIAlign on the captured features and boxes", flush=True)
    captured = capture_roi_inputs(model, images, targets)
    detection_boxes_match = bool(
        np.allclose(captured["boxes"]["infer_mask"], predictions["boxes"], atol=1e-3)
    )
    result["captured"] = {
        **captured["counts"],
        "detection_boxes_match_predict": detection_boxes_match,
        "feature_shapes": {
            f"P{level}": list(p.shape) for level, p in zip(LEVELS, captured["pyramids"]["train"])
        },
        "boxes": {
            name: {"shape": list(b.shape), "per_level": level_counts(b)}
            for name, b in captured["boxes"].items()
        },
    }

    inputs = os.path.join(folder, f"inputs_batch{batch_size}.npz")
    arrays = {"image_hw": np.asarray(captured["image_hw"])}
    for prefix, pyramid in captured["pyramids"].items():
        for level, feature in zip(LEVELS, pyramid):
            arrays[f"{prefix}_p{level}"] = np.asarray(feature, np.float32)
    for name, b in captured["boxes"].items():
        arrays[f"{name}_boxes"] = np.asarray(b, np.float32)
        arrays[f"{name}_levels"] = np.asarray(assign_levels(b), np.int32)
    np.savez(inputs, **arrays)
    del arrays

    torch_process = TorchProcess(args, inputs, os.path.join(folder, f"out_batch{batch_size}.npz"))
    cases = []
    for name, layer, features, size, mode in roi_align_cases(model):
        boxes_name = name.replace("_forward_only", "")
        kseg_call = kseg_roi_call(
            layer, captured["pyramids"][features], captured["boxes"][boxes_name], mode
        )
        torch_cases = {
            recipe: {
                "features": features,
                "boxes": boxes_name,
                "size": size,
                "mode": mode,
                "recipe": recipe,
            }
            for recipe in ("per_level", "multiscale")
        }
        cases.append((name, mode, kseg_call, torch_cases))
    timings = {name: {"kseg": [], "per_level": [], "multiscale": []} for name, *_ in cases}
    kseg_rows = {}
    for name, mode, kseg_call, torch_cases in cases:
        # Untimed: traces the tf.function and warms torch's allocator.
        out = kseg_call()
        if mode == "forward":
            kseg_rows.setdefault(
                name.replace("_forward_only", ""), np.asarray(out)[:, :COMPARED_ROWS]
            )
        for case in torch_cases.values():
            torch_process.time(case)
    for _ in range(args.repeats):
        for name, _mode, kseg_call, torch_cases in cases:
            start = time.perf_counter()
            kseg_call()
            timings[name]["kseg"].append(time.perf_counter() - start)
            for recipe, case in torch_cases.items():
                timings[name][recipe].append(torch_process.time(case))
    torch_rows = torch_process.finish()
    result["torch_versions"] = torch_process.versions

    roi = {}
    for name, mode, *_ in cases:
        entry = {"mode": mode, **{f"{side}_seconds": t for side, t in timings[name].items()}}
        for side in ("kseg", "per_level", "multiscale"):
            entry[f"{side}_median_s"] = median(timings[name][side])
        entry["kseg_over_torchvision_per_level"] = (
            entry["kseg_median_s"] / entry["per_level_median_s"]
        )
        boxes_name = name.replace("_forward_only", "")
        if mode == "forward" and boxes_name in torch_rows:
            # Batch 1 only: the first rows of image 0 in both layouts.
            entry[f"max_abs_diff_first_{COMPARED_ROWS}_rows_image0"] = float(
                np.abs(kseg_rows[boxes_name][0] - torch_rows[boxes_name][:COMPARED_ROWS]).max()
            )
        roi[name] = entry
    result["roi_align"] = roi

    train_roi = roi["train_box"]["kseg_median_s"] + roi["train_mask"]["kseg_median_s"]
    infer_roi = roi["infer_box"]["kseg_median_s"] + roi["infer_mask"]["kseg_median_s"]
    train_torch = roi["train_box"]["per_level_median_s"] + roi["train_mask"]["per_level_median_s"]
    infer_torch = roi["infer_box"]["per_level_median_s"] + roi["infer_mask"]["per_level_median_s"]
    result["fractions"] = {
        "train_roi_align_s": train_roi,
        "train_roi_align_fraction": train_roi / result["train_step"]["median_s"],
        "inference_roi_align_s": infer_roi,
        "inference_roi_align_fraction": infer_roi / result["inference"]["median_s"],
        "train_torchvision_per_level_s": train_torch,
        "inference_torchvision_per_level_s": infer_torch,
        "train_step_if_torchvision_speed_s": result["train_step"]["median_s"]
        - train_roi
        + train_torch,
        "inference_if_torchvision_speed_s": result["inference"]["median_s"]
        - infer_roi
        + infer_torch,
        "inference_roi_align_fraction_masks_on_top_proposals": (
            roi["infer_box"]["kseg_median_s"] + roi["infer_mask_top_proposals"]["kseg_median_s"]
        )
        / result["inference"]["median_s"],
    }

    if args.profile_steps:
        print(f"batch {batch_size}: profiler traces", flush=True)
        try:
            result["profiler"] = {
                "train_step": profiled(train_step, args.profile_steps, folder),
                "inference": profiled(predict, args.profile_steps, folder),
            }
        # The trace is a cross-check; a profiler failure must not lose the measured run.
        except (ImportError, OSError, RuntimeError, ValueError, tf.errors.OpError) as error:
            result["profiler"] = {"error": f"{type(error).__name__}: {error}"}
    result["load_average_end"] = results_io.load_average()
    return result


def print_table(results):
    print()
    for run in results["runs"]:
        batch = run["batch_size"]
        fractions = run["fractions"]
        print(
            f"batch {batch}, {run['image_shape'][0]}x{run['image_shape'][1]}, "
            f"{results['config']['backbone']}"
        )
        print(f"  train step            {run['train_step']['median_s'] * 1e3:10.1f} ms")
        print(
            f"  inference             {run['inference']['median_s'] * 1e3:10.1f} ms"
            f"  ({run['inference']['median_per_image_s'] * 1e3:.1f} ms/image,"
            f" {run['inference']['detections']} detections)"
        )
        print(
            f"  paste_masks           {run['paste_masks']['median_s'] * 1e3:10.1f} ms"
            f"  ({run['paste_masks']['median_per_image_s'] * 1e3:.1f} ms/image)"
        )
        print(
            f"  RoIAlign in training  {fractions['train_roi_align_s'] * 1e3:10.1f} ms"
            f"  = {fractions['train_roi_align_fraction']:.1%} of the step"
        )
        print(
            f"  RoIAlign in inference {fractions['inference_roi_align_s'] * 1e3:10.1f} ms"
            f"  = {fractions['inference_roi_align_fraction']:.1%} of predict"
        )
        profiler = run.get("profiler", {})
        for phase in ("train_step", "inference"):
            if phase in profiler:
                p = profiler[phase]
                print(
                    f"  profiler {phase:13s} RoIAlign ops {p['roi_align_share_of_op_time']:.1%} of"
                    f" summed op time; {p['roi_align_fraction']:.1%} (scopes),"
                    f" {p['kernel_fraction']:.1%} (4 kernels) of wall time"
                )
        if "error" in profiler:
            print(f"  profiler failed: {profiler['error']}")
        print(
            f"  {'RoIAlign call (mode)':43s} {'boxes':>7s} {'kseg ms':>9s} {'tv per-level':>13s}"
            f" {'tv multiscale':>14s} {'kseg/tv':>8s} {'max diff':>9s}"
        )
        for name, entry in run["roi_align"].items():
            shape = run["captured"]["boxes"][name.replace("_forward_only", "")]["shape"]
            diff = entry.get(f"max_abs_diff_first_{COMPARED_ROWS}_rows_image0")
            print(
                f"  {name + ' (' + entry['mode'] + ')':43s} {'x'.join(map(str, shape[:2])):>7s}"
                f" {entry['kseg_median_s'] * 1e3:9.1f} {entry['per_level_median_s'] * 1e3:13.1f}"
                f" {entry['multiscale_median_s'] * 1e3:14.1f}"
                f" {entry['kseg_over_torchvision_per_level']:8.2f}"
                f" {'' if diff is None else f'{diff:9.1e}'}"
            )


def main(args):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    results = {
        "machine": results_io.machine_facts(
            tensorflow_intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
            tensorflow_inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        ),
        "config": {
            "backbone": args.backbone,
            "num_classes": 81,
            "image_size": args.image_size,
            "dtype": "float32",
            "weights": "random",
            "optimizer": "SGD(1e-5, momentum=0.9, weight_decay=1e-4)",
            "jit_compile": False,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "threads": args.threads,
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        for batch_size in args.batch_sizes:
            results["runs"].append(measure(args, batch_size, folder))
            keras.backend.clear_session()
            # Written after every batch size, so a later, longer one cannot lose the earlier.
            results_io.write_result(args.out, results)
    print_table(results)
    print("wrote", args.out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile-steps", type=int, default=2)
    torch_python = torch_python_argument(parser)
    parser.add_argument("--out", default=results_io.result_path("mask_rcnn_timing"))
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
    run_with_torch_worker(parser, torch_python, main, torch_worker)
