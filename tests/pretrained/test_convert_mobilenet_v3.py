from pathlib import Path

import numpy as np
import pytest

from kseg.backbones.mobilenet_v3 import MobileNetV3Large
from kseg.pretrained import read_torch_checkpoint
from kseg.pretrained.convert_mobilenet_v3 import load_torchvision_mobilenet_v3_weights

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# torchvision's mobilenet_v3_large(width_mult=0.1, dilated=True) inside its LR-ASPP, written by
# tests/fixtures/make_torchvision_mobilenet_v3_small.py.
SMALL_STATE = FIXTURES / "torchvision_lraspp_mobilenet_v3_small.pth"
SMALL_REFERENCE = FIXTURES / "torchvision_mobilenet_v3_small.npz"


def _backbone_state():
    state = read_torch_checkpoint(SMALL_STATE)
    return {key: value for key, value in state.items() if key.startswith("backbone.")}


def _small():
    return MobileNetV3Large(output_stride=16, width_multiplier=0.1)


def test_depthwise_kernels_take_keras_layout_channel_by_channel():
    state = _backbone_state()
    model = _small()
    load_torchvision_mobilenet_v3_weights(model, state)
    torch_kernel = state["backbone.13.block.1.0.weight"]  # (channels, 1, 5, 5)
    kernel = np.asarray(model.get_layer("features.13.block.1.0").kernel)  # (5, 5, channels, 1)
    assert torch_kernel.shape[2:] == (5, 5) and kernel.shape[2:] == (torch_kernel.shape[0], 1)
    for channel in range(torch_kernel.shape[0]):
        np.testing.assert_array_equal(kernel[:, :, channel, 0], torch_kernel[channel, 0])
    fc1 = np.asarray(model.get_layer("features.13.block.2.fc1").bias)
    np.testing.assert_array_equal(fc1, state["backbone.13.block.2.fc1.bias"])


def test_an_imagenet_classifiers_keys_load_under_features():
    # A torchvision ImageNet MobileNetV3 keeps the same modules under "features." and its
    # classifier under "classifier.", which the backbone does not read.
    state = {
        "features." + key[len("backbone.") :]: value for key, value in _backbone_state().items()
    }
    state["classifier.0.weight"] = np.zeros((4, 96), "float32")
    model = _small()
    consumed = load_torchvision_mobilenet_v3_weights(model, state, prefix="features.")
    assert consumed == sorted(key for key in state if key.startswith("features."))
    reference = np.load(SMALL_REFERENCE)
    image = reference["image0"]
    # The preprocessing kseg's get_backbone adds ("torch"), applied by hand here.
    normalised = (image / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    result = np.asarray(model(normalised.astype("float32")))
    np.testing.assert_allclose(result, reference["features_16_0"], atol=1e-5)


def test_mismatches_are_listed_and_nothing_is_written():
    state = _backbone_state()
    model = _small()
    before = [np.asarray(weight).copy() for weight in model.weights]
    broken = dict(state)
    del broken["backbone.7.block.1.0.weight"]
    broken["backbone.7.block.1.2.weight"] = np.zeros((8,), "float32")
    with pytest.raises(ValueError) as raised:
        load_torchvision_mobilenet_v3_weights(model, broken)
    message = str(raised.value)
    assert "unused keys (1): ['backbone.7.block.1.2.weight']" in message
    assert "unset variables (1): ['features.7.block.1.0/kernel']" in message
    broken = dict(state)
    broken["backbone.0.0.weight"] = broken["backbone.0.0.weight"][:, :, :2]
    with pytest.raises(ValueError, match="'backbone.0.0.weight' has shape"):
        load_torchvision_mobilenet_v3_weights(model, broken)
    broken = dict(state)
    broken["backbone.7.block.1.0.weight"] = np.zeros((24, 1, 3, 3), "int64")
    with pytest.raises(TypeError, match="'backbone.7.block.1.0.weight' holds int64"):
        load_torchvision_mobilenet_v3_weights(model, broken)
    for weight, old in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(np.asarray(weight), old)
    with pytest.raises(TypeError, match="prefix"):
        load_torchvision_mobilenet_v3_weights(model, state, prefix="")
