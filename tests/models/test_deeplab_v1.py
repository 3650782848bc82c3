import h5py
import keras
import numpy as np
import pytest
from keras.src.backend import config as keras_config
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

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


@pytest.fixture
def offline_vgg16_file(tmp_path, monkeypatch):
    """A Keras cache holding random VGG16 weights under the ImageNet file name."""
    models = tmp_path / "models"
    models.mkdir()
    reference = keras.applications.VGG16(include_top=False, weights=None)
    # keras.applications ships legacy HDF5 weight files, which Keras 3 only writes this way.
    with h5py.File(models / VGG16_NOTOP_FILE, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))
    # The file is ours, not Google's: its hash differs, which must not trigger a download.
    monkeypatch.setattr(file_utils, "validate_file", lambda *args, **kwargs: True)

    def refuse_download(url, *args, **kwargs):
        raise AssertionError(f"the test tried to download {url}")

    monkeypatch.setattr(file_utils, "urlretrieve", refuse_download)
    return reference


def test_imagenet_weights_fill_every_vgg16_convolution(offline_vgg16_file):
    model = DeepLabV1(num_classes=3, backbone_weights="imagenet", num_filters=16)
    convolutions = [layer for layer in offline_vgg16_file.layers if layer.weights]
    assert len(convolutions) == 13
    for layer in convolutions:
        for loaded, saved in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(loaded, saved)


def test_bad_variant_is_named():
    with pytest.raises(ValueError, match="variant"):
        DeepLabV1(num_classes=3, variant="msc")


def test_backbone_options_for_vgg16_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        DeepLabV1(num_classes=3, alpha=0.5)
