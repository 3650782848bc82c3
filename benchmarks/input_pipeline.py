"""Whether kseg's training input pipeline keeps up with the training step on this machine.

The pipeline is built exactly as `kseg train` builds it (`kseg/cli/train.py`): the training
split through `kseg.data.load_split` with the recipe's resize, then `kseg.data.make_pipeline`
with the recipe's batch size, crop, scale range, flip and jitter and a seed, prefetched. Two
configurations on CamVid's training split (367 PNG pairs, 360x480):

1. `recipe`: the `deeplabv3plus` finetune recipe (the one `kseg train --data CAMVID` runs by
   default): images resized to 288x384, random scale 0.75-1.5, 192x256 crops, flip, batch 8.
2. `crop512`: native 360x480 images, random scale 0.5-2.0, 512x512 crops, flip and photometric
   jitter (`make_pipeline`'s defaults, the heaviest augmentation kseg has), batch 2.

For each, the pipeline alone is iterated (after warm-up batches) and its images/second
recorded, then the training step of the model that configuration trains (the recipe's
DeepLabV3+ MobileNetV2-0.35 from its bundled ImageNet weights, Adam, the recipe's loss; and
DeepLabV3+ ResNet-50 at output stride 16, as in benchmarks/efficiency.py) is timed on one
fixed batch (`train_img_s`) and fed by the pipeline (`fed_train_img_s`): the pipeline and the
step then share the two cores, which is how training runs. `pipeline_over_train` above 1 says
the pipeline delivers more than the step consumes; `fed_over_fixed` near 1 says feeding costs
the step nothing. The CPU time of the process per pipeline image (all tf.data threads) gives
`pipeline_core_share_at_train_rate`: the share of the cores the pipeline keeps busy while it
feeds the step at the step's own rate, which is what training loses to it.

Speeds are only meaningful on an idle machine: the file records the load average at the start,
before each configuration and at the end.

Usage:
    python benchmarks/input_pipeline.py --camvid ../shared/data/camvid
    python benchmarks/input_pipeline.py --camvid ../shared/data/camvid --quick  # smoke run
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

import kseg
import results_io
from kseg.data.memory_cache import cache_if_it_fits
from locations import location_argument

SEED = 0
RECIPE_MODEL = "deeplabv3plus"
RESNET_ARGS = {"backbone": "resnet50", "output_stride": 16}


def configurations(quick):
    """name -> how the pipeline is built and which models its batches train."""
    recipe = kseg.recipes.get(RECIPE_MODEL, "finetune")
    return {
        "recipe": {
            "resize": recipe.resize,
            "batch_size": recipe.batch_size,
            "crop_size": recipe.crop_size,
            "scale_range": recipe.scale_range,
            "flip": recipe.flip,
            "jitter": recipe.jitter,
            "models": {"deeplabv3plus_mobilenetv2_recipe": recipe.model_args},
            "recipe": f"{RECIPE_MODEL}/finetune",
        },
        "crop512": {
            "resize": None,
            "batch_size": 2,
            "crop_size": (512, 512),
            "scale_range": (0.5, 2.0),
            "flip": True,
            "jitter": True,
            # ResNet-50 at 512x512 takes minutes per handful of steps; the quick run skips it.
            "models": {}
            if quick
            else {
                "deeplabv3plus_resnet50": RESNET_ARGS,
            },
            "recipe": "make_pipeline defaults at 512x512",
        },
    }


def training_batches(camvid, config, recipe):
    """The training batches `kseg train` would feed for `config`, and the training pairs.

    Like `kseg train`, the decoded pairs are kept in memory when they fit
    (`kseg.data.memory_cache.cache_if_it_fits`); the cache is filled here, as `kseg train`'s
    first epoch fills it, so the figures are those of the epochs after the first.
    """
    source, info = kseg.data.load_split(camvid, "train", resize=config["resize"])
    cached_source, _, cached = cache_if_it_fits(source)
    for _ in cached_source:
        pass
    batches = kseg.data.make_pipeline(
        cached_source,
        config["batch_size"],
        crop_size=config["crop_size"],
        scale_range=config["scale_range"],
        flip=config["flip"],
        jitter=config["jitter"],
        seed=SEED,
        ignore_label=info.ignore_label,
        repeat=True,
    )
    return batches, source, info, cached


def iteration_rate(dataset, batch_size, warmup_images, images):
    """Images/second of iterating `dataset` for `images` images, after `warmup_images`.

    Each element holds `batch_size` images; both counts are rounded up to whole elements.
    """
    iterator = iter(dataset.repeat())
    for _ in range(-(-warmup_images // batch_size)):
        next(iterator)
    count = -(-images // batch_size)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(count):
        next(iterator)
    seconds = time.perf_counter() - start
    total = count * batch_size
    return {
        "images": total,
        "seconds": seconds,
        "img_s": total / seconds,
        # CPU time of the whole process (every tf.data thread) per image: what feeding costs
        # the training step when both share the cores, and less sensitive to other jobs.
        "cpu_ms_per_image": 1000 * (time.process_time() - cpu_start) / total,
    }


def compiled_model(model_args, recipe, source, info, num_classes):
    keras.utils.set_random_seed(SEED)
    model = kseg.models.get_model(RECIPE_MODEL, num_classes=num_classes, **model_args)
    loss = kseg.recipes.recipe_loss(recipe, num_classes, source, info.ignore_label)
    return kseg.training.compile_model(
        model,
        num_classes=num_classes,
        optimizer=recipe.optimizer,
        learning_rate=recipe.learning_rate,
        momentum=recipe.momentum,
        loss=loss,
        metrics=[],
        ignore_label=info.ignore_label,
        jit_compile=False,
    )


def training_rates(model, batches, batch_size, warmup, steps):
    """Images/second of the training step on one fixed batch and fed by `batches`.

    The two are timed in alternation, `steps` steps each, so both see the same machine.
    """
    iterator = iter(batches)
    images, masks = next(iterator)
    for _ in range(warmup):
        model.train_on_batch(images, masks)
    fixed, fed = [], []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(images, masks)
        fixed.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.train_on_batch(*next(iterator))
        fed.append(time.perf_counter() - start)
    return {
        "steps": steps,
        "fixed_batch_seconds": fixed,
        "fed_seconds": fed,
        "train_img_s": batch_size / statistics.median(fixed),
        "fed_train_img_s": batch_size / statistics.median(fed),
    }


def measure(name, config, args, recipe, num_classes):
    batch_size = config["batch_size"]
    row = {
        key: value for key, value in config.items() if key not in ("models",) and value is not None
    }
    row["load_average_before"] = results_io.load_average()
    batches, source, info, row["decoded_pairs_cached"] = training_batches(
        args.camvid, config, recipe
    )
    # The decoded (and resized) pairs alone: what the augmentation and batching start from.
    row["source"] = iteration_rate(source, 1, args.warmup_images, args.images)
    row["pipeline"] = iteration_rate(batches, batch_size, args.warmup_images, args.images)
    pipeline_img_s = row["pipeline"]["img_s"]
    print(
        f"{name}: decoded source {row['source']['img_s']:.1f} img/s, "
        f"pipeline {pipeline_img_s:.1f} img/s",
        flush=True,
    )
    row["models"] = {}
    for model_name, model_args in config["models"].items():
        model = compiled_model(model_args, recipe, source, info, num_classes)
        rates = training_rates(model, batches, batch_size, args.warmup_steps, args.steps)
        rates["model_args"] = model_args
        rates["pipeline_over_train"] = pipeline_img_s / rates["train_img_s"]
        rates["fed_over_fixed"] = rates["fed_train_img_s"] / rates["train_img_s"]
        # The share of the machine's cores the pipeline keeps busy at the training step's rate.
        rates["pipeline_core_share_at_train_rate"] = (
            rates["train_img_s"] * row["pipeline"]["cpu_ms_per_image"] / 1000 / os.cpu_count()
        )
        row["models"][model_name] = rates
        print(
            f"{name}/{model_name}: train {rates['train_img_s']:.2f} img/s (fixed batch), "
            f"{rates['fed_train_img_s']:.2f} img/s fed by the pipeline; "
            f"pipeline/train {rates['pipeline_over_train']:.1f}",
            flush=True,
        )
        del model
        keras.backend.clear_session()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    location_argument(parser, "--camvid", "KSEG_CAMVID", "CamVid root")
    parser.add_argument("--images", type=int, default=400, help="pipeline images timed")
    parser.add_argument("--warmup-images", type=int, default=40)
    parser.add_argument("--steps", type=int, default=6, help="training steps timed, each way")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few images and steps, no ResNet-50"
    )
    parser.add_argument("--out", default=None, help="result file (default: see --quick)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.warmup_images, args.steps, args.warmup_steps = 48, 16, 2, 1
    out = args.out or (
        os.path.join(tempfile.gettempdir(), "input_pipeline_quick.json")
        if args.quick
        else results_io.result_path("input_pipeline")
    )
    recipe = kseg.recipes.get(RECIPE_MODEL, "finetune")
    num_classes = kseg.data.camvid_info().num_classes
    report = {
        "config": {
            "dataset": "CamVid train (367 pairs, 360x480 PNG)",
            "seed": SEED,
            "images_timed": args.images,
            "warmup_images": args.warmup_images,
            "steps_timed": args.steps,
            "warmup_steps": args.warmup_steps,
            "quick": args.quick,
            "tf_data_threads": "tf.data default (one per core)",
        },
        "machine": results_io.machine_facts(threads=f"TensorFlow default ({os.cpu_count()})"),
    }
    report["under_load"] = report["machine"]["load_average_start"][0] > 0.5
    for name, config in configurations(args.quick).items():
        report[name] = measure(name, config, args, recipe, num_classes)
        results_io.write_result(out, report)
    print(f"wrote {results_io.write_result(out, report)}")


if __name__ == "__main__":
    main()
