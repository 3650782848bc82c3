import keras
import numpy as np
import pytest
import tensorflow as tf
from loss_helpers import IGNORE, NUM_CLASSES, np_focal, random_batch

from kseg.losses import FocalLoss, SegmentationCrossEntropy


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_matches_numpy(gamma):
    labels, logits = random_batch(seed=6)
    alpha = [0.25, 0.5, 0.75, 1.0]
    value = FocalLoss(gamma=gamma, alpha=alpha)(labels, logits)
    np.testing.assert_allclose(float(value), np_focal(labels, logits, gamma, alpha), rtol=1e-5)


def test_focal_loss_agrees_with_keras_categorical_focal_crossentropy():
    labels, logits = random_batch(seed=7)
    valid = labels != IGNORE
    one_hot = np.eye(NUM_CLASSES, dtype="float32")[labels[valid]]
    expected = keras.losses.categorical_focal_crossentropy(
        one_hot, logits[valid], alpha=0.25, gamma=2.0, from_logits=True
    )
    value = FocalLoss(gamma=2.0, alpha=0.25)(labels, logits)
    np.testing.assert_allclose(float(value), float(np.mean(expected)), rtol=1e-4)


def test_focal_loss_without_focusing_is_cross_entropy():
    labels, logits = random_batch(seed=8)
    np.testing.assert_allclose(
        float(FocalLoss(gamma=0.0)(labels, logits)),
        float(SegmentationCrossEntropy()(labels, logits)),
        rtol=1e-5,
    )


def test_focal_gradient_finite_for_gamma_below_one_at_certainty():
    labels = np.zeros((1, 1, 2), "int32")
    scores = tf.constant([[[[200.0, 0.0, 0.0, 0.0], [0.0, 200.0, 0.0, 0.0]]]])
    with tf.GradientTape() as tape:
        tape.watch(scores)
        value = FocalLoss(gamma=0.5)(labels, scores)
    assert np.all(np.isfinite(tape.gradient(value, scores).numpy()))
