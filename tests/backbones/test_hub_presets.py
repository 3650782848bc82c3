"""keras-hub preset backbones as kseg backbones, offline: small networks saved as local presets.

The library's own `pyramid_outputs`, run by keras-hub's model, is the reference for every tap
(same tensor values, channels and spatial size); kseg's graph tracing is the second, independent
reference for the strides of dilated backbones.
"""

import json
import os

import keras
import numpy as np
import pytest

import kseg
from kseg.backbones import hub_presets

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is kseg's optional 'hub' extra")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def small_resnet(pre_activation=False):
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        use_pre_activation=pre_activation,
    )


def small_resnet_vd():
    # ResNet-vd: a three-convolution stem and average pooling on the strided shortcuts.
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[32, 32, 64],
        input_conv_kernel_sizes=[3, 3, 3],
        stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block_vd",
    )


def small_efficientnet(block_types):
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * 5,
        stackwise_depth_coefficients=[1.0] * 5,
        stackwise_kernel_sizes=[3] * 5,
        stackwise_num_repeats=[1] * 5,
        stackwise_input_filters=[8, 8, 16, 16, 24],
        stackwise_output_filters=[8, 16, 16, 24, 32],
        stackwise_expansion_ratios=[1, 2, 2, 2, 2],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.0, 0.25, 0.25],
        stackwise_strides=[1, 2, 2, 2, 2],
        stackwise_block_types=block_types,
        # keras-hub 0.32's get_config leaves out num_features, so a preset only reloads with
        # the default (1280).
    )


def small_mit(size=64):
    return keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1, 1, 1],
        num_layers=4,
        layerwise_num_heads=[1, 1, 1, 1],
        layerwise_sr_ratios=[8, 4, 2, 1],
        max_drop_path_rate=0.0,
        layerwise_patch_sizes=[7, 3, 3, 3],
        layerwise_strides=[4, 2, 2, 2],
        hidden_dims=[8, 16, 32, 64],
        image_shape=(size, size, 3),
    )


BUILDERS = {
    "resnet": small_resnet,
    "resnet_v2": lambda: small_resnet(pre_activation=True),
    "resnet_vd": small_resnet_vd,
    "efficientnet": lambda: small_efficientnet(["v1"] * 5),
    "efficientnet_v2": lambda: small_efficientnet(
        ["fused", "fused", "fused", "unfused", "unfused"]
    ),
    "mit": small_mit,
}
# Families whose strides all sit in plain Keras convolutions and poolings (dilatable).
TRACEABLE = ("resnet", "resnet_v2", "resnet_vd", "efficientnet")


def _randomise_batch_norm(model, seed=0):
    """Non-trivial moving statistics, so that a wrongly wired or unloaded weight shows."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """Each small keras-hub backbone, saved as a local preset directory (no image converter)."""
    saved = {}
    for family, build in BUILDERS.items():
        hub = build()
        _randomise_batch_norm(hub)
        directory = tmp_path_factory.mktemp(family)
        hub.save_to_preset(str(directory))
        saved[family] = (hub, str(directory))
    return saved


def _image(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (1, *shape)).astype("float32")


def _library_pyramid(hub, images):
    pyramid = keras.Model(hub.inputs[0], hub.pyramid_outputs)
    return {key: np.asarray(value) for key, value in pyramid(images).items()}


@pytest.mark.parametrize("family", list(BUILDERS))
def test_taps_are_the_library_pyramid_keyed_by_measured_stride(presets, family):
    hub, directory = presets[family]
    shape = (64, 64, 3) if family == "mit" else (96, 128, 3)
    backbone = kseg.backbones.get_backbone(
        "keras_hub:" + directory,
        input_shape=shape if family == "mit" else (None, None, 3),
        weights="preset",
        include_preprocessing=False,
    )
    images = _image(shape)
    expected = _library_pyramid(hub, images)
    features = {key: np.asarray(value) for key, value in backbone(images).items()}

    assert len(features) == len(expected)
    infos = {info["key"]: info for info in backbone.feature_info}
    for library_tensor in expected.values():
        stride = shape[0] // library_tensor.shape[1]
        assert shape[1] // library_tensor.shape[2] == stride
        key = f"P{int(np.log2(stride))}"
        assert infos[key]["stride"] == stride
        assert infos[key]["channels"] == library_tensor.shape[-1]
        np.testing.assert_allclose(features[key], library_tensor, rtol=1e-5, atol=1e-5)
    assert list(backbone.output) == sorted(backbone.output, key=lambda k: infos[k]["stride"])
    assert backbone.preprocessing == "torch"  # no image_converter.json in these presets


def test_mit_keys_follow_the_stride_not_keras_hub_names(presets):
    hub, directory = presets["mit"]
    assert sorted(hub.pyramid_outputs) == ["P1", "P2", "P3", "P4"]
    backbone = kseg.backbones.get_backbone("keras_hub:" + directory, input_shape=(64, 64, 3))
    assert [(i["key"], i["stride"]) for i in backbone.feature_info] == [
        ("P2", 4),
        ("P3", 8),
        ("P4", 16),
        ("P5", 32),
    ]


@pytest.mark.parametrize("family", TRACEABLE)
@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_taps_agree_with_graph_tracing(presets, family, output_stride):
    hub, directory = presets[family]
    backbone = kseg.backbones.get_backbone(
        "keras_hub:" + directory, weights="preset", output_stride=output_stride
    )
    strides = [info["stride"] for info in backbone.feature_info]
    assert max(strides) == output_stride
    assert len(set(strides)) == len(strides)
    # kseg's tracer (convolution and pooling strides along the graph) is independent of the
    # shape probe get_hub_backbone measures with.
    reloaded = keras.Model.from_config(backbone.get_config())
    assert kseg.backbones.feature_info(reloaded) == backbone.feature_info
    # The deepest library feature is the deepest kseg tap, now at output_stride.
    deepest = backbone.feature_info[-1]
    library_deepest = list(hub.pyramid_outputs.values())[-1]
    assert deepest["channels"] == library_deepest.shape[-1]
    features = backbone(_image((70, 90, 3)))
    assert features[deepest["key"]].shape[1:3] == (-(-70 // output_stride), -(-90 // output_stride))


@pytest.mark.parametrize("family", ["efficientnet_v2", "mit"])
def test_hidden_strides_refuse_dilation(presets, family):
    _, directory = presets[family]
    shape = (64, 64, 3)
    with pytest.raises(ValueError, match="downsamples inside its own layers"):
        kseg.backbones.get_backbone("keras_hub:" + directory, input_shape=shape, output_stride=16)


def test_preprocessing_follows_the_preset_image_converter(presets, tmp_path):
    hub, directory = presets["resnet"]
    images = _image((64, 64, 3), seed=1)
    cases = {
        # keras-hub's timm presets write ImageNet mean/std this way: kseg's "torch" mode.
        "torch": (1 / (255 * IMAGENET_STD), -IMAGENET_MEAN / IMAGENET_STD),
        "custom": ([0.01, 0.02, 0.03], [-1.0, 0.5, 0.0]),
    }
    for case, (scale, offset) in cases.items():
        preset = tmp_path / case
        hub.save_to_preset(str(preset))
        converter = keras_hub.layers.ResNetImageConverter(
            image_size=(224, 224), scale=list(np.asarray(scale, float)), offset=list(offset)
        )
        converter.save_to_preset(str(preset))
        backbone = kseg.backbones.get_backbone("keras_hub:" + str(preset), weights="preset")
        if case == "torch":
            assert backbone.preprocessing == "torch"
        else:
            assert backbone.preprocessing == {"scale": scale, "offset": offset}
        # No resize to the converter's image_size: features stay at the input's size.
        expected = _library_pyramid(hub, images * np.asarray(scale) + np.asarray(offset))
        np.testing.assert_allclose(
            np.asarray(backbone(images)["P5"]), expected["P5"], rtol=1e-4, atol=1e-4
        )


def test_preprocessing_override_and_default(presets):
    hub, directory = presets["resnet"]
    images = _image((64, 64, 3), seed=2)
    backbone = kseg.backbones.get_backbone(
        "keras_hub:" + directory, weights="preset", preprocessing="tf"
    )
    assert backbone.preprocessing == "tf"
    expected = _library_pyramid(hub, images / 127.5 - 1)
    np.testing.assert_allclose(np.asarray(backbone(images)["P3"]), expected["P3"], atol=1e-4)
    default = kseg.backbones.get_backbone("keras_hub:" + directory, weights="preset")
    normalised = (images / 255 - IMAGENET_MEAN) / IMAGENET_STD
    expected = _library_pyramid(hub, normalised.astype("float32"))
    np.testing.assert_allclose(np.asarray(default(images)["P3"]), expected["P3"], atol=1e-4)


@pytest.fixture
def builtin_resnet_preset(presets, monkeypatch):
    """keras-hub's built-in name 'resnet_50_imagenet' served from a local directory."""
    from keras_hub.src.utils import preset_utils

    _, directory = presets["resnet"]
    entry = {**preset_utils.BUILTIN_PRESETS["resnet_50_imagenet"], "kaggle_handle": directory}
    monkeypatch.setitem(preset_utils.BUILTIN_PRESETS, "resnet_50_imagenet", entry)
    return presets["resnet"][0]


def test_builtin_name_loads_the_preset_weights_only_when_asked(builtin_resnet_preset):
    hub = builtin_resnet_preset
    kernel = hub.get_layer("conv1_conv").kernel.numpy()
    pretrained = kseg.backbones.get_backbone("keras_hub:resnet_50_imagenet", weights="imagenet")
    np.testing.assert_array_equal(pretrained.get_layer("conv1_conv").kernel.numpy(), kernel)
    assert pretrained.name == "resnet_50_imagenet_backbone"
    assert pretrained.hub_preset == "resnet_50_imagenet"
    random = kseg.backbones.get_backbone("keras_hub:resnet_50_imagenet", weights=None)
    assert not np.allclose(random.get_layer("conv1_conv").kernel.numpy(), kernel)


def test_weights_file_is_loaded_into_the_preset_architecture(presets, tmp_path):
    hub, directory = presets["resnet"]
    path = str(tmp_path / "finetuned.weights.h5")
    hub.save_weights(path)
    backbone = kseg.backbones.get_backbone("keras_hub:" + directory, weights=path)
    np.testing.assert_array_equal(
        backbone.get_layer("conv1_conv").kernel.numpy(), hub.get_layer("conv1_conv").kernel.numpy()
    )


def test_deeplabv3plus_on_a_hub_resnet_trains_saves_and_reloads(builtin_resnet_preset, tmp_path):
    model = kseg.models.get_model(
        "deeplabv3plus",
        num_classes=3,
        backbone="keras_hub:resnet_50_imagenet",
        backbone_weights="imagenet",
        output_stride=16,
    )
    images = _image((65, 97, 3), seed=3)
    logits = model.predict(images, verbose=0)
    assert logits.shape == (1, 65, 97, 3)
    assert logits.dtype == np.float32
    assert np.isfinite(logits).all()

    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), logits, atol=1e-5)
    backbone = kseg.models.backbone_of(model)
    assert kseg.models.backbone_of(reloaded).feature_info == backbone.feature_info


def test_deeplabv3plus_on_a_hub_mit_saves_and_reloads_in_safe_mode(presets, tmp_path):
    _, directory = presets["mit"]
    # A size other than the preset's: the fixed-size MiT graph is rebuilt with its weights.
    shape = (96, 96, 3)
    model = kseg.models.get_model(
        "deeplabv3plus",
        num_classes=2,
        backbone="keras_hub:" + directory,
        backbone_weights="preset",
        input_shape=shape,
        output_stride=32,
    )
    images = _image(shape, seed=4)
    logits = model.predict(images, verbose=0)
    assert logits.shape == (1, *shape[:2], 2)
    assert np.isfinite(logits).all()
    path = str(tmp_path / "mit.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), logits, atol=1e-5)


def test_backbone_follows_the_global_mixed_precision_policy(presets):
    _, directory = presets["resnet"]
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = kseg.models.get_model(
            "deeplabv3plus", num_classes=2, backbone="keras_hub:" + directory, output_stride=16
        )
    finally:
        keras.config.set_dtype_policy("float32")
    backbone = kseg.models.backbone_of(model)
    assert backbone.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert backbone.get_layer("conv1_conv").kernel.dtype == "float32"
    logits = model.predict(_image((33, 47, 3)), verbose=0)
    assert logits.dtype == np.float32
    assert np.isfinite(logits).all()


def test_keras_hub_features_layer_config_round_trip(presets):
    hub, _ = presets["mit"]
    layer = hub_presets.KerasHubFeatures(hub, {"P2": "P1", "P5": "P4"}, name="features")
    config = layer.get_config()
    rebuilt = hub_presets.KerasHubFeatures.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.keys == {"P2": "P1", "P5": "P4"}
    rebuilt.backbone.set_weights(hub.get_weights())
    images = _image((64, 64, 3), seed=5) / 255
    expected = _library_pyramid(hub, images)
    features = rebuilt(images)
    np.testing.assert_allclose(np.asarray(features["P5"]), expected["P4"], atol=1e-5)
    with pytest.raises(ValueError, match=r"pyramid outputs \['P7'\]"):
        hub_presets.KerasHubFeatures(hub, {"P2": "P7"})


def test_fixed_size_network_needs_a_fixed_input_shape(presets):
    _, directory = presets["mit"]
    with pytest.raises(ValueError, match="fixed input_shape"):
        kseg.backbones.get_backbone("keras_hub:" + directory, input_shape=(None, None, 3))


def test_preset_without_feature_pyramid_is_refused(tmp_path):
    bert = keras_hub.models.BertBackbone(
        vocabulary_size=10,
        num_layers=1,
        num_heads=1,
        hidden_dim=4,
        intermediate_dim=4,
        max_sequence_length=8,
    )
    bert.save_to_preset(str(tmp_path))
    with pytest.raises(ValueError, match="BertBackbone, which has no feature pyramid"):
        kseg.backbones.get_backbone("keras_hub:" + str(tmp_path))


def _unreachable(*args, **kwargs):
    raise ConnectionError("Failed to resolve 'api.kaggle.com'")


def test_failed_download_names_the_preset_and_the_offline_way(monkeypatch):
    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", _unreachable)
    with pytest.raises(OSError, match="resnet_50_imagenet.*'keras_hub:<directory>'"):
        kseg.backbones.get_backbone("keras_hub:resnet_50_imagenet", weights="imagenet")


def test_failed_image_converter_download_is_not_mistaken_for_no_converter(
    builtin_resnet_preset, monkeypatch
):
    # The backbone files are cached; the image converter cannot be fetched.
    monkeypatch.setattr(keras_hub.layers.ImageConverter, "from_preset", _unreachable)
    with pytest.raises(OSError, match="could not fetch preset 'resnet_50_imagenet'"):
        kseg.backbones.get_backbone("keras_hub:resnet_50_imagenet", weights="imagenet")


def test_bad_arguments(presets, tmp_path):
    _, directory = presets["resnet"]
    with pytest.raises(ValueError, match="weights="):
        kseg.backbones.get_backbone("keras_hub:" + directory, weights=3)
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        kseg.backbones.get_backbone(
            "keras_hub:" + directory, weights=str(tmp_path / "missing.weights.h5")
        )
    with pytest.raises(ValueError, match="output_stride"):
        kseg.backbones.get_backbone("keras_hub:" + directory, output_stride=4)
    with pytest.raises(ValueError, match="No preset"):
        kseg.backbones.get_backbone("keras_hub:")


def test_missing_keras_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "keras_hub", None)
    with pytest.raises(ImportError, match=r"kseg\[hub\]"):
        hub_presets.get_hub_backbone("keras_hub:resnet_50_imagenet")


def test_listed_presets_are_keras_hub_pyramid_backbones():
    names = hub_presets.list_hub_presets()
    for expected in ("resnet_50_imagenet", "resnet_v2_50_imagenet", "mit_b0_ade20k_512"):
        assert "keras_hub:" + expected in names
    assert all(hub_presets.is_hub_preset(name) for name in names)
    assert not any("bert" in name for name in names)


def test_preset_directory_is_what_save_to_preset_writes(presets):
    _, directory = presets["resnet"]
    with open(os.path.join(directory, "config.json")) as file:
        assert json.load(file)["class_name"] == "ResNetBackbone"
