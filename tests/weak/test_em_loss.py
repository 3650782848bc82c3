"""The EM losses: cross-entropy on the latent labels, class-count checks and serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from em_helpers import shifted_logits

from kseg.weak.box_labels import box_label_map
from kseg.weak.em_adapt import EMAdaptCrossEntropy, em_adapt_cross_entropy, em_adapt_latent_labels
from kseg.weak.em_fixed import EMFixedCrossEntropy, em_fixed_cross_entropy, em_fixed_latent_labels


def test_tags_naming_a_class_beyond_the_model_are_refused():
    logits = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="indices up to 4.*model predicts 3"):
        EMAdaptCrossEntropy()(np.array([[1, 0, 0, 0, 1]], np.float32), logits)
    with pytest.raises(ValueError, match="model lacks"):
        EMFixedCrossEntropy()(np.ones((1, 4, 4, 5), np.uint8), logits)


def _loss_and_gradient(loss, y_true, logits):
    logits = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss(y_true, logits)
    return float(value), tape.gradient(value, logits).numpy()


@pytest.mark.parametrize("kind", ["adapt", "fixed"])
def test_losses_are_cross_entropy_on_the_latent_labels(kind):
    logits = shifted_logits(6, 2, 8, 10, [-1.0, 0.5, 0.0])
    if kind == "adapt":
        loss, y_true = EMAdaptCrossEntropy(), np.array([[1, 1, 0], [1, 0, 1]], np.float32)
        latent = np.asarray(em_adapt_latent_labels(y_true, logits))
    else:
        loss = EMFixedCrossEntropy()
        y_true = np.stack([box_label_map([[1, 2, 6, 9]], [2], 8, 10, 3)] * 2)
        y_true[1, :2] = 0  # two rows allowing no class: ignored
        latent = np.asarray(em_fixed_latent_labels(y_true, logits))
    value, gradient = _loss_and_gradient(loss, y_true, logits)
    function = em_adapt_cross_entropy if kind == "adapt" else em_fixed_cross_entropy
    per_pixel = np.asarray(function(y_true, logits))

    counted = latent != 255
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    safe = np.where(counted, latent, 0)
    picked = np.take_along_axis(log_softmax, safe[..., None], -1)[..., 0]
    np.testing.assert_allclose(value, -picked[counted].mean(), rtol=1e-5)
    np.testing.assert_allclose(per_pixel, np.where(counted, -picked, 0.0), rtol=1e-5, atol=1e-6)
    # The E-step carries no gradient: d loss / d logits = (softmax - onehot) / counted pixels.
    expected = (np.exp(log_softmax) - np.eye(3)[safe]) * counted[..., None] / counted.sum()
    np.testing.assert_allclose(gradient, expected, atol=1e-6)


def test_losses_round_trip_through_keras_serialisation():
    for loss in (
        EMAdaptCrossEntropy(foreground_fraction=0.3, background_fraction=0.5, max_iterations=7),
        EMFixedCrossEntropy(foreground_bias=2.0, background_bias=1.0, background_class=None),
    ):
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()
