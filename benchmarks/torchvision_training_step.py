"""Time of one training step of torchvision's segmentation models in kseg and in torchvision.

For each model (`--models`, default `deeplabv3_resnet50 fcn_resnet50`) both sides build the
same architecture with random weights: torchvision's `segmentation.<name>(weights=None,
weights_backbone=None, num_classes=21)` in a torch worker (its own virtual environment:
torch and TensorFlow are never imported in one process) and kseg's
`build_torchvision_segmentation(<name>)`, the model its converted checkpoint loads into. A
step is what a user's training loop does on a batch of `--batch-size` images of
`--size`x`--size` with random labels (uniform over 21 classes): forward pass in training mode
(batch statistics), cross-entropy on the main output with label 255 ignored, backward pass,
SGD with momentum 0.9 (`keras.Model.train_on_batch` on a model compiled without XLA; torch's
`zero_grad`, `backward` and `step`). Both sides use `--threads` intra-op threads; they take
turns call by call (the worker waits for a line on stdin before each step), after two
untimed steps each, so they share whatever else the machine is doing.

`--torch-python` (the interpreter of a virtual environment with CPU torch and torchvision)
defaults to the environment variable `KSEG_TORCH_PYTHON`; without flag or variable the script
stops.

Usage:
    python benchmarks/torchvision_training_step.py [--models deeplabv3_resnet50 fcn_resnet50]
        [--size 512] [--batch-size 2] [--repeats 5] [--threads 2] [--out FILE]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import results_io
from locations import run_with_torch_worker, torch_python_argument
from torch_timed_calls import TimedCallWorker, serve_timed_calls

NUM_CLASSES = 21
IGNORE_LABEL = 255
LEARNING_RATE = 1e-3
MOMENTUM = 0.9
WARMUP_STEPS = 2


def _batch(size, batch_size):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, (batch_size, size, size)).astype("int64")
    return images, labels


def torch_worker(args):
    """Times torchvision training steps on request (see `torch_timed_calls`)."""
    import torch
    import torchvision
    from torchvision.models import segmentation

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = getattr(segmentation, args.model)(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES
    )
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    loss_function = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_LABEL)
    images, labels = _batch(args.size, args.batch_size)
    mean = np.array([0.485, 0.456, 0.406], "float32")
    std = np.array([0.229, 0.224, 0.225], "float32")
    inputs = torch.from_numpy(
        np.ascontiguousarray(((images / 255 - mean) / std).transpose(0, 3, 1, 2))
    )
    targets = torch.from_numpy(labels)

    def step(_):
        optimizer.zero_grad()
        loss = loss_function(model(inputs)["out"], targets)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step(0)
    serve_timed_calls(torch, torchvision, step)


def start_torch_worker(args, model_name):
    """The torch side of one model in its own process, taking one step per request."""
    command = [args.torch_python, __file__, "--torch-worker", "--model", model_name]
    for flag in ("size", "batch_size", "threads"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return TimedCallWorker(command, f"the torch worker for {model_name}")


def measure(args, model_name):
    import keras

    from kseg.pretrained.convert_torchvision_segmentation import build_torchvision_segmentation

    load_start = results_io.load_average()
    keras.utils.set_random_seed(0)
    model = build_torchvision_segmentation(model_name, num_classes=NUM_CLASSES)
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=IGNORE_LABEL
        ),
        jit_compile=False,
    )
    images, labels = _batch(args.size, args.batch_size)
    labels = labels.astype("int32")
    for _ in range(WARMUP_STEPS):
        model.train_on_batch(images, labels)
    worker = start_torch_worker(args, model_name)
    try:
        kseg_seconds, torch_seconds = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.train_on_batch(images, labels)
            kseg_seconds.append(time.perf_counter() - start)
            torch_seconds.append(worker.timed_call())
    finally:
        worker.close()
    row = results_io.timing_comparison(kseg_seconds, torch_seconds, "torchvision")
    row["kseg_img_s"] = args.batch_size / row["kseg_median_s"]
    row["torchvision_img_s"] = args.batch_size / row["torchvision_median_s"]
    row["speedup_kseg_over_torchvision"] = row["kseg_img_s"] / row["torchvision_img_s"]
    row.update(
        torch=worker.facts["torch"],
        torchvision=worker.facts["torchvision"],
        torch_threads=worker.facts["torch_threads"],
        load_average_start=load_start,
        load_average_end=results_io.load_average(),
    )
    return row


def main(args):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    results = {
        "command": results_io.command_line(),
        "machine": results_io.machine_facts(threads=args.threads),
        "input": {
            "size": args.size,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "num_classes": NUM_CLASSES,
            "optimizer": f"SGD lr {LEARNING_RATE} momentum {MOMENTUM}",
            "weights": "random",
        },
        "models": {},
    }
    for model_name in args.models:
        row = measure(args, model_name)
        results["models"][model_name] = row
        print(
            f"{model_name:22s} kseg {row['kseg_img_s']:.3f} img/s  torchvision "
            f"{row['torchvision_img_s']:.3f} img/s  kseg/torchvision "
            f"{row['speedup_kseg_over_torchvision']:.2f}x",
            flush=True,
        )
    results["machine"]["load_average_end"] = results_io.load_average()
    print("wrote", results_io.write_result(args.out, results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["deeplabv3_resnet50", "fcn_resnet50"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=results_io.result_path("torchvision_training_step"))
    parser.add_argument("--model", help=argparse.SUPPRESS)
    torch_python = torch_python_argument(parser)
    run_with_torch_worker(parser, torch_python, main, torch_worker)
