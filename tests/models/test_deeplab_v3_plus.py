import keras
import numpy as np
import pytest

import kseg

# Keras port of the official DeepLabV3+ Xception-65 model for 21 PASCAL VOC classes
# (bonlime/keras-deeplab-v3-plus), total parameters as tabulated in the README of
# ZFTurbo/Keras-inference-time-optimizer.
PUBLISHED_XCEPTION65_DEEPLABV3PLUS_PARAMETERS = 41_258_213


def _layer(model, name):
    return model.get_layer(name)


def test_xception65_parameter_count_matches_the_published_model():
    # Only shapes are read: a StatelessScope defers the weights' random initialisation.
    with keras.StatelessScope():
        model = kseg.models.DeepLabV3Plus(num_classes=21, backbone="xception65")
    relative_error = abs(model.count_params() / PUBLISHED_XCEPTION65_DEEPLABV3PLUS_PARAMETERS - 1)
    assert relative_error <= 0.02


@pytest.mark.parametrize(
    "output_stride, rates", [(16, [6, 12, 18]), (8, [12, 24, 36]), (32, [3, 6, 9])]
)
def test_aspp_rates_follow_the_output_stride(output_stride, rates):
    model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny", output_stride=output_stride)
    assert _layer(model, "aspp").get_config()["dilation_rates"] == rates


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_encoder_runs_at_the_output_stride_and_decoder_at_stride_four(output_stride):
    model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny", output_stride=output_stride)
    probe = keras.Model(
        model.input, [_layer(model, "aspp").output, _layer(model, "decoder_concat").output]
    )
    aspp, concat = probe(np.zeros((1, 128, 96, 3), "float32"))
    assert tuple(aspp.shape[1:3]) == (128 // output_stride, 96 // output_stride)
    assert tuple(concat.shape[1:]) == (32, 24, 256 + 48)


def test_decoder_follows_the_paper():
    model = kseg.models.DeepLabV3Plus(num_classes=21, backbone="tiny")
    assert _layer(model, "decoder_low_level").get_config()["filters"] == 48
    for name in ("decoder_conv_1", "decoder_conv_2"):
        config = _layer(model, name).get_config()
        assert (config["filters"], config["kernel_size"], config["separable"]) == (256, 3, True)
    aspp = _layer(model, "aspp").get_config()
    assert aspp["image_pooling"] and aspp["filters"] == 256


@pytest.fixture(scope="module")
def resnet50_deeplab():
    """One ResNet-50 DeepLabV3+ for the sizes below: predict traces each size afresh anyway."""
    return kseg.models.DeepLabV3Plus(num_classes=21, backbone="resnet50")


@pytest.mark.slow
@pytest.mark.parametrize("size", [(512, 512), (513, 513), (300, 401)])
def test_resnet50_backbone_runs_at_any_size(size, resnet50_deeplab):
    model = resnet50_deeplab
    logits = model.predict(np.zeros((1, *size, 3), "float32"), verbose=0)
    assert logits.shape == (1, *size, 21)
    assert np.all(np.isfinite(logits))


def test_image_pooling_works_at_513_with_dynamic_shapes():
    model = kseg.models.DeepLabV3Plus(num_classes=2, backbone="tiny", num_filters=16)
    assert model.input.shape == (None, None, None, 3)
    assert model.predict(np.zeros((1, 513, 513, 3), "float32"), verbose=0).shape == (1, 513, 513, 2)


def test_prebuilt_backbone_is_accepted():
    backbone = kseg.backbones.get_backbone("tiny", output_stride=16)
    model = kseg.models.DeepLabV3Plus(num_classes=4, backbone=backbone)
    assert model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0).shape == (1, 64, 64, 4)


def test_mobilenetv2_alpha_reaches_the_backbone():
    model = kseg.models.DeepLabV3Plus(num_classes=5, backbone="mobilenetv2", alpha=0.35)
    backbone = kseg.models.backbone_of(model)
    # MobileNetV2 at alpha 0.35 has a 16-channel first convolution (32 * 0.35 rounded to 8).
    assert backbone.get_layer("Conv1").filters == 16


def test_bad_output_stride_is_named():
    with pytest.raises(ValueError, match="output_stride"):
        kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny", output_stride=4)


def test_saved_model_serves_what_the_keras_model_computes(tmp_path):
    import tensorflow as tf

    model = kseg.models.DeepLabV3Plus(num_classes=4, backbone="tiny", num_filters=16)
    kseg.export.saved_model(model, tmp_path / "exported")
    serving = tf.saved_model.load(str(tmp_path / "exported")).signatures["serving_default"]
    for size in [(64, 64), (45, 77)]:
        images = np.random.default_rng(0).integers(0, 256, (2, *size, 3), dtype=np.uint8)
        served = serving(images=tf.constant(images))
        logits = np.asarray(model(images.astype("float32"), training=False))
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        np.testing.assert_allclose(served["probabilities"].numpy(), probabilities, atol=1e-5)
        np.testing.assert_array_equal(served["labels"].numpy(), logits.argmax(-1))
