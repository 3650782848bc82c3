"""Time of kseg's RoIAlign and MultiLevelRoIAlign against torchvision's roi_align on the CPU.

Inputs: the FPN levels of a 512x512 image, P2..P5 (128^2, 64^2, 32^2 and 16^2 cells, strides
4..32) with 256 channels (standard normal, batch 1), and 512 or 1000 boxes whose sides are
log-uniform in [16, 512] pixels with aspect ratios in [1/2, 2], clipped to the image (seed 0).
Both sides pool with `aligned=True` and `sampling_ratio=2` to 7x7 (box head) or 14x14 (mask
head):

- `single_p2`: every box from P2 (`spatial_scale=1/4`): kseg `RoIAlign` vs one
  `torchvision.ops.roi_align` call.
- `multilevel`: every box from the level of the FPN rule (Lin et al. 2017, Eq. 1, P2..P5):
  kseg `MultiLevelRoIAlign` vs torchvision's own recipe (`torchvision.ops.poolers`): per level,
  select the boxes of that level, `roi_align` them and scatter the rows back in box order.
  Both sides get the same levels, computed by `kseg.layers.roi_align.assign_levels`.

kseg runs in a `tf.function` traced once before timing; torchvision runs eagerly in its own
virtual environment as a subprocess that waits for a line on stdin before each timed call, so
the two sides alternate and share whatever else the machine is doing. Both use the same number
of intra-op threads (`--threads`, TensorFlow's inter-op pool set to the same). Each case gets one
untimed warm-up call per side, then the median of `--repeats` timed calls. The JSON also records
the largest difference between the two sides' outputs on the first 64 boxes of each case, and
the load average before and after (other jobs may share the CPU).

`--torch-python` (the interpreter of a virtual environment with CPU torch and torchvision)
defaults to the environment variable `KSEG_TORCH_PYTHON`; without flag or variable the script
stops.

Usage:
    python benchmarks/roi_align.py [--repeats 7] [--threads 2]
        [--torch-python ENV/bin/python] [--out benchmarks/results/roi_align.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import results_io
from locations import run_with_torch_worker, torch_python_argument

IMAGE_SIZE = 512
CHANNELS = 256
LEVELS = (2, 3, 4, 5)
CASES = [
    (mode, num_boxes, size)
    for mode in ("single_p2", "multilevel")
    for num_boxes in (512, 1000)
    for size in (7, 14)
]
SAMPLING_RATIO = 2
COMPARED_BOXES = 64


def case_key(mode, num_boxes, size):
    return f"{mode}_{num_boxes}boxes_{size}x{size}"


def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    pyramid = [
        rng.standard_normal((1, IMAGE_SIZE // 2**level, IMAGE_SIZE // 2**level, CHANNELS)).astype(
            np.float32
        )
        for level in LEVELS
    ]
    count = max(num_boxes for _, num_boxes, _ in CASES)
    sides = np.exp(rng.uniform(np.log(16), np.log(512), count))
    ratios = np.exp(rng.uniform(np.log(0.5), np.log(2.0), count))
    heights, widths = sides * np.sqrt(ratios), sides / np.sqrt(ratios)
    centres = rng.uniform(0, IMAGE_SIZE, (count, 2))
    boxes = np.stack(
        [
            centres[:, 0] - heights / 2,
            centres[:, 1] - widths / 2,
            centres[:, 0] + heights / 2,
            centres[:, 1] + widths / 2,
        ],
        1,
    )
    return pyramid, np.clip(boxes, 0, IMAGE_SIZE).astype(np.float32)


def torch_worker(args):
    import torch
    from torchvision.ops import roi_align

    torch.set_num_threads(args.threads)
    data = np.load(args.inputs)
    pyramid = [torch.from_numpy(data[f"p{level}"].transpose(0, 3, 1, 2).copy()) for level in LEVELS]
    boxes_yxyx = data["boxes"]
    levels_all = torch.from_numpy(data["levels"].astype(np.int64))
    rois_all = torch.from_numpy(
        np.concatenate([np.zeros((len(boxes_yxyx), 1), np.float32), boxes_yxyx[:, [1, 0, 3, 2]]], 1)
    )

    def run(mode, num_boxes, size):
        rois = rois_all[:num_boxes]
        if mode == "single_p2":
            return roi_align(pyramid[0], rois, (size, size), 0.25, SAMPLING_RATIO, True)
        levels = levels_all[:num_boxes]
        result = torch.zeros((num_boxes, CHANNELS, size, size), dtype=pyramid[0].dtype)
        for index, level in enumerate(LEVELS):
            selected = torch.where(levels == level)[0]
            result[selected] = roi_align(
                pyramid[index], rois[selected], (size, size), 2.0**-level, SAMPLING_RATIO, True
            )
        return result

    outputs = {}
    with torch.inference_mode():
        for line in sys.stdin:
            key = line.strip()
            if not key:
                break
            mode, num_boxes, size = json.loads(key)
            start = time.perf_counter()
            out = run(mode, num_boxes, size)
            seconds = time.perf_counter() - start
            outputs[case_key(mode, num_boxes, size)] = (
                out[:COMPARED_BOXES].numpy().transpose(0, 2, 3, 1).copy()
            )
            print(json.dumps({"seconds": seconds}), flush=True)
    np.savez(args.outputs, **outputs)


def main(args):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from kseg.layers.roi_align import MultiLevelRoIAlign, RoIAlign, assign_levels

    pyramid, boxes = make_inputs()
    levels = np.asarray(assign_levels(boxes))
    results = {
        "machine": results_io.machine_facts(threads=args.threads),
        "input": {
            "image_size": IMAGE_SIZE,
            "channels": CHANNELS,
            "levels": {f"P{level}": list(p.shape[1:3]) for level, p in zip(LEVELS, pyramid)},
            "sampling_ratio": SAMPLING_RATIO,
            "aligned": True,
            "boxes_per_level_of_1000": {
                f"P{level}": int((levels == level).sum()) for level in LEVELS
            },
        },
        "repeats": args.repeats,
    }
    pyramid_tensors = [tf.constant(p) for p in pyramid]
    kseg_calls = {}
    for mode, num_boxes, size in CASES:
        box_tensor = tf.constant(boxes[None, :num_boxes])
        if mode == "single_p2":
            layer = RoIAlign(size, SAMPLING_RATIO, aligned=True, spatial_scale=0.25)
            call = tf.function(lambda b, layer=layer: layer([pyramid_tensors[0], b]))
        else:
            layer = MultiLevelRoIAlign(size, SAMPLING_RATIO)
            call = tf.function(lambda b, layer=layer: layer([*pyramid_tensors, b]))
        kseg_calls[(mode, num_boxes, size)] = (call, box_tensor)

    with tempfile.TemporaryDirectory() as folder:
        inputs = os.path.join(folder, "inputs.npz")
        outputs_path = os.path.join(folder, "outputs.npz")
        np.savez(
            inputs,
            boxes=boxes,
            levels=levels,
            **{f"p{level}": p for level, p in zip(LEVELS, pyramid)},
        )
        worker = subprocess.Popen(
            [
                args.torch_python,
                __file__,
                "--torch-worker",
                "--inputs",
                inputs,
                "--outputs",
                outputs_path,
                "--threads",
                str(args.threads),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        def torch_timed(case):
            worker.stdin.write(json.dumps(case) + "\n")
            worker.stdin.flush()
            return json.loads(worker.stdout.readline())["seconds"]

        def kseg_timed(case):
            call, box_tensor = kseg_calls[case]
            start = time.perf_counter()
            out = call(box_tensor)
            seconds = time.perf_counter() - start
            return seconds, out

        timings = {case: {"kseg": [], "torchvision": []} for case in CASES}
        kseg_heads = {}
        for case in CASES:
            # Untimed: kseg traces its tf.function, torch allocates and warms its kernels.
            _, out = kseg_timed(case)
            kseg_heads[case] = np.asarray(out[0, :COMPARED_BOXES])
            del out
            torch_timed(case)
        for _ in range(args.repeats):
            for case in CASES:
                timings[case]["kseg"].append(kseg_timed(case)[0])
                timings[case]["torchvision"].append(torch_timed(case))
        worker.stdin.write("\n")
        worker.stdin.flush()
        worker.wait()
        reference = np.load(outputs_path)

        print(
            f"{'case':36s} {'kseg ms':>9s} {'torchvision ms':>15s} {'ratio':>7s} {'max diff':>9s}"
        )
        for case in CASES:
            key = case_key(*case)
            difference = float(np.abs(kseg_heads[case] - reference[key]).max())
            results[key] = {
                **results_io.timing_comparison(
                    timings[case]["kseg"], timings[case]["torchvision"], "torchvision"
                ),
                f"max_abs_diff_first_{COMPARED_BOXES}_boxes": difference,
            }
            kseg_median = results[key]["kseg_median_s"]
            torch_median = results[key]["torchvision_median_s"]
            print(
                f"{key:36s} {kseg_median * 1e3:9.1f} {torch_median * 1e3:15.1f} "
                f"{kseg_median / torch_median:7.2f} {difference:9.2e}",
                flush=True,
            )
    print("wrote", results_io.write_result(args.out, results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    torch_python = torch_python_argument(parser)
    parser.add_argument("--out", default=results_io.result_path("roi_align"))
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
    run_with_torch_worker(parser, torch_python, main, torch_worker)
