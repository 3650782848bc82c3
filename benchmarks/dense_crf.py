"""Time per 512x512 image of kseg's dense CRF against pydensecrf, label agreement, 2048x2048 memory.

Both sides run the fully-connected CRF of Krahenbuhl & Koltun (2011) with the permutohedral
lattice: kseg through `kseg.inference.dense_crf` (TensorFlow, sparse splat/slice products,
all cores), pydensecrf2 (Krahenbuhl's C++ code, one core) in its own virtual environment as a
subprocess that waits for a line on stdin before each timed run, so the two sides alternate
in one run and share whatever else the machine is doing. Each timed run is the whole call
from image and probabilities to marginals: lattice construction plus mean-field iterations
(kseg's tf.function is traced once before timing). The input is a CamVid val image resized
to 512x512 with synthetic 21-class scores (annotation bonus plus smooth and per-pixel noise).

Settings: DeepLab v2's (w1=4, theta_alpha=67, theta_beta=3, w2=3, theta_gamma=1, 10
iterations, kseg's defaults) and pydensecrf's README settings (10, 80, 13, 3, 3) with 5
iterations, the configuration of the reference timing in the team data's `refs/` folder.

The 2048x2048 check runs each side alone in a fresh subprocess (same image resized, DeepLab
settings) and reports its peak resident set size (`resource.getrusage`).

`--camvid` (the CamVid root; one val image is read) and `--pydensecrf-python` (the interpreter
of a virtual environment with pydensecrf2 and numpy) default to the environment variables
`KSEG_CAMVID` and `KSEG_PYDENSECRF_PYTHON`; without flag or variable the script stops.

Usage:
    python benchmarks/dense_crf.py [--repeats 5] [--pydensecrf-python ENV/bin/python]
        [--camvid CAMVID] [--out benchmarks/results/dense_crf.json]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import results_io
from locations import location_argument, require_locations

LABELS = 21
SETTINGS = {
    "deeplab_10it": (
        {
            "sxy_gaussian": 1.0,
            "compat_gaussian": 3.0,
            "sxy_bilateral": 67.0,
            "srgb_bilateral": 3.0,
            "compat_bilateral": 4.0,
        },
        10,
    ),
    "readme_5it": (
        {
            "sxy_gaussian": 3.0,
            "compat_gaussian": 3.0,
            "sxy_bilateral": 80.0,
            "srgb_bilateral": 13.0,
            "compat_bilateral": 10.0,
        },
        5,
    ),
}


def peak_rss_mib():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_inputs(camvid, size, seed=0):
    from PIL import Image

    name = min((Path(camvid) / "val").glob("*.png")).name
    image = (
        Image.open(Path(camvid) / "val" / name).convert("RGB").resize((size, size), Image.BILINEAR)
    )
    truth = np.asarray(
        Image.open(Path(camvid) / "valannot" / name).resize((size, size), Image.NEAREST), np.int64
    )
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, 1.6, (LABELS, 8, 8)).astype(np.float32)
    smooth = np.stack(
        [np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR)) for c in coarse], -1
    )
    logits = smooth + rng.normal(0.0, 0.6, (size, size, LABELS))
    valid = truth < 11
    logits[valid, truth[valid]] += 2.0
    logits -= logits.max(-1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(-1, keepdims=True)
    return np.asarray(image, np.uint8), probabilities.astype(np.float32), name


def pydensecrf_run(image, probabilities, settings, iterations):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    height, width, labels = probabilities.shape
    start = time.perf_counter()
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probabilities.transpose(2, 0, 1))))
    crf.addPairwiseGaussian(sxy=settings["sxy_gaussian"], compat=settings["compat_gaussian"])
    crf.addPairwiseBilateral(
        sxy=settings["sxy_bilateral"],
        srgb=settings["srgb_bilateral"],
        rgbim=np.array(image, np.uint8, order="C"),
        compat=settings["compat_bilateral"],
    )
    q = np.array(crf.inference(iterations))
    seconds = time.perf_counter() - start
    return seconds, q.argmax(0).reshape(height, width).astype(np.uint8)


def kseg_run(image, probabilities, settings, iterations):
    from kseg.inference import dense_crf

    start = time.perf_counter()
    q = np.asarray(dense_crf(image, probabilities, iterations=iterations, **settings))
    seconds = time.perf_counter() - start
    return seconds, q.argmax(-1).astype(np.uint8)


def pydensecrf_worker(args):
    data = np.load(args.inputs)
    image = np.array(data["image"], np.uint8, order="C")
    probabilities = data["probabilities"]
    labels = {}
    for line in sys.stdin:
        key = line.strip()
        if not key:
            break
        settings, iterations = SETTINGS[key]
        seconds, labels[key] = pydensecrf_run(image, probabilities, settings, iterations)
        print(json.dumps({"seconds": seconds}), flush=True)
    np.savez(args.labels_out, **labels)


def memory_worker(args):
    image, probabilities, _ = make_inputs(args.camvid, args.size)
    settings, iterations = SETTINGS["deeplab_10it"]
    run = pydensecrf_run if args.side == "pydensecrf" else kseg_run
    if args.side == "kseg":
        import tensorflow as tf  # noqa: F401  (its import alone costs RSS; counted in the baseline)
    baseline = peak_rss_mib()
    seconds, labels = run(image, probabilities, settings, iterations)
    print(
        json.dumps(
            {
                "side": args.side,
                "size": args.size,
                "seconds": seconds,
                "peak_rss_mib": peak_rss_mib(),
                "peak_rss_before_crf_mib": baseline,
                "label_histogram": np.bincount(labels.reshape(-1), minlength=LABELS).tolist(),
            }
        )
    )


def main(args):
    image, probabilities, name = make_inputs(args.camvid, 512)
    results = {
        "machine": results_io.machine_facts(),
        "input": {"image": name, "size": [512, 512], "labels": LABELS},
        "settings": {key: {"iterations": it, **s} for key, (s, it) in SETTINGS.items()},
    }
    with tempfile.TemporaryDirectory() as folder:
        inputs = os.path.join(folder, "inputs.npz")
        labels_path = os.path.join(folder, "labels.npz")
        np.savez(inputs, image=image, probabilities=probabilities)
        worker = subprocess.Popen(
            [
                args.pydensecrf_python,
                __file__,
                "--pydensecrf-worker",
                "--inputs",
                inputs,
                "--labels-out",
                labels_path,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        def pydensecrf_timed(key):
            worker.stdin.write(key + "\n")
            worker.stdin.flush()
            return json.loads(worker.stdout.readline())["seconds"]

        timings = {key: {"kseg": [], "pydensecrf": []} for key in SETTINGS}
        kseg_labels = {}
        for key, (settings, iterations) in SETTINGS.items():
            # One untimed call each: kseg traces its tf.function, pydensecrf warms its caches.
            kseg_labels[key] = kseg_run(image, probabilities, settings, iterations)[1]
            pydensecrf_timed(key)
        for _ in range(args.repeats):
            for key, (settings, iterations) in SETTINGS.items():
                timings[key]["kseg"].append(kseg_run(image, probabilities, settings, iterations)[0])
                timings[key]["pydensecrf"].append(pydensecrf_timed(key))
        worker.stdin.write("\n")
        worker.stdin.flush()
        worker.wait()
        reference_labels = np.load(labels_path)
        for key in SETTINGS:
            results[key] = {
                **results_io.timing_comparison(
                    timings[key]["kseg"], timings[key]["pydensecrf"], "pydensecrf"
                ),
                "label_agreement_with_pydensecrf": float(
                    np.mean(kseg_labels[key] == reference_labels[key])
                ),
            }
            print(key, json.dumps(results[key]), flush=True)

    if args.skip_memory:
        return
    results["memory_2048"] = {}
    for side, python in (("kseg", sys.executable), ("pydensecrf", args.pydensecrf_python)):
        output = subprocess.run(
            [
                python,
                __file__,
                "--memory-worker",
                "--side",
                side,
                "--size",
                "2048",
                "--camvid",
                args.camvid,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        report = json.loads(output.strip().splitlines()[-1])
        histogram = report.pop("label_histogram")
        results["memory_2048"][side] = report
        results["memory_2048"].setdefault("histograms", {})[side] = histogram
        print("2048", json.dumps(report), flush=True)
    kseg_hist, reference_hist = (
        np.array(results["memory_2048"]["histograms"][s]) for s in ("kseg", "pydensecrf")
    )
    results["memory_2048"]["label_histogram_overlap"] = float(
        np.minimum(kseg_hist, reference_hist).sum() / reference_hist.sum()
    )
    print("wrote", results_io.write_result(args.out, results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    pydensecrf_python = location_argument(
        parser,
        "--pydensecrf-python",
        "KSEG_PYDENSECRF_PYTHON",
        "Python of a virtual environment with pydensecrf2",
        required=False,
    )
    camvid = location_argument(parser, "--camvid", "KSEG_CAMVID", "CamVid root", required=False)
    parser.add_argument("--out", default=results_io.result_path("dense_crf"))
    parser.add_argument(
        "--skip-memory",
        action="store_true",
        help="time 512x512 only; no 2048x2048 run, no results file",
    )
    parser.add_argument("--pydensecrf-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=2048, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.pydensecrf_worker:
        pydensecrf_worker(arguments)
    elif arguments.memory_worker:
        memory_worker(arguments)
    else:
        require_locations(parser, arguments, pydensecrf_python, camvid)
        main(arguments)
