import json
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest

from kseg.backbones.resnet import ResNet
from kseg.pretrained import read_torch_checkpoint
from kseg.pretrained.convert_resnet import load_torchvision_resnet_weights

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Written by tests/fixtures/make_torchvision_resnet_small.py with torch 2.14.1 / torchvision 0.29.1.
SMALL_CHECKPOINT = FIXTURES / "torchvision_resnet_small.pth"
SMALL_OUTPUTS = FIXTURES / "torchvision_resnet_small.npz"
REFERENCE_SCRIPT = FIXTURES / "torchvision_resnet_reference.py"
KEY_SHAPES = json.loads((FIXTURES / "torchvision_resnet_keys.json").read_text())
STAGES = ("relu", "layer1", "layer2", "layer3", "layer4")
STAGE_LAYERS = {
    "relu": "relu",
    "layer1": "layer1.2.out",
    "layer2": "layer2.3.out",
    "layer3": "layer3.5.out",
    "layer4": "layer4.2.out",
}


def _random_state_dict(name, seed=0, prefix=""):
    """torchvision's keys and shapes for `name`, filled with random float32 values."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in KEY_SHAPES[name]:
        if key.endswith("num_batches_tracked"):
            state[prefix + key] = np.array(0, "int64")
        else:
            state[prefix + key] = rng.normal(size=shape).astype("float32")
    return state


def _stage_model(model):
    return keras.Model(
        model.input, {key: model.get_layer(name).output for key, name in STAGE_LAYERS.items()}
    )


def _relative_error(result, expected):
    return float(np.max(np.abs(result - expected)) / max(np.max(np.abs(expected)), 1e-12))


@pytest.mark.parametrize("output_stride", [32, 8])
def test_outputs_match_torchvision_on_odd_sizes(output_stride):
    state = read_torch_checkpoint(SMALL_CHECKPOINT)
    reference = np.load(SMALL_OUTPUTS)
    model = ResNet(depth=50, base_channels=2, output_stride=output_stride)
    load_torchvision_resnet_weights(model, state, prefix="")
    stages = _stage_model(model)
    for index in (0, 1):
        outputs = stages(reference[f"image{index}"])
        for stage in STAGES:
            expected = reference[f"out{index}_os{output_stride}_{stage}"]
            result = np.asarray(outputs[stage])
            assert result.shape == expected.shape, (index, stage)
            assert _relative_error(result, expected) <= 1e-4, (index, stage)


def test_v1_stride_placement_does_not_reproduce_torchvision():
    # The same weights with the stride on the first 1x1 convolution compute something else:
    # the fixture tells v1 from v1.5 (errors of 3e-3 to 6e-2 against 1e-7 for v1.5).
    state = read_torch_checkpoint(SMALL_CHECKPOINT)
    reference = np.load(SMALL_OUTPUTS)
    model = ResNet(depth=50, base_channels=2, stride_in_1x1=True)
    load_torchvision_resnet_weights(model, state, prefix="")
    outputs = _stage_model(model)(reference["image0"])
    assert _relative_error(np.asarray(outputs["layer1"]), reference["out0_os32_layer1"]) <= 1e-4
    for stage in ("layer2", "layer3", "layer4"):
        error = _relative_error(np.asarray(outputs[stage]), reference[f"out0_os32_{stage}"])
        assert error > 1e-3, stage


@pytest.mark.parametrize("name, depth", [("resnet50", 50), ("resnet101", 101)])
def test_every_torchvision_key_and_every_variable_is_used_once(name, depth):
    state = _random_state_dict(name, prefix="backbone.")
    # Keys outside the prefix (a segmentation head) are left to other converters.
    state["classifier.4.weight"] = np.zeros((21, 512, 1, 1), "float32")
    model = ResNet(depth=depth)
    consumed = load_torchvision_resnet_weights(model, state, ignore_fc=True)
    assert sorted(set(state) - set(consumed)) == ["classifier.4.weight"]
    # The layouts that need work: OIHW -> HWIO, and BatchNorm's running variance.
    kernel = state["backbone.layer3.4.conv2.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.array(model.get_layer("layer3.4.conv2").kernel), kernel)
    np.testing.assert_array_equal(
        np.array(model.get_layer("layer4.0.downsample.1").moving_variance),
        state["backbone.layer4.0.downsample.1.running_var"],
    )


def test_classifier_is_reported_unless_ignored():
    state = _random_state_dict("resnet50")
    model = ResNet(depth=50)
    with pytest.raises(ValueError, match=r"unused keys \(2\): \['fc.bias', 'fc.weight'\]"):
        load_torchvision_resnet_weights(model, state, prefix="")


def test_missing_key_names_the_unset_variable_and_writes_nothing():
    state = _random_state_dict("resnet50")
    del state["layer3.2.bn2.running_var"]
    del state["fc.weight"], state["fc.bias"]
    model = ResNet(depth=50)
    before = np.array(model.get_layer("conv1").kernel)
    with pytest.raises(
        ValueError, match=r"unset variables \(1\): \['layer3.2.bn2/moving_variance'\]"
    ):
        load_torchvision_resnet_weights(model, state, prefix="")
    np.testing.assert_array_equal(np.array(model.get_layer("conv1").kernel), before)


def test_extra_and_misnamed_keys_are_listed():
    state = _random_state_dict("resnet50")
    state["layer1.0.conv4.weight"] = np.zeros((1, 1, 1, 1), "float32")
    state["layer1.0.bn1.running_std"] = np.zeros(64, "float32")
    with pytest.raises(ValueError) as error:
        load_torchvision_resnet_weights(ResNet(depth=50), state, prefix="", ignore_fc=True)
    assert "unused keys (2): ['layer1.0.bn1.running_std', 'layer1.0.conv4.weight']" in str(
        error.value
    )
    assert "unset variables (0)" in str(error.value)


def test_depth_mismatch_is_reported():
    state = _random_state_dict("resnet101")
    with pytest.raises(ValueError, match=r"unused keys \(\d+\): \['layer3.10.bn1.bias'"):
        load_torchvision_resnet_weights(ResNet(depth=50), state, prefix="", ignore_fc=True)


def test_bad_shape_and_dtype_name_the_key():
    state = _random_state_dict("resnet50")
    state["layer2.1.conv3.weight"] = state["layer2.1.conv3.weight"][:, :-1]
    with pytest.raises(ValueError, match="'layer2.1.conv3.weight' has shape \\(1, 1, 127, 512\\)"):
        load_torchvision_resnet_weights(ResNet(depth=50), state, prefix="", ignore_fc=True)
    state = _random_state_dict("resnet50")
    state["bn1.weight"] = np.ones(64, "int64")
    with pytest.raises(TypeError, match="'bn1.weight' holds int64"):
        load_torchvision_resnet_weights(ResNet(depth=50), state, prefix="", ignore_fc=True)
    with pytest.raises(TypeError, match="Received: prefix=None"):
        load_torchvision_resnet_weights(ResNet(depth=50), state, prefix=None)


def test_frozen_batchnorm_checkpoint_without_batch_counters():
    # torchvision's FrozenBatchNorm2d (Mask R-CNN) has no num_batches_tracked buffer.
    state = {
        key: value
        for key, value in _random_state_dict("resnet50", prefix="backbone.body.").items()
        if not key.endswith("num_batches_tracked") and ".fc." not in key
    }
    model = ResNet(depth=50, frozen_batchnorm=True)
    consumed = load_torchvision_resnet_weights(model, state, prefix="backbone.body.")
    assert sorted(consumed) == sorted(state)
    np.testing.assert_array_equal(
        np.array(model.get_layer("bn1").gamma), state["backbone.body.bn1.weight"]
    )


def test_convolution_biases_are_mapped_when_the_model_has_them():
    state = _random_state_dict("resnet50")
    model = ResNet(depth=50, use_bias=True)
    with pytest.raises(ValueError, match=r"unset variables \(53\): \['conv1/bias'"):
        load_torchvision_resnet_weights(model, state, prefix="", ignore_fc=True)
    rng = np.random.default_rng(3)
    for key, shape in KEY_SHAPES["resnet50"]:
        if len(shape) == 4:
            state[key.replace(".weight", ".bias")] = rng.normal(size=shape[0]).astype("float32")
    load_torchvision_resnet_weights(model, state, prefix="", ignore_fc=True)
    np.testing.assert_array_equal(
        np.array(model.get_layer("layer2.0.downsample.0").bias), state["layer2.0.downsample.0.bias"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [32, 8])
def test_full_resnet50_matches_torchvision(output_stride, tmp_path, torch_python):
    # torchvision's ResNet-50 with random weights and batch-norm statistics, run in a child
    # process; its saved state dict goes through kseg's reader and converter.
    subprocess.run(
        [torch_python, str(REFERENCE_SCRIPT), str(output_stride), str(tmp_path)], check=True
    )
    state = read_torch_checkpoint(tmp_path / "state_dict.pth")
    reference = np.load(tmp_path / "reference.npz")
    model = ResNet(depth=50, output_stride=output_stride)
    load_torchvision_resnet_weights(model, state, prefix="", ignore_fc=True)
    stages = _stage_model(model)
    for height, width in [(65, 97), (71, 53)]:
        tag = f"{height}x{width}"
        outputs = stages(reference[f"image_{tag}"])
        for stage in STAGES:
            want = reference[f"{stage}_{tag}"]
            result = np.asarray(outputs[stage])
            assert result.shape == want.shape, stage
            assert _relative_error(result, want) <= 1e-4, (stage, height, width)
