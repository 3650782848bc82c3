"""The documentation hook that turns benchmarks/results/*.json into the Benchmarks page's tables."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="the hook raises mkdocs' PluginError: pip install mkdocs")
from mkdocs.exceptions import PluginError

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PAGE = REPO / "docs" / "benchmarks.md"

_spec = importlib.util.spec_from_file_location(
    "benchmark_tables", REPO / "docs" / "benchmark_tables.py"
)
tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tables)

REAL_FILES = sorted(path.stem for path in RESULTS.glob("*.json"))
PAGE_MARKERS = [m["name"] for m in tables.MARKER.finditer(PAGE.read_text(encoding="utf-8"))]
# RoIAlign's table predates the shared conditions line and carries its own note on the machine.
OWN_NOTES = {"roi_align"}


def _cells(line):
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def assert_tables_well_formed(markdown):
    """Every Markdown table has a separator row and as many cells per row as header cells."""
    lines = [line.strip() for line in markdown.splitlines()]
    tables_found = 0
    index = 0
    while index < len(lines):
        if not lines[index].startswith("|"):
            index += 1
            continue
        block = []
        while index < len(lines) and lines[index].startswith("|"):
            block.append(lines[index])
            index += 1
        tables_found += 1
        width = len(_cells(block[0]))
        assert len(block) >= 2 and set(_cells(block[1])) == {" --- "}, block[:2]
        for row in block:
            assert len(_cells(row)) == width, f"{len(_cells(row))} cells, header has {width}: {row}"
    return tables_found


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    return tmp_path


def _write(folder, name, content):
    (folder / f"{name}.json").write_text(json.dumps(content), encoding="utf-8")


def test_number_formats():
    assert tables.ratio(1.1902221994256235) == "1.19×"
    assert tables.ratio(18.56) == "18.6×"
    assert tables.ratio(1855.9584923005432) == "1,856×"
    assert tables.duration(0.08796588400218752) == "88 ms"
    assert tables.duration(0.0076) == "7.6 ms"
    assert tables.duration(1.9807607870006905) == "2.0 s"
    assert tables.duration(689.6467836309985) == "11.5 min"
    assert tables.score(0.4892754994272535) == "0.489"
    assert tables.percent(0.0172) == "1.7%"
    assert tables.mebibytes(5486.87109375) == "5,487 MiB"
    # A value a partly written file lacks is a dash, not a crash or a zero.
    for formatter in (tables.ratio, tables.duration, tables.score, tables.percent, tables.rate):
        assert formatter(None) == tables.MISSING


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_has_a_formatter_that_reads_it(name):
    results = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    formatter = tables.formatter_for(name)
    assert formatter is not tables.generic_table, f"{name}.json has no formatter of its own"
    # Called directly: a formatter bug must fail here, not hide behind render's fallback.
    text = formatter(results)
    assert assert_tables_well_formed(text) >= 1
    assert tables.NOT_MEASURED not in text.split("\n")[0]
    if name not in OWN_NOTES:
        assert "*Conditions recorded:" in text or "records no machine conditions" in text


def test_peer_throughput_rows_match_the_file():
    results = json.loads((RESULTS / "peer_throughput.json").read_text(encoding="utf-8"))
    text = tables.peer_throughput_table(results)
    speed_table = text.split("\n\n")[0]
    rows = {_cells(line)[0].strip(): line for line in speed_table.splitlines()[2:]}
    for name, case in results["cases"].items():
        row = _cells(rows[f"`{name}`"])
        assert row[4].strip() == f"{case['train_paired_ratio_median']:.2f}×"
        assert row[7].strip() == f"{case['predict_paired_ratio_median']:.2f}×"
    loads = [v for c in results["cases"].values() for v in c["load_average_1min"].values()]
    assert f"between {min(loads):.1f} and {max(loads):.1f}" in text


def test_camvid_context_family_lists_planned_models_not_yet_trained():
    results = {
        "config": {"models": "deeplabv3plus,refinenet,pspnet", "epochs": 6, "size": [192, 256]},
        "results": {
            "deeplabv3plus": {
                "parameters": 2590363,
                "train_seconds": 689.6,
                "steps": 270,
                "plain": {"mean_iou": 0.48927, "pixel_accuracy": 0.8845, "seconds": 50.0},
                "plain_os8": {"mean_iou": 0.42551, "pixel_accuracy": 0.85},
            },
            "refinenet": {"steps": 270, "warmup_steps": 45, "plain": {"mean_iou": 0.4}},
        },
    }
    text = tables.camvid_context_family_table(results)
    assert_tables_well_formed(text)
    lines = text.splitlines()
    header = _cells(lines[0])
    trained = _cells(next(line for line in lines if line.startswith("| `deeplabv3plus`")))
    assert trained[header.index(" mIoU plain ")].strip() == "0.489"
    # Evaluated but not with the CRF yet: a dash, and an extra mode gets its own column.
    assert trained[header.index(" mIoU + dense CRF ")].strip() == tables.MISSING
    assert trained[header.index(" mIoU plain, output stride 8 ")].strip() == "0.426"
    assert trained[header.index(" steps ")].strip() == "270"
    warmed = _cells(next(line for line in lines if line.startswith("| `refinenet`")))
    assert warmed[header.index(" steps ")].strip() == "270 (45 warm-up)"
    planned = _cells(next(line for line in lines if line.startswith("| `pspnet`")))
    assert planned[1].strip() == tables.NOT_MEASURED


def test_weak_vs_full_rows_targets_and_missing_rows():
    results = {
        "results": {
            "full": {"mean_iou": 0.80, "ratio_to_full": 1.0, "train_seconds": 90.0},
            "scribbles": {
                "mean_iou": 0.66,
                "ratio_to_full": 0.825,
                "target_ratio": 0.85,
                "meets_target": False,
                "labels": "scribbles",
                "method": "ScribbleSup",
            },
            "boxes_bbox_seg": {"not_applicable": "(no background class)"},
        },
        "config": {"dataset": "camvid", "size": [120, 160]},
        "machine": {
            "cpu_count": 2,
            "load_average_start": [3.0, 2, 1],
            "load_average_end": [4.2, 2, 1],
        },
    }
    text = tables.weak_vs_full_table(results)
    assert_tables_well_formed(text)
    rows = {
        _cells(line)[0].strip(): _cells(line)
        for line in text.splitlines()
        if line.startswith("| `")
    }
    assert [cell.strip() for cell in rows["`scribbles`"][3:7]] == ["0.660", "82%", "≥ 85%", "no"]
    assert rows["`boxes_bbox_seg`"][3].strip().startswith("not applicable")
    assert rows["`tags_ccnn`"][3].strip() == tables.NOT_MEASURED
    assert "load average 3.0 at the start and 4.2 at the end" in text
    assert "2 CPU cores" in text and "not recorded: thread count, library versions" in text


def test_recipe_results_rows_scores_and_unmeasured_rows():
    results = {
        "results": {
            "deeplabv3plus_camvid": {
                "command": "kseg train --data camvid --run-dir runs/r",
                "wall_seconds": 840.0,
                "load_average_before": [0.2, 0.3, 0.4],
                "recipe": {
                    "resize": [192, 256],
                    "optimizer": "adam",
                    "learning_rate": 0.002,
                    "batch_size": 8,
                    "epochs": 30,
                    "class_weighting": "median_frequency",
                },
                "scores": {"mean_iou": 0.5612, "iou": [0.9, 0.25], "class_names": ["Sky", "Pole"]},
                "native_resolution": {"command": "kseg evaluate", "scores": {"mean_iou": 0.5501}},
            },
            "mask_rcnn_shapes": {
                "wall_seconds": 300.0,
                "scores": {"mask_AP": 0.41, "mask_AP50": 0.8, "box_AP": 0.5},
            },
        },
        "machine": {"cpus": 2, "load_average_start": [0.2, 0, 0], "load_average_end": [1.9, 0, 0]},
    }
    text = tables.recipe_results_table(results)
    assert assert_tables_well_formed(text) == 1
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = {_cells(line)[0].strip(): [cell.strip() for cell in _cells(line)] for line in lines}
    camvid = rows["DeepLabV3+ MobileNetV2-0.35 (ImageNet), CamVid train → val"]
    assert camvid[1] == "192×256, adam 0.002, batch 8, 30 epochs, median frequency weights"
    assert camvid[2:] == [
        "14.0 min",
        "0.561 (val mean IoU)",
        "0.550",
        "Sky 0.900, Pole 0.250",
        "0.2",
    ]
    shapes = rows["Mask R-CNN MobileNetV2-0.35 FPN, shapes"]
    assert shapes[2:6] == ["5.0 min", "0.410 (val mask AP)", "—", "mask AP50 0.800, box AP 0.500"]
    assert rows["U-Net, ISBI 2012 slices 0-19 → 20-23"][3] == tables.NOT_MEASURED
    assert "`kseg train --data camvid --run-dir runs/r`" in text
    assert "scored at the labels' size: `kseg evaluate`" in text


def test_mask_rcnn_timing_partial_and_complete():
    assert tables.NOT_MEASURED in tables.mask_rcnn_timing_table({"config": {}, "runs": []})
    run = {
        "batch_size": 1,
        "train_step": {"median_s": 4.0},
        "inference": {"median_s": 1.5, "median_per_image_s": 1.5},
        "roi_align": {
            "train_box": {
                "mode": "forward_backward",
                "kseg_median_s": 0.2,
                "per_level_median_s": 0.5,
                "multiscale_median_s": 0.6,
                "kseg_over_torchvision_per_level": 0.4,
            }
        },
        "captured": {"boxes": {"train_box": {"shape": [1, 512, 4]}}},
        "fractions": {"train_roi_align_fraction": 0.05},
        "torch_versions": {"torch": "2.14.1", "torchvision": "0.29.1"},
    }
    results = {
        "machine": {"cpus": 2, "tensorflow_intra_op_threads": 2, "tensorflow": "2.21.0"},
        "config": {"backbone": "resnet50", "image_size": 512},
        "runs": [run],
    }
    text = tables.mask_rcnn_timing_table(results)
    assert_tables_well_formed(text)
    step = _cells(text.splitlines()[2])
    # paste_masks was not reached: its cell is a dash while the others are filled.
    assert [cell.strip() for cell in step[:6]] == ["1", "4.0 s", "1.5 s", "1.5 s", "—", "5.0%"]
    call = next(line for line in text.splitlines() if "box branch" in line)
    assert "1×512" in call and "200 ms" in call and "0.40×" in call
    assert "torch 2.14.1, torchvision 0.29.1" in text and "2 intra-op threads" in text


def test_pretrained_load_splits_semantic_and_detection_rows():
    timing = {"kseg_median_s": 3.0, "torchvision_median_s": 2.0}
    results = {
        "input": {"repeats": 5},
        "instance_input": {"repeats": 3},
        "models": {
            "fcn_resnet50": {
                "first_load_s": 2.0,
                "cached_load_s": 1.0,
                "load_average_start": [1.44, 2.0, 3.0],
                "images": {"520x700": {**timing, "argmax_agreement": 1.0}},
            },
            "maskrcnn_resnet50_fpn": {
                "first_load_s": 4.0,
                "cached_load_s": 1.0,
                "load_average_start": [3.5, 4.0, 5.0],
                "load_average_end": [4.31, 4.0, 5.0],
                "images": {
                    "480x640": {
                        **timing,
                        "time_ratio_kseg_over_torchvision": 1.5,
                        "detections_kseg": 99,
                        "detections_torchvision": 100,
                        "boxes_max_abs_px": 4e-4,
                        "scores_max_abs": 3e-6,
                        "same_labels_and_order": False,
                        "mask_pixels_equal": 0.99991,
                        "near_tie_swaps": 2,
                        "boxes_max_abs_px_ties_paired": 2e-4,
                        "mask_pixels_equal_ties_paired": 0.99998,
                    }
                },
            },
        },
    }
    text = tables.pretrained_load_table(results)
    assert assert_tables_well_formed(text) == 3
    loads = {_cells(line)[0].strip(): _cells(line) for line in text.split("\n\n")[0].splitlines()}
    # A row without its end load average shows a dash rather than half a span.
    assert loads["`fcn_resnet50`"][-1].strip() == "—"
    assert loads["`maskrcnn_resnet50_fpn`"][-1].strip() == "3.5 → 4.3"
    detection = next(line for line in text.splitlines() if "480×640" in line)
    cells = [cell.strip() for cell in _cells(detection)]
    assert cells[4:] == [
        "1.50×",
        "99 / 100",
        "no",
        "2",
        "4.0e-04",
        "2.0e-04",
        "3.0e-06",
        "99.991%",
        "99.998%",
    ]
    assert "median of 5 calls" in text and "median of 3 calls" in text


def test_mask_rcnn_shapes_metrics_settings_and_undefined_ranges():
    results = {
        "args": {"image_size": 128, "epochs": 40},
        "metrics": {"mask_AP": 0.61234, "mask_APl": -1.0, "num_images": 200},
        "train_seconds": 3600.0,
    }
    text = tables.mask_rcnn_shapes_table(results)
    assert_tables_well_formed(text)
    assert "| mask AP | 0.612 |" in text
    # COCOeval's -1 (no object of that size) is not a score.
    assert "| mask AP large | undefined |" in text
    assert "| training time (minutes) | 60 |" in text and "200 held-out" in text
    assert "records no machine conditions" in text


def test_export_parity_marks_errors_and_label_disagreement():
    results = {
        "tiny": {
            "select_tf_ops": False,
            "saved_model": {"max_abs_over_max_logit": 0.0, "label_agreement": 1.0},
            "tflite_float16": {
                "bytes": 2048,
                "max_abs_over_max_logit": 1.24e-3,
                "label_agreement": 0.9876,
            },
            "tflite_int8_full": {"error": "calibration needs the Flex delegate"},
            "onnx": {"error": "tf2onnx could not convert: ['a|b']"},
        }
    }
    text = tables.export_parity_table(results)
    assert_tables_well_formed(text)
    row = [cell.strip() for cell in _cells(text.splitlines()[2])]
    assert row[1] == "0"
    assert row[3] == "1.2e-03 (labels 98.8%)"
    assert row[5] == "not run: calibration needs the Flex delegate"
    assert row[6] == "not run: tf2onnx could not convert"
    assert row[2] == tables.MISSING


def test_missing_file_renders_a_note_naming_its_script(results_dir):
    note = tables.render("mask_rcnn_timing")
    assert note.startswith('!!! note "Not measured yet"')
    assert "`benchmarks/mask_rcnn_timing.py`" in note
    family = tables.render("weak_vs_full*")
    assert "weak_vs_full*.json" in family and "`benchmarks/weak_vs_full.py`" in family


def test_file_family_appears_once_written(results_dir):
    for dataset in ("shapes", "camvid"):
        _write(results_dir, f"weak_vs_full_{dataset}", {"results": {"full": {"mean_iou": 0.5}}})
    text = tables.render("weak_vs_full*")
    assert "**`benchmarks/results/weak_vs_full_camvid.json`**" in text
    assert "**`benchmarks/results/weak_vs_full_shapes.json`**" in text
    assert text.count("| `full` |") == 2


def test_unknown_marker_without_file_stops_the_build(results_dir):
    with pytest.raises(PluginError, match="no_such_benchmark"):
        tables.render("no_such_benchmark")


def test_unexpected_layout_falls_back_to_every_value(results_dir):
    # A peer case whose kseg side is not a dict yet: the formatter cannot read it.
    _write(results_dir, "peer_throughput", {"cases": {"odd": {"kseg": "pending"}}})
    text = tables.render("peer_throughput")
    assert "odd" in text and "pending" in text
    assert_tables_well_formed(text)


def test_generic_table_groups_a_dict_of_rows():
    results = {
        "rows": {"a": {"iou": 0.51234, "seconds": 2.0}, "b": {"iou": 0.25}},
        "count": 3,
        "config": {"epochs": 2},
    }
    text = tables.generic_table(results)
    assert_tables_well_formed(text)
    assert "| `a` | 0.5123 | 2 |" in text and "| `b` | 0.25 | — |" in text
    assert "| count | 3 |" in text and "| epochs | 2 |" in text


def test_catch_all_marker_renders_only_unclaimed_files(results_dir):
    _write(results_dir, "named", {"x": 1.0})
    _write(results_dir, "family_one", {"x": 2.0})
    _write(results_dir, "stray", {"x": 3.0})
    page = "<!-- benchmark: named -->\n\n<!-- benchmark: family* -->\n\n<!-- benchmark: * -->\n"
    text = tables.on_page_markdown(page, None, None, None)
    assert text.count("benchmarks/results/stray.json") == 1
    assert "results/named.json`**" not in text
    assert text.count("results/family_one.json") == 1
    assert "<!-- benchmark" not in text


def test_catch_all_says_so_when_everything_is_claimed(results_dir):
    _write(results_dir, "named", {"x": 1.0})
    assert "None at present" in tables.render_rest(["named"])


def test_every_benchmark_script_has_a_section_on_the_page():
    # Scripts run as `python benchmarks/NAME.py`; the modules they share (results_io, locations)
    # have no `__main__` block and no section.
    scripts = {
        path.stem
        for path in (REPO / "benchmarks").glob("*.py")
        if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")
    }
    assert {"throughput", "dense_crf", "weak_vs_full"} <= scripts
    exact = {name for name in PAGE_MARKERS if not name.endswith("*")}
    prefixes = [name[:-1] for name in PAGE_MARKERS if name.endswith("*") and name != "*"]
    missing = {s for s in scripts if s not in exact and not any(s.startswith(p) for p in prefixes)}
    assert not missing, f"benchmarks without a section in docs/benchmarks.md: {sorted(missing)}"
    assert "*" in PAGE_MARKERS


def test_every_recording_script_exists():
    for name, source in tables.RECORDED_BY.items():
        assert (REPO / source).is_file(), f"{name}: {source} does not exist"


@pytest.mark.parametrize("name", PAGE_MARKERS)
def test_page_marker_renders_from_the_real_results(name):
    text = tables.render_rest(PAGE_MARKERS) if name == "*" else tables.render(name)
    assert text.strip()
    if text.startswith("!!! note"):
        assert not list(RESULTS.glob(f"{name.rstrip('*')}{'*' if name.endswith('*') else ''}.json"))
    elif "None at present" not in text:
        assert assert_tables_well_formed(text) >= 1


def test_deployment_speed_table_gives_each_form_its_speed_and_agreement():
    form = {
        "bytes": 3 * 2**20,
        "label_agreement": 0.9876,
        "label_agreement_clear_pixels": 1.0,
        "max_abs_logit_difference_relative": 0.0123,
        "default_delegates": {"delegate_nodes": 4, "nodes": 60},
        "threads_2": {"img_s": 21.5},
        "threads_1": {"img_s": 12.25},
    }
    results = {
        "config": {"quick": False},
        "unet": {
            "image_size": [256, 256],
            "weights": "random",
            "keras": {"img_s": 5.0},
            "saved_model": {"img_s": 6.0, "label_agreement": 1.0, "clear_pixel_share": 0.8},
            "tflite_float32": {**form, "threads_2_without_xnnpack": {"img_s": 3.0}},
            "tflite_int8_full": dict(form, default_delegates={"delegate_nodes": 0, "nodes": 9}),
        },
    }
    text = tables.deployment_speed_table(results)
    assert assert_tables_well_formed(text) == 1
    rows = {_cells(line)[0].strip(): _cells(line) for line in text.splitlines()[4:11]}
    float32 = [cell.strip() for cell in rows["TFLite float32"]]
    assert float32[1:] == ["21.5", "12.2", "3.0 MB", "98.76%", "100.00%", "1.2e-02", "yes"]
    assert rows["TFLite int8 full integer"][-1].strip() == "no"
    assert rows["TFLite float16 weights"][1].strip() == tables.MISSING
    assert rows["TFLite float32 without XNNPACK"][1].strip() == "3"
    assert rows["SavedModel"][1].strip() == "6"
    assert "**unet** (256×256, batch 1, random; clear pixels: 80% of all)" in text


def test_input_pipeline_table_relates_the_pipeline_to_each_training_step():
    results = {
        "recipe": {
            "crop_size": [192, 256],
            "batch_size": 8,
            "source": {"img_s": 150.0},
            "pipeline": {"img_s": 110.0, "cpu_ms_per_image": 9.04},
            "models": {
                "mobilenet": {
                    "train_img_s": 20.0,
                    "fed_train_img_s": 19.0,
                    "pipeline_over_train": 5.5,
                    "fed_over_fixed": 0.95,
                    "pipeline_core_share_at_train_rate": 0.0904,
                }
            },
        },
        "crop512": {"crop_size": [512, 512], "batch_size": 2, "pipeline": {"img_s": 60.0}},
    }
    text = tables.input_pipeline_table(results)
    assert assert_tables_well_formed(text) == 1
    lines = text.splitlines()
    recipe = [cell.strip() for cell in _cells(lines[2])]
    assert recipe == [
        "`recipe`",
        "192×256",
        "8",
        "150",
        "110",
        "mobilenet",
        "20",
        "19",
        "5.50×",
        "0.95×",
        "9.0",
        "9%",
    ]
    crop512 = [cell.strip() for cell in _cells(lines[3])]
    assert crop512[:5] == ["`crop512`", "512×512", "2", tables.MISSING, "60"]
    assert crop512[6] == tables.MISSING


def test_dense_crf_table_reports_thread_scaling_apart_and_names_the_old_method():
    setting = {"iterations": 10, "sxy_bilateral": 67.0}
    timing = {"kseg_seconds": [1.0, 1.2], "kseg_median_s": 1.1, "pydensecrf_median_s": 1.4}
    equal = {
        "settings": {"deeplab_10it": setting},
        "deeplab_10it": {
            "threads": 1,
            **timing,
            "kseg_2_threads": {
                "kseg_median_s": 0.55,
                "speedup_over_1_thread": 2.0,
                "time_ratio_kseg_over_pydensecrf_1_thread": 0.55 / 1.4,
                "label_agreement_with_kseg_1_thread": 1.0,
            },
        },
    }
    text = tables.dense_crf_table(equal)
    assert assert_tables_well_formed(text) == 2
    assert "each on one thread" in text
    scaling = [line for line in text.splitlines() if line.startswith("| DeepLab")][1]
    assert [cell.strip() for cell in _cells(scaling)][1:5] == ["2", "1.1 s", "550 ms", "2.00×"]
    # A file written before the equal-thread method has neither key: one table, marked old.
    previous = {"settings": {"deeplab_10it": setting}, "deeplab_10it": timing}
    text = tables.dense_crf_table(previous)
    assert assert_tables_well_formed(text) == 1
    assert "previous method" in text
