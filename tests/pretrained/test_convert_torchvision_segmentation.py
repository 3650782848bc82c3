import json
import subprocess
import types
from pathlib import Path

import keras
import numpy as np
import pytest

from kseg.models.deeplab_v3 import DeepLabV3
from kseg.models.fcn import FCN
from kseg.pretrained import read_torch_checkpoint
from kseg.pretrained.convert_torchvision_segmentation import (
    TORCHVISION_SEGMENTATION_CONFIGS,
    build_torchvision_segmentation,
    load_torchvision_segmentation_checkpoint,
    load_torchvision_segmentation_weights,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Written by tests/fixtures/make_torchvision_segmentation_keys.py and
# make_torchvision_segmentation_small.py with torch 2.14.1 / torchvision 0.29.1.
KEY_SHAPES = json.loads((FIXTURES / "torchvision_segmentation_keys.json").read_text())
SMALL_OUTPUTS = FIXTURES / "torchvision_segmentation_small.npz"
REFERENCE_SCRIPT = FIXTURES / "torchvision_segmentation_reference.py"
# The narrow models of make_torchvision_segmentation_small.py, as kseg configurations.
SMALL_MODELS = {
    "deeplabv3": (
        "deeplabv3_resnet50",
        {"base_channels": 2, "num_filters": 8, "dilation_rates": (2, 3, 5)},
    ),
    "fcn": ("fcn_resnet50", {"base_channels": 2, "num_filters": 16}),
}


def _random_state_dict(name, seed=0):
    """torchvision's keys and shapes for `name`, filled with random float32 values."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in KEY_SHAPES[name]:
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(0, "int64")
        else:
            state[key] = rng.normal(size=shape).astype("float32")
    return state


def _keras_layout(array):
    return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array


def _scaled_error(result, expected):
    """Max abs difference over max(1, max |expected|): absolute for unit-scale logits."""
    return float(np.max(np.abs(result - expected)) / max(1.0, float(np.max(np.abs(expected)))))


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "fcn_resnet50"])
def test_every_key_of_the_full_model_lands_on_its_layer(name):
    state = _random_state_dict(name)
    model = build_torchvision_segmentation(name)
    consumed = load_torchvision_segmentation_weights(model, state)
    assert consumed == sorted(state)
    placements = {
        "classifier.4.weight": model.get_layer("logits_classifier").kernel,
        "classifier.4.bias": model.get_layer("logits_classifier").bias,
        "backbone.layer4.2.conv2.weight": model.get_layer("resnet50_v1.5_backbone")
        .get_layer("layer4.2.conv2")
        .kernel,
    }
    if name.startswith("deeplabv3"):
        aspp = model.get_layer("aspp")
        placements["classifier.0.convs.3.0.weight"] = aspp.branches[3].conv.kernel
        placements["classifier.0.convs.4.1.weight"] = aspp.pooling_conv.conv.kernel
        placements["classifier.0.convs.4.2.running_var"] = aspp.pooling_conv.bn.moving_variance
        placements["classifier.0.project.0.weight"] = aspp.projection.conv.kernel
        placements["classifier.1.weight"] = model.get_layer("head_conv").conv.kernel
        placements["classifier.2.bias"] = model.get_layer("head_conv").bn.beta
    else:
        placements["classifier.0.weight"] = model.get_layer("head_conv").conv.kernel
        placements["classifier.1.running_mean"] = model.get_layer("head_conv").bn.moving_mean
    for key, variable in placements.items():
        np.testing.assert_array_equal(np.asarray(variable), _keras_layout(state[key]), key)


def test_the_101_layer_models_take_their_full_key_lists():
    for name in ("deeplabv3_resnet101", "fcn_resnet101"):
        state = _random_state_dict(name)
        model = build_torchvision_segmentation(name, num_classes=21)
        assert load_torchvision_segmentation_weights(model, state) == sorted(state)


@pytest.mark.parametrize("kind", ["deeplabv3", "fcn"])
def test_narrow_models_match_torchvision_logits_on_odd_sizes(kind):
    name, overrides = SMALL_MODELS[kind]
    state = read_torch_checkpoint(FIXTURES / f"torchvision_{kind}_small.pth")
    reference = np.load(SMALL_OUTPUTS)
    model = build_torchvision_segmentation(name, num_classes=3, **overrides)
    load_torchvision_segmentation_weights(model, state)
    for index in (0, 1):
        expected = reference[f"{kind}_out{index}"]
        result = np.asarray(model(reference[f"image{index}"]))
        assert result.shape == expected.shape
        assert _scaled_error(result, expected) <= 1e-5


def test_the_registry_converter_builds_the_entrys_model_from_the_file():
    builder, kwargs = TORCHVISION_SEGMENTATION_CONFIGS["fcn_resnet50"]
    _, overrides = SMALL_MODELS["fcn"]
    entry = types.SimpleNamespace(
        builder=builder, builder_kwargs={**kwargs, **overrides, "num_classes": 3}
    )
    model = load_torchvision_segmentation_checkpoint(entry, FIXTURES / "torchvision_fcn_small.pth")
    reference = np.load(SMALL_OUTPUTS)
    assert model.name == "fcn_resnet50"
    result = np.asarray(model(reference["image0"]))
    assert _scaled_error(result, reference["fcn_out0"]) <= 1e-5


@pytest.mark.parametrize("kind", ["fcn", "deeplabv3"])
def test_a_model_with_an_auxiliary_head_receives_the_auxiliary_classifier(kind):
    # torchvision's FCNHead on layer3: a quarter of its channels (32 in the narrow copy).
    name, overrides = SMALL_MODELS[kind]
    state = read_torch_checkpoint(FIXTURES / f"torchvision_{kind}_small.pth")
    model = build_torchvision_segmentation(
        name, num_classes=3, auxiliary_loss_weight=0.5, auxiliary_filters=8, **overrides
    )
    assert load_torchvision_segmentation_weights(model, state, ignore_aux=False) == sorted(state)
    block = model.get_layer("auxiliary_conv")
    np.testing.assert_array_equal(
        np.asarray(block.conv.kernel), state["aux_classifier.0.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        np.asarray(block.bn.moving_variance), state["aux_classifier.1.running_var"]
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("auxiliary_classifier").bias), state["aux_classifier.4.bias"]
    )
    # The main output is the configuration's without the head: the same logits.
    reference = np.load(SMALL_OUTPUTS)
    result = np.asarray(model(reference["image0"]))
    assert _scaled_error(result, reference[f"{kind}_out0"]) <= 1e-5


def test_auxiliary_keys_are_reported_unless_ignored():
    state = read_torch_checkpoint(FIXTURES / "torchvision_fcn_small.pth")
    name, overrides = SMALL_MODELS["fcn"]
    model = build_torchvision_segmentation(name, num_classes=3, **overrides)
    with pytest.raises(ValueError, match=r"unused keys \(8\): \['aux_classifier.0.weight'"):
        load_torchvision_segmentation_weights(model, state, ignore_aux=False)
    consumed = load_torchvision_segmentation_weights(model, state)
    assert "aux_classifier.4.bias" in consumed and len(consumed) == len(state)


def test_unused_and_missing_keys_are_listed_before_anything_is_written():
    state = read_torch_checkpoint(FIXTURES / "torchvision_deeplabv3_small.pth")
    name, overrides = SMALL_MODELS["deeplabv3"]
    model = build_torchvision_segmentation(name, num_classes=3, **overrides)
    before = [np.asarray(weight).copy() for weight in model.weights]
    broken = dict(state)
    del broken["classifier.0.convs.4.2.running_mean"]
    broken["classifier.3.weight"] = np.zeros((8,), "float32")
    with pytest.raises(ValueError) as raised:
        load_torchvision_segmentation_weights(model, broken)
    message = str(raised.value)
    assert "unused keys (1): ['classifier.3.weight']" in message
    assert "aspp_pooling/bn/moving_mean" in message
    broken = dict(state)
    del broken["backbone.layer2.0.downsample.1.bias"]
    with pytest.raises(ValueError, match=r"layer2\.0\.downsample\.1/beta"):
        load_torchvision_segmentation_weights(model, broken)
    for weight, old in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(np.asarray(weight), old)


def test_a_wrong_shape_names_the_key():
    state = read_torch_checkpoint(FIXTURES / "torchvision_fcn_small.pth")
    name, overrides = SMALL_MODELS["fcn"]
    model = build_torchvision_segmentation(name, num_classes=4, **overrides)
    with pytest.raises(ValueError, match="'classifier.4.weight' has shape"):
        load_torchvision_segmentation_weights(model, state)


def test_unknown_names_and_models_are_refused():
    with pytest.raises(ValueError, match="Unknown torchvision segmentation model 'fcn_vgg16'"):
        build_torchvision_segmentation("fcn_vgg16")
    model = DeepLabV3(num_classes=3, backbone="tiny", multi_grid=None)
    with pytest.raises(ValueError, match="needs layers 'head_conv' and 'logits_classifier'"):
        load_torchvision_segmentation_weights(model, {})


def test_configurations_are_torchvisions_architectures():
    # torchvision: deeplabv3_resnet* use DeepLabHead(2048, classes) with rates (12, 24, 36)
    # and Dropout(0.5) after the projection; fcn_resnet* use FCNHead(2048, classes), 512
    # channels and Dropout(0.1); both backbones replace_stride_with_dilation=[F, T, T].
    deeplab = build_torchvision_segmentation("deeplabv3_resnet50", base_channels=2)
    aspp = deeplab.get_layer("aspp")
    assert aspp.dilation_rates == (12, 24, 36) and aspp.dropout == 0.5
    backbone = deeplab.get_layer("resnet50_v1.5_backbone")
    assert backbone.get_layer("layer4.0.conv2").dilation_rate == (2, 2)
    assert backbone.get_layer("layer4.1.conv2").dilation_rate == (4, 4)
    fcn = build_torchvision_segmentation("fcn_resnet101", base_channels=2)
    assert fcn.get_layer("head_dropout").rate == 0.1
    assert fcn.get_layer("head_conv").filters == 512
    assert "layer3.22.conv2" in [layer.name for layer in fcn.layers[1].layers]
    for name, (builder, _) in TORCHVISION_SEGMENTATION_CONFIGS.items():
        family = name.split("_")[0]
        assert builder == {"deeplabv3": "deeplabv3", "fcn": "fcn8s", "lraspp": "lraspp"}[family]


def test_builder_options_keep_the_default_models():
    plain = DeepLabV3(num_classes=3, backbone="tiny", multi_grid=None)
    with_conv = DeepLabV3(num_classes=3, backbone="tiny", multi_grid=None, head_conv=True)
    assert "head_conv" not in [layer.name for layer in plain.layers]
    # A 3x3 convolution 256 -> 256 without bias, and its BN's four vectors.
    assert with_conv.count_params() - plain.count_params() == 9 * 256 * 256 + 4 * 256
    with pytest.raises(ValueError, match="head must be one of"):
        FCN(3, backbone="tiny", head="torchvision")
    with pytest.raises(ValueError, match="input_padding applies to head='skips' only"):
        FCN(3, backbone="tiny", head="dilated", input_padding=100)


@pytest.mark.parametrize("kind", ["deeplabv3", "fcn"])
def test_converted_models_save_and_reload(kind, tmp_path):
    name, overrides = SMALL_MODELS[kind]
    model = build_torchvision_segmentation(name, num_classes=3, **overrides)
    load_torchvision_segmentation_weights(
        model, read_torch_checkpoint(FIXTURES / f"torchvision_{kind}_small.pth")
    )
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    image = np.load(SMALL_OUTPUTS)["image1"]
    np.testing.assert_allclose(np.asarray(reloaded(image)), np.asarray(model(image)), atol=1e-6)


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "fcn_resnet50"])
def test_full_models_match_torchvision(name, tmp_path, torch_python):
    subprocess.run([torch_python, str(REFERENCE_SCRIPT), name, str(tmp_path)], check=True)
    state = read_torch_checkpoint(tmp_path / "state_dict.pth")
    reference = np.load(tmp_path / "reference.npz")
    # With torchvision's auxiliary head, so its aux output is compared too.
    model = build_torchvision_segmentation(name, auxiliary_loss_weight=0.5)
    assert load_torchvision_segmentation_weights(model, state, ignore_aux=False) == sorted(state)
    auxiliary = keras.Model(model.inputs, model.auxiliary_output)
    for index in (0, 1):
        expected = reference[f"out{index}"]
        result = np.asarray(model(reference[f"image{index}"]))
        assert result.shape == expected.shape
        assert _scaled_error(result, expected) <= 1e-4
        expected = reference[f"aux{index}"]
        assert _scaled_error(np.asarray(auxiliary(reference[f"image{index}"])), expected) <= 1e-4


@pytest.mark.parametrize(
    "name", ["fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"]
)
def test_full_models_match_torchvision_in_float64(name, tmp_path, torch_python):
    # Both sides in double precision, batch-norm statistics near the true ones: float32 rounding
    # of the random networks alone reaches 6e-2, so only here does the 1e-4 bound test the
    # conversion itself. The state dict is float32, as published ones are.
    subprocess.run(
        [torch_python, str(REFERENCE_SCRIPT), name, str(tmp_path), "float64"], check=True
    )
    state = read_torch_checkpoint(tmp_path / "state_dict.pth")
    reference = np.load(tmp_path / "reference.npz")
    keras.config.set_dtype_policy("float64")
    model = build_torchvision_segmentation(name)
    load_torchvision_segmentation_weights(model, state)
    for index in (0, 1):
        expected = reference[f"out{index}"]
        result = np.asarray(model(reference[f"image{index}"].astype("float64")))
        assert np.max(np.abs(result - expected)) <= 1e-4


# --- MobileNetV3-Large: DeepLabv3 and LR-ASPP --------------------------------------------------

MOBILENET_V3_MODELS = ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]
# Written by tests/fixtures/make_torchvision_mobilenet_v3_small.py with torch 2.14.1 /
# torchvision 0.29.1: torchvision's classes on mobilenet_v3_large(width_mult=0.1, dilated=True).
SMALL_MOBILENET_V3_OUTPUTS = FIXTURES / "torchvision_mobilenet_v3_small.npz"
SMALL_MOBILENET_V3_MODELS = {
    "deeplabv3": (
        "deeplabv3_mobilenet_v3_large",
        {"width_multiplier": 0.1, "num_filters": 8, "dilation_rates": (1, 2, 3)},
    ),
    "lraspp": ("lraspp_mobilenet_v3_large", {"width_multiplier": 0.1, "num_filters": 8}),
}


def _small_mobilenet_v3(kind):
    name, overrides = SMALL_MOBILENET_V3_MODELS[kind]
    state = read_torch_checkpoint(FIXTURES / f"torchvision_{kind}_mobilenet_v3_small.pth")
    return build_torchvision_segmentation(name, num_classes=3, **overrides), state


@pytest.mark.parametrize("name", MOBILENET_V3_MODELS)
def test_every_key_of_the_mobilenet_v3_models_lands_on_its_layer(name):
    state = _random_state_dict(name)
    model = build_torchvision_segmentation(name)
    assert load_torchvision_segmentation_weights(model, state) == sorted(state)
    backbone = model.get_layer("mobilenet_v3_large_backbone")
    placements = {
        "backbone.0.0.weight": backbone.get_layer("features.0.0").kernel,
        "backbone.13.block.2.fc2.bias": backbone.get_layer("features.13.block.2.fc2").bias,
        "backbone.16.1.running_var": backbone.get_layer("features.16.1").moving_variance,
    }
    if name.startswith("lraspp"):
        placements["classifier.cbr.0.weight"] = model.get_layer("lraspp_cbr").conv.kernel
        placements["classifier.cbr.1.running_mean"] = model.get_layer("lraspp_cbr").bn.moving_mean
        placements["classifier.scale.1.weight"] = model.get_layer("lraspp_scale").kernel
        placements["classifier.low_classifier.bias"] = model.get_layer("low_classifier").bias
        placements["classifier.high_classifier.weight"] = model.get_layer("high_classifier").kernel
    else:
        placements["classifier.0.convs.4.1.weight"] = model.get_layer(
            "aspp"
        ).pooling_conv.conv.kernel
        placements["classifier.1.weight"] = model.get_layer("head_conv").conv.kernel
        placements["classifier.4.bias"] = model.get_layer("logits_classifier").bias
    for key, variable in placements.items():
        np.testing.assert_array_equal(np.asarray(variable), _keras_layout(state[key]), key)
    depthwise = state["backbone.15.block.1.0.weight"]  # (960, 1, 5, 5)
    kernel = np.asarray(backbone.get_layer("features.15.block.1.0").kernel)
    np.testing.assert_array_equal(kernel[:, :, 7, 0], depthwise[7, 0])


@pytest.mark.parametrize("kind", ["deeplabv3", "lraspp"])
def test_narrow_mobilenet_v3_models_match_torchvision_logits_on_odd_sizes(kind):
    model, state = _small_mobilenet_v3(kind)
    consumed = load_torchvision_segmentation_weights(model, state)
    assert consumed == sorted(state)
    reference = np.load(SMALL_MOBILENET_V3_OUTPUTS)
    for index in (0, 1):
        expected = reference[f"{kind}_out{index}"]
        result = np.asarray(model(reference[f"image{index}"]))
        assert result.shape == expected.shape
        assert np.max(np.abs(result - expected)) <= 1e-5


def test_the_mobilenet_v3_deeplabv3_skips_its_auxiliary_classifier_on_features_4():
    model, state = _small_mobilenet_v3("deeplabv3")
    assert "aux_classifier.0.weight" in state
    assert state["aux_classifier.0.weight"].shape[1] == 8  # features.4's width at 0.1
    with pytest.raises(ValueError, match=r"unused keys \(8\): \['aux_classifier.0.weight'"):
        load_torchvision_segmentation_weights(model, state, ignore_aux=False)


def test_an_lraspp_state_dict_does_not_fit_a_deeplabv3_model():
    model, _ = _small_mobilenet_v3("deeplabv3")
    _, lraspp_state = _small_mobilenet_v3("lraspp")
    with pytest.raises(ValueError, match=r"unused keys \(11\): \['classifier.cbr.0.weight'"):
        load_torchvision_segmentation_weights(model, lraspp_state)


def test_the_registry_converter_builds_an_lraspp_from_the_file():
    builder, kwargs = TORCHVISION_SEGMENTATION_CONFIGS["lraspp_mobilenet_v3_large"]
    _, overrides = SMALL_MOBILENET_V3_MODELS["lraspp"]
    entry = types.SimpleNamespace(
        builder=builder, builder_kwargs={**kwargs, **overrides, "num_classes": 3}
    )
    path = FIXTURES / "torchvision_lraspp_mobilenet_v3_small.pth"
    model = load_torchvision_segmentation_checkpoint(entry, path)
    reference = np.load(SMALL_MOBILENET_V3_OUTPUTS)
    assert model.name == "lraspp_mobilenet_v3_large"
    result = np.asarray(model(reference["image1"]))
    assert np.max(np.abs(result - reference["lraspp_out1"])) <= 1e-5


def test_mobilenet_v3_configurations_are_torchvisions_architectures():
    # torchvision: both use mobilenet_v3_large(dilated=True) (features.13-15 at dilation 2,
    # output stride 16); deeplabv3_mobilenet_v3_large puts DeepLabHead(960, classes) with its
    # default rates (12, 24, 36) on features.16; lraspp_mobilenet_v3_large puts
    # LRASPPHead(40, 960, classes, 128) on features.4 (low) and features.16 (high).
    with keras.StatelessScope():
        deeplab = build_torchvision_segmentation("deeplabv3_mobilenet_v3_large")
        lraspp = build_torchvision_segmentation("lraspp_mobilenet_v3_large")
    aspp = deeplab.get_layer("aspp")
    assert aspp.dilation_rates == (12, 24, 36) and aspp.dropout == 0.5
    assert deeplab.get_layer("head_conv").filters == 256
    for model in (deeplab, lraspp):
        backbone = model.get_layer("mobilenet_v3_large_backbone")
        assert backbone.get_layer("features.13.block.1.0").strides == (1, 1)
        assert backbone.get_layer("features.13.block.1.0").dilation_rate == (2, 2)
        assert backbone.get_layer("features.12.block.1.0").dilation_rate == (1, 1)
        assert backbone.feature_info[-1]["layer"] == "features.16.2"
    assert lraspp.get_layer("lraspp_cbr").filters == 128
    info = {
        entry["key"]: entry
        for entry in lraspp.get_layer("mobilenet_v3_large_backbone").feature_info
    }
    assert info["P3"]["layer"] == "features.4.out" and info["P3"]["channels"] == 40
    assert info["P4"]["channels"] == 960
    assert TORCHVISION_SEGMENTATION_CONFIGS["lraspp_mobilenet_v3_large"][0] == "lraspp"


@pytest.mark.parametrize("name", MOBILENET_V3_MODELS)
def test_full_mobilenet_v3_models_match_torchvision(name, tmp_path, torch_python):
    subprocess.run([torch_python, str(REFERENCE_SCRIPT), name, str(tmp_path)], check=True)
    state = read_torch_checkpoint(tmp_path / "state_dict.pth")
    reference = np.load(tmp_path / "reference.npz")
    model = build_torchvision_segmentation(name)
    assert load_torchvision_segmentation_weights(model, state) == sorted(state)
    sizes = set()
    for index in (0, 1):
        expected = reference[f"out{index}"]
        result = np.asarray(model(reference[f"image{index}"]))
        assert result.shape == expected.shape
        sizes.add(result.shape)
        # Measured: about 2e-7 on logits of a few tenths; the acceptance bound is 1e-4.
        assert np.max(np.abs(result - expected)) <= 1e-5
    assert len(sizes) == 2


@pytest.mark.parametrize("kind", ["deeplabv3", "lraspp"])
def test_pretrained_load_fetches_converts_and_caches_a_mobilenet_v3_file(
    kind, tmp_path, monkeypatch
):
    import dataclasses
    import shutil

    import kseg
    from kseg.pretrained import registry

    name, overrides = SMALL_MOBILENET_V3_MODELS[kind]
    fixture = FIXTURES / f"torchvision_{kind}_mobilenet_v3_small.pth"
    prefix = kseg.pretrained.sha256_of_file(fixture)[:8]
    served = tmp_path / "served" / f"{kind}_small-{prefix}.pth"
    served.parent.mkdir()
    shutil.copyfile(fixture, served)
    entry = kseg.pretrained.get(name)
    toy = dataclasses.replace(
        entry,
        name="toy",
        url=served.as_uri(),
        hash_prefix=prefix,
        builder_kwargs={**entry.builder_kwargs, **overrides, "num_classes": 3},
        class_names=("background", "one", "two"),
    )
    monkeypatch.setitem(registry._REGISTRY, "toy", toy)
    reference = np.load(SMALL_MOBILENET_V3_OUTPUTS)
    cache = tmp_path / "cache"
    for _ in ("converted", "read back from the cache"):
        model = kseg.pretrained.load("toy", cache_dir=cache)
        result = np.asarray(model(reference["image0"]))
        assert np.max(np.abs(result - reference[f"{kind}_out0"])) <= 1e-5
    assert len(list((cache / "kseg" / "pretrained").glob("*.weights.h5"))) == 1
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(reference["image0"])), result, atol=1e-6)
