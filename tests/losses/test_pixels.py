import numpy as np
import pytest
import tensorflow as tf
from loss_helpers import ALL_LOSSES, IGNORE, random_batch

import kseg.losses


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_ignored_pixels_change_neither_value_nor_gradient(name):
    labels, logits = random_batch(seed=11)
    loss = ALL_LOSSES[name]()
    ignored = (labels == IGNORE)[..., None]
    rng = np.random.default_rng(0)
    perturbed = np.where(ignored, rng.choice([-1e6, 1e6], size=logits.shape), logits).astype(
        "float32"
    )

    def value_and_gradient(scores):
        scores = tf.constant(scores)
        with tf.GradientTape() as tape:
            tape.watch(scores)
            value = loss(labels, scores)
        return float(value), tape.gradient(value, scores).numpy()

    value, gradient = value_and_gradient(logits)
    perturbed_value, perturbed_gradient = value_and_gradient(perturbed)
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    np.testing.assert_allclose(perturbed_value, value, rtol=1e-6)
    np.testing.assert_allclose(perturbed_gradient, gradient, atol=1e-9)
    assert np.all(gradient[np.broadcast_to(ignored, gradient.shape)] == 0)
    assert np.any(gradient != 0)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_non_finite_scores_at_ignored_pixels_do_not_leak(name):
    labels, logits = random_batch(seed=22)
    poisoned = np.where((labels == IGNORE)[..., None], np.inf, logits).astype("float32")
    poisoned[..., 0] = np.where(labels == IGNORE, np.nan, poisoned[..., 0])
    scores = tf.constant(poisoned)
    with tf.GradientTape() as tape:
        tape.watch(scores)
        value = ALL_LOSSES[name]()(labels, scores)
    np.testing.assert_allclose(float(value), float(ALL_LOSSES[name]()(labels, logits)), rtol=1e-6)
    assert np.all(np.isfinite(tape.gradient(value, scores).numpy()))


@pytest.mark.parametrize("name", ["cross_entropy", "focal", "dice"])
def test_out_of_range_label_raises_an_error_naming_the_value(name):
    labels, logits = random_batch(seed=16)
    labels[0, 0, 0] = 7
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside \[0, 4\)[\s\S]*7"):
        ALL_LOSSES[name]()(labels, logits)


@pytest.mark.parametrize("name", ["cross_entropy", "focal", "dice"])
def test_out_of_range_label_gives_nan_under_xla_and_without_checks(name):
    labels, logits = random_batch(seed=17)
    labels[1, 2, 3] = -3
    compiled = tf.function(lambda y, x: ALL_LOSSES[name]()(y, x), jit_compile=True)
    assert np.isnan(float(compiled(labels, logits)))
    unchecked = ALL_LOSSES[name]()
    unchecked.check_labels = False
    assert np.isnan(float(unchecked(labels, logits)))


@pytest.mark.parametrize(
    "sample_weight",
    [np.array([1.0, 3.0]), np.array([[[1.0]], [[3.0]]]), np.array([1.0, 3.0])[:, None, None, None]],
)
def test_pixel_sample_weight_broadcasts_per_image_weights_to_every_pixel(sample_weight):
    labels = np.zeros((2, 3, 4), "int32")
    weights = np.asarray(kseg.losses.pixel_sample_weight(sample_weight, labels))
    expected = np.stack([np.full((3, 4), 1.0), np.full((3, 4), 3.0)])
    np.testing.assert_array_equal(weights, expected)


def test_pixel_sample_weight_keeps_per_pixel_weights():
    labels = np.zeros((2, 3, 4), "int32")
    per_pixel = np.random.default_rng(0).random((2, 3, 4, 1))
    weights = kseg.losses.pixel_sample_weight(per_pixel, labels)
    np.testing.assert_allclose(np.asarray(weights), per_pixel[..., 0], rtol=1e-6)


def test_squeeze_labels_rounds_float_labels():
    labels = kseg.losses.squeeze_labels(np.array([[[[2.9999999], [1.0]]]]), np.zeros((1, 1, 2, 3)))
    assert np.asarray(labels).tolist() == [[[3, 1]]]
