"""Resident memory growth over 500 training steps and 2,000 predictions of a small model.

A leak in a training or inference loop (a Python-side cache that grows with every call, a
`tf.function` retraced per batch, an un-freed tensor per step) shows as resident memory that
keeps climbing long after the first steps have warmed everything up. This benchmark builds
`kseg.models.get_model("deeplabv3plus", num_classes=3, backbone="tiny")`, compiles it with
`kseg.training.compile_model`, runs a warm-up (a few training steps and predictions, so that
graphs, allocator pools and thread pools exist), records the current resident set size
(`/proc/self/statm`, not the peak), then runs `--train-steps` training steps through
`model.fit` on a repeated `tf.data` pipeline and `--predictions` single-batch
`model.predict_on_batch` calls, sampling the resident set size along the way. The target is a
growth of at most 5% between the post-warm-up start and the end.

Usage:
    python benchmarks/memory_growth.py [--train-steps 500] [--predictions 2000]
        [--size 64] [--batch-size 4] [--out benchmarks/results/memory_growth.json]
"""

import argparse
import gc
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import results_io

GROWTH_TARGET = 0.05


def resident_mib():
    """Current (not peak) resident set size of this process in MiB."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=500)
    parser.add_argument("--predictions", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--samples", type=int, default=10, help="RSS samples per phase")
    parser.add_argument("--out", default=results_io.result_path("memory_growth"))
    args = parser.parse_args(argv)
    machine = results_io.machine_facts()

    import keras
    import tensorflow as tf

    import kseg
    from kseg import training

    keras.utils.set_random_seed(0)
    num_classes = 3
    model = kseg.models.get_model("deeplabv3plus", num_classes=num_classes, backbone="tiny")
    training.compile_model(model, num_classes=num_classes, metrics=[])
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32, args.size, args.size, 3)).astype("float32")
    masks = rng.integers(0, num_classes, (32, args.size, args.size)).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((images, masks)).batch(args.batch_size).repeat()
    batch = images[: args.batch_size]

    # Warm-up: trace the train and predict functions and fill the allocator's pools.
    model.fit(train, steps_per_epoch=5, epochs=1, verbose=0)
    for _ in range(20):
        model.predict_on_batch(batch)
    gc.collect()
    start_mib = resident_mib()

    trace = [{"phase": "start", "step": 0, "rss_mib": round(start_mib, 1)}]
    chunk = max(1, args.train_steps // args.samples)
    done, started = 0, time.perf_counter()
    while done < args.train_steps:
        steps = min(chunk, args.train_steps - done)
        model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0)
        done += steps
        trace.append({"phase": "train", "step": done, "rss_mib": round(resident_mib(), 1)})
    train_seconds = time.perf_counter() - started
    after_train_mib = resident_mib()

    every = max(1, args.predictions // args.samples)
    started = time.perf_counter()
    for index in range(1, args.predictions + 1):
        logits = model.predict_on_batch(batch)
        if index % every == 0:
            trace.append({"phase": "predict", "step": index, "rss_mib": round(resident_mib(), 1)})
    predict_seconds = time.perf_counter() - started
    assert np.isfinite(logits).all()
    gc.collect()
    end_mib = resident_mib()
    growth = (end_mib - start_mib) / start_mib

    result = {
        "benchmark": "resident memory growth over training steps and predictions",
        "model": f"kseg.models.get_model('deeplabv3plus', num_classes={num_classes}, "
        "backbone='tiny'), float32",
        "input": [args.batch_size, args.size, args.size, 3],
        "train_steps": args.train_steps,
        "predictions": args.predictions,
        "rss_start_mib": round(start_mib, 1),
        "rss_after_training_mib": round(after_train_mib, 1),
        "rss_end_mib": round(end_mib, 1),
        "growth_fraction": round(growth, 4),
        "growth_target": GROWTH_TARGET,
        "within_target": bool(growth <= GROWTH_TARGET),
        "train_seconds": round(train_seconds, 1),
        "predict_seconds": round(predict_seconds, 1),
        "trace": trace,
        "measured_after": "warm-up of 5 training steps and 20 predictions",
        "machine": machine,
    }
    results_io.write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "trace"}, indent=2))
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
