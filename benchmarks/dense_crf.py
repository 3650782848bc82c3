"""Time per 512x512 image of kseg's dense CRF against pydensecrf at equal threads, 2048x2048 memory.

Both sides run the fully-connected CRF of Krahenbuhl & Koltun (2011) with the permutohedral
lattice: kseg through `kseg.inference.dense_crf` (TensorFlow, sparse splat/blur/slice products)
and pydensecrf2 (Krahenbuhl's C++ code, single-threaded) from its own virtual environment.
Every timed side is a worker subprocess that waits for a line on stdin before each timed run,
so the sides alternate call by call and share whatever else the machine is doing:

- kseg on one thread (TensorFlow's intra-op and inter-op pools both set to 1 before any op
  runs, OMP_NUM_THREADS=1) against pydensecrf on one thread (OMP_NUM_THREADS=1): the
  headline time ratio;
- kseg on `--scaling-threads` threads (2 by default; 0 leaves it out), reported separately
  as its speed-up over one thread.

Each timed run is the whole call from image and probabilities to marginals: lattice
construction plus mean-field iterations. Each worker makes one untimed call per setting
first (kseg traces its tf.function, pydensecrf warms its caches); the workers do this at the
same time, before any timed run. The input is a CamVid val image resized to 512x512 with
synthetic 21-class scores (annotation bonus plus smooth and per-pixel noise).

Settings: DeepLab v2's (w1=4, theta_alpha=67, theta_beta=3, w2=3, theta_gamma=1, 10
iterations, kseg's defaults) and pydensecrf's README settings (10, 80, 13, 3, 3) with 5
iterations, the configuration of the reference timing in the team data's `refs/` folder.

The 2048x2048 check runs each side alone on one thread in a fresh subprocess (same image
resized, DeepLab settings, inputs read from a .npz file the main process writes) and reports
its peak resident set size (`resource.getrusage`) before and after the CRF call.
The result file records the load average at the start and the end of the run; timings are
only the machine's when it was idle.

`--camvid` (the CamVid root; one val image is read) and `--pydensecrf-python` (the interpreter
of a virtual environment with pydensecrf2 and numpy) default to the environment variables
`KSEG_CAMVID` and `KSEG_PYDENSECRF_PYTHON`; without flag or variable the script stops.

Usage:
    python benchmarks/dense_crf.py [--repeats 7] [--scaling-threads 2]
        [--pydensecrf-python ENV/bin/python] [--camvid CAMVID]
        [--out benchmarks/results/dense_crf.json]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
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
# Thread pools that numpy's BLAS or an OpenMP build could start; the workers get them capped.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def peak_rss_mib():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def thread_limited_env(threads):
    """This process's environment with the OpenMP/BLAS thread pools capped at `threads`."""
    return {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}


def use_tensorflow_threads(threads):
    """Imports TensorFlow and fixes its intra-op and inter-op pools; call before any op runs."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


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


def side_versions(side):
    if side == "pydensecrf":
        return {"pydensecrf2": metadata.version("pydensecrf2"), "pydensecrf_numpy": np.__version__}
    import tensorflow as tf

    import kseg

    return {"tensorflow": tf.__version__, "kseg": kseg.__version__}


def timing_worker(args):
    """One side of the comparison: warms up, says it is ready, then times one run per key read."""
    if args.side == "kseg":
        use_tensorflow_threads(args.threads)
    run = kseg_run if args.side == "kseg" else pydensecrf_run
    data = np.load(args.inputs)
    image = np.array(data["image"], np.uint8, order="C")
    probabilities = data["probabilities"]
    # The untimed first call per setting: tracing on kseg's side, cache warm-up on both.
    labels = {key: run(image, probabilities, *SETTINGS[key])[1] for key in SETTINGS}
    print(json.dumps({"ready": True, "versions": side_versions(args.side)}), flush=True)
    for line in sys.stdin:
        key = line.strip()
        if not key:
            break
        seconds, _ = run(image, probabilities, *SETTINGS[key])
        print(json.dumps({"seconds": seconds}), flush=True)
    np.savez(args.labels_out, **labels)


class TimingWorker:
    """A `timing_worker` subprocess of one side at a thread count, driven line by line."""

    def __init__(self, python, side, threads, inputs, labels_out):
        self.labels_out = labels_out
        self.process = subprocess.Popen(
            [
                python,
                __file__,
                "--timing-worker",
                "--side",
                side,
                "--threads",
                str(threads),
                "--inputs",
                inputs,
                "--labels-out",
                labels_out,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=thread_limited_env(threads),
        )

    def wait_ready(self):
        """Blocks until the warm-up calls are done; returns the side's library versions."""
        return json.loads(self.process.stdout.readline())["versions"]

    def time(self, key):
        self.process.stdin.write(key + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["seconds"]

    def close(self):
        """Ends the worker; returns its labels per setting (from its untimed calls)."""
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        if self.process.wait() != 0:
            raise RuntimeError(f"timing worker {self.process.args} failed")
        return dict(np.load(self.labels_out))


def memory_worker(args):
    if args.side == "kseg":
        # Its import alone costs RSS; counted in the baseline.
        use_tensorflow_threads(args.threads)
    data = np.load(args.inputs)
    image = np.array(data["image"], np.uint8, order="C")
    probabilities = data["probabilities"]
    settings, iterations = SETTINGS["deeplab_10it"]
    run = pydensecrf_run if args.side == "pydensecrf" else kseg_run
    baseline = peak_rss_mib()
    seconds, labels = run(image, probabilities, settings, iterations)
    print(
        json.dumps(
            {
                "side": args.side,
                "size": image.shape[0],
                "threads": args.threads,
                "seconds": seconds,
                "peak_rss_mib": peak_rss_mib(),
                "peak_rss_before_crf_mib": baseline,
                "label_histogram": np.bincount(labels.reshape(-1), minlength=LABELS).tolist(),
            }
        )
    )


def time_sides(args, image, probabilities, machine):
    """Alternating timed runs of every worker; returns seconds and labels per worker and key."""
    workers = {"kseg_1": ("kseg", sys.executable, 1)}
    workers["pydensecrf"] = ("pydensecrf", args.pydensecrf_python, 1)
    if args.scaling_threads:
        workers[f"kseg_{args.scaling_threads}"] = ("kseg", sys.executable, args.scaling_threads)
    with tempfile.TemporaryDirectory() as folder:
        inputs = os.path.join(folder, "inputs.npz")
        np.savez(inputs, image=image, probabilities=probabilities)
        running = {
            name: TimingWorker(python, side, threads, inputs, os.path.join(folder, f"{name}.npz"))
            for name, (side, python, threads) in workers.items()
        }
        for worker in running.values():
            for library, version in worker.wait_ready().items():
                machine.setdefault(library, version)
        seconds = {name: {key: [] for key in SETTINGS} for name in running}
        for _ in range(args.repeats):
            for key in SETTINGS:
                for name, worker in running.items():
                    seconds[name][key].append(worker.time(key))
        labels = {name: worker.close() for name, worker in running.items()}
    return seconds, labels


def scaling_entry(seconds, one_thread_seconds, reference_seconds, labels, one_thread_labels):
    median = statistics.median(seconds)
    return {
        "kseg_seconds": seconds,
        "kseg_median_s": median,
        "speedup_over_1_thread": statistics.median(one_thread_seconds) / median,
        "time_ratio_kseg_over_pydensecrf_1_thread": median / statistics.median(reference_seconds),
        "label_agreement_with_kseg_1_thread": float(np.mean(labels == one_thread_labels)),
    }


def main(args):
    image, probabilities, name = make_inputs(args.camvid, 512)
    results = {
        "machine": results_io.machine_facts(
            threads=1,
            note="headline: kseg and pydensecrf each on 1 thread; "
            + (
                f"kseg on {args.scaling_threads} threads reported separately"
                if args.scaling_threads
                else "no scaling run"
            ),
        ),
        "input": {"image": name, "size": [512, 512], "labels": LABELS},
        "settings": {key: {"iterations": it, **s} for key, (s, it) in SETTINGS.items()},
    }
    seconds, labels = time_sides(args, image, probabilities, results["machine"])
    for key in SETTINGS:
        results[key] = {
            "threads": 1,
            **results_io.timing_comparison(
                seconds["kseg_1"][key], seconds["pydensecrf"][key], "pydensecrf"
            ),
            "label_agreement_with_pydensecrf": float(
                np.mean(labels["kseg_1"][key] == labels["pydensecrf"][key])
            ),
        }
        if args.scaling_threads:
            name = f"kseg_{args.scaling_threads}"
            results[key][f"kseg_{args.scaling_threads}_threads"] = scaling_entry(
                seconds[name][key],
                seconds["kseg_1"][key],
                seconds["pydensecrf"][key],
                labels[name][key],
                labels["kseg_1"][key],
            )
        print(key, json.dumps(results[key]), flush=True)

    if args.skip_memory:
        return
    results["memory_2048"] = {}
    with tempfile.TemporaryDirectory() as folder:
        # Written once for both workers (the pydensecrf environment has no Pillow), by a
        # process of its own: Linux hands a parent's peak RSS down to its children, so this
        # process must stay small.
        inputs = os.path.join(folder, "inputs_2048.npz")
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--write-inputs",
                inputs,
                "--size",
                "2048",
                "--camvid",
                args.camvid,
            ],
            check=True,
        )
        for side, python in (("kseg", sys.executable), ("pydensecrf", args.pydensecrf_python)):
            output = subprocess.run(
                [
                    python,
                    __file__,
                    "--memory-worker",
                    "--side",
                    side,
                    "--threads",
                    "1",
                    "--inputs",
                    inputs,
                ],
                check=True,
                capture_output=True,
                text=True,
                env=thread_limited_env(1),
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
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--scaling-threads",
        type=int,
        default=2,
        help="also time kseg on this many threads, reported apart from the 1-thread ratio; "
        "0 leaves it out",
    )
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
    parser.add_argument("--timing-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--write-inputs", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=2048, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.timing_worker:
        timing_worker(arguments)
    elif arguments.memory_worker:
        memory_worker(arguments)
    elif arguments.write_inputs:
        image, probabilities, _ = make_inputs(arguments.camvid, arguments.size)
        np.savez(arguments.write_inputs, image=image, probabilities=probabilities)
    else:
        require_locations(parser, arguments, pydensecrf_python, camvid)
        main(arguments)
