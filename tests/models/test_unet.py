import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.models.unet import (
    UNet,
    unet_output_size,
    valid_input_sizes,
)


def conv_params(kernel, channels_in, channels_out):
    return kernel * kernel * channels_in * channels_out + channels_out


def paper_parameter_count(input_channels, num_classes, num_filters=64, depth=4):
    # Ronneberger et al. 2015, Fig. 1: widths num_filters * 2**level, two 3x3 convs per level,
    # a 2x2 up-conv halving the channels, two 3x3 convs on the concatenation, a 1x1 classifier.
    total, channels = 0, input_channels
    for level in range(depth + 1):
        width = num_filters * 2**level
        total += conv_params(3, channels, width) + conv_params(3, width, width)
        channels = width
    for level in reversed(range(depth)):
        width = num_filters * 2**level
        total += (
            conv_params(2, 2 * width, width)
            + conv_params(3, 2 * width, width)
            + conv_params(3, width, width)
        )
    return total + conv_params(1, num_filters, num_classes)


@pytest.fixture(scope="module")
def paper_model():
    return UNet(num_classes=2, input_shape=(572, 572, 1))


def test_paper_tile_572_gives_388(paper_model):
    tile = np.random.default_rng(0).uniform(0, 255, (1, 572, 572, 1)).astype("float32")
    logits = paper_model(tile, training=False)
    assert tuple(logits.shape) == (1, 388, 388, 2)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_paper_parameter_count(paper_model):
    expected = paper_parameter_count(input_channels=1, num_classes=2)
    assert paper_model.count_params() == expected
    assert abs(expected - 31.0e6) / 31.0e6 < 0.01


def test_paper_feature_map_sizes(paper_model):
    # Sizes printed in the paper's Fig. 1.
    def shape(name):
        return tuple(paper_model.get_layer(name).output.shape[1:])

    assert shape("down_1_conv_2") == (568, 568, 64)
    assert shape("down_4_conv_2") == (64, 64, 512)
    assert shape("bottleneck_conv_2") == (28, 28, 1024)
    assert shape("up_4_upconv") == (56, 56, 512)
    assert shape("up_4_crop") == (56, 56, 512)
    assert shape("up_1_upconv") == (392, 392, 64)
    assert shape("up_1_concat") == (392, 392, 128)


def test_output_size_formula_and_tiling_error():
    assert unet_output_size(572) == 388
    assert unet_output_size(188) == 4
    assert unet_output_size(97, padding="same") == 97
    with pytest.raises(ValueError, match="even size.*Received: input_size=570"):
        unet_output_size(570)
    with pytest.raises(ValueError, match="even size"):
        UNet(input_shape=(570, 572, 1), num_filters=2)


def test_dynamic_valid_model_matches_the_formula():
    model = UNet(num_classes=3, num_filters=2, depth=2)
    size = 92
    out = model(np.zeros((1, size, size, 3), "float32"))
    assert tuple(out.shape) == (
        1,
        unet_output_size(size, depth=2),
        unet_output_size(size, depth=2),
        3,
    )


@pytest.mark.parametrize("size", [(64, 64), (32, 80), (65, 97)])
def test_padded_variant_keeps_the_size(size):
    model = UNet(num_classes=3, num_filters=2, padding="same")
    out = model(np.zeros((1, *size, 3), "float32"))
    assert tuple(out.shape) == (1, *size, 3)


def test_padded_variant_pads_undivisible_sizes_and_crops_back():
    # An undivisible input must behave exactly like its centred zero-padded version, cropped.
    model = UNet(num_classes=2, num_filters=2, padding="same")
    image = np.random.default_rng(1).uniform(0, 255, (1, 21, 35, 3)).astype("float32")
    padded = np.pad(image, ((0, 0), (5, 6), (6, 7), (0, 0)))
    assert padded.shape[1:3] == (32, 48)
    full = np.asarray(model(padded))
    np.testing.assert_allclose(np.asarray(model(image)), full[:, 5:26, 6:41], atol=1e-5)


def test_backbone_features_are_the_skips():
    model = UNet(num_classes=3, backbone="tiny", num_filters=2)
    encoder = kseg.backbones.get_backbone("tiny")
    infos = sorted(encoder.feature_info, key=lambda info: info["stride"])
    assert [info["key"] for info in infos[:4]] == ["P1", "P2", "P3", "P4"]
    for level, info in enumerate(infos[:-1], start=1):
        concat = model.get_layer(f"up_{level}_concat").output
        assert concat.shape[-1] == info["channels"] + 2 * info["stride"]
    out = model(np.zeros((1, 65, 97, 3), "float32"))
    assert tuple(out.shape) == (1, 65, 97, 3)


def test_valid_model_reloads_in_safe_mode(tmp_path):
    model = UNet(num_classes=2, num_filters=2, depth=2, input_shape=(None, None, 1))
    image = np.random.default_rng(2).uniform(0, 255, (1, 92, 92, 1)).astype("float32")
    path = os.fspath(tmp_path / "unet.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(image)), np.asarray(model(image)), atol=1e-6)


def test_registered_and_exported():
    assert kseg.models.get_builder("unet") is kseg.models.UNet


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"padding": "full"}, "padding"),
        ({"backbone": "tiny", "padding": "valid"}, "padding='same'"),
        ({"num_classes": 0}, "num_classes"),
        ({"depth": 0}, "depth"),
    ],
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        UNet(**kwargs)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_sizes_are_an_arithmetic_progression_of_step_2_to_the_depth(depth):
    def tiles(size):
        try:
            unet_output_size(size, depth)
        except ValueError:
            return False
        return True

    smallest, step = valid_input_sizes(depth)
    assert step == 2**depth
    expected = [size for size in range(1, 700) if tiles(size)]
    assert expected == list(range(smallest, 700, step))
    if depth == 4:
        assert 572 in expected


def test_dynamic_unpadded_model_refuses_sizes_that_do_not_tile():
    # Without the check, 90 and 93 ran and gave crops misaligned with the skips, 20 failed
    # inside a convolution.
    model = UNet(num_classes=2, num_filters=2, depth=2, input_shape=(None, None, 1))
    smallest, step = valid_input_sizes(2)
    assert (smallest, step) == (44, 4)
    for size in [(90, 92), (93, 93), (20, 20), (44, 41)]:
        message = rf"valid heights and widths are 44 \+ k \* 4.*Received: .*\[{size[0]} {size[1]}\]"
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            model(np.zeros((1, *size, 1), "float32"))
        with pytest.raises(tf.errors.InvalidArgumentError, match="valid heights and widths"):
            model.predict(np.zeros((1, *size, 1), "float32"), verbose=0)
    for size in [(44, 48), (92, 92)]:
        out = model(np.zeros((1, *size, 1), "float32"))
        assert tuple(out.shape[1:3]) == tuple(unet_output_size(s, depth=2) for s in size)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (17, 1)])
def test_padded_and_backbone_forms_pad_any_size(size):
    for model in (
        UNet(num_classes=2, num_filters=2, depth=2, padding="same"),
        UNet(num_classes=2, num_filters=2, backbone="tiny"),
    ):
        assert tuple(model(np.zeros((1, *size, 3), "float32")).shape) == (1, *size, 2)
