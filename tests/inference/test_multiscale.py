import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.inference.multiscale import DEEPLAB_SCALES, _scale_core, multiscale_predict

NUM_CLASSES = 4


class ColumnRamp(keras.layers.Layer):
    """Adds a per-class ramp over the column index, so outputs depend on x-position."""

    def call(self, logits):
        width = keras.ops.shape(logits)[2]
        columns = keras.ops.cast(keras.ops.arange(width), "float32")
        slopes = keras.ops.linspace(-0.3, 0.3, NUM_CLASSES)
        return logits + columns[None, None, :, None] * slopes


def pointwise_model(seed=0):
    """1x1 convolutions only: each pixel's logits depend on that pixel alone (flip-equivariant)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 1, activation="tanh")(inputs)
    outputs = keras.layers.Conv2D(NUM_CLASSES, 1)(x)
    return keras.Model(inputs, outputs)


def position_model(seed=0):
    """A 3x3 convolution followed by an x-position ramp: not flip-equivariant."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(NUM_CLASSES, 3, padding="same")(inputs)
    return keras.Model(inputs, ColumnRamp()(x))


def random_images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_single_scale_without_flip_is_softmax_of_the_model():
    model = position_model()
    images = random_images((2, 9, 13, 3))
    expected = softmax(model.predict(images, verbose=0))
    result = multiscale_predict(model, images, scales=(1.0,), flip=False)
    np.testing.assert_allclose(result, expected, atol=1e-6)
    assert result.dtype == np.float32


def test_flip_changes_nothing_for_a_flip_equivariant_model():
    model = pointwise_model()
    images = random_images((2, 10, 14, 3))
    with_flip = multiscale_predict(model, images, scales=(0.5, 1.0, 1.5), flip=True)
    without_flip = multiscale_predict(model, images, scales=(0.5, 1.0, 1.5), flip=False)
    np.testing.assert_allclose(with_flip, without_flip, atol=1e-5)


def test_flipped_branch_is_flipped_back():
    model = position_model()
    images = random_images((1, 8, 12, 3))
    plain = softmax(model.predict(images, verbose=0))
    mirrored = softmax(model.predict(images[:, :, ::-1], verbose=0))
    result = multiscale_predict(model, images, scales=(1.0,), flip=True)
    np.testing.assert_allclose(result, 0.5 * (plain + mirrored[:, :, ::-1]), atol=1e-6)
    # The ramp makes the branch's orientation matter, so the check above can tell it apart.
    assert not np.allclose(result, 0.5 * (plain + mirrored), atol=1e-3)
    assert not np.allclose(result, plain, atol=1e-3)


def test_scales_match_a_manual_resize_run_resize_average():
    model = position_model()
    images = random_images((1, 10, 14, 3))
    # Sizes written out: 10x14 at 0.5 -> 5x7, at 0.75 -> 7.5x10.5 rounded half up -> 8x11,
    # at 1.5 -> 15x21.
    expected = np.zeros((1, 10, 14, NUM_CLASSES), np.float64)
    for size in ((5, 7), (8, 11), (15, 21)):
        scaled = tf.image.resize(images, size, method="bilinear").numpy()
        probabilities = softmax(model.predict(scaled, verbose=0))
        expected += tf.image.resize(probabilities, (10, 14), method="bilinear").numpy() / 3
    result = multiscale_predict(model, images, scales=(0.5, 0.75, 1.5), flip=False)
    np.testing.assert_allclose(result, expected, atol=1e-5)


def test_uint8_tensor_and_unbatched_inputs_agree_with_float_numpy():
    model = position_model()
    images = np.random.default_rng(1).integers(0, 256, (3, 7, 11, 3), dtype=np.uint8)
    reference = multiscale_predict(
        model, images.astype(np.float32), scales=(0.5, 1.25), batch_size=3
    )
    from_uint8 = multiscale_predict(model, tf.constant(images), scales=(0.5, 1.25), batch_size=2)
    single = multiscale_predict(model, images[1], scales=(0.5, 1.25))
    np.testing.assert_allclose(from_uint8, reference, atol=1e-6)
    np.testing.assert_allclose(single, reference[1], atol=1e-6)


def test_outputs_are_consistent_probabilities():
    model = position_model()
    images = random_images((1, 9, 9, 3))
    probabilities = multiscale_predict(model, images, scales=DEEPLAB_SCALES)
    logits = multiscale_predict(model, images, scales=DEEPLAB_SCALES, output="logits")
    labels = multiscale_predict(model, images, scales=DEEPLAB_SCALES, output="labels")
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(softmax(logits), probabilities, atol=1e-6)
    np.testing.assert_array_equal(labels, probabilities.argmax(axis=-1))


def test_one_trace_serves_every_size_and_scale():
    model = pointwise_model()
    for shape in ((1, 6, 8, 3), (2, 11, 5, 3), (1, 17, 17, 3)):
        multiscale_predict(model, random_images(shape), scales=(0.5, 1.0, 1.75), flip=True)
    assert _scale_core(model, True, 3).experimental_get_tracing_count() == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scales": ()}, "scales"),
        ({"scales": (1.0, -0.5)}, "scales"),
        ({"output": "softmax"}, "output"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        multiscale_predict(pointwise_model(), random_images((1, 4, 4, 3)), **kwargs)


def test_bad_rank_is_named():
    with pytest.raises(ValueError, match="shape"):
        multiscale_predict(pointwise_model(), random_images((4, 4)))
