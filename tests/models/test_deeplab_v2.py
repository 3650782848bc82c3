import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.models import backbone_of
from kseg.models.deeplab_v2 import DeepLabV2

# The public DeepLab v2 ResNet-101 (the authors' Caffe model, e.g. as converted by
# kazuto1011/deeplab-pytorch) is the ResNet-101 trunk without its fc layer, 42,500,160
# parameters as torchvision/segmentation_models.pytorch tabulate it (convolution weights
# without bias, BN gamma and beta), plus ASPP-L: four 3x3 2048 -> 21 convolutions with bias.
RESNET101_TRUNK_PARAMETERS = 42_500_160
PUBLIC_DEEPLABV2_RESNET101_VOC_PARAMETERS = RESNET101_TRUNK_PARAMETERS + 4 * (
    3 * 3 * 2048 * 21 + 21
)


def _trainable_count(model):
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def test_resnet101_parameter_count_matches_the_public_model():
    # Counted like PyTorch's parameters(): trainable weights, without BN moving statistics.
    # Only shapes are read: a StatelessScope defers the weights' random initialisation.
    with keras.StatelessScope():
        model = DeepLabV2(num_classes=21, backbone="resnet101")
    count = _trainable_count(model)
    assert PUBLIC_DEEPLABV2_RESNET101_VOC_PARAMETERS == 44_048_532
    assert abs(count / PUBLIC_DEEPLABV2_RESNET101_VOC_PARAMETERS - 1) <= 0.02
    # The whole difference is keras.applications' ResNet convolution biases.
    backbone = backbone_of(model)
    biases = sum(
        int(np.prod(layer.bias.shape))
        for layer in backbone.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias
    )
    assert count - biases == PUBLIC_DEEPLABV2_RESNET101_VOC_PARAMETERS


def test_aspp_l_sums_four_classifiers_on_stride_8_features():
    model = DeepLabV2(num_classes=4, backbone="tiny")
    single = model.get_layer("single_scale")
    aspp = single.get_layer("aspp_sum")
    assert aspp.dilation_rates == (6, 12, 18, 24)
    assert [branch.filters for branch in aspp.branches] == [4, 4, 4, 4]
    assert tuple(single(np.zeros((1, 64, 96, 3), "float32")).shape) == (1, 8, 12, 4)


def test_scales_share_one_network():
    model = DeepLabV2(num_classes=3, backbone="tiny")
    single = model.get_layer("single_scale")
    assert len(model.weights) == len(single.weights)
    assert model.count_params() == single.count_params()


def _independent_fusion(single, images, scales):
    """The paper's MSC fusion written out with TensorFlow resizes."""
    height, width = images.shape[1:3]
    reference = np.asarray(single(images))
    fused = reference
    for scale in scales[1:]:
        size = (int(np.floor(height * scale)), int(np.floor(width * scale)))
        scores = single(tf.image.resize(images, size))
        scores = tf.image.resize(scores, reference.shape[1:3])
        fused = np.maximum(fused, np.asarray(scores))
    return np.asarray(tf.image.resize(fused, (height, width)))


@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_pyramid_is_max_of_rescaled_single_scale_scores(size):
    scales = (1.0, 0.75, 0.5)
    model = DeepLabV2(num_classes=3, backbone="tiny", input_scales=scales)
    images = np.random.default_rng(0).uniform(0, 255, (2, *size, 3)).astype("float32")
    expected = _independent_fusion(model.get_layer("single_scale"), images, scales)
    np.testing.assert_allclose(np.asarray(model(images)), expected, rtol=1e-4, atol=1e-4)


def test_single_scale_model_is_the_upsampled_network():
    model = DeepLabV2(num_classes=3, backbone="tiny", input_scales=(1.0,))
    images = np.random.default_rng(1).uniform(0, 255, (1, 40, 56, 3)).astype("float32")
    scores = model.get_layer("single_scale")(images)
    expected = np.asarray(tf.image.resize(scores, (40, 56)))
    np.testing.assert_allclose(np.asarray(model(images)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scales", [(0.75, 0.5), (1.0, 1.0), (1.0, -0.5)])
def test_bad_scales_are_named(scales):
    with pytest.raises(ValueError, match="input_scales"):
        DeepLabV2(num_classes=3, backbone="tiny", input_scales=scales)


def test_bad_output_stride_is_named():
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV2(num_classes=3, backbone="tiny", output_stride=32)


def test_dilation_rates_set_the_aspp_l_branches():
    model = DeepLabV2(num_classes=3, backbone="tiny", input_scales=(1.0,), dilation_rates=(2, 4))
    assert model.get_layer("single_scale").get_layer("aspp_sum").dilation_rates == (2, 4)
    with pytest.raises(TypeError, match="aspp_rates"):
        DeepLabV2(num_classes=3, backbone="tiny", aspp_rates=(2, 4))
