"""Per-image time and peak memory of patch-by-patch labelling versus the FCN on the same weights.

The argument for fully convolutional networks (Long, Shelhamer & Darrell 2015, section 3.1):
labelling every pixel by classifying the patch around it recomputes the overlapping windows'
features once per pixel, while the convolutionalized classifier shares them and is then upsampled.
Both sides here use one `kseg.models.fcn_alexnet.AlexNetClassifier` (227x227 patches, the paper's
geometry, narrowed widths so the patch side finishes in minutes on a CPU): the patch side through
`kseg.inference.patch_scores`, the FCN side through `kseg.models.FCNAlexNet` built
on the same classifier object's weights (loaded from one weights file).

The patch side classifies a subset of the image's pixels (`--pixels`, in batches of
`--batch-size`) and its time is extrapolated linearly to all 256x256 pixels; that is exact up to
per-call overhead, since every pixel costs one classifier call on a same-size patch. Peak memory is
the peak resident set size (`resource.getrusage`) of a separate subprocess per side, minus that
process's peak after building the model and before any inference (TensorFlow's CPU allocator does
not report through `tf.config.experimental.get_memory_info` or tracemalloc).

Usage:
    python benchmarks/patch_vs_fcn.py [--size 256] [--pixels 2048] [--batch-size 128] [--out FILE]
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

NUM_CLASSES = 21
CONV_FILTERS = (24, 64, 96, 96, 64)
FC_WIDTH = 256


def peak_rss_mib():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_classifier():
    from kseg.models.fcn_alexnet import AlexNetClassifier

    return AlexNetClassifier(NUM_CLASSES, conv_filters=CONV_FILTERS, num_filters=FC_WIDTH)


def worker(args):

    from kseg.inference import patch_scores
    from kseg.models.fcn_alexnet import FCNAlexNet

    classifier = build_classifier()
    classifier.load_weights(args.weights)
    image = np.random.default_rng(0).uniform(0, 255, (1, args.size, args.size, 3)).astype("float32")
    total_pixels = args.size * args.size
    result = {"side": args.worker}
    if args.worker == "fcn":
        model = FCNAlexNet(NUM_CLASSES, classifier=classifier)
        baseline = peak_rss_mib()
        model(image, training=False)  # traces and warms up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            np.asarray(model(image, training=False))
            times.append(time.perf_counter() - start)
        result.update(seconds_per_image=float(np.median(times)), timed_runs=args.repeats)
    else:
        rng = np.random.default_rng(1)
        chosen = rng.choice(total_pixels, size=args.pixels, replace=False)
        pixels = np.stack([chosen // args.size, chosen % args.size], axis=1)
        baseline = peak_rss_mib()
        patch_scores(
            classifier, image, pixels=pixels[: args.batch_size], batch_size=args.batch_size
        )
        start = time.perf_counter()
        patch_scores(classifier, image, pixels=pixels, batch_size=args.batch_size)
        measured = time.perf_counter() - start
        result.update(
            measured_pixels=int(args.pixels),
            measured_seconds=measured,
            seconds_per_image=measured * total_pixels / args.pixels,
            extrapolated=True,
        )
    result.update(
        peak_rss_mib=peak_rss_mib(),
        baseline_rss_mib=baseline,
        peak_increment_mib=peak_rss_mib() - baseline,
    )
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pixels", type=int, default=2048, help="pixels the patch side classifies")
    parser.add_argument("--batch-size", type=int, default=128, help="patches per classifier call")
    parser.add_argument("--repeats", type=int, default=5, help="timed FCN runs (median reported)")
    parser.add_argument("--out", default=results_io.result_path("patch_vs_fcn"))
    parser.add_argument("--worker", choices=["patch", "fcn"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if not 0 < args.pixels <= args.size * args.size:
        parser.error(f"--pixels must be in 1..{args.size * args.size}. Received: {args.pixels}")

    machine = results_io.machine_facts()
    import keras

    keras.utils.set_random_seed(0)
    classifier = build_classifier()
    with tempfile.TemporaryDirectory() as directory:
        weights = os.path.join(directory, "alexnet.weights.h5")
        classifier.save_weights(weights)
        sides = {}
        for side in ("fcn", "patch"):
            command = [sys.executable, __file__, "--worker", side, "--weights", weights]
            for flag in ("size", "pixels", "batch_size", "repeats"):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            sides[side] = json.loads(output.strip().splitlines()[-1])

    report = {
        "image_size": [args.size, args.size],
        "classifier": {
            "type": "kseg.models.fcn_alexnet.AlexNetClassifier",
            "patch_size": 227,
            "conv_filters": list(CONV_FILTERS),
            "num_filters": FC_WIDTH,
            "num_classes": NUM_CLASSES,
            "parameters": int(classifier.count_params()),
        },
        "patch_batch_size": args.batch_size,
        "patch": sides["patch"],
        "fcn": sides["fcn"],
        "time_ratio_patch_over_fcn": sides["patch"]["seconds_per_image"]
        / sides["fcn"]["seconds_per_image"],
        "peak_memory_ratio_patch_over_fcn": sides["patch"]["peak_increment_mib"]
        / sides["fcn"]["peak_increment_mib"],
        "machine": machine,
        "note": "patch time extrapolated linearly from the measured pixels; memory = peak RSS "
        "over the post-build baseline, one subprocess per side",
    }
    written = results_io.write_result(args.out, report)
    parameters = report["classifier"]["parameters"]
    print(f"image {args.size}x{args.size}, classifier {parameters:,} parameters")
    patch = sides["patch"]
    print(
        f"patch: {patch['seconds_per_image']:.1f} s/image (from {args.pixels} pixels in "
        f"{patch['measured_seconds']:.1f} s), peak +{patch['peak_increment_mib']:.0f} MiB"
    )
    print(
        f"fcn:   {sides['fcn']['seconds_per_image'] * 1000:.1f} ms/image, "
        f"peak +{sides['fcn']['peak_increment_mib']:.0f} MiB"
    )
    print(
        f"ratios patch/fcn: time {report['time_ratio_patch_over_fcn']:.0f}x, "
        f"peak memory {report['peak_memory_ratio_patch_over_fcn']:.2f}x"
    )
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
