"""`--model-arg NAME=VALUE`: the same forms reach every model, Mask R-CNN's backbone included."""

import keras
import pytest
from cli_helpers import small_config_flags

import kseg
from kseg import cli


def test_mask_rcnn_run_takes_a_backbone_option_and_a_tuple_through_model_arg(tmp_path):
    run = tmp_path / "run"
    widths = (4, 8, 8, 16, 16)  # the tiny backbone's stage widths, narrower than its default
    cli.main(
        [
            "train",
            "--model",
            "mask_rcnn",
            "--data",
            "shapes",
            "--num-samples",
            "2",
            *small_config_flags(),
            "--model-arg",
            "widths=" + ",".join(map(str, widths)),
            "--model-arg",
            "rpn_test_nms=100,40",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--batch-size",
            "1",
            "--val-batch-size",
            "2",
            "--precision",
            "float32",
            "--run-eagerly",
            "--run-dir",
            str(run),
        ]
    )
    model = keras.saving.load_model(run / "model.keras")
    assert list(model.backbone_kwargs) == ["widths"]
    assert tuple(model.backbone_kwargs["widths"]) == widths  # a .keras config stores a list
    assert model.rpn_test_nms == (100, 40)
    # The backbone was built with those widths: its last stage has 16 channels.
    assert model.backbone.get_layer("stage5_conv2").filters == widths[-1]


def test_unknown_builder_arguments_go_to_the_backbone_of_mask_rcnn_only():
    split = kseg.tasks.with_backbone_arguments
    assert split(kseg.models.MaskRCNN, {"alpha": 0.35, "backbone_kwargs": {"depth": 2}}) == {
        "backbone_kwargs": {"depth": 2, "alpha": 0.35}
    }
    # A semantic builder passes unknown keywords to its backbone itself: left as they are.
    builder = kseg.models.get_builder("deeplabv3plus")
    assert split(builder, {"alpha": 0.35}) == {"alpha": 0.35}


def test_mask_rcnn_names_a_backbone_option_its_backbone_does_not_take(tmp_path):
    with pytest.raises((SystemExit, TypeError, ValueError), match="no_such_option"):
        cli.main(
            [
                "train",
                "--model",
                "mask_rcnn",
                "--data",
                "shapes",
                "--num-samples",
                "2",
                *small_config_flags(),
                "--model-arg",
                "no_such_option=3",
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
