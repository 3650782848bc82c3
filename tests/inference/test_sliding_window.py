import itertools

import keras
import numpy as np
import pytest

from kseg.inference.multiscale import multiscale_predict
from kseg.inference.sliding_window import sliding_window_predict, window_starts, window_weights

NUM_CLASSES = 3


class WindowColumnRamp(keras.layers.Layer):
    """Adds a per-class ramp over the column index within the input, so a window's output
    depends on where the window starts."""

    def call(self, logits):
        width = keras.ops.shape(logits)[2]
        columns = keras.ops.cast(keras.ops.arange(width), "float32")
        slopes = keras.ops.linspace(-0.5, 0.5, NUM_CLASSES)
        return logits + columns[None, None, :, None] * slopes


def pointwise_model(seed=0):
    """1x1 convolutions only: a pixel's output ignores its neighbours and its position."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(6, 1, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 1)(x))


def position_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(NUM_CLASSES, 1)(inputs)
    return keras.Model(inputs, WindowColumnRamp()(x))


def random_image(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize(
    "length, window, overlap",
    [
        (100, 40, 0.5),
        (101, 40, 1 / 3),
        (41, 40, 0.9),
        (7, 7, 0.0),
        (1000, 64, 0.0),
        (97, 10, 0.75),
    ],
)
def test_windows_cover_every_pixel_and_stay_inside(length, window, overlap):
    starts = window_starts(length, window, overlap)
    coverage = np.zeros(length, int)
    for start in starts:
        coverage[start : start + window] += 1
    assert coverage.min() >= 1
    assert starts[0] == 0 and starts[-1] == length - window
    assert starts == sorted(set(starts))
    stride = max(1, round(window * (1 - overlap)))
    assert all(b - a <= stride for a, b in itertools.pairwise(starts))


def test_axis_shorter_than_window_gets_one_window():
    assert window_starts(5, 32, 0.5) == [0]


@pytest.mark.parametrize("weighting", ["uniform", "gaussian"])
@pytest.mark.parametrize("shape", [(70, 45, 3), (64, 48, 3), (33, 100, 3)])
def test_pointwise_model_stitches_to_the_whole_image_output(shape, weighting):
    model = pointwise_model()
    image = random_image(shape)
    expected = softmax(model.predict(image[None], verbose=0)[0])
    result = sliding_window_predict(
        model, image, window=(32, 24), overlap=1 / 3, batch_size=3, weighting=weighting
    )
    np.testing.assert_allclose(result, expected, atol=1e-6)


@pytest.mark.parametrize("padding", ["reflect", "constant"])
def test_image_smaller_than_window_is_padded_and_cropped(padding):
    model = pointwise_model()
    image = random_image((13, 20, 3))
    expected = softmax(model.predict(image[None], verbose=0)[0])
    result = sliding_window_predict(model, image, window=32, padding=padding)
    assert result.shape == (13, 20, NUM_CLASSES)
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_padding_mode_reaches_the_model():
    # A 3x3 convolution sees the padded border, so the two modes must give different borders.
    keras.utils.set_random_seed(2)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 3, padding="same")(inputs))
    image = random_image((6, 6, 3))
    reflected = np.pad(image, ((0, 2), (0, 2), (0, 0)), mode="reflect")
    expected = softmax(model.predict(reflected[None], verbose=0)[0])[:6, :6]
    result = sliding_window_predict(model, image, window=8, padding="reflect")
    np.testing.assert_allclose(result, expected, atol=1e-6)
    zeros = sliding_window_predict(model, image, window=8, padding="constant")
    assert not np.allclose(result[-1], zeros[-1], atol=1e-4)


@pytest.mark.parametrize("weighting", ["uniform", "gaussian"])
def test_overlaps_are_weighted_averages_of_the_windows(weighting):
    model = position_model()
    image = random_image((8, 12, 3))
    # Windows 8x8 with overlap 0.5 on a 12-wide image: columns 0-7 and 4-11.
    left = softmax(model.predict(image[None, :, 0:8], verbose=0)[0])
    right = softmax(model.predict(image[None, :, 4:12], verbose=0)[0])
    weights = window_weights((8, 8), weighting)[..., None]
    totals = np.zeros((8, 12, NUM_CLASSES))
    weight_sums = np.zeros((8, 12, 1))
    totals[:, 0:8] += weights * left
    weight_sums[:, 0:8] += weights
    totals[:, 4:12] += weights * right
    weight_sums[:, 4:12] += weights
    result = sliding_window_predict(model, image, window=8, overlap=0.5, weighting=weighting)
    np.testing.assert_allclose(result, totals / weight_sums, atol=1e-6)


def test_gaussian_weights_follow_nnunet_sigma():
    weights = window_weights((9, 17), "gaussian")
    centre_row = weights[4]
    # sigma = 17 / 8 along the width; 4 pixels from the centre the weight is
    # exp(-0.5 (4 / sigma)^2).
    assert centre_row[8] == pytest.approx(1.0)
    assert centre_row[12] == pytest.approx(np.exp(-0.5 * (4 / (17 / 8)) ** 2), rel=1e-5)
    assert weights.min() > 0
    np.testing.assert_array_equal(window_weights((4, 5), "uniform"), np.ones((4, 5)))


def test_outputs_and_uint8_input():
    model = pointwise_model()
    image = np.random.default_rng(3).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    probabilities = sliding_window_predict(model, image, window=16)
    np.testing.assert_allclose(
        sliding_window_predict(model, image.astype(np.float32), window=16), probabilities, atol=1e-6
    )
    labels = sliding_window_predict(model, image, window=16, output="labels")
    logits = sliding_window_predict(model, image, window=16, output="logits")
    np.testing.assert_array_equal(labels, probabilities.argmax(axis=-1))
    np.testing.assert_allclose(softmax(logits), probabilities, atol=1e-6)


def test_image_level_scales_and_flip_match_multiscale_predict():
    # A pointwise model stitches exactly, so tiling each rescaled image must reproduce the
    # whole-image multi-scale average.
    model = pointwise_model()
    image = random_image((30, 44, 3))
    expected = multiscale_predict(model, image, scales=(0.5, 0.75, 1.5), flip=True)
    result = sliding_window_predict(
        model, image, window=(16, 12), overlap=0.25, scales=(0.5, 0.75, 1.5), flip=True
    )
    np.testing.assert_allclose(result, expected, atol=1e-5)


def test_flipped_tiling_is_flipped_back():
    # One window as large as the image: the position-dependent model's mirrored pass must be
    # mirrored back exactly as multiscale_predict does.
    model = position_model()
    image = random_image((10, 16, 3))
    expected = multiscale_predict(model, image, scales=(1.0,), flip=True)
    result = sliding_window_predict(model, image, window=(10, 16), flip=True)
    np.testing.assert_allclose(result, expected, atol=1e-6)
    assert not np.allclose(result, sliding_window_predict(model, image, window=(10, 16)), atol=1e-3)


def test_model_changing_the_size_is_refused():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 3)(inputs))
    with pytest.raises(ValueError, match="overlap_tile_predict"):
        sliding_window_predict(model, random_image((20, 20, 3)), window=16)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": 0}, "window"),
        ({"window": (8, 8, 8)}, "window"),
        ({"overlap": 1.0}, "overlap"),
        ({"weighting": "cosine"}, "weighting"),
        ({"padding": "edge"}, "padding"),
        ({"output": "softmax"}, "output"),
        ({"batch_size": 0}, "batch_size"),
        ({"scales": (0.0,)}, "scales"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sliding_window_predict(pointwise_model(), random_image((10, 10, 3)), **kwargs)


def test_batched_image_is_refused():
    with pytest.raises(ValueError, match="shape"):
        sliding_window_predict(pointwise_model(), random_image((2, 10, 10, 3)), window=8)
