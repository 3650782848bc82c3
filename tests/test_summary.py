"""Model summaries: parameter bookkeeping, profiler FLOPs against the analytic formula, diagrams."""

import keras
import pytest

import kseg.summary as summary_module
from kseg.models import backbone_of, get_model
from kseg.summary import (
    format_summary,
    forward_flops,
    model_summary,
    plot_model_diagram,
)


@pytest.fixture(scope="module")
def deeplab():
    return get_model("deeplabv3plus", num_classes=3, backbone="tiny")


def _single_conv(height, width, cin, cout, kernel, use_bias):
    inputs = keras.Input((height, width, cin))
    outputs = keras.layers.Conv2D(cout, kernel, padding="same", use_bias=use_bias)(inputs)
    return keras.Model(inputs, outputs)


def test_parameter_parts_add_up_to_count_params(deeplab):
    summary = model_summary(deeplab, input_size=None)
    backbone = backbone_of(deeplab)
    assert isinstance(backbone, keras.Model)
    assert summary["backbone"] == {"name": backbone.name, "params": backbone.count_params()}
    assert sum(summary["neck_head_groups"].values()) == summary["neck_head_params"]
    assert summary["backbone"]["params"] + summary["neck_head_params"] == deeplab.count_params()
    assert summary["total_params"] == deeplab.count_params()
    trainable = sum(int(keras.ops.size(w)) for w in deeplab.trainable_weights)
    assert summary["trainable_params"] == trainable
    assert summary["non_trainable_params"] == deeplab.count_params() - trainable
    # DeepLabV3+ names its parts aspp_*, decoder_*, logits_*: all weights land in a named group.
    assert set(summary["neck_head_groups"]) == {"aspp", "decoder", "logits"}
    assert summary["flops"] is None


def test_model_without_nested_backbone():
    model = _single_conv(8, 8, 3, 4, 3, use_bias=True)
    summary = model_summary(model, input_size=None)
    assert summary["backbone"] is None
    assert summary["neck_head_groups"] == {"other": 3 * 3 * 3 * 4 + 4}
    assert "none found" in format_summary(summary)


@pytest.mark.parametrize("use_bias", [False, True])
def test_conv_flops_match_the_analytic_count(use_bias):
    height, width, cin, cout, kernel = 12, 10, 3, 5, 3
    model = _single_conv(height, width, cin, cout, kernel, use_bias)
    multiply_adds = 2 * height * width * kernel * kernel * cin * cout
    # The profiler counts the BiasAdd op as one operation per output element.
    bias_adds = height * width * cout if use_bias else 0
    assert forward_flops(model, (height, width)) == multiply_adds + bias_adds


def test_flops_scale_with_image_area(deeplab):
    small = forward_flops(deeplab, (32, 32))
    large = forward_flops(deeplab, (64, 64))
    # Fully convolutional: every op's cost is proportional to its feature-map area; image
    # pooling in ASPP adds a constant, hence approximately rather than exactly 4x.
    assert large / small == pytest.approx(4.0, rel=0.03)


def test_format_summary_lists_every_part(deeplab):
    summary = model_summary(deeplab, input_size=(32, 32))
    assert summary["flops"] > 0
    text = format_summary(summary)
    assert summary["backbone"]["name"] in text
    for line_start in ("Backbone", "Neck + head", "  aspp", "  decoder", "Total params"):
        assert any(line.startswith(line_start) for line in text.splitlines()), line_start
    assert f"{deeplab.count_params():,}" in text
    assert "FLOPs per image (32x32)" in text


def test_bad_arguments_are_named(deeplab):
    with pytest.raises(ValueError, match="input_size"):
        model_summary(deeplab, input_size=(32,))
    with pytest.raises(TypeError, match="keras.Model"):
        model_summary("deeplab")
    with pytest.raises(ValueError, match="missing keys"):
        format_summary({"name": "x"})


def test_missing_diagram_tools_give_install_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(summary_module, "diagram_tools_missing", lambda: ["pydot", "graphviz"])
    with pytest.raises(RuntimeError) as error:
        plot_model_diagram(_single_conv(8, 8, 3, 4, 3, True), tmp_path / "model.png")
    message = str(error.value)
    assert "pip install pydot" in message
    assert "apt install graphviz" in message
    assert not (tmp_path / "model.png").exists()


def test_draws_diagram_when_tools_present(tmp_path, deeplab):
    missing = summary_module.diagram_tools_missing()
    if missing:
        pytest.skip(f"diagram tools not installed: {missing}")
    path = tmp_path / "deeplab.png"
    plot_model_diagram(deeplab, path, show_shapes=True)
    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fcn_and_unet_parts_are_grouped_by_name():
    fcn = model_summary(get_model("fcn8s", num_classes=3, backbone="tiny"), input_size=None)
    # `upscore*` must not fall into U-Net's `up` group, and FCN's fc6/fc7 form one group.
    assert set(fcn["neck_head_groups"]) == {"fc", "score", "upscore"}
    unet_model = get_model("unet", num_classes=3, backbone="tiny")
    unet = model_summary(unet_model, input_size=None)
    assert set(unet["neck_head_groups"]) == {"up", "logits"}
    assert unet["backbone"]["params"] + unet["neck_head_params"] == unet_model.count_params()


def test_availability_check_reports_each_missing_tool(monkeypatch):
    monkeypatch.setattr(summary_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(summary_module.importlib.util, "find_spec", lambda name: None)
    assert summary_module.diagram_tools_missing() == ["pydot", "graphviz"]
    monkeypatch.setattr(summary_module.shutil, "which", lambda name: "/usr/bin/dot")
    with pytest.raises(RuntimeError, match="pip install pydot") as error:
        plot_model_diagram(_single_conv(8, 8, 3, 4, 3, True), "unused.png")
    assert "apt install graphviz" not in str(error.value)


def test_present_tools_delegate_to_keras_plot_model(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(summary_module, "diagram_tools_missing", list)
    monkeypatch.setattr(
        summary_module.keras.utils, "plot_model", lambda model, **kw: calls.append((model, kw))
    )
    model = _single_conv(8, 8, 3, 4, 3, True)
    plot_model_diagram(model, tmp_path / "m.svg", show_shapes=True)
    assert calls == [(model, {"to_file": str(tmp_path / "m.svg"), "show_shapes": True})]
