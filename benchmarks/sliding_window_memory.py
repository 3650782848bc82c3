"""Wall time and peak memory of sliding-window inference against one pass over a 2048x2048 image.

Both sides run `kseg.inference.sliding_window.sliding_window_predict` on the same
`kseg.models.DeepLabV3Plus` (MobileNetV2 backbone, random weights, 19 classes as for Cityscapes,
output stride 16), the same random 2048x2048 image and the same compiled softmax core: the
whole-image side uses one window as large as the image, which is exactly a single forward pass on
the whole image plus the cheap stitching; the sliding side uses `--window` windows with
`--overlap`, once for each of `--batch-sizes` windows per model call. Each side runs in its own
subprocess; its peak resident set size (`resource.getrusage`, Linux KiB) is reported absolutely
and above the process's peak after
building the model and warming the compiled core up on one small window (TensorFlow's CPU
allocator reports through neither `tf.config.experimental.get_memory_info` nor tracemalloc). The
fraction of pixels whose labels agree between the two sides is reported too: they differ where a
window's border cuts the receptive field and, above all, through ASPP's image pooling, which
averages over a window instead of the whole image; with random weights the logits are nearly tied,
so this agreement says nothing about a trained model's.

Usage:
    python benchmarks/sliding_window_memory.py [--size 2048] [--window 512] [--overlap 0.3333]
        [--batch-sizes 1,4] [--weighting uniform]
        [--out benchmarks/results/sliding_window_memory.json]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import results_io

NUM_CLASSES = 19
BACKBONE = "mobilenetv2"


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args):
    import keras

    import kseg
    from kseg.inference.sliding_window import sliding_window_predict, window_starts

    keras.utils.set_random_seed(0)
    model = kseg.models.DeepLabV3Plus(num_classes=NUM_CLASSES, backbone=BACKBONE)
    image = np.random.default_rng(0).uniform(0, 255, (args.size, args.size, 3)).astype(np.float32)
    window = args.size if args.side == "whole" else args.window
    sliding_window_predict(model, image[:64, :64], window=64)
    baseline = peak_rss_mib()
    start = time.perf_counter()
    labels = sliding_window_predict(
        model,
        image,
        window=window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        weighting=args.weighting,
        output="labels",
    )
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    np.save(args.labels, labels.astype(np.uint8))
    windows = len(window_starts(args.size, window, args.overlap)) ** 2
    print(
        json.dumps(
            {
                "window": window,
                "windows": windows,
                "seconds": round(seconds, 2),
                "peak_rss_mib": round(peak, 1),
                "peak_rss_above_baseline_mib": round(peak - baseline, 1),
                "baseline_rss_mib": round(baseline, 1),
            }
        )
    )


def run_side(args, side, batch_size, labels_path):
    command = [
        sys.executable,
        __file__,
        "--worker",
        side,
        "--labels",
        labels_path,
        "--size",
        str(args.size),
        "--window",
        str(args.window),
        "--overlap",
        str(args.overlap),
        "--batch-size",
        str(batch_size),
        "--weighting",
        args.weighting,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=1 / 3)
    parser.add_argument(
        "--batch-sizes", default="1,4", help="comma-separated windows per model call"
    )
    parser.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--weighting", default="uniform", choices=("uniform", "gaussian"))
    parser.add_argument("--out", default=results_io.result_path("sliding_window_memory"))
    parser.add_argument("--worker", choices=("whole", "sliding"), help=argparse.SUPPRESS)
    parser.add_argument("--labels", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.side = args.worker
        worker(args)
        return

    machine = results_io.machine_facts()
    # Imported for the versions the result records; the measurements run in subprocesses.
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        whole_labels = os.path.join(folder, "whole.npy")
        whole = run_side(args, "whole", 1, whole_labels)
        print("whole", whole, flush=True)
        sliding = []
        for batch_size in batch_sizes:
            labels = os.path.join(folder, f"sliding_{batch_size}.npy")
            result = run_side(args, "sliding", batch_size, labels)
            result["batch_size"] = batch_size
            result["time_ratio_over_whole"] = round(result["seconds"] / whole["seconds"], 2)
            result["memory_ratio_over_whole_above_baseline"] = round(
                result["peak_rss_above_baseline_mib"] / whole["peak_rss_above_baseline_mib"], 3
            )
            result["label_agreement_with_whole"] = round(
                float(np.mean(np.load(whole_labels) == np.load(labels))), 4
            )
            print("sliding", result, flush=True)
            sliding.append(result)
    report = {
        "benchmark": "sliding-window vs whole-image inference, one image",
        "model": f"kseg.models.DeepLabV3Plus(num_classes={NUM_CLASSES}, "
        f"backbone={BACKBONE!r}), random weights",
        "image": [args.size, args.size, 3],
        "overlap": round(args.overlap, 4),
        "weighting": args.weighting,
        "whole_image": whole,
        "sliding_window": sliding,
        "machine": machine,
    }
    results_io.write_result(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
