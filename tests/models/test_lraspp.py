import os

import keras
import numpy as np
import pytest

import kseg
from kseg.models import backbone_of
from kseg.models.lraspp import LRASPP


def _tiny(**kwargs):
    return LRASPP(num_classes=3, backbone="tiny", num_filters=8, **kwargs)


def _randomize(model, seed=0):
    """Random head weights (positive BN variances), so every head parameter shows."""
    rng = np.random.default_rng(seed)
    backbone = {id(variable) for variable in backbone_of(model).weights}
    for variable in model.weights:
        if id(variable) in backbone:
            continue
        values = rng.normal(0, 0.5, variable.shape)
        if "variance" in variable.path:
            values = rng.uniform(0.5, 2.0, variable.shape)
        variable.assign(values.astype("float32"))


def _bn(x, layer):
    scale = np.asarray(layer.gamma) / np.sqrt(np.asarray(layer.moving_variance) + layer.epsilon)
    return (x - np.asarray(layer.moving_mean)) * scale + np.asarray(layer.beta)


def _conv1x1(x, layer):
    y = x @ np.asarray(layer.kernel)[0, 0]
    return y + np.asarray(layer.bias) if layer.use_bias else y


def test_head_computes_the_gated_branch_and_the_two_classifiers():
    # Howard et al. 2019, Fig. 10: relu(bn(conv(high))) * sigmoid(conv(pool(high))), upsampled
    # to the stride-8 features, classified and added to a classifier of those features.
    keras.utils.set_random_seed(0)
    model = _tiny()
    _randomize(model)
    # The untrained tiny backbone's features are small: scaled up, the sigmoid leaves its
    # near-linear middle.
    scale = model.get_layer("lraspp_scale")
    scale.kernel.assign(scale.kernel * 300.0)
    names = ["lraspp_sigmoid", "lraspp_gate", "lraspp_upsample", "logits_sum"]
    outputs = {name: model.get_layer(name).output for name in names}
    outputs["P4"] = model.get_layer("lraspp_cbr").input
    outputs["P3"] = model.get_layer("low_classifier").input
    probe = keras.Model(model.input, outputs)
    images = np.random.default_rng(1).uniform(0, 255, (2, 65, 97, 3)).astype("float32")
    out = {key: np.asarray(value) for key, value in probe(images).items()}
    high, low = out["P4"], out["P3"]
    assert high.shape[1:3] == (5, 7) and low.shape[1:3] == (9, 13)
    pooled = high.mean(axis=(1, 2), keepdims=True)
    gate = 1 / (1 + np.exp(-_conv1x1(pooled, model.get_layer("lraspp_scale"))))
    assert gate.max() - gate.min() > 0.3
    np.testing.assert_allclose(out["lraspp_sigmoid"], gate, rtol=1e-5, atol=1e-6)
    cbr = model.get_layer("lraspp_cbr")
    branch = np.maximum(_bn(_conv1x1(high, cbr.conv), cbr.bn), 0)
    np.testing.assert_allclose(out["lraspp_gate"], branch * gate, rtol=1e-4, atol=1e-5)
    assert out["lraspp_upsample"].shape[1:3] == low.shape[1:3]
    expected = _conv1x1(low, model.get_layer("low_classifier")) + _conv1x1(
        out["lraspp_upsample"], model.get_layer("high_classifier")
    )
    np.testing.assert_allclose(out["logits_sum"], expected, rtol=1e-4, atol=1e-4)
    logits = model(images)
    assert tuple(logits.shape) == (2, 65, 97, 3)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_pooling_is_global_so_the_gate_does_not_vary_over_the_image():
    model = _tiny()
    _randomize(model)
    probe = keras.Model(model.input, model.get_layer("lraspp_sigmoid").output)
    images = np.random.default_rng(2).uniform(0, 255, (1, 130, 66, 3)).astype("float32")
    assert tuple(probe(images).shape) == (1, 1, 1, 8)


def test_a_layer_name_replaces_the_tap_at_its_stride():
    model = _tiny(low_level_feature="stage3_conv1_relu")
    info = {entry["key"]: entry for entry in backbone_of(model).feature_info}
    assert info["P3"]["layer"] == "stage3_conv1_relu" and info["P3"]["stride"] == 8
    assert info["P4"]["layer"] == "stage5_conv2_relu"  # the deepest, dilated to stride 16
    low_classifier = model.get_layer("low_classifier")
    assert low_classifier.kernel.shape[-2] == 24  # the tiny backbone's stage-3 width


def test_the_torchvision_tap_on_mobilenet_v3_survives_save_and_reload(tmp_path):
    model = LRASPP(
        num_classes=3,
        low_level_feature="features.4.out",
        num_filters=8,
        width_multiplier=0.1,
    )
    _randomize(model)
    assert backbone_of(model).feature_info[2]["layer"] == "features.4.out"
    images = np.random.default_rng(3).uniform(0, 255, (1, 45, 61, 3)).astype("float32")
    path = os.fspath(tmp_path / "lraspp.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(images)), np.asarray(model(images)), atol=1e-5)
    assert backbone_of(reloaded).feature_info[2]["layer"] == "features.4.out"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"feature key of the backbone \(\['P1', 'P2', 'P3'"):
        _tiny(low_level_feature="no_such_layer")
    with pytest.raises(ValueError, match="finer than the deepest feature 'P4'"):
        _tiny(low_level_feature="P4")
    with pytest.raises(TypeError, match="low_level_feature"):
        _tiny(low_level_feature=3)
    with pytest.raises(ValueError, match="num_filters"):
        LRASPP(num_classes=3, backbone="tiny", num_filters=0)


def test_registered_with_the_papers_defaults():
    assert kseg.models.get_builder("lraspp") is LRASPP
    assert kseg.models.registry.get_task("lraspp") == "semantic"
    with keras.StatelessScope():
        model = kseg.models.get_model("lraspp", num_classes=21)
    assert model.get_layer("lraspp_cbr").filters == 128
    assert backbone_of(model).name == "mobilenet_v3_large_backbone"
    # Output stride 16: the 960-channel last convolution is the deepest feature.
    assert backbone_of(model).feature_info[-1] == {
        "key": "P4",
        "stride": 16,
        "channels": 960,
        "layer": "features.16.2",
    }
