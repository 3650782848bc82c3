import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.backbones import get_backbone
from kseg.models.heads import DeepSupervisionModel
from kseg.models.pspnet import PSPNet

# osmr/imgclsmob, chainer_/chainercv2/models/pspnet.py (`_test`): PSPNet on ResNet(D)-101b,
# 21 classes, counted as framework parameters (kernels, biases, BN scale and shift; no
# moving statistics): with the auxiliary head and without it. Its structure is the public
# PSPNet's: C/4 pyramid levels, 3x3 conv 4096->512, 3x3 auxiliary conv 1024->256.
PUBLISHED_PSPNET101_WITH_AUX = 68_073_706
PUBLISHED_PSPNET101_WITHOUT_AUX = 65_708_501

NUM_CLASSES = 3
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)


def _tiny(**overrides):
    kwargs = {"num_classes": NUM_CLASSES, "backbone": "tiny", "num_filters": 8}
    kwargs.update({"auxiliary_filters": 8, **overrides})
    return PSPNet(**kwargs)


def _batch(size=(40, 48), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (2, *size, 3)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, (2, *size)).astype("int32")
    labels[:, :5] = 255
    return images, labels


def _trainable_parameters(layers):
    return sum(int(np.prod(w.shape)) for layer in layers for w in layer.trainable_weights)


def _deep_stem_surplus():
    # The public PSPNet stem is three 3x3 convs (3->64, 64->64, 64->128, each with BN scale
    # and shift) instead of one 7x7 conv 3->64 with BN, so the first bottleneck's 1x1
    # reduction and projection shortcut read 128 channels instead of 64.
    deep = 3 * 3 * 3 * 64 + 3 * 3 * 64 * 64 + 3 * 3 * 64 * 128 + 2 * (64 + 64 + 128)
    plain = 7 * 7 * 3 * 64 + 2 * 64
    wider_first_block = (128 - 64) * 64 + (128 - 64) * 256
    return deep - plain + wider_first_block


@pytest.fixture(scope="module")
def pspnet101():
    # Only the graph and shapes are read: a StatelessScope defers the weights' random values.
    with keras.StatelessScope():
        return PSPNet(num_classes=21, backbone="resnet101")


def test_resnet101_parameter_count_matches_the_published_model(pspnet101):
    ours = _trainable_parameters([pspnet101])
    assert abs(ours / PUBLISHED_PSPNET101_WITH_AUX - 1) <= 0.02
    auxiliary = [layer for layer in pspnet101.layers if layer.name.startswith("auxiliary_")]
    without_aux = ours - _trainable_parameters(auxiliary)
    assert abs(without_aux / PUBLISHED_PSPNET101_WITHOUT_AUX - 1) <= 0.02
    # The remaining gap is exactly the two stems plus the conv biases keras.applications'
    # ResNet carries (the public one has none before its BN layers).
    backbone = pspnet101.get_layer("resnet101_backbone")
    conv_biases = sum(
        int(np.prod(layer.bias.shape))
        for layer in backbone.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias
    )
    assert ours - conv_biases == PUBLISHED_PSPNET101_WITH_AUX - _deep_stem_surplus()


def test_resnet101_heads_read_res4_and_res5_at_stride_8(pspnet101):
    assert pspnet101.get_layer("pyramid_pooling").input.shape[-1] == 2048
    assert pspnet101.get_layer("auxiliary_conv").input.shape[-1] == 1024
    backbone = pspnet101.get_layer("resnet101_backbone")
    # conv4_block23_out is ResNet-101's res4b22, where the paper attaches the auxiliary loss.
    assert backbone.get_layer("conv4_block23_out").output is backbone.output["auxiliary"]
    assert [level.filters for level in pspnet101.get_layer("pyramid_pooling").levels] == [512] * 4


@pytest.mark.parametrize("output_stride", [8, 16])
def test_heads_read_features_at_the_output_stride(output_stride):
    model = _tiny(output_stride=output_stride)
    probe = keras.Model(
        model.input,
        [model.get_layer("pyramid_pooling").output, model.get_layer("auxiliary_conv").output],
    )
    context, auxiliary = probe(np.zeros((1, 64, 96, 3), "float32"))
    stride_of_res4 = min(output_stride, 16)
    assert tuple(context.shape[1:3]) == (64 // output_stride, 96 // output_stride)
    assert tuple(auxiliary.shape[1:3]) == (64 // stride_of_res4, 96 // stride_of_res4)
    # The tiny backbone's last stage has 48 channels: 48 + 4 levels of 48 / 4.
    assert context.shape[-1] == 96


def test_inference_returns_only_the_main_logits():
    model = _tiny()
    images, _ = _batch(size=(33, 47))
    assert isinstance(model, DeepSupervisionModel)
    assert model.output.shape == (None, None, None, NUM_CLASSES)
    assert model(images).shape == (2, 33, 47, NUM_CLASSES)
    assert model.predict(images, verbose=0).shape == (2, 33, 47, NUM_CLASSES)
    both = model(images, training=True)
    assert set(both) == {"logits", "auxiliary_logits"}
    assert all(keras.backend.standardize_dtype(t.dtype) == "float32" for t in both.values())


def test_fit_loss_is_main_plus_0_4_auxiliary():
    # Without dropout and with a zero learning rate the training-mode forward pass is
    # reproducible, so fit's loss can be recomputed from the two outputs.
    model = _tiny(dropout=0.0)
    images, labels = _batch()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS)
    fitted = model.fit(images, labels, batch_size=2, epochs=1, verbose=0).history["loss"][0]
    outputs = model(images, training=True)
    main = float(LOSS(labels, outputs["logits"]))
    auxiliary = float(LOSS(labels, outputs["auxiliary_logits"]))
    assert abs(main - auxiliary) > 1e-3
    np.testing.assert_allclose(fitted, main + 0.4 * auxiliary, rtol=1e-5)


def test_evaluation_loss_has_no_auxiliary_term():
    model = _tiny()
    images, labels = _batch(seed=1)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS)
    evaluated = model.evaluate(images, labels, batch_size=2, verbose=0)
    np.testing.assert_allclose(
        evaluated, float(LOSS(labels, model(images, training=False))), rtol=1e-5
    )


def test_keras_file_reloads_in_safe_mode_and_keeps_the_auxiliary_loss(tmp_path):
    model = _tiny(auxiliary_loss_weight=0.25)
    images, labels = _batch(seed=4)
    path = os.fspath(tmp_path / "pspnet.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(reloaded, DeepSupervisionModel)
    assert reloaded.auxiliary_loss_weight == 0.25
    np.testing.assert_allclose(np.asarray(reloaded(images)), np.asarray(model(images)), atol=1e-5)
    both = reloaded(images, training=True)
    reloaded.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS)
    loss = reloaded.test_on_batch(images, labels)
    np.testing.assert_allclose(loss, float(LOSS(labels, reloaded(images))), rtol=1e-5)
    assert set(both) == {"logits", "auxiliary_logits"}


def test_saved_model_serves_only_the_main_logits(tmp_path):
    model = _tiny()
    images, _ = _batch(size=(24, 40), seed=5)
    path = os.fspath(tmp_path / "saved")
    model.export(path, format="tf_saved_model", verbose=False)
    # The loaded object owns the variables, so it must outlive the call.
    loaded = tf.saved_model.load(path)
    served = loaded.serve(tf.constant(images))
    np.testing.assert_allclose(served.numpy(), model.predict(images, verbose=0), atol=1e-5)


def test_zero_auxiliary_weight_builds_a_plain_model_without_the_head():
    model = _tiny(auxiliary_loss_weight=0)
    assert not isinstance(model, DeepSupervisionModel)
    assert not [layer for layer in model.layers if layer.name.startswith("auxiliary_")]
    assert model.output.shape == (None, None, None, NUM_CLASSES)


def test_training_outputs_stay_float32_under_mixed_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = _tiny()
    outputs = model(np.zeros((1, 32, 32, 3), "float32"), training=True)
    for tensor in outputs.values():
        assert keras.backend.standardize_dtype(tensor.dtype) == "float32"
        assert np.all(np.isfinite(np.asarray(tensor)))


def test_prebuilt_backbone_needs_the_auxiliary_layer_named():
    backbone = get_backbone("tiny", output_stride=8)
    with pytest.raises(ValueError, match="auxiliary_layer"):
        PSPNet(num_classes=NUM_CLASSES, backbone=backbone, num_filters=8, auxiliary_filters=8)
    model = PSPNet(
        num_classes=NUM_CLASSES,
        backbone=get_backbone("tiny", output_stride=8),
        auxiliary_layer="stage4_conv2_relu",
        num_filters=8,
        auxiliary_filters=8,
    )
    assert model.get_layer("auxiliary_conv").input.shape[-1] == 32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"auxiliary_loss_weight": -0.1}, "auxiliary_loss_weight=-0.1"),
        ({"auxiliary_layer": "no_such_layer"}, "auxiliary_layer='no_such_layer'"),
        ({"output_stride": 4}, "output_stride=4"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**kwargs)
