import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg.losses
from kseg.losses import CombinedLoss, DiceLoss, FocalLoss, SegmentationCrossEntropy

NUM_CLASSES = 4
IGNORE = 255


def random_batch(seed=0, shape=(2, 6, 7), ignored_fraction=0.3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=shape).astype("int32")
    labels[rng.random(shape) < ignored_fraction] = IGNORE
    logits = (3.0 * rng.normal(size=shape + (NUM_CLASSES,))).astype("float32")
    return labels, logits


def np_log_softmax(logits):
    logits = logits.astype("float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_true_class(values, labels):
    """values[..., labels] for valid pixels, flattened."""
    valid = labels != IGNORE
    return values[valid][np.arange(valid.sum()), labels[valid]], valid


def np_cross_entropy(labels, logits, class_weights=None):
    """PyTorch CrossEntropyLoss(weight=w, ignore_index=255) semantics, in numpy."""
    log_p, valid = np_true_class(np_log_softmax(logits), labels)
    weights = (
        np.ones(valid.sum()) if class_weights is None else np.asarray(class_weights)[labels[valid]]
    )
    return np.sum(-log_p * weights) / np.sum(weights)


def np_focal(labels, logits, gamma, alpha=None):
    log_p, valid = np_true_class(np_log_softmax(logits), labels)
    losses = -((1.0 - np.exp(log_p)) ** gamma) * log_p
    if alpha is not None:
        losses = losses * np.asarray(alpha)[labels[valid]]
    return losses.mean()


def np_dice(labels, logits, smooth):
    valid = labels != IGNORE
    probabilities = np.exp(np_log_softmax(logits))[valid]
    one_hot = np.eye(NUM_CLASSES)[labels[valid]]
    intersection = (probabilities * one_hot).sum(axis=0)
    total = probabilities.sum(axis=0) + one_hot.sum(axis=0)
    return 1.0 - np.mean((2 * intersection + smooth) / (total + smooth))


ALL_LOSSES = {
    "cross_entropy": lambda: SegmentationCrossEntropy(),
    "weighted_cross_entropy": lambda: SegmentationCrossEntropy(
        class_weights=[0.5, 1.0, 2.0, 4.0], label_smoothing=0.1
    ),
    "focal": lambda: FocalLoss(gamma=2.0, alpha=[0.25, 0.5, 0.75, 1.0]),
    "dice": lambda: DiceLoss(num_classes=NUM_CLASSES),
    "combined": lambda: CombinedLoss(
        [SegmentationCrossEntropy(), DiceLoss(NUM_CLASSES)], [1.0, 0.5]
    ),
}


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


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_dice_loss_matches_numpy(smooth):
    labels, logits = random_batch(seed=9)
    value = DiceLoss(NUM_CLASSES, smooth=smooth)(labels, logits)
    np.testing.assert_allclose(float(value), np_dice(labels, logits, smooth), rtol=1e-5)


def test_dice_loss_of_a_confident_correct_prediction_is_near_zero():
    labels, _ = random_batch(seed=10)
    logits = 30.0 * np.eye(NUM_CLASSES, dtype="float32")[np.where(labels == IGNORE, 0, labels)]
    assert float(DiceLoss(NUM_CLASSES, smooth=1.0)(labels, logits)) < 1e-4


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


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradients_finite_for_confident_logits(name):
    labels, logits = random_batch(seed=12, ignored_fraction=0.0)
    # Confidently wrong and confidently right pixels, where log(0) and 0**gamma lurk.
    scores = tf.constant(np.sign(logits) * 80.0)
    with tf.GradientTape() as tape:
        tape.watch(scores)
        value = ALL_LOSSES[name]()(labels, scores)
    gradient = tape.gradient(value, scores).numpy()
    assert np.isfinite(float(value)) and np.all(np.isfinite(gradient))


def test_focal_gradient_finite_for_gamma_below_one_at_certainty():
    labels = np.zeros((1, 1, 2), "int32")
    scores = tf.constant([[[[200.0, 0.0, 0.0, 0.0], [0.0, 200.0, 0.0, 0.0]]]])
    with tf.GradientTape() as tape:
        tape.watch(scores)
        value = FocalLoss(gamma=0.5)(labels, scores)
    assert np.all(np.isfinite(tape.gradient(value, scores).numpy()))


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_bfloat16_logits_are_computed_in_float32(name):
    labels, logits = random_batch(seed=13)
    loss = ALL_LOSSES[name]()
    low_precision = tf.cast(logits, tf.bfloat16)
    value = loss(labels, low_precision)
    assert value.dtype == tf.float32
    reference = loss(labels, tf.cast(low_precision, tf.float32))
    np.testing.assert_allclose(float(value), float(reference), rtol=1e-6)


def test_all_ignored_batch_gives_zero():
    labels = np.full((1, 3, 3), IGNORE, "int32")
    logits = np.random.default_rng(0).normal(size=(1, 3, 3, NUM_CLASSES)).astype("float32")
    assert float(SegmentationCrossEntropy()(labels, logits)) == 0.0
    assert float(FocalLoss()(labels, logits)) == 0.0


def test_per_image_sample_weight_weights_pixels_of_each_image():
    labels, logits = random_batch(seed=14)
    value = SegmentationCrossEntropy()(labels, logits, sample_weight=np.array([1.0, 0.0]))
    np.testing.assert_allclose(float(value), np_cross_entropy(labels[:1], logits[:1]), rtol=1e-5)


def test_reductions():
    labels, logits = random_batch(seed=15)
    valid = labels != IGNORE
    pixel_map = SegmentationCrossEntropy(reduction="none")(labels, logits)
    assert tuple(pixel_map.shape) == labels.shape
    np.testing.assert_allclose(
        np.asarray(pixel_map)[valid].mean(), np_cross_entropy(labels, logits), rtol=1e-5
    )
    total = SegmentationCrossEntropy(reduction="sum")(labels, logits)
    np.testing.assert_allclose(
        float(total), np_cross_entropy(labels, logits) * valid.sum(), rtol=1e-5
    )


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


def test_ignore_label_none_counts_every_pixel():
    labels, logits = random_batch(seed=18, ignored_fraction=0.0)
    value = SegmentationCrossEntropy(ignore_label=None)(labels, logits)
    np.testing.assert_allclose(float(value), np_cross_entropy(labels, logits), rtol=1e-5)
    labels[0, 0, 0] = IGNORE
    with pytest.raises(tf.errors.InvalidArgumentError, match="255"):
        SegmentationCrossEntropy(ignore_label=None)(labels, logits)


def test_bad_arguments_get_clear_errors():
    labels, logits = random_batch()
    with pytest.raises(ValueError, match="num_classes=3"):
        DiceLoss(num_classes=3)(labels, logits)
    with pytest.raises(ValueError, match="4 channels"):
        SegmentationCrossEntropy(class_weights=[1.0, 2.0])(labels, logits)
    with pytest.raises(ValueError, match="y_true.shape"):
        SegmentationCrossEntropy()(labels[:, :5], logits)
    with pytest.raises(ValueError, match="ignore_label"):
        SegmentationCrossEntropy(ignore_label="void")
    with pytest.raises(ValueError, match="class_weights"):
        SegmentationCrossEntropy(class_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="median")
    with pytest.raises(ValueError, match="weights"):
        CombinedLoss([SegmentationCrossEntropy()], [1.0, 2.0])


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_config_round_trip_and_serialization(name):
    loss = ALL_LOSSES[name]()
    config = loss.get_config()
    assert type(loss).from_config(config).get_config() == config
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == config
    labels, logits = random_batch(seed=19)
    np.testing.assert_allclose(
        float(restored(labels, logits)), float(loss(labels, logits)), rtol=1e-6
    )


def test_combined_loss_is_the_weighted_sum():
    labels, logits = random_batch(seed=20)
    expected = np_cross_entropy(labels, logits) + 0.5 * np_dice(labels, logits, 1.0)
    np.testing.assert_allclose(float(ALL_LOSSES["combined"]()(labels, logits)), expected, rtol=1e-5)


def tiny_model():
    inputs = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    logits = keras.layers.Conv2D(NUM_CLASSES, 1)(hidden)
    return keras.Model(inputs, logits)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_one_fit_step_with_each_loss(name, policy):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    labels, _ = random_batch(seed=21, shape=(4, 8, 8))
    images = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=ALL_LOSSES[name]())
    history = model.fit(images, labels[..., None], batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_compiled_model_with_kseg_loss_reloads_in_safe_mode(tmp_path):
    model = tiny_model()
    model.compile(optimizer="sgd", loss=ALL_LOSSES["combined"]())
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.loss.get_config() == model.loss.get_config()


def test_docstring_examples_run():
    result = doctest.testmod(kseg.losses, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
