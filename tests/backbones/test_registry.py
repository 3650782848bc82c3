import keras
import numpy as np
import pytest

import kseg.backbones
from kseg.backbones.taps import TAPS

EXPECTED_NAMES = {
    "vgg16",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet50v2",
    "resnet101v2",
    "resnet152v2",
    "xception",
    "mobilenet",
    "mobilenetv2",
    *(f"efficientnetb{v}" for v in range(8)),
    "xception65",
    "tiny",
    "resnet50_v1.5",
    "resnet101_v1.5",
    "resnet152_v1.5",
    "mobilenet_v3_large",
}
# The cheapest member of every family, checked on every run.
CHEAP = [
    "tiny",
    "vgg16",
    "resnet50",
    "resnet50v2",
    "xception",
    "mobilenet",
    "mobilenetv2",
    "efficientnetb0",
    "xception65",
    "resnet50_v1.5",
    "mobilenet_v3_large",
]
LARGER = [
    "resnet101",
    "resnet152",
    "resnet101v2",
    "resnet152v2",
    *(f"efficientnetb{v}" for v in range(1, 8)),
    "resnet101_v1.5",
    "resnet152_v1.5",
]
# keras.applications.Xception's stem uses two unpadded 3x3 convolutions, so its sizes fall
# short of H / stride by a few pixels; every other network pads to ceil(H / stride).
UNPADDED_STEM = {"xception"}


def _spatial_sizes(backbone, size):
    spec = backbone.compute_output_spec(keras.KerasTensor((1, size, size, 3)))
    return {key: (tensor.shape[1], tensor.shape[2]) for key, tensor in spec.items()}


def _check_tap_strides(name):
    # Only the graph is checked: in a StatelessScope Keras defers the variables' random
    # initialisation, which is most of the cost of building the larger networks.
    with keras.StatelessScope():
        backbone = kseg.backbones.get_backbone(name)
    assert sorted(backbone.output) == sorted(TAPS[name]), "a tap is missing at output stride 32"
    small, large = _spatial_sizes(backbone, 64), _spatial_sizes(backbone, 128)
    for key in TAPS[name]:
        stride = 2 ** int(key[1:])
        # Size grows by 64 / stride when the input grows by 64, whatever the padding.
        assert large[key][0] - small[key][0] == 64 // stride, (name, key, small[key], large[key])
        assert large[key][1] - small[key][1] == 64 // stride, (name, key)
        if name not in UNPADDED_STEM:
            assert small[key] == (64 // stride, 64 // stride), (name, key, small[key])
        else:
            assert 0 <= 64 // stride - small[key][0] <= 3, (name, key, small[key])
    outputs = backbone.output
    info = backbone.feature_info
    assert [entry["key"] for entry in info] == sorted(outputs, key=lambda k: int(k[1:]))
    for entry in info:
        assert entry["stride"] == 2 ** int(entry["key"][1:])
        assert entry["channels"] == outputs[entry["key"]].shape[-1]
        assert backbone.get_layer(entry["layer"]).output is outputs[entry["key"]]
        assert entry["layer"] == TAPS[name][entry["key"]]


def test_lists_every_backbone():
    assert set(kseg.backbones.list_backbones()) == EXPECTED_NAMES
    assert set(TAPS) == EXPECTED_NAMES
    assert set(CHEAP) | set(LARGER) == EXPECTED_NAMES


@pytest.mark.parametrize("name", CHEAP)
def test_tap_strides(name):
    _check_tap_strides(name)


@pytest.mark.slow
def test_tap_strides_of_larger_variants():
    for name in LARGER:
        _check_tap_strides(name)
        keras.backend.clear_session()


def test_static_input_shape():
    backbone = kseg.backbones.get_backbone("mobilenetv2", input_shape=(64, 96, 3), alpha=0.35)
    assert backbone.input_shape == (None, 64, 96, 3)
    for entry in backbone.feature_info:
        shape = backbone.output[entry["key"]].shape
        assert shape[1:3] == (64 // entry["stride"], 96 // entry["stride"])
    # alpha reached the application: MobileNetV2's stem has make_divisible(32 * 0.35, 8) = 16
    # filters instead of 32 (Sandler et al., 2018, width multiplier).
    assert backbone.get_layer("Conv1").filters == 16


def test_forward_pass_on_dynamic_input():
    backbone = kseg.backbones.get_backbone("tiny")
    features = backbone(np.zeros((2, 64, 96, 3), "float32"))
    assert isinstance(features, dict)
    for entry in backbone.feature_info:
        assert tuple(features[entry["key"]].shape) == (
            2,
            64 // entry["stride"],
            96 // entry["stride"],
            entry["channels"],
        )


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="resnet50.*Received: name='resnet18'"):
        kseg.backbones.get_backbone("resnet18")


def test_invalid_arguments():
    with pytest.raises(ValueError, match="Received: output_stride=4"):
        kseg.backbones.get_backbone("tiny", output_stride=4)
    with pytest.raises(ValueError, match="include_top"):
        kseg.backbones.get_backbone("resnet50", include_top=True)
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        kseg.backbones.get_backbone("tiny", weights="missing.weights.h5")
    with pytest.raises(ValueError, match="No ImageNet weights"):
        kseg.backbones.get_backbone("tiny", weights="imagenet")
    with pytest.raises(ValueError, match="Received: weights=3"):
        kseg.backbones.get_backbone("tiny", weights=3)


def test_weights_path_reaches_the_network(tmp_path):
    source = kseg.backbones.get_backbone("tiny")
    rng = np.random.default_rng(0)
    source.set_weights([rng.normal(size=w.shape).astype("float32") for w in source.get_weights()])
    path = tmp_path / "tiny.weights.h5"
    source.save_weights(path)
    loaded = kseg.backbones.get_backbone("tiny", weights=str(path))
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_application_weights_path(tmp_path):
    source = kseg.backbones.get_backbone("mobilenet", alpha=0.25)
    rng = np.random.default_rng(1)
    source.set_weights([rng.normal(size=w.shape).astype("float32") for w in source.get_weights()])
    path = tmp_path / "mobilenet.weights.h5"
    source.save_weights(path)
    loaded = kseg.backbones.get_backbone("mobilenet", weights=path, alpha=0.25)
    images = rng.uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(loaded(images)["P5"]), np.asarray(source(images)["P5"]), rtol=1e-5, atol=1e-5
    )


def test_saved_backbone_reloads_in_safe_mode(tmp_path):
    backbone = kseg.backbones.get_backbone("tiny", output_stride=8)
    path = tmp_path / "tiny.keras"
    backbone.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    images = np.random.default_rng(3).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    expected, result = backbone(images), reloaded(images)
    assert sorted(result) == sorted(expected) == ["P1", "P2", "P3"]
    for key in expected:
        np.testing.assert_allclose(np.asarray(result[key]), np.asarray(expected[key]), atol=1e-6)
