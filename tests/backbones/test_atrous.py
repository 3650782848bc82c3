import keras
import numpy as np
import pytest

import kseg.backbones
from kseg.backbones.atrous import dilate, layer_strides

CASES = {
    "tiny": {},
    "mobilenetv2": {"alpha": 0.35},
}


def _randomize_statistics(model, seed):
    """Gives batch-norm and input-normalisation statistics non-default values.

    Kernels are already random; statistics start at 0 and 1, so without this a conversion
    that dropped them would go unnoticed.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.dtype != "float32":
            continue
        shape = tuple(variable.shape)
        if "variance" in variable.path or "gamma" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif "mean" in variable.path or "beta" in variable.path:
            variable.assign(rng.normal(0.0, 0.2, shape).astype("float32"))
    for layer in model.layers:
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()


def _images(size=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (1, size, size, 3)).astype("float32")


@pytest.mark.parametrize("name", sorted(CASES))
def test_strided_weights_load_into_dilated_backbones(name, tmp_path):
    kwargs = CASES[name]
    strided = kseg.backbones.get_backbone(name, **kwargs)
    _randomize_statistics(strided, seed=0)
    path = tmp_path / f"{name}.weights.h5"
    strided.save_weights(path)
    images = _images()
    reference = strided(images)
    assert reference["P5"].shape[1:3] == (2, 2)

    for output_stride, deepest in ((16, "P4"), (8, "P3")):
        dilated = kseg.backbones.get_backbone(name, output_stride=output_stride, **kwargs)
        dilated.load_weights(path)
        features = dilated(images)
        assert "P5" not in features and max(features, key=lambda k: int(k[1:])) == deepest
        assert features[deepest].shape[1:3] == (64 // output_stride, 64 // output_stride)
        assert features[deepest].shape[-1] == reference["P5"].shape[-1]
        # Layers before the target stride are untouched: their features match bit for bit.
        np.testing.assert_array_equal(np.asarray(features["P2"]), np.asarray(reference["P2"]))


def test_conversion_copies_weights_and_statistics():
    strided = kseg.backbones.get_backbone("efficientnetb0")
    _randomize_statistics(strided, seed=1)
    dilated = dilate(strided, output_stride=16)
    assert [layer.name for layer in dilated.layers] == [layer.name for layer in strided.layers]
    for old, new in zip(strided.weights, dilated.weights, strict=True):
        assert old.path == new.path
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
    images = _images(seed=1)
    # EfficientNet's Normalization layer caches its statistics; stale caches would show here.
    np.testing.assert_allclose(
        np.asarray(dilated(images)["P3"]), np.asarray(strided(images)["P3"]), atol=1e-5
    )


# Where a stride-2 layer samples its input: TF "same" 3x3 convolutions and the (0, 1) explicit
# pads of MobileNetV2 centre output i on input 2i + 1; ResNet's 1x1 stride-2 convolutions take
# input 2i. A dilated network computes the strided one's outputs at exactly those positions
# ("algorithme a trous", Holschneider et al. 1989; Chen et al. 2017, section 3.1).
SUBGRID_CASES = [
    ("tiny", {}, 16, slice(1, None, 2)),
    ("tiny", {}, 8, slice(3, None, 4)),
    ("mobilenetv2", {"alpha": 0.35}, 16, slice(1, None, 2)),
    ("resnet50", {}, 16, slice(0, None, 2)),
]


@pytest.mark.parametrize("name, kwargs, output_stride, grid", SUBGRID_CASES)
def test_dilated_features_contain_the_strided_ones(name, kwargs, output_stride, grid):
    strided = kseg.backbones.get_backbone(name, **kwargs)
    _randomize_statistics(strided, seed=2)
    dilated = dilate(strided, output_stride=output_stride)
    images = _images(size=96, seed=2)
    coarse = np.asarray(strided(images)["P5"])
    dense = np.asarray(dilated(images)["P5"])
    assert dense.shape[1:3] == (96 // output_stride, 96 // output_stride)
    scale = np.abs(coarse).max()
    np.testing.assert_allclose(dense[:, grid, grid], coarse, atol=1e-4 * scale, rtol=1e-4)


def test_dilation_rates_follow_the_lost_stride():
    backbone = kseg.backbones.get_backbone("tiny", output_stride=8)
    expected = {
        "stage3_conv1": ((2, 2), (1, 1)),
        "stage4_conv1": ((1, 1), (1, 1)),
        "stage4_conv2": ((1, 1), (2, 2)),
        "stage5_conv1": ((1, 1), (2, 2)),
        "stage5_conv2": ((1, 1), (4, 4)),
    }
    for name, (strides, rate) in expected.items():
        layer = backbone.get_layer(name)
        assert (layer.strides, layer.dilation_rate) == (strides, rate), name
        assert layer.kernel.shape == (3, 3) + layer.kernel.shape[2:]


def test_multi_grid_multiplies_the_last_stage_rates():
    # DeepLabv3 (Chen et al. 2017, section 3.2): output stride 16 with Multi_Grid (1, 2, 4)
    # gives block4's three 3x3 convolutions rates 2 * (1, 2, 4) = (2, 4, 8).
    backbone = kseg.backbones.get_backbone("resnet50", output_stride=16, multi_grid=(1, 2, 4))
    rates = [backbone.get_layer(f"conv5_block{i}_2_conv").dilation_rate for i in (1, 2, 3)]
    assert rates == [(2, 2), (4, 4), (8, 8)]
    assert backbone.get_layer("conv4_block6_2_conv").dilation_rate == (1, 1)
    assert backbone.output["P4"].shape[-1] == 2048


def test_multi_grid_must_divide_the_last_stage():
    with pytest.raises(ValueError, match="has 1 of them"):
        kseg.backbones.get_backbone("tiny", output_stride=16, multi_grid=(1, 2, 4))
    with pytest.raises(ValueError, match="Received: multi_grid"):
        kseg.backbones.get_backbone("tiny", output_stride=16, multi_grid=(0,))


def test_layer_strides_agree_with_static_shapes():
    model = kseg.backbones.get_backbone("mobilenetv2", input_shape=(64, 64, 3), alpha=0.35)
    strides = layer_strides(model)
    checked = 0
    for layer in model.layers[1:]:
        shape = layer.output.shape
        if len(shape) != 4 or isinstance(layer, keras.layers.ZeroPadding2D):
            continue
        assert shape[1] == 64 // strides[layer.name][1], layer.name
        checked += 1
    assert checked > 100


def test_nothing_to_convert_returns_the_model():
    backbone = kseg.backbones.get_backbone("tiny")
    assert dilate(backbone, output_stride=32) is backbone


def test_untraceable_layers_are_rejected():
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.UpSampling2D(name="up")(keras.layers.Conv2D(4, 3, strides=2)(inputs))
    with pytest.raises(TypeError, match="layer 'up' of type UpSampling2D"):
        layer_strides(keras.Model(inputs, outputs))
    with pytest.raises(ValueError, match="Received: output_stride=12"):
        dilate(keras.Model(inputs, outputs), output_stride=12)
