import os

import keras
import numpy as np
import pytest

import kseg
from kseg.models import backbone_of
from kseg.models.deeplab_v3 import DeepLabV3, with_output_stride


def _scores_shape(model, size):
    probe = keras.Model(model.input, model.get_layer("logits_classifier").output)
    return tuple(probe(np.zeros((1, *size, 3), "float32")).shape[1:3])


def _atrous_settings(model):
    return {
        layer.name: (layer.strides, layer.dilation_rate)
        for layer in backbone_of(model).layers
        if isinstance(layer, keras.layers.Conv2D)
    }


def _tiny(**kwargs):
    return DeepLabV3(num_classes=3, backbone="tiny", multi_grid=None, num_filters=16, **kwargs)


@pytest.mark.parametrize("size", [(64, 96), (65, 97)])
def test_os16_and_os8_share_weights_and_score_at_input_16_and_8(size):
    os16 = _tiny()
    os8 = with_output_stride(os16, 8)
    old, new = os16.get_weights(), os8.get_weights()
    assert len(old) == len(new)
    for before, after in zip(old, new):
        np.testing.assert_array_equal(before, after)
    assert _scores_shape(os16, size) == tuple(-(-side // 16) for side in size)
    assert _scores_shape(os8, size) == tuple(-(-side // 8) for side in size)
    assert tuple(os8(np.zeros((1, *size, 3), "float32")).shape) == (1, *size, 3)


def test_rebuilt_model_equals_an_os8_build_given_the_os16_weights():
    os16 = _tiny()
    built = _tiny(output_stride=8)
    assert [w.shape for w in built.get_weights()] == [w.shape for w in os16.get_weights()]
    built.set_weights(os16.get_weights())
    rebuilt = with_output_stride(os16, 8)
    assert _atrous_settings(rebuilt) == _atrous_settings(built)
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 80, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(rebuilt(images)), np.asarray(built(images)), atol=1e-5)


def test_aspp_follows_the_paper():
    for output_stride, rates in ((16, (6, 12, 18)), (8, (12, 24, 36))):
        aspp = _tiny(output_stride=output_stride).get_layer("aspp")
        assert aspp.dilation_rates == rates
        assert aspp.image_pooling and not aspp.separable
    assert (
        DeepLabV3(num_classes=3, backbone="tiny", multi_grid=None).get_layer("aspp").filters == 256
    )
    assert with_output_stride(_tiny(), 8).get_layer("aspp").dilation_rates == (12, 24, 36)


def test_reloaded_model_can_be_densified(tmp_path):
    os16 = _tiny()
    path = os.fspath(tmp_path / "deeplabv3.keras")
    os16.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert _scores_shape(with_output_stride(reloaded, 8), (64, 64)) == (8, 8)


@pytest.mark.slow
def test_resnet101_multi_grid_rates_double_at_output_stride_8():
    # Chen et al. 2017, Sec. 3.2: block4's unit rates are multi_grid x the block's rate, i.e.
    # (2, 4, 8) at output stride 16 and (4, 8, 16) at 8; block3 gets rate 2 at output stride 8.
    os16 = DeepLabV3(num_classes=21, backbone="resnet101")
    os8 = with_output_stride(os16, 8)
    units = [f"conv5_block{unit}_2_conv" for unit in (1, 2, 3)]
    assert [_atrous_settings(os16)[name][1][0] for name in units] == [2, 4, 8]
    assert [_atrous_settings(os8)[name][1][0] for name in units] == [4, 8, 16]
    assert _atrous_settings(os8)["conv4_block1_1_conv"][0] == (1, 1)
    assert _atrous_settings(os8)["conv4_block23_2_conv"][1] == (2, 2)
    # The reference's settings alone are read: a StatelessScope defers its random weights.
    with keras.StatelessScope():
        built_at_8 = DeepLabV3(num_classes=21, output_stride=8)
    assert _atrous_settings(os8) == _atrous_settings(built_at_8)


def test_multi_grid_needs_a_divisible_last_stage():
    with pytest.raises(ValueError, match="multi_grid"):
        DeepLabV3(num_classes=3, backbone="tiny", multi_grid=(1, 2, 4))


def test_bad_output_strides_are_named():
    with pytest.raises(ValueError, match="output_stride"):
        _tiny(output_stride=32)
    with pytest.raises(ValueError, match="output_stride"):
        with_output_stride(_tiny(), 6)


def test_other_models_are_refused():
    with pytest.raises(ValueError, match="DeepLabV3"):
        with_output_stride(keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Dense(2)]), 8)


def test_an_auxiliary_head_on_res4_trains_with_its_weighted_loss_and_leaves_inference_alone():
    # torchvision's aux_loss: an FCNHead on layer3 whose loss is added with weight 0.5.
    kwargs = dict(num_classes=3, backbone="resnet50_v1.5", base_channels=2, output_stride=8)
    kwargs.update(multi_grid=None, num_filters=8, head_conv=True)
    model = kseg.models.get_model("deeplabv3", auxiliary_loss_weight=0.5, **kwargs)
    assert isinstance(model, kseg.models.DeepSupervisionModel)
    assert model.auxiliary_loss_weight == 0.5
    image = np.random.default_rng(0).uniform(0, 255, (2, 33, 41, 3)).astype("float32")
    outputs = model(image, training=True)
    assert sorted(outputs) == ["auxiliary_logits", "logits"]
    assert outputs["auxiliary_logits"].shape == (2, 33, 41, 3)
    # res4 of ResNet v1.5 (layer3) has 4 x 4 x base_channels channels.
    assert model.get_layer("auxiliary_conv").conv.kernel.shape == (3, 3, 32, 256)
    assert model(image).shape == (2, 33, 41, 3)
    plain = kseg.models.get_model("deeplabv3", **kwargs)
    assert not isinstance(plain, kseg.models.DeepSupervisionModel)
    assert {w.path for w in plain.weights} < {w.path for w in model.weights}


def test_a_negative_auxiliary_weight_is_refused():
    with pytest.raises(ValueError, match="auxiliary_loss_weight must be non-negative"):
        kseg.models.get_model("deeplabv3", backbone="tiny", auxiliary_loss_weight=-1)
