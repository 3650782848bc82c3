"""Where the backbone of a model is, and what its features are, before and after a reload."""

import keras
import numpy as np
import pytest

import kseg
from kseg.backbones import feature_info, get_backbone
from kseg.models.backbone_input import (
    backbone_of,
    deepest_feature_key,
    feature_stride,
    resolve_backbone,
)
from kseg.testing import build_small_model


def _expected_tiny_info(output_stride):
    # TinyBackbone: stage n halves the size and outputs TINY_WIDTHS[n - 1] channels at
    # layer stage{n}_conv2_relu; past the output stride, stages are dilated instead, and only
    # the deepest stage at each stride remains.
    widths = kseg.backbones.tiny.TINY_WIDTHS
    info = {}
    for stage, width in enumerate(widths, start=1):
        stride = min(2**stage, output_stride)
        info[stride] = {
            "key": f"P{stride.bit_length() - 1}",
            "stride": stride,
            "channels": width,
            "layer": f"stage{stage}_conv2_relu",
        }
    return [info[stride] for stride in sorted(info)]


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_feature_info_is_recomputed_from_the_graph(output_stride):
    backbone = get_backbone("tiny", output_stride=output_stride)
    assert backbone.feature_info == _expected_tiny_info(output_stride)
    rebuilt = keras.Model.from_config(backbone.get_config())
    assert getattr(rebuilt, "feature_info", None) is None
    assert feature_info(rebuilt) == backbone.feature_info


def test_feature_info_survives_a_safe_mode_reload(tmp_path):
    model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny", output_stride=8)
    before = backbone_of(model).feature_info
    assert before == _expected_tiny_info(8)
    path = tmp_path / "deeplab.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    backbone = backbone_of(reloaded)
    assert backbone.name == "tiny_backbone"
    assert backbone.feature_info == before
    # The builders' helpers read it from a reloaded backbone too.
    assert deepest_feature_key(backbone) == "P3" and feature_stride(backbone, "P2") == 4
    image = np.random.default_rng(0).uniform(0, 255, (1, 40, 48, 3)).astype("float32")
    np.testing.assert_allclose(reloaded(image), model(image), atol=1e-5)


def test_a_reloaded_backbone_builds_a_new_model(tmp_path):
    path = tmp_path / "backbone.keras"
    get_backbone("tiny", output_stride=16).save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    model = kseg.models.DeepLabV3(num_classes=2, backbone=reloaded, multi_grid=None)
    assert backbone_of(model) is reloaded
    assert tuple(model(np.zeros((1, 33, 31, 3), "float32")).shape) == (1, 33, 31, 2)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fcn8s", "tiny_backbone"),
        ("unet", "tiny_backbone"),
        # DeepLab v2 nests the backbone inside its per-scale network.
        ("deeplabv2", "tiny_backbone"),
        # DilatedNet's context module is a nested model too, but not a backbone.
        ("dilatednet", "tiny_backbone"),
        ("segnet", None),
    ],
)
def test_backbone_of_finds_the_nested_feature_model(name, expected):
    backbone = backbone_of(build_small_model(name))
    assert getattr(backbone, "name", None) == expected


def test_prebuilt_backbones_must_output_features():
    image = keras.Input((None, None, 3))
    flat = keras.Model(image, keras.layers.Conv2D(2, 3)(image))
    with pytest.raises(TypeError, match="dict"):
        resolve_backbone(flat, input_shape=(None, None, 3), weights=None, output_stride=32)
    with pytest.raises(ValueError, match="dict of features"):
        feature_info(flat)
