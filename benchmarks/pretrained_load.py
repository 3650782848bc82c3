"""Time of loading a full-size torchvision segmentation checkpoint into kseg, and output parity.

For each model (`--models`, default `deeplabv3_resnet50 fcn_resnet50`; the ResNet-101 ones and
the Mask R-CNN ones, `maskrcnn_resnet50_fpn` and `maskrcnn_resnet50_fpn_v2`, also work), a
torch worker in its own virtual environment (torch and TensorFlow are never imported in
one process) builds the torchvision model with `weights=None, weights_backbone=None,
num_classes=21, aux_loss=True` under `torch.manual_seed(0)`, gives every BatchNorm a random
weight, bias, running mean and running variance (`numpy.random.default_rng(0)`), puts it in
evaluation mode and writes its state dict with `torch.save` (zip format) into a temporary folder.
It then runs the model on two images of different sizes (520x700 and 389x521, uniform in
[0, 255], `numpy.random.default_rng(1)`, normalised with the ImageNet mean and std) and writes
the images and its `out` logits (this call is also its untimed warm-up), then waits for the
timed calls, run under `torch.inference_mode`.

The kseg process then times, in seconds:

- `read_torch_checkpoint` on the file (state dict into numpy arrays, no torch);
- the first `kseg.pretrained.load` of a temporary registry entry that points at the file by
  `file://` URL with its hash prefix: copy into a fresh cache and verify, build the kseg model,
  convert the weights and write the converted Keras weights beside the checkpoint;
- the second `kseg.pretrained.load` of the same entry, which builds the model and reads the
  cached Keras weights instead of converting again;
- inference per image on the same images, kseg (eager call, after one untimed warm-up) and
  torchvision alternating call by call, `--repeats` calls each, of which the JSON keeps every
  one and the median;

and compares kseg's logits with torchvision's: the largest absolute difference, that
difference over the largest absolute torchvision logit, and the share of pixels whose argmax
class agrees. Both sides use `--threads` intra-op threads (TensorFlow's inter-op pool set to the
same). The worker waits for a line on stdin before each timed call, so the two sides share
whatever else the machine is doing; the load average at the start and end of each model says
how busy it was.

For Mask R-CNN the torch worker, images, timed calls and parity figures are those of
`pretrained_load_instance.py` (two 480x640 and 427x640 images, which the model resizes to a
shorter side of 800; detections compared box by box); the load steps are the same.

Rows of models not in `--models` that the result file already holds are kept (`--fresh`
drops them); each row records the command that measured it, and the file's `machine` and
`command` describe the latest run.

`--torch-python` (the interpreter of a virtual environment with CPU torch and torchvision)
defaults to the environment variable `KSEG_TORCH_PYTHON`; without flag or variable the script
stops.

Usage:
    python benchmarks/pretrained_load.py [--models deeplabv3_resnet50 fcn_resnet50]
        [--repeats 5] [--threads 2] [--torch-python ENV/bin/python]
        [--out benchmarks/results/pretrained_load.json] [--fresh]
    python benchmarks/pretrained_load.py --models maskrcnn_resnet50_fpn
        maskrcnn_resnet50_fpn_v2 --repeats 3
"""

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import pretrained_load_instance
import results_io
from locations import run_with_torch_worker, torch_python_argument
from torch_timed_calls import TimedCallWorker, serve_timed_calls

MODELS = ("deeplabv3_resnet50", "fcn_resnet50", "deeplabv3_resnet101", "fcn_resnet101")
IMAGE_SIZES = ((520, 700), (389, 521))
NUM_CLASSES = 21
# A one-minute load average above this many runnable tasks per core marks the run as shared.
BUSY_LOAD_PER_CORE = 0.5
MEAN = np.array([0.485, 0.456, 0.406], "float32")
STD = np.array([0.229, 0.224, 0.225], "float32")


def torch_worker(args):
    """Writes the state dict, images, logits and inference times of one torchvision model."""
    if args.model in pretrained_load_instance.MODELS:
        pretrained_load_instance.torch_worker(args)
        return
    import torch
    import torchvision
    from torch import nn
    from torchvision.models import segmentation

    torch.set_num_threads(args.threads)
    folder = Path(args.folder)
    torch.manual_seed(0)
    model = getattr(segmentation, args.model)(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=True
    )
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, size).astype("f4")))
                module.bias.copy_(torch.from_numpy(rng.normal(0, 0.2, size).astype("f4")))
                module.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.2, size).astype("f4")))
                module.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, size).astype("f4")))
    model.eval()
    torch.save(model.state_dict(), folder / "state_dict.pth")

    rng = np.random.default_rng(1)
    arrays, batches = {}, []
    with torch.inference_mode():
        for index, (height, width) in enumerate(IMAGE_SIZES):
            image = rng.uniform(0, 255, (1, height, width, 3)).astype("float32")
            normalised = (image / 255.0 - MEAN) / STD
            batches.append(torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))))
            # Also the untimed warm-up call of this image size.
            logits = model(batches[-1])["out"]
            arrays[f"image{index}"] = image
            arrays[f"out{index}"] = logits.numpy().transpose(0, 2, 3, 1)
        np.savez(folder / "reference.npz", **arrays)
        serve_timed_calls(torch, torchvision, lambda index: model(batches[index]))


class TorchWorker(TimedCallWorker):
    """The torch side of one model, in its own process: written files, then timed calls."""

    def __init__(self, args, model_name, folder):
        command = [args.torch_python, __file__, "--torch-worker", "--model", model_name]
        command += ["--folder", str(folder), "--threads", str(args.threads)]
        super().__init__(command, f"the torch worker for {model_name}")


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def parity(kseg_logits, torch_logits):
    difference = float(np.abs(kseg_logits - torch_logits).max())
    largest = float(np.abs(torch_logits).max())
    agreement = float(np.mean(kseg_logits.argmax(-1) == torch_logits.argmax(-1)))
    return {
        "max_abs_diff": difference,
        "max_abs_logit": largest,
        "max_abs_diff_over_max_logit": difference / largest,
        "argmax_agreement": agreement,
    }


def measure(args, model_name, torch_side_folder):
    """Every figure of one model: runs its torch worker into `torch_side_folder`, then kseg."""
    import keras

    import kseg.pretrained
    from kseg.pretrained import registry

    folder = Path(torch_side_folder)
    machine_start = results_io.load_average()
    worker = TorchWorker(args, model_name, folder)
    try:
        torch_side = worker.facts
        written = folder / "state_dict.pth"
        prefix = kseg.pretrained.sha256_of_file(written)[:8]
        checkpoint = folder / f"{model_name}_random-{prefix}.pth"
        written.rename(checkpoint)
        reference = np.load(folder / "reference.npz")

        read_seconds, state_dict = timed(kseg.pretrained.read_torch_checkpoint, checkpoint)
        tensors = len(state_dict)
        del state_dict

        name = f"{model_name}_benchmark"
        entry = dataclasses.replace(
            registry.get(model_name), name=name, url=checkpoint.as_uri(), hash_prefix=prefix
        )
        cache = folder / "cache"
        registry._REGISTRY[name] = entry
        try:
            first_seconds, model = timed(kseg.pretrained.load, name, cache_dir=cache)
            del model
            keras.backend.clear_session()
            converted = kseg.pretrained.cached_conversion_path(
                kseg.pretrained.checkpoint_cache_path(entry.url, cache_dir=cache),
                version=registry.CONVERSION_VERSION,
            )
            second_seconds, model = timed(kseg.pretrained.load, name, cache_dir=cache)
        finally:
            del registry._REGISTRY[name]

        if model_name in pretrained_load_instance.MODELS:
            images, summary = pretrained_load_instance.compare_inference(
                model, worker, reference, args.repeats
            )
        else:
            images, summary = compare_semantic_inference(model, worker, reference, args.repeats)
    finally:
        worker.close()
    return {
        "checkpoint_bytes": checkpoint.stat().st_size,
        "tensors": tensors,
        "converted_bytes": converted.stat().st_size,
        "parameters": int(model.count_params()),
        "read_torch_checkpoint_s": read_seconds,
        "first_load_s": first_seconds,
        "cached_load_s": second_seconds,
        "images": images,
        **summary,
        "torch_threads": torch_side["torch_threads"],
        "torch": torch_side["torch"],
        "torchvision": torch_side["torchvision"],
        "load_average_start": machine_start,
        "load_average_end": results_io.load_average(),
    }


def compare_semantic_inference(model, worker, reference, repeats):
    """Per-image times and logit parity of a converted semantic model against the torch worker's.

    kseg is timed twice: the model as loaded, called eagerly (`model(image)`), and what
    `kseg predict` and `kseg.inference.make_predictor` run, its batch-norm-folded copy
    (`kseg.inference.fold_batch_norm_if_exact`) frozen into one graph with its weights as
    constants (`kseg.inference.FrozenModel`; `predict_path_*` keys).

    Returns:
        `(images, summary)`: per image size the timing comparisons and `parity` of both
        kseg forms; the worst relative difference and argmax agreement over the images.
    """
    import kseg

    frozen = kseg.inference.FrozenModel(kseg.inference.fold_batch_norm_if_exact(model))
    sides = {"eager": lambda image: model(image, training=False), "predict_path": frozen}
    # One untimed warm-up call per image size and side (the torch worker made its own), then
    # the sides alternate call by call so they share whatever else the machine is doing.
    inputs = [reference[f"image{index}"] for index in range(len(IMAGE_SIZES))]
    logits = {name: [np.asarray(call(image)) for image in inputs] for name, call in sides.items()}
    calls = {
        index: {"eager": [], "predict_path": [], "torchvision": []}
        for index in range(len(IMAGE_SIZES))
    }
    for _ in range(repeats):
        for index, image in enumerate(inputs):
            for name, call in sides.items():
                calls[index][name].append(timed(lambda c=call, i=image: np.asarray(c(i)))[0])
            calls[index]["torchvision"].append(worker.timed_call(index))
    images = {}
    for index, (height, width) in enumerate(IMAGE_SIZES):
        torch_calls, out = calls[index]["torchvision"], reference[f"out{index}"]
        predict_path = results_io.timing_comparison(
            calls[index]["predict_path"], torch_calls, "torchvision"
        )
        images[f"{height}x{width}"] = {
            **results_io.timing_comparison(calls[index]["eager"], torch_calls, "torchvision"),
            **parity(logits["eager"][index], out),
            **{f"predict_path_{key}": value for key, value in predict_path.items()},
            **{
                f"predict_path_{key}": value
                for key, value in parity(logits["predict_path"][index], out).items()
            },
        }
    worst = max(images.values(), key=lambda image: image["max_abs_diff_over_max_logit"])
    return images, {
        "worst_max_abs_diff_over_max_logit": worst["max_abs_diff_over_max_logit"],
        "min_argmax_agreement": min(image["argmax_agreement"] for image in images.values()),
        "predict_path_worst_max_abs_diff_over_max_logit": max(
            image["predict_path_max_abs_diff_over_max_logit"] for image in images.values()
        ),
    }


def main(args):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    import kseg

    results = {} if args.fresh else results_io.read_result(args.out)
    models = results.setdefault("models", {})
    # Kept rows were measured by the file's previous command; say so before it is replaced.
    for entry in models.values():
        entry.setdefault("command", results.get("command"))
    results["command"] = results_io.command_line()
    results["machine"] = results_io.machine_facts(threads=args.threads)
    load = results["machine"]["load_average_start"][0]
    if load > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1):
        results["machine"]["note"] = (
            f"Other jobs shared the machine (one-minute load average {load:.1f} at the start of "
            "the latest run; each row records its own): times and kseg / torchvision ratios "
            "taken under load are not the machine's own"
        )
    semantic = [name for name in args.models if name in MODELS]
    if semantic:
        results["input"] = {
            "image_sizes": [list(size) for size in IMAGE_SIZES],
            "num_classes": NUM_CLASSES,
            "repeats": args.repeats,
            "weights": "random (torch.manual_seed(0), BatchNorm statistics from default_rng(0))",
        }
    if len(semantic) < len(args.models):
        results["instance_input"] = {**pretrained_load_instance.INPUT, "repeats": args.repeats}
    print(
        f"{'model':26s} {'read s':>7s} {'first s':>8s} {'cached s':>9s} "
        f"{'kseg s/img':>11s} {'predict s/img':>14s} {'torch s/img':>12s}  parity"
    )
    for model_name in args.models:
        with tempfile.TemporaryDirectory(prefix="kseg-pretrained-load-") as folder:
            entry = measure(args, model_name, folder)
        keras.backend.clear_session()
        entry["command"] = results["command"]
        models[model_name] = entry
        results["machine"]["torch"] = entry["torch"]
        results["machine"]["torchvision"] = entry["torchvision"]
        results["machine"]["kseg"] = getattr(kseg, "__version__", "unknown")
        results_io.write_result(args.out, results)
        kseg_median = statistics.median(i["kseg_median_s"] for i in entry["images"].values())
        torch_median = statistics.median(
            i["torchvision_median_s"] for i in entry["images"].values()
        )
        predict_median = statistics.median(
            i.get("predict_path_kseg_median_s", float("nan")) for i in entry["images"].values()
        )
        if model_name in MODELS:
            agreement = (
                f"rel diff {entry['worst_max_abs_diff_over_max_logit']:.2e}, "
                f"argmax {entry['min_argmax_agreement']:.4f}"
            )
        else:
            agreement = (
                f"boxes {entry['max_boxes_abs_px']:.1e} px, scores {entry['max_scores_abs']:.1e}, "
                f"labels {'same' if entry['all_same_labels_and_order'] else 'DIFFER'}, "
                f"masks {entry['min_mask_pixels_equal']:.5f}; near-tie swaps "
                f"{entry['near_tie_swaps']}, paired: boxes "
                f"{entry['max_boxes_abs_px_ties_paired']:.1e} px, "
                f"masks {entry['min_mask_pixels_equal_ties_paired']:.5f}"
            )
        print(
            f"{model_name:26s} {entry['read_torch_checkpoint_s']:7.2f} "
            f"{entry['first_load_s']:8.2f} {entry['cached_load_s']:9.2f} {kseg_median:11.2f} "
            f"{predict_median:14.2f} {torch_median:12.2f}  {agreement}",
            flush=True,
        )
    print("wrote", results_io.write_result(args.out, results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS + pretrained_load_instance.MODELS,
        default=list(MODELS[:2]),
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="drop the rows of other models already in the result file",
    )
    torch_python = torch_python_argument(parser)
    parser.add_argument("--out", default=results_io.result_path("pretrained_load"))
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    run_with_torch_worker(parser, torch_python, main, torch_worker)
