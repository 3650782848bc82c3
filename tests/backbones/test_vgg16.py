"""The shared VGG16 front ends and the classifier weight transfer of FCN, DilatedNet, DeepLab v1."""

import keras
import numpy as np
import pytest

from kseg.backbones.vgg16 import (
    VGG16_BLOCKS,
    atrous_front_end,
    ceil_mode_pooling,
    check_classifier_width,
    decimation_steps,
    holds_vgg16_classifier,
    is_vgg16,
    load_vgg16_classifier,
)


def test_blocks_are_configuration_d():
    # Simonyan & Zisserman 2015, Table 1 (D): 13 convolutions, 64 to 512 channels.
    assert sum(count for count, _ in VGG16_BLOCKS) == 13
    reference = keras.applications.VGG16(include_top=False, weights=None)
    widths = [layer.filters for layer in reference.layers if isinstance(layer, keras.layers.Conv2D)]
    assert widths == [width for count, width in VGG16_BLOCKS for _ in range(count)]


@pytest.mark.parametrize(
    ("pool_size", "late_pools", "pools", "tap_strides"),
    [(2, False, 3, [1, 2, 4, 8]), (3, True, 5, [1, 2, 4, 8, 8])],
)
def test_atrous_front_end_stays_at_stride_8(pool_size, late_pools, pools, tap_strides):
    image = keras.Input((None, None, 3))
    features, taps = atrous_front_end(image, pool_size=pool_size, stride_1_late_pools=late_pools)
    model = keras.Model(image, features)
    pooling = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pooling) == pools and {layer.pool_size for layer in pooling} == {(pool_size,) * 2}
    assert [stride for _, stride in taps] == tap_strides
    for index in (1, 2, 3):
        assert model.get_layer(f"block5_conv{index}").dilation_rate == (2, 2)
        assert model.get_layer(f"block4_conv{index}").dilation_rate == (1, 1)
    # "same" pooling rounds up: ceil(65 / 8) = 9, ceil(97 / 8) = 13.
    assert tuple(model(np.zeros((1, 65, 97, 3), "float32")).shape) == (1, 9, 13, 512)


def test_ceil_mode_pooling_rounds_up_like_caffe():
    encoder = keras.Sequential([keras.Input((None, None, 1)), keras.layers.MaxPooling2D(2)])
    ceil = ceil_mode_pooling(encoder)
    image = np.arange(25, dtype="float32").reshape(1, 5, 5, 1)
    assert ceil(image).shape == (1, 3, 3, 1) and encoder(image).shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(np.asarray(ceil(image))[0, :2, :2, 0], [[6, 8], [16, 18]])


def test_decimation_takes_evenly_spaced_taps_from_corner_to_corner():
    # DeepLab-LargeFOV: 3x3 taps 0, 3, 6 of the 7x7 fc6, every 4th of 4096 units.
    assert decimation_steps(3, 1024) == (3, 4)
    assert decimation_steps(4, 4096) == (2, 1)
    assert decimation_steps(7, 4096) == (1, 1)
    with pytest.raises(ValueError, match="fc6_kernel_size=5"):
        decimation_steps(5, 1024)
    with pytest.raises(ValueError, match="num_filters=1000"):
        decimation_steps(3, 1000)


def test_checks_name_the_argument():
    assert is_vgg16("VGG16") and not is_vgg16("vgg19") and not is_vgg16(None)
    check_classifier_width(8, None)
    with pytest.raises(ValueError, match="num_filters=8"):
        check_classifier_width(8, "imagenet")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        holds_vgg16_classifier("missing.h5")


@pytest.mark.slow
def test_classifier_transfer_copies_and_decimates_fc1_fc2(tmp_path):
    keras.utils.set_random_seed(0)
    classifier = keras.applications.VGG16(include_top=True, weights=None)
    path = tmp_path / "vgg16.weights.h5"
    classifier.save_weights(path)
    assert holds_vgg16_classifier(path)
    image = keras.Input((None, None, 3))
    features, _ = atrous_front_end(image)
    fc6 = keras.layers.Conv2D(1024, 3, name="fc6")
    fc7 = keras.layers.Conv2D(1024, 1, name="fc7")
    model = keras.Model(image, fc7(fc6(features)))
    load_vgg16_classifier(model, fc6, fc7, str(path), tap_step=3, channel_step=4)
    np.testing.assert_array_equal(
        model.get_layer("block3_conv2").get_weights()[0],
        classifier.get_layer("block3_conv2").get_weights()[0],
    )
    fc1 = np.asarray(classifier.get_layer("fc1").kernel).reshape(7, 7, 512, 4096)
    np.testing.assert_array_equal(np.asarray(fc6.kernel), fc1[::3, ::3, :, ::4])
    fc2 = np.asarray(classifier.get_layer("fc2").kernel)
    np.testing.assert_array_equal(np.asarray(fc7.kernel)[0, 0], fc2[::4, ::4])


@pytest.mark.parametrize("include_top", [False, True])
def test_a_failed_imagenet_download_is_one_line_naming_the_file(tmp_path, monkeypatch, include_top):
    """FCN, SegNet, DilatedNet and DeepLab v1 fetch VGG16 through here: offline, one clear line."""
    import urllib.error

    from keras.src.utils import file_utils

    import kseg
    import kseg.testing
    from kseg.backbones.vgg16 import load_vgg16_classifier, load_vgg16_convolutions

    kseg.testing.offline_keras_cache(monkeypatch, tmp_path)
    attempts = []

    def fail(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(file_utils, "urlretrieve", fail)
    with pytest.raises(kseg.backbones.WeightsDownloadError) as raised:
        if include_top:
            load_vgg16_classifier(None, None, None, "imagenet")
        else:
            load_vgg16_convolutions(None, "imagenet")
    file_name = attempts[0].rsplit("/", 1)[1]
    assert file_name.startswith("vgg16_weights") and ("notop" in file_name) != include_top
    message = str(raised.value)
    assert "\n" not in message and file_name in message
    assert str(tmp_path / "models" / file_name) in message
