"""One side of a peer throughput comparison, run in that side's own interpreter.

`benchmarks/peer_throughput.py` starts this script once per (case, side) with
the side's Python (kseg's venv, or a peer's venv with Keras 2), so Keras 2 and
Keras 3 never share a process. The worker builds the model from a side module
in this folder (`<side>.build(case, height, width, num_classes)`), compiles it
with Adam and sparse categorical cross-entropy on logits, runs the warm-up
steps (graph tracing and first-call allocation stay out of the timings), then
waits on stdin. Each command line `{"op": "train" | "predict", "steps": n}`
runs n timed steps on the same synthetic batch and answers one line starting
with `@@` carrying the per-step seconds, so the parent can interleave short
blocks of both sides and contention from other work falls on both alike.

Run it by hand to check one side:
    python benchmarks/peers/worker.py --side kseg_models --case unet --height 128 \
        --width 128 --batch 2 --classes 11 --warmup 2 < /dev/null
"""

import argparse
import importlib
import json
import os
import platform
import sys
import time

import numpy as np

PROTOCOL_PREFIX = "@@"


def _answer(payload):
    sys.stdout.write(PROTOCOL_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _synthetic_batch(batch, height, width, channels, num_classes, label_shape, seed):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 255.0, (batch, height, width, channels)).astype("float32")
    labels = rng.integers(0, num_classes, (batch,) + tuple(label_shape)).astype("int32")
    return images, labels


def _forward_gflops(model, height, width):
    """Floating-point operations of one image's forward pass, from TensorFlow's graph profiler.

    The model is traced for a fixed (1, H, W, 3) input and its variables frozen into
    constants, so every convolution has a static shape the profiler can count. It counts
    each multiply-add as two operations.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec([1, height, width, 3], tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    return profile.total_float_ops / 1e9


def _timed(function, steps):
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--side", required=True, help="module in benchmarks/peers building the models"
    )
    parser.add_argument("--case", required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    side = importlib.import_module(args.side)
    built = side.build(args.case, args.height, args.width, args.classes)
    model, keras = built["model"], built["keras"]
    keras.utils.set_random_seed(args.seed)
    # Both Keras 2 and Keras 3 leave XLA off on a CPU-only machine by default; say so explicitly.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # Explicitly none: keras-hub's task models otherwise add an accuracy metric.
        metrics=[],
        jit_compile=False,
    )
    images, labels = _synthetic_batch(
        args.batch, args.height, args.width, 3, args.classes, built["label_shape"], args.seed
    )
    gflops = _forward_gflops(model, args.height, args.width)
    for _ in range(args.warmup):
        model.train_on_batch(images, labels)
        model.predict_on_batch(images)

    import tensorflow as tf

    _answer(
        {
            "ready": True,
            "description": built["description"],
            "parameters": int(model.count_params()),
            "forward_gflops_per_image": round(gflops, 2),
            "trainable_parameters": int(
                sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            ),
            "output_shape": [int(d) for d in np.shape(model.predict_on_batch(images))[1:]],
            "library": built["library"],
            "versions": {
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": getattr(keras, "__version__", "unknown"),
                **built.get("versions", {}),
            },
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "jit_compile": False,
        }
    )

    def train():
        return model.train_on_batch(images, labels)

    def predict():
        return model.predict_on_batch(images)

    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "stop":
            break
        step = train if command["op"] == "train" else predict
        _answer({"op": command["op"], "seconds": _timed(step, int(command["steps"]))})


if __name__ == "__main__":
    main()
