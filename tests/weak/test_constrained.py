from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg.data
import kseg.testing
from kseg.weak.constrained import ConstrainedCrossEntropy, latent_distribution


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def mean_kl(p, q):
    """(1/n) sum_i KL(P_i || Q_i) over the pixels of one image, 0 log 0 = 0."""
    p, q = p.reshape(-1, p.shape[-1]).astype(np.float64), q.reshape(-1, q.shape[-1])
    terms = np.where(p > 0, p * np.log(np.maximum(p, 1e-300) / q), 0.0)
    return terms.sum() / p.shape[0]


def paper_bounds(tags, lower_bound=0.05, background_bounds=(0.3, 0.7)):
    """Per-class (lower, upper) mass bounds of Pathak et al. for one image's tags."""
    present = tags > 0.5
    foreground = present.copy()
    foreground[0] = False
    lower = np.where(foreground, lower_bound, 0.0)
    upper = np.ones_like(lower)
    if present[0] and foreground.any():
        lower[0], upper[0] = background_bounds
    return present, lower, upper


def load_reference():
    """Primal SLSQP optima of toy projections (tests/fixtures/make_ccnn_projection.py)."""
    path = Path(__file__).resolve().parents[1] / "fixtures" / "ccnn_projection.npz"
    with np.load(path) as data:
        count = sum(1 for key in data.files if key.startswith("kl_"))
        return [
            {
                name: data[f"{name}_{i}"]
                for name in ("logits", "present", "lower", "upper", "p", "kl")
            }
            for i in range(count)
        ]


def check_against_reference(problem, p):
    present, lower, upper = problem["present"], problem["lower"], problem["upper"]
    mass = p.mean(axis=(0, 1))
    assert np.all(mass[~present] <= 1e-4)
    assert np.all(mass >= lower - 1e-4), (mass, lower)
    assert np.all(mass <= upper + 1e-4), (mass, upper)
    q = softmax(problem["logits"].astype(np.float64))
    ours, best = mean_kl(p, q), float(problem["kl"])
    assert ours <= best + 1e-5
    assert abs(ours - best) < 1e-3
    # Same optimum, and the optimum is unique (the objective is strictly convex in P).
    np.testing.assert_allclose(p, problem["p"], atol=2e-3)


def test_projection_meets_the_paper_constraints_and_matches_a_primal_solver():
    problems = load_reference()[:4]
    logits = np.stack([problem["logits"] for problem in problems])
    tags = np.stack([problem["present"] for problem in problems]).astype(np.float32)
    p = latent_distribution(logits, tags).numpy()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    for b, problem in enumerate(problems):
        # The fixture's bounds are the paper's, as the defaults should produce them.
        present, lower, upper = paper_bounds(tags[b])
        np.testing.assert_array_equal(problem["present"], present)
        np.testing.assert_allclose(problem["lower"], lower)
        np.testing.assert_allclose(problem["upper"], upper)
        # Not trivial: Q restricted to the tagged classes breaks a bound.
        restricted = softmax(problem["logits"].astype(np.float64)).mean((0, 1)) * present
        restricted /= restricted.sum()
        assert np.any(restricted < lower - 1e-3) or np.any(restricted > upper + 1e-3)
        check_against_reference(problem, p[b])


def test_size_bounds_are_met_and_optimal():
    problem = load_reference()[4]
    p = latent_distribution(
        problem["logits"][None],
        problem["present"][None].astype(np.float32),
        lower_bounds=problem["lower"],
        upper_bounds=problem["upper"],
    ).numpy()[0]
    check_against_reference(problem, p)


def test_the_solution_is_q_tilted_per_class():
    """The dual form P_i ∝ Q_i exp(v): log(P/Q) differs from pixel to pixel only by a constant."""
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, 6, 6, 3)).astype(np.float32)
    p = latent_distribution(logits, np.array([[1.0, 1.0, 1.0]])).numpy()[0].reshape(-1, 3)
    log_ratio = np.log(p) - np.log(softmax(logits[0].astype(np.float64)).reshape(-1, 3))
    shifts = log_ratio - log_ratio[:, :1]
    np.testing.assert_allclose(shifts, np.broadcast_to(shifts[:1], shifts.shape), atol=1e-4)


def test_background_upper_bound_holds_back_a_dominant_background():
    logits = np.zeros((1, 4, 4, 3), np.float32)
    logits[..., 0] = 3.0
    p = latent_distribution(logits, np.array([[1.0, 0.0, 1.0]])).numpy()
    np.testing.assert_allclose(p.mean((1, 2)), [[0.7, 0.0, 0.3]], atol=1e-4)
    # The background alone needs no bound: it takes everything.
    p = latent_distribution(logits, np.array([[1.0, 0.0, 0.0]])).numpy()
    np.testing.assert_allclose(p[..., 0], 1.0, atol=1e-6)


def test_slack_caps_the_push_towards_a_foreground_bound():
    logits = np.zeros((1, 8, 8, 2), np.float32)
    logits[..., 1] = -8.0  # Q gives class 1 about 3e-4 of the image
    tags = np.array([[1.0, 1.0]])
    # No background class, so only the 5% lower bounds constrain P.
    hard = latent_distribution(logits, tags, background=None).numpy().mean((1, 2))[0]
    soft = latent_distribution(logits, tags, background=None, foreground_slack=2.0)
    soft = soft.numpy().mean((1, 2))[0]
    assert hard[1] >= 0.05 - 1e-4
    # With slack beta the multiplier stops at beta: class 1 odds grow by exactly exp(2).
    q1 = 1.0 / (1.0 + np.exp(8.0))
    expected = q1 * np.exp(2.0) / (q1 * np.exp(2.0) + 1.0 - q1)
    np.testing.assert_allclose(soft[1], expected, rtol=1e-4)


def test_empty_tags_leave_q_and_give_zero_loss():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    tags = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]], np.float32)
    p = latent_distribution(logits, tags).numpy()
    np.testing.assert_allclose(p[0], softmax(logits[0]), atol=1e-6)
    per_image = ConstrainedCrossEntropy(reduction="none")(tags, logits).numpy()
    assert per_image[0] == 0.0 and per_image[1] > 0.0


def test_tags_naming_a_class_the_model_lacks_are_an_error():
    logits = np.zeros((1, 4, 4, 3), np.float32)
    tags = np.array([[1.0, 0.0, 0.0, 0.0, 1.0]], np.float32)
    with pytest.raises(ValueError, match=r"class\(es\) 4.*does not predict"):
        latent_distribution(logits, tags)
    with pytest.raises(ValueError, match=r"class\(es\) 4"):
        ConstrainedCrossEntropy()(tags, logits)
    # Width 2K is read as tags plus area fractions, which must sum to 1.
    with pytest.raises(ValueError, match="sum"):
        ConstrainedCrossEntropy()(np.array([[1, 0, 1, 1, 0, 1]], np.float32), logits)


def test_loss_gradient_is_q_minus_p():
    rng = np.random.default_rng(4)
    logits = tf.constant(rng.normal(size=(1, 3, 3, 3)).astype(np.float32))
    tags = np.array([[1.0, 0.0, 1.0]], np.float32)
    loss = ConstrainedCrossEntropy(reduction="sum")
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = loss(tags, logits)
    p = latent_distribution(logits, tags).numpy()
    expected = (softmax(logits.numpy()) - p) / 9.0
    np.testing.assert_allclose(tape.gradient(value, logits).numpy(), expected, atol=1e-6)
    cross_entropy = -(p * np.log(softmax(logits.numpy().astype(np.float64)))).sum(-1).mean()
    np.testing.assert_allclose(float(value), cross_entropy, rtol=1e-5)


def test_loss_config_round_trip():
    loss = ConstrainedCrossEntropy(
        lower_bound=0.1,
        foreground_slack=2.0,
        iterations=20,
        hardness=1000.0,
        soft_object_classes=True,
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, ConstrainedCrossEntropy)
    assert restored.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="background_bounds"):
        ConstrainedCrossEntropy(background_bounds=(0.8, 0.2))


def test_loss_trains_a_kseg_model_from_tags_only():
    from kseg.weak.labels import weak_label_dataset

    pytest.importorskip("skimage", reason="weak_label_dataset imports scikit-image lazily")
    keras.utils.set_random_seed(0)
    data = kseg.data.shapes_dataset("train", num_samples=4, image_size=64)
    tagged = weak_label_dataset(data, "tags", num_classes=5).batch(2)
    model = kseg.testing.build_small_model("fcn8s", num_classes=5)
    model.compile(
        keras.optimizers.Adam(1e-3), loss=ConstrainedCrossEntropy(iterations=20), run_eagerly=True
    )
    history = model.fit(tagged, epochs=1, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 1 and np.isfinite(losses[0]) and losses[0] > 0


def test_area_fractions_bound_the_objects_and_leave_the_background_the_rest():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    tags = np.array([[1, 0, 1], [1, 1, 1]], np.float32)
    sizes = np.array([[0.6, 0.0, 0.4], [0.5, 0.3, 0.2]], np.float32)
    value = ConstrainedCrossEntropy(size_bounds=(0.9, 1.1), reduction="none")(
        np.concatenate([tags, sizes], axis=1), logits
    )
    objects = (tags > 0) & (np.arange(3) != 0)
    lower = np.where(objects, 0.9 * sizes, np.nan)
    upper = np.where(objects, 1.1 * sizes, np.nan)
    lower[:, 0], upper[:, 0] = 0.0, 1.0  # the background has no bound of its own
    p = latent_distribution(logits, tags, lower_bounds=lower, upper_bounds=upper).numpy()
    mass = p.mean((1, 2))
    assert np.all(mass[objects] >= 0.9 * sizes[objects] - 1e-4)
    assert np.all(mass[objects] <= 1.1 * sizes[objects] + 1e-4)
    expected = -(p * np.log(softmax(logits.astype(np.float64)))).sum(-1).mean((1, 2))
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5)


def test_generous_lower_bounds_shrink_to_what_the_image_can_hold():
    # Objects covering 80% of the image cannot each take 1.5 times their share: the lower
    # bounds shrink to the shares times 1 / 0.8, which fill the image exactly.
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(1, 8, 8, 3)).astype(np.float32)
    logits[..., 0] += 3.0
    tags = np.array([[1.0, 1.0, 1.0]], np.float32)
    sizes = np.array([[0.2, 0.5, 0.3]], np.float32)
    loss = ConstrainedCrossEntropy(size_bounds=(1.5, 3.0), hardness=1000.0, reduction="none")
    lower, upper = loss._size_bounds(tf.constant(tags), tf.constant(sizes))
    np.testing.assert_allclose(lower.numpy(), [[0.0, 0.5 / 0.8, 0.3 / 0.8]], rtol=1e-6)
    np.testing.assert_allclose(upper.numpy(), [[1.0, 1.0, 0.9]], rtol=1e-6)
    p = latent_distribution(logits, tags, lower_bounds=lower, upper_bounds=upper, hardness=1000.0)
    mass = p.numpy().mean((1, 2))[0]
    # Within two of the 64 pixels (the hard solver's sweeps stop short of exact ties).
    assert mass[0] <= 2 / 64 + 1e-6
    assert mass[1] >= 0.625 - 2 / 64 - 1e-6 and mass[2] >= 0.375 - 2 / 64 - 1e-6


def test_soft_object_classes_keep_the_hard_background_and_the_soft_class_shares():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2.0, size=(2, 6, 6, 4)).astype(np.float32)
    tags = np.array([[1, 1, 0, 1], [1, 1, 1, 1]], np.float32)
    sizes = np.array([[0.7, 0.2, 0.0, 0.1], [0.4, 0.2, 0.2, 0.2]], np.float32)
    y_true = np.concatenate([tags, sizes], axis=1)
    loss = ConstrainedCrossEntropy(hardness=1000.0, soft_object_classes=True, reduction="none")
    lower, upper = loss._size_bounds(tf.constant(tags), tf.constant(sizes))
    hard = latent_distribution(
        logits, tags, lower_bounds=lower, upper_bounds=upper, hardness=1000.0
    ).numpy()
    soft = latent_distribution(logits, tags, lower_bounds=lower, upper_bounds=upper).numpy()
    objects = soft[..., 1:] / soft[..., 1:].sum(-1, keepdims=True)
    target = np.concatenate([hard[..., :1], (1.0 - hard[..., :1]) * objects], axis=-1)
    np.testing.assert_allclose(target.sum(-1), 1.0, atol=1e-5)
    assert np.all(target[0, ..., 2] == 0.0)  # an untagged class stays empty
    expected = -(target * np.log(softmax(logits.astype(np.float64)))).sum(-1).mean((1, 2))
    np.testing.assert_allclose(loss(y_true, logits).numpy(), expected, rtol=1e-4)
    # Without it, the hard labels themselves are the target.
    plain = ConstrainedCrossEntropy(hardness=1000.0, reduction="none")(y_true, logits)
    expected = -(hard * np.log(softmax(logits.astype(np.float64)))).sum(-1).mean((1, 2))
    np.testing.assert_allclose(plain.numpy(), expected, rtol=1e-4)


def best_constrained_labelling(log_q, min_counts, max_counts):
    """Exhaustive search: the labelling maximising sum_i log Q_i(y_i) under per-class counts."""
    import itertools

    pixels, classes = log_q.shape
    best, best_score = None, -np.inf
    for labels in itertools.product(range(classes), repeat=pixels):
        counts = np.bincount(labels, minlength=classes)
        if np.any(counts < min_counts) or np.any(counts > max_counts):
            continue
        score = log_q[np.arange(pixels), labels].sum()
        if score > best_score:
            best, best_score = np.array(labels), score
    return best


@pytest.mark.parametrize("seed", range(6))
def test_a_hard_latent_distribution_is_the_best_labelling_under_the_constraints(seed):
    # Hardness 1000 turns P into one label per pixel: the most likely labelling whose class
    # counts obey the bounds, checked against all 3^8 labellings of a 2x4 image.
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(1, 2, 4, 3)).astype(np.float32)
    logits[..., 0] += 2.0  # a dominant background, as early in training
    tags = np.array([[1.0, 1.0, 1.0]], np.float32)
    # Whole pixel counts: the relaxed problem's optimum is then itself a labelling.
    lower = np.array([[np.nan, 3 / 8, 2 / 8]], np.float32)  # at least 3 and 2 of 8 pixels
    upper = np.array([[3 / 8, np.nan, np.nan]], np.float32)  # background at most 3 pixels
    p = (
        latent_distribution(
            logits,
            tags,
            lower_bounds=lower,
            upper_bounds=upper,
            background=None,
            hardness=1000.0,
        )
        .numpy()[0]
        .reshape(8, 3)
    )
    log_q = np.log(softmax(logits[0].reshape(8, 3).astype(np.float64)))
    expected = best_constrained_labelling(log_q, [0, 3, 2], [3, 8, 8])
    np.testing.assert_array_equal(p.argmax(-1), expected)


def test_hardness_keeps_a_small_object_that_a_soft_target_spreads_thin():
    # A 4-pixel object in a 20x20 image whose scores only weakly favour it: its exact area (1%)
    # as a soft target is spread over the whole image and never wins the argmax; a hard
    # target gives the object's own pixels.
    rng = np.random.default_rng(0)
    logits = np.zeros((1, 20, 20, 2), np.float32)
    logits[..., 0] = 3.0 + 0.1 * rng.standard_normal((20, 20))
    logits[0, 8:10, 8:10, 1] = 1.0
    tags = np.array([[1.0, 1.0]], np.float32)
    bounds = {"lower_bounds": [[0.79, 0.01]], "upper_bounds": [[1.0, 0.0125]]}
    soft = latent_distribution(logits, tags, **bounds).numpy()[0]
    hard = latent_distribution(logits, tags, hardness=1000.0, **bounds).numpy()[0]
    for p in (soft, hard):
        assert 0.01 - 1e-4 <= p[..., 1].mean() <= 0.0125 + 1e-4
    assert not np.any(soft.argmax(-1) == 1)
    object_mask = np.zeros((20, 20), bool)
    object_mask[8:10, 8:10] = True
    np.testing.assert_array_equal(hard.argmax(-1) == 1, object_mask)


def test_hardness_below_one_is_refused():
    with pytest.raises(ValueError, match="hardness"):
        ConstrainedCrossEntropy(hardness=0.5)
    with pytest.raises(ValueError, match="hardness"):
        latent_distribution(np.zeros((1, 2, 2, 2), np.float32), [[1.0, 1.0]], hardness=0.0)
