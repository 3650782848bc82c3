import keras
import numpy as np
import pytest
import tensorflow as tf
from loss_helpers import (
    ALL_LOSSES,
    IGNORE,
    NUM_CLASSES,
    np_cross_entropy,
    random_batch,
    tiny_model,
)

from kseg.losses import CombinedLoss, DiceLoss, FocalLoss, SegmentationCrossEntropy


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


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_bfloat16_logits_are_computed_in_float32(name):
    labels, logits = random_batch(seed=13)
    loss = ALL_LOSSES[name]()
    low_precision = tf.cast(logits, tf.bfloat16)
    value = loss(labels, low_precision)
    assert value.dtype == tf.float32
    reference = loss(labels, tf.cast(low_precision, tf.float32))
    np.testing.assert_allclose(float(value), float(reference), rtol=1e-6)
