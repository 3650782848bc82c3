import json
from pathlib import Path

import keras
import numpy as np
import pytest

import kseg.backbones
from kseg.backbones.atrous import layer_strides
from kseg.backbones.mobilenet_v3 import (
    MobileNetV3Large,
    block_dilations,
    make_divisible,
    mobilenet_v3_taps,
)
from kseg.pretrained import read_torch_checkpoint
from kseg.pretrained.convert_mobilenet_v3 import load_torchvision_mobilenet_v3_weights

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Written by tests/fixtures/make_torchvision_mobilenet_v3_small.py (torchvision's own
# mobilenet_v3_large(width_mult=0.1, dilated=True)) and make_torchvision_segmentation_keys.py.
SMALL_REFERENCE = FIXTURES / "torchvision_mobilenet_v3_small.npz"
SMALL_STATE = FIXTURES / "torchvision_lraspp_mobilenet_v3_small.pth"
KEY_SHAPES = json.loads((FIXTURES / "torchvision_segmentation_keys.json").read_text())
SMALL_WIDTH = 0.1


def _torch_size(size, kernel, stride, dilation=1):
    # torch.nn.Conv2d output size with torchvision's padding (kernel - 1) // 2 * dilation.
    padding = (kernel - 1) // 2 * dilation
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@pytest.mark.parametrize(
    "output_stride, dilated_blocks",
    [
        (32, {}),
        # torchvision's dilated=True: features.13-15 at dilation 2, features.13 unstrided.
        (16, {13: 2, 14: 2, 15: 2}),
        (8, {**dict.fromkeys(range(7, 13), 2), 13: 4, 14: 4, 15: 4}),
    ],
)
def test_block_dilations_extend_torchvisions_dilated_rule(output_stride, dilated_blocks):
    layout = block_dilations(output_stride)
    nominal = {2: 2, 4: 2, 7: 2, 13: 2}
    for block, (stride, dilation) in enumerate(layout, start=1):
        assert dilation == dilated_blocks.get(block, 1), block
        assert stride == (1 if block in dilated_blocks else nominal.get(block, 1)), block


def test_multi_grid_multiplies_the_last_stage_and_bad_values_are_refused():
    assert block_dilations(16, (1, 2, 4))[12:] == [(1, 2), (1, 4), (1, 8)]
    with pytest.raises(ValueError, match="`multi_grid` must be 3 positive integers"):
        block_dilations(16, (1, 2))
    with pytest.raises(ValueError, match="output_stride"):
        block_dilations(4)
    with pytest.raises(ValueError, match="width_multiplier"):
        MobileNetV3Large(width_multiplier=0)
    with pytest.raises(ValueError, match="no Keras ImageNet weights"):
        MobileNetV3Large(weights="imagenet")
    with pytest.raises(ValueError, match="No ImageNet weights exist"):
        kseg.backbones.get_backbone("mobilenet_v3_large", weights="imagenet")


def test_make_divisible_gives_torchvisions_widths():
    # Squeeze-and-excite widths of the full model, read from torchvision's state dict.
    shapes = {key: shape for key, shape in KEY_SHAPES["lraspp_mobilenet_v3_large"]}
    assert shapes["backbone.4.block.2.fc1.weight"][0] == make_divisible(72 // 4) == 24
    assert shapes["backbone.11.block.2.fc1.weight"][0] == make_divisible(480 // 4) == 120
    assert shapes["backbone.13.block.2.fc1.weight"][0] == make_divisible(672 // 4) == 168
    assert make_divisible(184 * 0.1) == 24  # rounding down to 16 would lose more than 10%


def test_every_weight_has_torchvisions_shape():
    with keras.StatelessScope():
        model = MobileNetV3Large(output_stride=16)
    expected = {
        key[len("backbone.") :]: tuple(shape)
        for key, shape in KEY_SHAPES["lraspp_mobilenet_v3_large"]
        if key.startswith("backbone.") and not key.endswith("num_batches_tracked")
    }
    torch_order = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}
    torch_order |= {"moving_mean": "running_mean", "moving_variance": "running_var"}
    found = {}
    for layer in model.layers:
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if len(shape) == 4:
                # Keras (kh, kw, in, out), depthwise (kh, kw, channels, 1); torch (out, in, kh, kw).
                depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
                shape = (shape[2], 1, *shape[:2]) if depthwise else (shape[3], shape[2], *shape[:2])
            key = f"{layer.name[len('features.') :]}.{torch_order[variable.name]}"
            found[key] = shape
    assert found == expected


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_taps_have_torchvisions_sizes_on_odd_inputs(output_stride):
    with keras.StatelessScope():
        backbone = kseg.backbones.get_backbone(
            "mobilenet_v3_large", output_stride=output_stride, width_multiplier=SMALL_WIDTH
        )
    height, width = 67, 50
    spec = backbone.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
    sizes = {"features.0": (_torch_size(height, 3, 2), _torch_size(width, 3, 2))}
    for block, (stride, dilation) in enumerate(block_dilations(output_stride), start=1):
        kernel = (3, 3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5)[block - 1]
        before = sizes[f"features.{block - 1}"]
        sizes[f"features.{block}"] = tuple(_torch_size(s, kernel, stride, dilation) for s in before)
    sizes["features.16"] = sizes["features.15"]
    for info in backbone.feature_info:
        block = info["layer"].split(".")[1]
        assert tuple(spec[info["key"]].shape[1:3]) == sizes[f"features.{block}"], info
    expected = {32: ["P1", "P2", "P3", "P4", "P5"], 16: ["P1", "P2", "P3", "P4"]}
    expected[8] = ["P1", "P2", "P3"]
    assert [info["key"] for info in backbone.feature_info] == expected[output_stride]
    # The deepest feature is always the last convolution's activation.
    assert backbone.feature_info[-1]["layer"] == "features.16.2"
    assert layer_strides(backbone)["features.16.2"][1] == output_stride


def test_taps_are_the_last_block_before_each_downsampling():
    assert mobilenet_v3_taps() == {
        "P1": "features.1.out",
        "P2": "features.3.out",
        "P3": "features.6.out",
        "P4": "features.12.out",
        "P5": "features.16.2",
    }


def test_residuals_follow_torchvisions_nominal_stride():
    with keras.StatelessScope():
        model = MobileNetV3Large(output_stride=16, width_multiplier=SMALL_WIDTH)
    added = {layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)}
    # At width 0.1, features.4 (8 -> 8, stride 2) and features.13 (16 -> 16, stride 2 made 1
    # by dilation) keep equal widths but, as in torchvision, no shortcut.
    assert "features.4.out" not in added and "features.13.out" not in added
    assert {"features.1.out", "features.14.out", "features.15.out"} <= added


def test_stages_match_torchvision_on_two_image_sizes():
    reference = np.load(SMALL_REFERENCE)
    backbone = kseg.backbones.get_backbone(
        "mobilenet_v3_large", output_stride=16, width_multiplier=SMALL_WIDTH
    )
    load_torchvision_mobilenet_v3_weights(backbone, read_torch_checkpoint(SMALL_STATE))
    names = {1: "features.1.out", 4: "features.4.out", 6: "features.6.out", 16: "features.16.2"}
    stages = keras.Model(
        backbone.input, {str(k): backbone.get_layer(n).output for k, n in names.items()}
    )
    for index in (0, 1):
        outputs = stages(reference[f"image{index}"])
        for block in names:
            expected = reference[f"features_{block}_{index}"]
            result = np.asarray(outputs[str(block)])
            assert result.shape == expected.shape
            np.testing.assert_allclose(result, expected, atol=1e-5, err_msg=f"features.{block}")
