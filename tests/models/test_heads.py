"""The shared heads (logits, auxiliary) and the deep-supervision model, on tiny graphs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.models.heads import DeepSupervisionModel, auxiliary_head, logits_head

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _features_and_image(stride=4, channels=6):
    image = keras.Input((None, None, 3), name="image")
    features = keras.layers.Conv2D(channels, 3, strides=stride, padding="same", name="body")(image)
    return image, features


def test_logits_head_is_a_1x1_classifier_resized_bilinearly_to_the_image():
    image, features = _features_and_image()
    model = keras.Model(image, logits_head(features, 5, image, name="demo"))
    images = np.random.default_rng(0).uniform(0, 255, (2, 19, 26, 3)).astype("float32")
    body = keras.Model(image, features)(images)
    kernel, bias = model.get_layer("demo_classifier").get_weights()
    scores = np.einsum("bhwc,ck->bhwk", np.asarray(body), kernel[0, 0]) + bias
    expected = tf.image.resize(scores, (19, 26), method="bilinear").numpy()
    np.testing.assert_allclose(model(images), expected, rtol=1e-4, atol=1e-4)


def test_logits_are_float32_under_a_mixed_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        image, features = _features_and_image()
        logits = logits_head(features, 3, image, name="mixed")
        auxiliary = auxiliary_head(features, 3, image, filters=4, name="aux")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == "float32" and auxiliary.dtype == "float32"


def test_auxiliary_head_is_conv_bn_relu_dropout_then_a_logits_head():
    image, features = _features_and_image(stride=8)
    model = keras.Model(image, auxiliary_head(features, 4, image, filters=7, name="aux"))
    assert model.get_layer("aux_conv").filters == 7
    assert model.get_layer("aux_dropout").rate == pytest.approx(0.1)
    assert model.get_layer("aux_classifier").filters == 4
    assert model(np.zeros((1, 33, 41, 3), "float32")).shape == (1, 33, 41, 4)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"filters": 0}, "filters=0"), ({"dropout": 1.0}, "dropout=1.0")],
)
def test_auxiliary_head_names_bad_arguments(kwargs, named):
    image, features = _features_and_image()
    with pytest.raises(ValueError, match=named):
        auxiliary_head(features, 3, image, name="aux", **kwargs)
    with pytest.raises(ValueError, match="num_classes=0"):
        logits_head(features, 0, image, name="bad")


def _deep_supervision_model(weight):
    image, features = _features_and_image(stride=2)
    outputs = {
        "logits": logits_head(features, 3, image, name="main"),
        "auxiliary_logits": logits_head(features, 3, image, name="side"),
    }
    return DeepSupervisionModel(image, outputs, auxiliary_loss_weight=weight)


def test_deep_supervision_returns_both_logits_only_when_training():
    keras.utils.set_random_seed(0)
    model = _deep_supervision_model(0.4)
    images = np.random.default_rng(1).uniform(0, 255, (2, 12, 10, 3)).astype("float32")
    assert model(images).shape == (2, 12, 10, 3)
    both = model(images, training=True)
    assert set(both) == {"logits", "auxiliary_logits"}
    np.testing.assert_allclose(both["logits"], model(images), atol=1e-6)
    assert model.output.shape == (None, None, None, 3)


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_fit_loss_adds_the_weighted_auxiliary_loss(weight):
    keras.utils.set_random_seed(1)
    model = _deep_supervision_model(weight)
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (2, 12, 10, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 12, 10))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS)
    fitted = model.fit(images, labels, batch_size=2, epochs=1, verbose=0).history["loss"][0]
    outputs = model(images, training=True)
    main = float(LOSS(labels, outputs["logits"]))
    auxiliary = float(LOSS(labels, outputs["auxiliary_logits"]))
    np.testing.assert_allclose(fitted, main + weight * auxiliary, rtol=1e-5)


def test_deep_supervision_reloads_in_safe_mode_with_its_weight(tmp_path):
    model = _deep_supervision_model(0.7)
    path = tmp_path / "deep.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(reloaded, DeepSupervisionModel)
    assert reloaded.auxiliary_loss_weight == 0.7
    images = np.ones((1, 8, 8, 3), "float32")
    np.testing.assert_allclose(reloaded(images), model(images), atol=1e-6)


def test_deep_supervision_model_rejects_other_output_structures():
    image = keras.Input((None, None, 3))
    logits = keras.layers.Conv2D(2, 1)(image)
    with pytest.raises(ValueError, match="auxiliary_logits"):
        DeepSupervisionModel(image, {"logits": logits})
    with pytest.raises(ValueError, match="auxiliary_loss_weight=-1"):
        DeepSupervisionModel(
            image, {"logits": logits, "auxiliary_logits": logits}, auxiliary_loss_weight=-1
        )
