"""Training and inference throughput of kseg models against the peer a user would pick.

Each case pairs a kseg model with the nearest packaged Keras/TensorFlow model of
the same architecture, builds both with random weights (no downloads) for the
same input size, classes, batch and precision (float32), compiles both with
Adam and sparse categorical cross-entropy on logits (XLA off on both, the
default of Keras 2 and Keras 3 on a CPU-only machine), and times `train_on_batch`
and `predict_on_batch` on the same synthetic batch. Each side runs in its own
subprocess (`benchmarks/peers/worker.py`) with its own interpreter, since the
peers need Keras 2 (tf-keras) and kseg needs Keras 3; both workers stay loaded
and warmed up while this script alternates short timed blocks between them
(kseg first in even rounds, the peer first in odd ones), so load from other
work on the shared CPU falls on both sides alike. Reported: median images/s
over the blocks, the ratio kseg/peer of those medians and the median of the
per-round paired ratios, parameter counts and forward GFLOPs per image of both
models (TensorFlow's graph profiler on the frozen forward pass: equal work means
a ratio measures the implementation, unequal work the architecture), and the
load average around the blocks; each case is written, with the command and
settings that measured it, into `benchmarks/results/peer_throughput.json`
(cases not re-run are kept).

The pairs, and why:
- `unet`: kseg's paper-width U-Net in its padded form (64..1024 filters, two
  3x3 ReLU convs per level, 2x2 up-convolutions, 31.0M parameters) against
  keras-unet-collection's `unet_2d` without a backbone, the one packaged Keras
  U-Net with the paper's layout. Its up-convolutions are 3x3 (+ReLU) instead of
  2x2, hence 37.6M parameters and 1.26x kseg's work (30.3 against 24.1 forward
  GFLOPs at 128x128). segmentation_models has no backbone-free U-Net.
- `unet_vgg16`: kseg's U-Net on the VGG16 encoder with decoder widths
  256/128/64/32/16 against segmentation_models' `Unet('vgg16')` with the same
  widths, no BN and upsampling blocks (both: 2 x (3x3 conv + ReLU) after the
  concatenation). sm adds a two-conv 512-channel centre block at stride 32 and
  takes its skips before the pools (one level wider); kseg upsamples with
  learned 2x2 transposed convolutions, sm with nearest-neighbour upsampling.
  The work is nearly equal (11.5 against 12.4 GFLOPs at 128x128).
- `fcn8s`: segmentation_models has no FCN. The packaged Keras FCN-8s is
  keras-segmentation's `fcn_8_vgg` (VGG16, fc6 7x7/fc7 1x1 with 4096 channels,
  pool3/pool4 score fusion): same layers and parameter count as kseg's FCN8s.
  It leaves out the paper's 100 px input padding, which kseg keeps (the paper's
  structure, needed for any input size): kseg's conv body sees (H+200)x(W+200)
  pixels: 72.2 against 13.9 forward GFLOPs at 128x128 (5.2x), so this pair
  measures the price of the paper's padding, not the implementation. Comparing FCN-8s with
  sm's Linknet/FPN would compare different architectures, so they are not used.
- `fcn8s_same`: the same peer against kseg's `FCN8s(fc6_padding="same")`,
  which drops the input padding and runs fc6 as a 'same'-padded 7x7 conv like
  the peer, so both do the same work and the ratio measures the
  implementation.
- `pspnet`: kseg's PSPNet (dilated ResNet-50 at output stride 8, bins 1/2/3/6,
  auxiliary res4 head during training) against segmentation_models' `PSPNet
  ('resnet50')`, the model a user would pick. sm's PSPNet is not the paper's:
  with its default `downsample_factor=8` it cuts the ResNet after its stride-8
  stage instead of dilating the later stages, so it has a twelfth of the
  parameters and of the work (2.4 against 29.2 GFLOPs at 144x144); the ratio
  is reported with both counts and is not an implementation comparison. Inputs
  are rounded up to a multiple of 48 (sm's pooling needs 6 x 8).
  keras-segmentation's `pspnet_50` (the ported Caffe
  dilated network, 46.8M parameters, 323 GFLOPs at 473x473) only accepts
  473x473 or 713x713 inputs: it is the architecture-matched pair `pspnet_473`
  (kseg without its training-only auxiliary head: 46.7M, 311 GFLOPs), run by
  name only since it takes minutes:
  `--cases pspnet_473 --batch 1 --rounds 4 --predict-steps 1`.
- `deeplabv3`: kseg's DeepLabV3 (ResNet-50, output stride 16, multi-grid 1/2/4,
  ASPP with image pooling) against keras-hub's DeepLabV3 built from a ResNet-50
  backbone config without presets (nothing downloaded). The parameter counts
  agree within 0.1%, but keras-hub's ResNet cannot dilate, so its ASPP runs at
  output stride 32: 7.6 against kseg's 9.9 GFLOPs at 128x128.

Adding a case is a few lines: a builder in `benchmarks/peers/kseg_models.py`,
one in the peer's module, and an entry in `CASES` below.

Peer venvs (Python 3.11, outside the repo, anywhere; none is a kseg dependency). The
Keras 2 peers share one; the script finds the interpreters through `--<peer>-python` or the
environment variables below:
    python3 -m venv ~/envs/sm
    ~/envs/sm/bin/pip install "tensorflow-cpu==2.21.*" "tf-keras==2.21.*" \\
        segmentation-models==1.0.1
    ~/envs/sm/bin/pip install --no-deps keras-unet-collection==0.1.13 keras-segmentation==0.3.0
    ~/envs/sm/bin/pip install tqdm opencv-python-headless
    python3 -m venv ~/envs/khub
    ~/envs/khub/bin/pip install "tensorflow-cpu==2.21.*" keras==3.15.1 keras-hub==0.32.0
    export KSEG_KERAS2_PEERS_PYTHON=~/envs/sm/bin/python
    export KSEG_KERAS_HUB_PYTHON=~/envs/khub/bin/python

Run (from the repo root, in kseg's venv):
    python benchmarks/peer_throughput.py                      # all cases, 128x128, batch 2
    python benchmarks/peer_throughput.py --cases unet fcn8s --size 256 --batch 4 --steps 2 \\
        --rounds 6

Worker logs (each side's stderr) go to `--log-dir`, by default a new temporary folder that the
script names.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import results_io
from locations import location_argument, require_locations

HERE = Path(__file__).resolve().parent
WORKER = HERE / "peers" / "worker.py"
KERAS2_ENV = {"TF_USE_LEGACY_KERAS": "1", "SM_FRAMEWORK": "tf.keras"}

# Each peer: the module in benchmarks/peers that builds its models, the environment variable
# naming its interpreter (overridden by --<peer>-python) and extra environment.
KERAS2_PYTHON = "KSEG_KERAS2_PEERS_PYTHON"
PEERS = {
    "segmentation_models": ("segmentation_models_peer", KERAS2_PYTHON, KERAS2_ENV),
    "keras_unet_collection": ("keras_unet_collection_peer", KERAS2_PYTHON, KERAS2_ENV),
    "keras_segmentation": ("keras_segmentation_peer", KERAS2_PYTHON, KERAS2_ENV),
    "keras_hub": ("keras_hub_peer", "KSEG_KERAS_HUB_PYTHON", {}),
}

# case -> (peer, input size multiple both sides accept, or the one size the peer accepts)
CASES = {
    "unet": ("keras_unet_collection", 16),
    "unet_vgg16": ("segmentation_models", 32),
    "fcn8s": ("keras_segmentation", 32),
    "fcn8s_same": ("keras_segmentation", 32),
    "pspnet": ("segmentation_models", 48),
    "deeplabv3": ("keras_hub", 16),
    "pspnet_473": ("keras_segmentation", {"fixed": 473}),
}
# pspnet_473 takes minutes per round on 2 cores: asked for by name only.
DEFAULT_CASES = ["unet", "unet_vgg16", "fcn8s", "fcn8s_same", "pspnet", "deeplabv3"]
# A case that pairs a second kseg form with an existing peer model names that model here.
PEER_CASE = {"fcn8s_same": "fcn8s"}


class Worker:
    """A warmed-up model in a subprocess, answering timed-block commands."""

    def __init__(self, name, module, python, env, case, size, args, side_case=None):
        self.name = name
        command = [
            python, str(WORKER), "--side", module, "--case", side_case or case,
            "--height", str(size), "--width", str(size), "--batch", str(args.batch),
            "--classes", str(args.classes), "--warmup", str(args.warmup),
        ]  # fmt: skip
        self.stderr_path = Path(args.log_dir) / f"{case}_{name}.stderr.txt"
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_path.open("w"),
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
        )
        self.info = self._read()

    def _read(self):
        for line in self.process.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        tail = self.stderr_path.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"{self.name} worker exited: {' | '.join(tail)}")

    def run(self, op, steps):
        self.process.stdin.write(json.dumps({"op": op, "steps": steps}) + "\n")
        self.process.stdin.flush()
        return self._read()["seconds"]

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()


def _summary(blocks, batch):
    rates = [batch * len(seconds) / sum(seconds) for seconds in blocks]
    # Blocks are short and paired with the other side's adjacent block, so their median
    # resists the bursts of load from other work better than a mean would.
    return {
        "images_per_second": statistics.median(rates),
        "per_block_images_per_second": rates,
        "seconds_per_step": [s for seconds in blocks for s in seconds],
    }


def run_case(case, args):
    peer_name, multiple = CASES[case]
    module, _, env = PEERS[peer_name]
    python = getattr(args, f"{peer_name}_python")
    size = multiple["fixed"] if isinstance(multiple, dict) else -(-args.size // multiple) * multiple
    result = {"case": case, "peer": peer_name, "input_size": [size, size], "batch": args.batch}
    workers = {}
    try:
        # Started one after the other so that neither warm-up is timed under the other's.
        workers["kseg"] = Worker("kseg", "kseg_models", sys.executable, {}, case, size, args)
        workers["peer"] = Worker(
            peer_name, module, python, env, case, size, args, PEER_CASE.get(case)
        )
    except (RuntimeError, OSError) as error:
        for worker in workers.values():
            worker.close()
        result["skipped"] = str(error)
        print(f"[{case}] skipped: {error}", flush=True)
        return result
    blocks = {side: {"train": [], "predict": []} for side in workers}
    loads = []
    for round_index in range(args.rounds):
        order = ["kseg", "peer"] if round_index % 2 == 0 else ["peer", "kseg"]
        for op in ("train", "predict"):
            for side in order:
                loads.append(os.getloadavg()[0])
                steps = args.steps if op == "train" else args.predict_steps
                blocks[side][op].append(workers[side].run(op, steps))
        print(f"[{case}] round {round_index + 1}/{args.rounds} done", flush=True)
    loads.append(os.getloadavg()[0])
    for worker in workers.values():
        worker.close()
    for side, worker in workers.items():
        result[side] = {
            **worker.info,
            **{op: _summary(blocks[side][op], args.batch) for op in blocks[side]},
        }
    for op in ("train", "predict"):
        kseg_rates = result["kseg"][op]["per_block_images_per_second"]
        peer_rates = result["peer"][op]["per_block_images_per_second"]
        result[f"{op}_ratio_kseg_over_peer"] = (
            result["kseg"][op]["images_per_second"] / result["peer"][op]["images_per_second"]
        )
        result[f"{op}_paired_ratio_median"] = statistics.median(
            k / p for k, p in zip(kseg_rates, peer_rates)
        )
    result["load_average_1min"] = {"min": min(loads), "max": max(loads)}
    # Work per image tells an implementation gap from an architecture gap.
    result["forward_gflops_ratio_kseg_over_peer"] = (
        result["kseg"]["forward_gflops_per_image"] / result["peer"]["forward_gflops_per_image"]
    )
    print(
        f"[{case}] train {result['kseg']['train']['images_per_second']:.2f} vs "
        f"{result['peer']['train']['images_per_second']:.2f} img/s "
        f"(x{result['train_ratio_kseg_over_peer']:.2f}); predict "
        f"{result['kseg']['predict']['images_per_second']:.2f} vs "
        f"{result['peer']['predict']['images_per_second']:.2f} img/s "
        f"(x{result['predict_ratio_kseg_over_peer']:.2f}); params "
        f"{result['kseg']['parameters']:,} vs {result['peer']['parameters']:,}; forward GFLOPs "
        f"{result['kseg']['forward_gflops_per_image']} vs "
        f"{result['peer']['forward_gflops_per_image']}",
        flush=True,
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=DEFAULT_CASES)
    parser.add_argument(
        "--size", type=int, default=128, help="square input size (rounded up per case)"
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed train+predict steps per worker"
    )
    parser.add_argument("--steps", type=int, default=1, help="timed train steps per block")
    parser.add_argument(
        "--predict-steps", type=int, default=3, help="timed predict steps per block"
    )
    parser.add_argument(
        "--rounds", type=int, default=8, help="alternating kseg/peer blocks per case"
    )
    interpreters = {
        peer_name: location_argument(
            parser,
            f"--{peer_name.replace('_', '-')}-python",
            variable,
            f"Python of the virtual environment with {peer_name}",
            required=False,
        )
        for peer_name, (_, variable, _) in PEERS.items()
    }
    parser.add_argument("--output", default=results_io.result_path("peer_throughput"))
    parser.add_argument(
        "--log-dir", help="where worker stderr goes (default: a new temporary folder)"
    )
    args = parser.parse_args()
    require_locations(
        parser, args, *dict.fromkeys(interpreters[CASES[case][0]] for case in args.cases)
    )
    if args.log_dir is None:
        args.log_dir = tempfile.mkdtemp(prefix="peer_throughput_logs_")
    print(f"worker logs in {args.log_dir}", flush=True)

    command = results_io.command_line()
    machine = results_io.machine_facts(
        contention=(
            "the CPU is shared with other work; both workers stay loaded and only one "
            "runs at a time, in alternating blocks (kseg first in even rounds, the peer "
            "first in odd ones), so contention hits both sides alike; each case records "
            "the 1-minute load average seen around its blocks"
        )
    )
    settings = {
        "classes": args.classes,
        "warmup_steps": args.warmup,
        "timed_train_steps_per_block": args.steps,
        "timed_predict_steps_per_block": args.predict_steps,
        "rounds": args.rounds,
        "precision": "float32",
        "optimizer": "Adam(1e-4)",
        "loss": "SparseCategoricalCrossentropy(from_logits=True)",
        "metrics": "none",
        "jit_compile": False,
        "data": "one synthetic batch, uniform [0, 255) images, uniform labels, seed 0",
        "weights": "random on both sides (no downloads)",
    }
    # Cases run by another command (e.g. the slow pspnet_473) stay in the file, each with
    # the command and settings that measured it.
    report = results_io.read_result(args.output)
    cases = report.get("cases", {}) if isinstance(report.get("cases"), dict) else {}
    for case in args.cases:
        started = time.time()
        result = run_case(case, args)
        cases[case] = {
            **result,
            "command": command,
            "settings": settings,
            "wall_seconds": round(time.time() - started, 1),
            "measured_at_utc": results_io.utc_now(),
        }
        report = {"machine": machine, "cases": cases, "command": command}
        results_io.write_result(args.output, report)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
