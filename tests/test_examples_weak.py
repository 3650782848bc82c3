"""examples/weak_supervision.py trains with every kind of supervision and reports honest numbers.

The script runs in this process (importing TensorFlow once keeps the file fast) with its `--tiny`
settings; the checks are properties any correct run has, whatever the tiny model learnt:
scribbles lie inside their regions (their labels agree with the masks everywhere they exist),
propagation labels every pixel, the scores are IoUs of the shapes classes.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest

import kseg

# find_spec rather than an import: importing gco by hand would skip the clean-up kseg.weak does
# after gco's import (gco puts back NumPy's removed `np.int` aliases).
_MISSING = [name for name in ("skimage", "gco") if importlib.util.find_spec(name) is None]
if _MISSING:
    pytest.skip(
        f"kseg.weak's extra is not installed ({', '.join(_MISSING)}): pip install 'kseg[weak]'",
        allow_module_level=True,
    )

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "weak_supervision.py"


def _example():
    spec = importlib.util.spec_from_file_location("weak_supervision_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE = _example()


def _run(tmp_path, *argv):
    result = EXAMPLE.main(["--tiny", "--out", str(tmp_path), *argv])
    written = json.loads(next(tmp_path.glob("*.json")).read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(result))
    assert 0.0 <= result["mean_iou"] <= 1.0
    assert list(result["iou"]) == list(kseg.data.shapes_info().class_names)
    present = [v for v in result["iou"].values() if v is not None]
    assert math.isclose(result["mean_iou"], sum(present) / len(present), rel_tol=1e-6)
    return result


def test_scribblesup_labels_every_pixel_from_scribbles_inside_their_regions(tmp_path):
    result = _run(tmp_path, "--supervision", "scribbles")
    assert result["method"] == "ScribbleSup"
    quality = result["pseudo_label_quality"]
    assert quality["scribbles"]["pixel_accuracy"] == 1.0
    assert 0.0 < quality["scribbles"]["labelled_fraction"] < 0.5
    assert set(quality) == {"scribbles", "round_1", "round_2"}
    for round_name in ("round_1", "round_2"):
        assert quality[round_name]["labelled_fraction"] == 1.0
        # Propagation keeps every scribble, so it cannot be worse than chance on the rest.
        assert quality[round_name]["pixel_accuracy"] > quality["scribbles"]["labelled_fraction"]


def test_bbox_seg_pseudo_masks_train_an_ordinary_model(tmp_path):
    result = _run(tmp_path, "--supervision", "boxes")
    assert result["method"] == "Bbox-Seg"
    bbox_seg = result["pseudo_label_quality"]["bbox_seg"]
    assert bbox_seg["labelled_fraction"] == 1.0
    # Everything outside the boxes is background and most of a shapes image is: well above chance.
    assert bbox_seg["pixel_accuracy"] > 0.8


def test_tags_train_with_the_constrained_cnn_loss(tmp_path):
    result = _run(tmp_path, "--supervision", "tags")
    assert result["method"] == "CCNN"
    assert result["pseudo_label_quality"] is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--supervision", "full"],
        ["--supervision", "tags", "--tag-method", "em-adapt"],
        ["--supervision", "tags+sizes"],
        ["--supervision", "boxes", "--box-method", "em-fixed"],
        ["--supervision", "mixed", "--mixed-weak", "tags"],
        ["--supervision", "scribbles", "--scribble-method", "partial"],
    ],
)
def test_other_supervisions_parse(argv):
    args = EXAMPLE.parse_args(["--tiny", *argv])
    assert args.supervision == argv[1]
    assert (args.image_size, args.train_samples, args.strong_images) == (64, 8, 2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--supervision", "tags+sizes", "--tag-method", "em-adapt"], "size constraints"),
        (["--supervision", "boxes", "--camvid", "camvid"], "CamVid has none"),
        (["--supervision", "mixed", "--camvid", "camvid"], "CamVid has none"),
        (["--supervision", "mixed", "--strong-images", "8", "--train-samples", "8"], "strong"),
        (["--supervision", "nothing"], "invalid choice"),
    ],
)
def test_bad_options_are_refused_with_a_reason(argv, message, capsys):
    with pytest.raises(SystemExit):
        EXAMPLE.parse_args(argv)
    assert message in capsys.readouterr().err
