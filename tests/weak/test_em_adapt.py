"""EM-Adapt (Papandreou et al., ICCV 2015): the adaptive-bias E-step and training from tags."""

import numpy as np
import tensorflow as tf
from em_helpers import fit_two_steps, shifted_logits

from kseg.weak.em_adapt import EMAdaptCrossEntropy, em_adapt_latent_labels


def _counts(labels, num_classes):
    return np.stack([np.bincount(image.ravel(), minlength=num_classes) for image in labels])


def _adaptive_bias_reference(logits, tags, fractions, sweeps=200):
    """Numpy version of the released DeepLab AdaptiveBiasChannel layer, iterated to rest.

    One class after another (background first), the class's score is raised by the
    floor(rho * N)-th smallest gap between the best present score and its own, absent classes
    are pushed below every present one, and the sweep repeats until no bias changes.
    """
    scores = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    present = np.flatnonzero(tags > 0.5)
    scores[:, [c for c in range(scores.shape[1]) if c not in present]] = -np.inf
    pixels = scores.shape[0]
    for _ in range(sweeps):
        changed = False
        for label in present:
            gap = scores[:, present].max(axis=1) - scores[:, label]
            nth = int(np.floor(fractions[label] * pixels))
            shift = np.partition(gap, nth)[nth]
            if shift > 1e-12:
                scores[:, label] += shift
                changed = True
        if not changed:
            break
    return np.argmax(scores, axis=1).reshape(logits.shape[:-1])


def test_em_adapt_latent_labels_take_the_preset_fractions():
    height, width = 30, 40
    pixels = height * width
    # Background and class 2 start far behind class 3, so both need a bias.
    logits = shifted_logits(0, 3, height, width, [-3.0, 0.0, 0.0, 2.0, 5.0])
    tags = np.array([[1, 0, 1, 1, 0], [1, 1, 0, 0, 0], [0, 1, 0, 1, 0]], np.float32)
    labels = np.asarray(em_adapt_latent_labels(tags, logits, max_iterations=100))
    counts = _counts(labels, 5)
    targets = np.where(tags > 0, np.where(np.arange(5) == 0, 0.4, 0.2), 0.0) * pixels
    targets = np.floor(targets + 1e-6).astype(int)

    present_logits = np.where(tags[:, None, None, :] > 0, logits, -np.inf)
    unbiased = _counts(np.argmax(present_logits, axis=-1), 5)
    assert np.all(counts[tags == 0] == 0), "an absent class was assigned"
    assert np.all(counts[tags > 0] >= targets[tags > 0])
    short = (tags > 0) & (unbiased < targets)
    assert short.sum() >= 3  # the test exercises the biases
    np.testing.assert_array_equal(counts[short], targets[short])
    assert np.all(counts.sum(axis=1) == pixels)


def test_em_adapt_agrees_with_the_sequential_released_algorithm():
    logits = shifted_logits(1, 1, 24, 32, [-2.0, 1.0, -1.0, 0.5])
    tags = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
    labels = np.asarray(em_adapt_latent_labels(tags[None], logits, max_iterations=100))[0]
    fractions = np.array([0.4, 0.2, 0.2, 0.2])
    reference = _adaptive_bias_reference(logits[0], tags, fractions)
    # The released layer gives a boosted class one tied pixel more; otherwise both reach the
    # smallest biases meeting every fraction.
    assert np.mean(labels == reference) > 0.99


def test_em_adapt_scales_fractions_that_exceed_the_image_and_ignores_untagged_images():
    logits = shifted_logits(2, 2, 16, 16, [0.0, 3.0, -1.0, -2.0, 1.0, -3.0, 0.0])
    tags = np.array([[1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]], np.float32)
    labels = np.asarray(em_adapt_latent_labels(tags, logits, max_iterations=200))
    # 0.4 + 6 * 0.2 = 1.6 of the image is asked for: each share is divided by 1.6.
    counts = _counts(labels[:1], 256)[0]
    targets = np.floor(np.array([0.4] + [0.2] * 6) / 1.6 * 256 + 1e-6)
    assert np.all(counts[:7] >= targets)
    assert np.all(labels[1] == 255)


def test_em_adapt_compiles_with_xla_and_matches_eager():
    logits = shifted_logits(3, 2, 12, 20, [-2.0, 0.0, 1.5])
    tags = np.array([[1, 1, 1], [1, 0, 1]], np.float32)
    compiled = tf.function(em_adapt_latent_labels, jit_compile=True)
    np.testing.assert_array_equal(
        compiled(tf.constant(tags), tf.constant(logits)), em_adapt_latent_labels(tags, logits)
    )


def test_em_adapt_trains_a_kseg_model_on_tags():
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32)
    tags = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 0]], np.float32)
    fit_two_steps(EMAdaptCrossEntropy(), images, tags)
