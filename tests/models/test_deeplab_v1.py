import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import kseg.testing
from kseg.models.deeplab_v1 import DeepLabV1

# Chen et al. 2015 (ICLR), Table 2: DeepLab-LargeFOV has 20.5M parameters.
PAPER_LARGEFOV_PARAMETERS_MILLIONS = 20.5
VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _conv(kernel, in_channels, out_channels):
    return kernel * kernel * in_channels * out_channels + out_channels


def _feature_shape(model, layer_name, size):
    probe = keras.Model(model.input, model.get_layer(layer_name).output)
    return tuple(probe(np.zeros((1, *size, 3), "float32")).shape)


def test_largefov_parameter_count_matches_the_paper():
    model = DeepLabV1(num_classes=21)
    vgg16_convolutions = 14_714_688  # keras.applications.VGG16(include_top=False)
    expected = (
        vgg16_convolutions
        + _conv(3, 512, 1024)  # fc6
        + _conv(1, 1024, 1024)  # fc7
        + _conv(1, 1024, 21)  # fc8
    )
    assert model.count_params() == expected
    assert round(model.count_params() / 1e6, 1) == PAPER_LARGEFOV_PARAMETERS_MILLIONS


def test_pooling_and_atrous_layers_follow_the_paper():
    model = DeepLabV1(num_classes=21)
    for block, stride in ((1, 2), (2, 2), (3, 2), (4, 1), (5, 1)):
        pool = model.get_layer(f"block{block}_pool")
        assert (pool.pool_size, pool.strides, pool.padding) == ((3, 3), (stride, stride), "same")
    for name in ("block5_conv1", "block5_conv2", "block5_conv3"):
        assert model.get_layer(name).dilation_rate == (2, 2)
    assert model.get_layer("block4_conv3").dilation_rate == (1, 1)
    fc6, fc7 = model.get_layer("fc6"), model.get_layer("fc7")
    assert (fc6.kernel_size, fc6.dilation_rate, fc6.filters) == ((3, 3), (12, 12), 1024)
    assert (fc7.kernel_size, fc7.filters) == ((1, 1), 1024)


@pytest.mark.parametrize("size", [(64, 48), (65, 97)])
def test_scores_are_at_output_stride_8_and_logits_at_input_size(size):
    model = DeepLabV1(num_classes=5, num_filters=32)
    expected = tuple(-(-side // 8) for side in size)
    assert _feature_shape(model, "fc8_classifier", size) == (1, *expected, 5)
    assert tuple(model(np.zeros((1, *size, 3), "float32")).shape) == (1, *size, 5)


def test_msc_adds_exactly_640_channels_before_the_classifier():
    plain = DeepLabV1(num_classes=21, variant="largefov")
    msc = DeepLabV1(num_classes=21, variant="msc-largefov")
    assert msc.get_layer("msc_concat").output.shape[-1] == 1024 + 5 * 128
    plain_kernel = plain.get_layer("fc8_classifier").kernel.shape
    msc_kernel = msc.get_layer("fc8_classifier").kernel.shape
    assert msc_kernel[2] - plain_kernel[2] == 640
    # Branches on the image (3 channels) and on pool1-pool4 (64, 128, 256, 512 channels).
    branches = sum(_conv(3, c, 128) + _conv(1, 128, 128) for c in (3, 64, 128, 256, 512))
    assert msc.count_params() - plain.count_params() == branches + 640 * 21


def test_msc_branches_meet_at_stride_8():
    model = DeepLabV1(num_classes=3, variant="msc-largefov", num_filters=16)
    strides = [model.get_layer(f"msc_{index}_conv1").strides for index in range(5)]
    assert strides == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    for index in range(5):
        assert _feature_shape(model, f"msc_{index}_conv2", (65, 97)) == (1, 9, 13, 128)


def test_tiny_backbone_msc_has_a_branch_per_backbone_stride():
    model = DeepLabV1(num_classes=3, backbone="tiny", variant="msc-largefov", num_filters=16)
    assert model.get_layer("msc_concat").output.shape[-1] == 16 + 4 * 128
    assert tuple(model(np.zeros((1, 65, 97, 3), "float32")).shape) == (1, 65, 97, 3)


VGG16_TOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
# keras.applications' published MD5 of the VGG16 file with the classifier.
VGG16_TOP_HASH = "64373286793e3c8b2b4e3219cbf3544b"


def _legacy_weights_file(path, model):
    """Writes `model` in the legacy HDF5 layout of keras.applications' downloads."""
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


def _saved_layer(path, name):
    with h5py.File(path, "r") as handle:
        return handle[name][f"{name}/kernel"][()], handle[name][f"{name}/bias"][()]


@pytest.fixture(scope="module")
def imagenet_deeplabs(tmp_path_factory, random_vgg16_classifier):
    """LargeFOV and DeepLab-CRF-4x4 built with `backbone_weights="imagenet"`, offline (~30 s).

    No VGG16 ImageNet file is on this machine, so a seeded random VGG16 with its classifier
    is written in the layout of Google's file, under its name, into a private Keras cache
    with downloads forbidden; the hash check accepts that file alone.
    """
    home = tmp_path_factory.mktemp("keras_home")
    models = home / "models"
    models.mkdir()
    _legacy_weights_file(models / VGG16_TOP_FILE, random_vgg16_classifier[0])
    with pytest.MonkeyPatch.context() as patch:
        hashes_checked = kseg.testing.offline_keras_cache(
            patch, home, stand_ins=[models / VGG16_TOP_FILE]
        )
        largefov = DeepLabV1(num_classes=3, backbone_weights="imagenet")
        four_by_four = DeepLabV1(
            num_classes=3,
            backbone_weights="imagenet",
            fc6_kernel_size=4,
            fc6_dilation=8,
            num_filters=4096,
        )
    assert hashes_checked == [VGG16_TOP_HASH, VGG16_TOP_HASH]
    return models / VGG16_TOP_FILE, largefov, four_by_four


@pytest.mark.slow
def test_imagenet_largefov_fc6_fc7_are_vgg16_fc_layers_decimated(imagenet_deeplabs):
    path, model, _ = imagenet_deeplabs
    fc1_kernel, fc1_bias = _saved_layer(path, "fc1")
    fc2_kernel, fc2_bias = _saved_layer(path, "fc2")
    # Sec. 3.1 decimation to 3x3: taps 0, 3, 6 of the 7x7 kernel; every 4th of 4096 units.
    taps = [0, 3, 6]
    units = np.arange(0, 4096, 4)
    as_convolution = fc1_kernel.reshape(7, 7, 512, 4096)
    expected_fc6 = as_convolution[np.ix_(taps, taps, np.arange(512), units)]
    fc6_kernel, fc6_bias = model.get_layer("fc6").get_weights()
    assert fc6_kernel.shape == (3, 3, 512, 1024)
    np.testing.assert_array_equal(fc6_kernel, expected_fc6)
    np.testing.assert_array_equal(fc6_bias, fc1_bias[units])
    fc7_kernel, fc7_bias = model.get_layer("fc7").get_weights()
    np.testing.assert_array_equal(fc7_kernel[0, 0], fc2_kernel[np.ix_(units, units)])
    np.testing.assert_array_equal(fc7_bias, fc2_bias[units])


@pytest.mark.slow
def test_imagenet_4x4_fc6_keeps_every_other_tap_and_all_units(imagenet_deeplabs):
    path, _, model = imagenet_deeplabs
    fc1_kernel, fc1_bias = _saved_layer(path, "fc1")
    fc2_kernel, fc2_bias = _saved_layer(path, "fc2")
    taps = [0, 2, 4, 6]
    expected_fc6 = fc1_kernel.reshape(7, 7, 512, 4096)[np.ix_(taps, taps)]
    fc6_kernel, fc6_bias = model.get_layer("fc6").get_weights()
    np.testing.assert_array_equal(fc6_kernel, expected_fc6)
    np.testing.assert_array_equal(fc6_bias, fc1_bias)
    fc7_kernel, fc7_bias = model.get_layer("fc7").get_weights()
    np.testing.assert_array_equal(fc7_kernel[0, 0], fc2_kernel)
    np.testing.assert_array_equal(fc7_bias, fc2_bias)
    # Table 2: DeepLab-CRF-4x4 has 65.1M parameters (with VOC's 21 classes: 18 more x 4097).
    assert round((model.count_params() + 18 * 4097) / 1e6, 1) == 65.1


@pytest.mark.slow
def test_imagenet_weights_fill_every_convolution_and_leave_fc8_to_training(imagenet_deeplabs):
    path, largefov, four_by_four = imagenet_deeplabs
    with h5py.File(path, "r") as handle:
        convolutions = [str(name) for name in handle.attrs["layer_names"] if "conv" in str(name)]
    assert len(convolutions) == 13
    for model in (largefov, four_by_four):
        for name in convolutions:
            kernel, bias = model.get_layer(name).get_weights()
            saved_kernel, saved_bias = _saved_layer(path, name)
            np.testing.assert_array_equal(kernel, saved_kernel)
            np.testing.assert_array_equal(bias, saved_bias)
        fc8_kernel, fc8_bias = model.get_layer("fc8_classifier").get_weights()
        assert fc8_kernel.shape[-1] == 3 and np.all(fc8_bias == 0) and np.any(fc8_kernel != 0)
    assert tuple(largefov(np.zeros((1, 41, 33, 3), "float32")).shape) == (1, 41, 33, 3)


@pytest.mark.parametrize("layout", ["keras3", "legacy"])
def test_notop_weights_fill_the_convolutions_only(tmp_path, layout):
    keras.utils.set_random_seed(5)
    reference = keras.applications.VGG16(include_top=False, weights=None)
    if layout == "keras3":
        path = tmp_path / "vgg16_notop.weights.h5"
        reference.save_weights(path)
    else:
        path = tmp_path / VGG16_NOTOP_FILE
        _legacy_weights_file(path, reference)
    # Without fc layers to decimate, fc6 may have any size and width.
    model = DeepLabV1(num_classes=3, backbone_weights=str(path), num_filters=16, fc6_kernel_size=5)
    convolutions = [layer for layer in reference.layers if layer.weights]
    assert len(convolutions) == 13
    for layer in convolutions:
        for loaded, saved in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(loaded, saved)
    assert model.get_layer("fc6").kernel.shape == (5, 5, 512, 16)


@pytest.mark.parametrize(
    "options, named",
    [
        ({"num_filters": 1000}, "num_filters=1000"),
        ({"fc6_kernel_size": 5}, "fc6_kernel_size=5"),
    ],
)
def test_imagenet_decimation_refuses_shapes_it_cannot_reach(options, named):
    # Checked before any weights are fetched, so this needs no file.
    with pytest.raises(ValueError, match=named):
        DeepLabV1(num_classes=3, backbone_weights="imagenet", **options)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.h5"):
        DeepLabV1(num_classes=3, backbone_weights=str(tmp_path / "absent.h5"))


def test_bad_variant_is_named():
    with pytest.raises(ValueError, match="variant"):
        DeepLabV1(num_classes=3, variant="msc")


def test_backbone_options_for_vgg16_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        DeepLabV1(num_classes=3, alpha=0.5)
