import keras
import numpy as np
import pytest
import tensorflow as tf
from loss_helpers import (
    IGNORE,
    NUM_CLASSES,
    np_cross_entropy,
    np_log_softmax,
    random_batch,
    tiny_model,
)

import kseg.losses
from kseg.losses import SegmentationCrossEntropy


@pytest.mark.parametrize("keep_channel_axis", [False, True])
def test_cross_entropy_is_mean_over_valid_pixels(keep_channel_axis):
    labels, logits = random_batch()
    y_true = labels[..., None] if keep_channel_axis else labels
    value = float(SegmentationCrossEntropy()(y_true, logits))
    np.testing.assert_allclose(value, np_cross_entropy(labels, logits), rtol=1e-5)
    # The mean over all pixels, ignored ones counted as 0, is what the ignore label must avoid.
    assert not np.isclose(
        value, np_cross_entropy(labels, logits) * (labels != IGNORE).mean(), rtol=1e-3
    )


def test_cross_entropy_matches_keras_sparse_categorical_crossentropy_ignore_class():
    labels, logits = random_batch(seed=1)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)
    np.testing.assert_allclose(
        float(SegmentationCrossEntropy()(labels, logits)),
        float(keras_loss(labels, logits)),
        rtol=1e-5,
    )


def test_cross_entropy_class_weights_follow_pytorch_weighted_mean():
    labels, logits = random_batch(seed=2)
    weights = [0.2, 1.0, 3.0, 0.0]
    value = float(SegmentationCrossEntropy(class_weights=weights)(labels, logits))
    np.testing.assert_allclose(value, np_cross_entropy(labels, logits, weights), rtol=1e-5)
    # Scaling every weight by the same factor leaves a weighted mean unchanged.
    scaled = float(SegmentationCrossEntropy(class_weights=[7 * w for w in weights])(labels, logits))
    np.testing.assert_allclose(scaled, value, rtol=1e-5)


def test_label_smoothing_matches_keras_categorical_crossentropy_on_valid_pixels():
    labels, logits = random_batch(seed=3)
    valid = labels != IGNORE
    one_hot = np.eye(NUM_CLASSES, dtype="float32")[labels[valid]]
    expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)(
        one_hot, logits[valid]
    )
    value = SegmentationCrossEntropy(label_smoothing=0.2)(labels, logits)
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-5)


def test_cross_entropy_from_probabilities():
    labels, logits = random_batch(seed=4)
    probabilities = np.exp(np_log_softmax(logits)).astype("float32")
    value = SegmentationCrossEntropy(from_logits=False)(labels, probabilities)
    np.testing.assert_allclose(float(value), np_cross_entropy(labels, logits), rtol=1e-4)


def test_function_form_averages_over_valid_pixels_when_compiled_as_keras_loss():
    labels, logits = random_batch(seed=5)
    pixel_losses = kseg.losses.segmentation_cross_entropy(labels, logits)
    assert tuple(pixel_losses.shape) == labels.shape
    assert np.all(np.asarray(pixel_losses)[labels == IGNORE] == 0)
    model = tiny_model()
    model.compile(loss=kseg.losses.segmentation_cross_entropy)
    images = np.random.default_rng(5).normal(size=labels.shape + (3,)).astype("float32")
    compiled_value = model.evaluate(images, labels, batch_size=len(labels), verbose=0)
    expected = np_cross_entropy(labels, model.predict(images, verbose=0))
    np.testing.assert_allclose(compiled_value, expected, rtol=1e-5)


def test_ignore_label_none_counts_every_pixel():
    labels, logits = random_batch(seed=18, ignored_fraction=0.0)
    value = SegmentationCrossEntropy(ignore_label=None)(labels, logits)
    np.testing.assert_allclose(float(value), np_cross_entropy(labels, logits), rtol=1e-5)
    labels[0, 0, 0] = IGNORE
    with pytest.raises(tf.errors.InvalidArgumentError, match="255"):
        SegmentationCrossEntropy(ignore_label=None)(labels, logits)
