"""How close kseg's models run to this CPU's measured float32 limit, and where the time goes.

In one process:

1. Ceilings: the float32 GFLOP/s of a large square matmul and of a 3x3 convolution with 256
   input and output channels (the shape that dominates the ResNet-based models), each the best
   of several timed calls, measured before the models and again after them; shares are of the
   higher convolution ceiling of the two.
2. Per model (every registered model at its paper defaults, plus the ResNet-50 forms the
   efficiency targets name): forward GFLOP per image (`kseg.summary.forward_flops`, which
   counts a multiply-add as two operations), inference and training images/second, and the
   achieved GFLOP/s as a share of the convolution ceiling (a training step counted as three
   forward passes). Inference is timed for the model as built and for its copy with batch
   normalisation folded into the convolutions (`kseg.inference.fold_batch_norm_if_exact`),
   and for what `kseg.inference.make_predictor` runs (that copy frozen into one graph with its
   weights as constants, `kseg.inference.FrozenModel`; semantic models only), alternating call
   by call so all see the same machine; the largest logit difference from the model as built is
   recorded.
3. Per-op profiles (TensorFlow's profiler, XPlane trace) at 512x512, batch 2, of DeepLabV3+
   ResNet-50, PSPNet ResNet-50, U-Net and Mask R-CNN, each as built and batch-norm folded
   (where it folds), and of a DeepLabV3+ training step: time per op type and the most
   expensive ops. For the semantic models among them, every convolution of the folded model is
   also timed alone at its shape (`isolated_convolutions`): the sum says what the model's
   convolutions cost at the speed TensorFlow's kernels give each shape, so the share of the
   ceiling it could reach if nothing else took time.

Speeds are only meaningful on an idle machine: the file records the load average at the start,
before each model and at the end, and marks the run `under_load` when the one-minute average
was above 0.5 at the start.

Usage:
    python benchmarks/efficiency.py [--size 512] [--batch-size 2] [--steps 3]
        [--models deeplabv3plus_resnet50,pspnet] [--no-training] [--no-profile] [--out FILE]
    python benchmarks/efficiency.py --tiny   # seconds: small models and shapes, to test the script
"""

import argparse
import collections
import glob
import os
import re
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import kseg
import results_io

NUM_CLASSES = 21
IGNORE_LABEL = 255
TRAINING_FORWARD_PASSES = 3  # forward, and a backward pass costing about two forwards

# The efficiency targets name these ResNet-50 forms besides the registered defaults.
EXTRA_MODELS = {
    "deeplabv3plus_resnet50": ("deeplabv3plus", {"backbone": "resnet50", "output_stride": 16}),
    "deeplabv3_resnet50_os8": ("deeplabv3", {"backbone": "resnet50", "output_stride": 8}),
    "pspnet_resnet50": ("pspnet", {"backbone": "resnet50"}),
}
PROFILED_MODELS = ("deeplabv3plus_resnet50", "pspnet_resnet50", "unet", "mask_rcnn")
TRAINING_PROFILED_MODEL = "deeplabv3plus_resnet50"
PROFILE_VARIANTS = ("unfolded", "folded", "training")
# The profile's size and batch are the efficiency target's, whatever --size says.
PROFILE_SIZE, PROFILE_BATCH = 512, 2
# The paper's U-Net has unpadded convolutions: its valid sizes are 188 + 16k, so 508 near 512.
PROFILE_SIZES = {"unet": 508}
TOP_OPS = 25


def model_specs(tiny):
    """name -> (registered builder name, keyword arguments) for every model measured.

    With `tiny`, each model takes the tiny backbone and its `kseg.testing.SMALL_MODEL_CONFIGS`
    form, as the tests build it.
    """
    specs = {name: (name, {}) for name in kseg.models.list_models()}
    specs.update(EXTRA_MODELS)
    if not tiny:
        return specs
    return {
        name: (
            builder,
            {**kwargs, "backbone": "tiny", **kseg.testing.SMALL_MODEL_CONFIGS.get(builder, {})},
        )
        for name, (builder, kwargs) in specs.items()
    }


def build(spec):
    builder, kwargs = spec
    keras.utils.set_random_seed(0)
    return kseg.models.get_model(builder, num_classes=NUM_CLASSES, **kwargs)


def best_and_median(call, repeats):
    """Seconds of the fastest and the median of `repeats` timed calls, after two warm-ups."""
    call()
    call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return min(seconds), statistics.median(seconds)


def ceilings(matmul_size, conv_shape, repeats):
    """Measured float32 GFLOP/s of a square matmul and of a 3x3 same-padded convolution."""
    rng = np.random.default_rng(0)
    a = tf.constant(rng.normal(size=(matmul_size, matmul_size)).astype("float32"))
    b = tf.constant(rng.normal(size=(matmul_size, matmul_size)).astype("float32"))
    matmul = tf.function(lambda: tf.linalg.matmul(a, b))
    batch, height, width, channels = conv_shape
    images = tf.constant(rng.normal(size=conv_shape).astype("float32"))
    kernel = tf.constant(rng.normal(size=(3, 3, channels, channels)).astype("float32"))
    conv = tf.function(lambda: tf.nn.conv2d(images, kernel, 1, "SAME"))
    flops = {
        "matmul": 2 * matmul_size**3,
        "conv3x3": 2 * batch * height * width * 9 * channels * channels,
    }
    results = {}
    for name, function in (("matmul", matmul), ("conv3x3", conv)):
        best, median = best_and_median(lambda f=function: f().numpy(), repeats)
        results[name] = {
            "gflop": flops[name] / 1e9,
            "best_s": best,
            "median_s": median,
            "gflop_s": flops[name] / best / 1e9,
            "gflop_s_median": flops[name] / median / 1e9,
        }
    results["matmul"]["shape"] = [matmul_size, matmul_size]
    results["conv3x3"]["input_shape"] = list(conv_shape)
    return results


def inference_rates(model, folded, images, steps, predict_path=True):
    """Images/s of `model`, `folded` (None: not folded) and, with `predict_path`, of what
    `kseg.inference.make_predictor` runs (the folded copy frozen, `kseg.inference.FrozenModel`),
    alternating call by call."""
    calls = {"unfolded": _inference_step(model, images)}
    if folded is not None:
        calls["folded"] = _inference_step(folded, images)
    if predict_path:
        frozen = kseg.inference.FrozenModel(model if folded is None else folded)
        calls["predict_path"] = lambda: np.asarray(frozen(images))
    outputs = {}
    for name, call in calls.items():
        call()
        outputs[name] = call()
    seconds = {name: [] for name in calls}
    for _ in range(steps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    batch = int(images.shape[0])
    rates = {f"{name}_img_s": batch / statistics.median(s) for name, s in seconds.items()}
    reference = outputs["unfolded"]
    for name in ("folded", "predict_path"):
        if name in outputs:
            difference = np.abs(outputs[name] - reference).max() / np.abs(reference).max()
            rates[f"{name}_max_difference_relative"] = float(difference)
            rates[f"{name}_over_unfolded"] = rates[f"{name}_img_s"] / rates["unfolded_img_s"]
    return rates


def training_rate(model, images, steps):
    best, median = best_and_median(_training_step(model, images), steps)
    return int(images.shape[0]) / median


def measure_model(name, spec, args, ceiling):
    row = {"builder": spec[0], "kwargs": spec[1], "load_average": results_io.load_average()}
    model = build(spec)
    row["params"] = model.count_params()
    instance = kseg.models.get_task(spec[0]) == "instance"
    try:
        flops = kseg.summary.forward_flops(model, (args.size, args.size), channels=3)
        row["gflop_per_image"] = flops / 1e9
        if instance:
            row["flops_note"] = "a lower bound: the ops after the proposals have no static shape"
    except Exception as error:  # Mask R-CNN's data-dependent stages have no static count
        row["gflop_per_image"] = None
        row["flops_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.size, args.size, 3)
    images = tf.constant(rng.uniform(0, 255, shape).astype("float32"))
    folded = kseg.inference.fold_batch_norm_if_exact(model)
    if folded is model:
        row["folded"] = "not folded: " + (
            "a subclassed model"
            if not kseg.inference.supports_batch_norm_folding(model)
            else "nothing to fold or not float32"
        )
        folded = None
    row.update(inference_rates(model, folded, images, args.steps, predict_path=not instance))
    row["inference_img_s"] = row.pop("unfolded_img_s")
    if args.training and not instance:
        row["train_img_s"] = training_rate(model, images, args.steps)
    elif instance:
        row["train_img_s"] = None
        row["train_note"] = "not measured: a Mask R-CNN step needs instance targets"
    flop = row["gflop_per_image"]
    if flop:
        for key, passes in (
            ("inference_img_s", 1),
            ("folded_img_s", 1),
            ("predict_path_img_s", 1),
            ("train_img_s", TRAINING_FORWARD_PASSES),
        ):
            if row.get(key):
                row[f"{key.removesuffix('_img_s')}_gflop_s"] = flop * passes * row[key]
    set_shares(row, ceiling)
    return row


def set_shares(row, ceiling):
    """Each `<form>_gflop_s` of `row` as `<form>_share_of_conv_ceiling` of `ceiling`."""
    for key in [key for key in row if key.endswith("_gflop_s")]:
        row[key.removesuffix("_gflop_s") + "_share_of_conv_ceiling"] = row[key] / ceiling


# --- per-op profile ------------------------------------------------------------------------------

_OP_EVENT = re.compile(r"^(?P<name>[^:]+):(?P<type>[A-Za-z_][\w]*)$")


def _xplane_op_times(logdir):
    """Total picoseconds per (op name, op type) in the host plane of the newest trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    space = xplane_pb2.XSpace()
    with open(max(paths, key=os.path.getmtime), "rb") as file:
        space.ParseFromString(file.read())
    times = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                match = _OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if match:
                    times[(match["name"], match["type"])] += event.duration_ps
    return times


def _readable_op_name(name):
    # Keras's call counters (`_1`) make one layer's ops look like several.
    return re.sub(r"_\d+(?=/|$)", "", name)


def op_profile(step, steps):
    """Op-type and per-op time over `steps` calls of `step()`, from TensorFlow's profiler."""
    step()
    step()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        times = _xplane_op_times(logdir)
    total = sum(times.values())
    by_type, by_op = collections.Counter(), collections.Counter()
    for (name, kind), picoseconds in times.items():
        by_type[kind] += picoseconds
        by_op[(_readable_op_name(name), kind)] += picoseconds
    per_step_ms = 1e-9 / steps
    return {
        "steps": steps,
        "wall_ms_per_step": 1e3 * wall / steps,
        "op_ms_per_step": total * per_step_ms,
        "note": "op time is summed over threads, so it can exceed the wall time",
        "by_type": [
            {"type": kind, "ms_per_step": ps * per_step_ms, "share": ps / total}
            for kind, ps in by_type.most_common()
        ],
        "top_ops": [
            {"op": name, "type": kind, "ms_per_step": ps * per_step_ms, "share": ps / total}
            for (name, kind), ps in by_op.most_common(TOP_OPS)
        ],
    }


def _inference_step(model, images):
    function = tf.function(lambda x: model(x, training=False))
    return lambda: tf.nest.map_structure(np.asarray, function(images))


def _training_step(model, images):
    labels = np.random.default_rng(1).integers(0, NUM_CLASSES, images.shape[:3]).astype("int32")
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=IGNORE_LABEL
        ),
        jit_compile=False,
    )
    return lambda: model.train_on_batch(images, labels)


def isolated_convolutions(model, images, repeats):
    """Each regular convolution of `model` timed alone at its input shape, and their sum.

    Every `Conv2D` call's input shape, kernel, strides, dilation and padding is recorded in one
    forward pass; each distinct case then runs as a compiled convolution + bias + ReLU (what
    the folded graph fuses) on random data, best of `repeats` calls. The sum over all calls is
    what the convolutions cost at the speed TensorFlow's kernels give each shape alone: the
    share of the ceiling the model could reach if everything else were free.
    """
    cases = collections.Counter()
    layers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, keras.layers.DepthwiseConv2D)
        and layer.groups == 1
    ]
    originals = {}
    for layer in layers:
        originals[layer] = layer.call

        def recording(x, *args, _layer=layer, **kwargs):
            key = (
                tuple(int(d) for d in x.shape[1:]),
                tuple(int(d) for d in _layer.kernel.shape),
                tuple(_layer.strides),
                tuple(_layer.dilation_rate),
                _layer.padding.upper(),
            )
            cases[key] += 1
            return originals[_layer](x, *args, **kwargs)

        layer.call = recording
    try:
        model(images, training=False)
    finally:
        for layer, call in originals.items():
            layer.call = call
    batch = int(images.shape[0])
    rng = np.random.default_rng(0)
    rows, total_seconds, total_flop = [], 0.0, 0.0
    for (shape, kernel_shape, strides, rate, padding), count in cases.items():
        x = tf.constant(rng.normal(size=(batch, *shape)).astype("float32"))
        kernel = tf.constant(rng.normal(size=kernel_shape).astype("float32") * 0.01)
        bias = tf.zeros(kernel_shape[-1])
        conv = tf.function(
            lambda x, k=kernel, b=bias, s=strides, r=rate, p=padding: tf.nn.relu(
                tf.nn.conv2d(x, k, s, p, dilations=r) + b
            )
        )
        out_elements = int(np.prod(conv(x).shape[:3]))
        flop = 2 * out_elements * int(np.prod(kernel_shape))
        best, _ = best_and_median(lambda f=conv, t=x: f(t).numpy(), repeats)
        total_seconds += best * count
        total_flop += flop * count
        rows.append(
            {
                "input_shape": list(shape),
                "kernel": list(kernel_shape),
                "strides": list(strides),
                "dilation": list(rate),
                "calls": count,
                "ms_each": 1e3 * best,
                "gflop_s": flop / best / 1e9,
            }
        )
    rows.sort(key=lambda row: -row["ms_each"] * row["calls"])
    return {
        "sum_ms": 1e3 * total_seconds,
        "gflop": total_flop / 1e9,
        "gflop_s": total_flop / total_seconds / 1e9,
        "slowest": rows[:TOP_OPS],
    }


def profile(name, spec, size, batch, steps, training=False):
    """Op profiles of one model: as built and batch-norm folded (inference), and training; and
    its convolutions timed alone (`isolated_convolutions`, on the folded copy)."""
    model = build(spec)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    report = {"name": name, "model": spec[0], "kwargs": spec[1], "size": size, "batch_size": batch}
    report["unfolded"] = op_profile(_inference_step(model, images), steps)
    folded = kseg.inference.fold_batch_norm_if_exact(model)
    if folded is not model:
        report["folded"] = op_profile(_inference_step(folded, images), steps)
    if kseg.models.get_task(spec[0]) == "semantic":
        report["isolated_convolutions"] = isolated_convolutions(folded, images, repeats=10)
    if training:
        report["training"] = op_profile(_training_step(model, images), steps)
    return report


def print_profile(report, count=12):
    isolated = report.get("isolated_convolutions")
    if isolated:
        print(
            f"profile {report['name']}: its convolutions alone {isolated['sum_ms']:.0f} ms "
            f"({isolated['gflop_s']:.0f} GFLOP/s)"
        )
    for variant in PROFILE_VARIANTS:
        if variant not in report:
            continue
        entry = report[variant]
        print(
            f"profile {report['name']} {variant}: {entry['wall_ms_per_step']:.0f} ms/step wall, "
            f"{entry['op_ms_per_step']:.0f} ms/step of op time"
        )
        for row in entry["by_type"][:count]:
            print(f"  {row['type']:28s} {row['ms_per_step']:9.1f} ms  {100 * row['share']:5.1f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--conv-size", type=int, default=64, help="the ceiling conv's H and W")
    parser.add_argument("--ceiling-repeats", type=int, default=10)
    parser.add_argument("--no-training", dest="training", action="store_false")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--tiny", action="store_true", help="small models and shapes")
    parser.add_argument("--out", default=results_io.result_path("efficiency"))
    args = parser.parse_args()
    if args.tiny:
        args.size, args.matmul_size, args.conv_size, args.steps = 64, 256, 16, 2
    machine = results_io.machine_facts(
        niceness=os.nice(0),
        inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
    )
    under_load = machine["load_average_start"][0] > 0.5
    report = {
        "config": vars(args),
        "machine": machine,
        "under_load": under_load,
        "note": (
            "TINY RUN: small models and shapes, a test of the script, not a measurement. "
            if args.tiny
            else ""
        )
        + (
            "MEASURED UNDER LOAD (one-minute load average "
            f"{machine['load_average_start'][0]} at the start on {machine['cpus']} CPUs): "
            "speeds and shares are lower than the machine's."
            if under_load
            else "Measured on an idle machine."
        ),
        "ceilings": {},
        "models": {},
    }
    conv_shape = (args.batch_size, args.conv_size, args.conv_size, 256)
    if args.tiny:
        conv_shape = (args.batch_size, args.conv_size, args.conv_size, 32)
    report["ceilings"] = ceilings(args.matmul_size, conv_shape, args.ceiling_repeats)
    conv_ceiling = report["ceilings"]["conv3x3"]["gflop_s"]
    for name, entry in report["ceilings"].items():
        print(f"ceiling {name:8s} {entry['gflop_s']:7.1f} GFLOP/s (best of {args.ceiling_repeats})")
    results_io.write_result(args.out, report)

    specs = model_specs(args.tiny)
    names = list(specs) if args.models == "all" else args.models.split(",")
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise SystemExit(f"unknown models {unknown}; known: {', '.join(specs)}")
    for name in names:
        keras.backend.clear_session()
        row = measure_model(name, specs[name], args, conv_ceiling)
        report["models"][name] = row
        share = row.get("inference_share_of_conv_ceiling")
        print(
            f"{name:24s} {row['gflop_per_image'] or float('nan'):8.1f} GFLOP/img  "
            f"infer {row['inference_img_s']:7.3f} img/s "
            f"({'-' if share is None else f'{100 * share:.0f}%'})  "
            f"folded x{row.get('folded_over_unfolded', float('nan')):.3f}  "
            f"predict path x{row.get('predict_path_over_unfolded', float('nan')):.3f}  "
            f"train {row.get('train_img_s') or float('nan'):7.3f} img/s",
            flush=True,
        )
        results_io.write_result(args.out, report)

    # The ceiling's best-of-N timing moves by a few percent from run to run (474-502 GFLOP/s for
    # the convolution on one day); measured again after the models, the higher of the two is
    # the one every share is taken against, so no share gains from a slow ceiling measurement.
    report["ceilings_after_models"] = ceilings(args.matmul_size, conv_shape, args.ceiling_repeats)
    conv_ceiling = max(conv_ceiling, report["ceilings_after_models"]["conv3x3"]["gflop_s"])
    report["conv_ceiling_gflop_s"] = conv_ceiling
    print(f"conv ceiling used: {conv_ceiling:.1f} GFLOP/s (the higher of before and after)")
    for name, row in report["models"].items():
        set_shares(row, conv_ceiling)
        share = row.get("predict_path_share_of_conv_ceiling")
        if share is not None:
            print(f"{name:24s} predict path {100 * share:.0f}% of the conv ceiling")
    results_io.write_result(args.out, report)

    if args.profile:
        size, batch = (args.size, args.batch_size) if args.tiny else (PROFILE_SIZE, PROFILE_BATCH)
        report["profiles"] = []
        for name in PROFILED_MODELS:
            keras.backend.clear_session()
            training = name == TRAINING_PROFILED_MODEL
            model_size = size if args.tiny else PROFILE_SIZES.get(name, size)
            report["profiles"].append(
                profile(name, specs[name], model_size, batch, args.steps, training=training)
            )
            print_profile(report["profiles"][-1])
            results_io.write_result(args.out, report)
    print(f"wrote {results_io.write_result(args.out, report)}")


if __name__ == "__main__":
    main()
