"""Property-based tests of kseg's custom layers and of the data pipeline.

Sizes are drawn small and odd-friendly (1 to 15 pixels, batches of 0 to 2) so that rounding
corners, sizes smaller than a pooling window or a bin, and empty batches all come up. The
expected values come from NumPy or from invariants (a round trip, coordinates carried in the
pixels), never from the code under test.
"""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from kseg.data.augment import (
    augment_pair,
    make_pipeline,
    pad_to_size,
    random_crop,
    random_flip_left_right,
    resize_pair,
)
from kseg.layers.crop import CenteredPadToMultiple, CropToMatch
from kseg.layers.pyramid_pooling import PyramidPooling
from kseg.layers.resize import ResizeToMatch
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sides = st.integers(1, 15)
batches = st.integers(0, 2)
seeds = st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))


def _distinct_values(shape, seed):
    """Positive, pairwise-distinct values, so every pooling window has one maximum."""
    count = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(count) + 1).astype("float32").reshape(shape)


def _unpooled_by_numpy(x, pool, padding):
    """Each window's maximum written back at its position; windows of stride == pool_size."""
    batch, height, width, channels = x.shape
    out = np.zeros_like(x)
    if padding == "valid":
        rows, cols = height // pool, width // pool
        top = left = 0
    else:
        rows, cols = -(-height // pool), -(-width // pool)
        top, left = (rows * pool - height) // 2, (cols * pool - width) // 2
    for b in range(batch):
        for c in range(channels):
            for i in range(rows):
                for j in range(cols):
                    y0, x0 = max(i * pool - top, 0), max(j * pool - left, 0)
                    y1, x1 = min(i * pool - top + pool, height), min(j * pool - left + pool, width)
                    window = x[b, y0:y1, x0:x1, c]
                    y, xx = np.unravel_index(np.argmax(window), window.shape)
                    out[b, y0 + y, x0 + xx, c] = window[y, xx]
    return out


# --- layers -----------------------------------------------------------------------------------


@FEW
@given(
    batch=batches,
    height=sides,
    width=sides,
    channels=st.integers(1, 3),
    pool=st.sampled_from([2, 3]),
    padding=st.sampled_from(["valid", "same"]),
    seed=st.integers(0, 1000),
)
# An empty batch once made MaxPoolWithArgmax fail ("tensor_in must not be empty").
@example(batch=0, height=5, width=3, channels=2, pool=2, padding="same", seed=0)
def test_unpooling_puts_each_maximum_back_where_it_was(
    batch, height, width, channels, pool, padding, seed
):
    if padding == "valid" and min(height, width) < pool:
        height, width = max(height, pool), max(width, pool)
    x = _distinct_values((batch, height, width, channels), seed)
    pooled, argmax = MaxPoolingWithArgmax2D(pool, pool, padding)(x)
    unpooled = np.asarray(MaxUnpooling2D()([pooled, argmax, x]))
    assert unpooled.shape == x.shape
    np.testing.assert_array_equal(unpooled, _unpooled_by_numpy(x, pool, padding))
    # Every pooled value lands on an input pixel holding that same value.
    kept = unpooled != 0
    np.testing.assert_array_equal(unpooled[kept], x[kept])


# No empty batch: TensorFlow 2.21's CPU Conv2D returns an empty batch with the input's channel
# count instead of the filters', so no convolutional layer handles one.
@FEW
@given(
    batch=st.integers(1, 2),
    height=sides,
    width=sides,
    channels=st.integers(4, 8),
    bins=st.sampled_from([(1,), (1, 2, 3, 6), (2, 5)]),
)
def test_pyramid_pooling_keeps_size_and_input_channels(batch, height, width, channels, bins):
    x = np.random.default_rng(height * 31 + width).normal(size=(batch, height, width, channels))
    x = x.astype("float32")
    layer = PyramidPooling(bins=bins, filters=2)
    y = np.asarray(layer(x, training=False))
    assert y.shape == (batch, height, width, channels + 2 * len(bins))
    assert layer.compute_output_shape((None, None, None, channels)) == (
        None,
        None,
        None,
        channels + 2 * len(bins),
    )
    np.testing.assert_array_equal(y[..., :channels], x)
    assert np.isfinite(y).all()


@FEW
@given(
    batch=batches,
    source=st.tuples(sides, sides),
    target=st.tuples(sides, sides),
    interpolation=st.sampled_from(["bilinear", "nearest"]),
)
def test_resize_to_match_takes_the_reference_size(batch, source, target, interpolation):
    channels = 2
    x = np.random.default_rng(sum(source)).uniform(size=(batch, *source, channels))
    x = x.astype("float32")
    reference = np.zeros((batch, *target, 5), "float32")
    y = np.asarray(ResizeToMatch(interpolation)([x, reference]))
    assert y.shape == (batch, *target, channels)
    if batch:
        # Interpolation never leaves the input's range; a same-size resize is the identity.
        assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6
    if source == target:
        np.testing.assert_allclose(y, x, atol=1e-6)


@FEW
@given(
    batch=batches,
    target=st.tuples(sides, sides),
    extra=st.tuples(st.integers(0, 5), st.integers(0, 5)),
)
def test_crop_to_match_takes_the_centre_numpy_would(batch, target, extra):
    source = (target[0] + extra[0], target[1] + extra[1])
    x = _distinct_values((batch, *source, 3), sum(source))
    y = np.asarray(CropToMatch()([x, np.zeros((batch, *target, 1), "float32")]))
    top, left = extra[0] // 2, extra[1] // 2
    np.testing.assert_array_equal(y, x[:, top : top + target[0], left : left + target[1]])


@FEW
@given(
    batch=batches,
    height=sides,
    width=sides,
    multiple=st.integers(1, 8),
    mode=st.sampled_from(["constant", "symmetric"]),
)
def test_pad_to_multiple_then_crop_back_is_the_identity(batch, height, width, multiple, mode):
    # Mirroring cannot pad a side by more than the image holds (documented).
    assume(
        mode == "constant"
        or (-height % multiple) <= 2 * height
        and (-width % multiple) <= 2 * width
    )
    x = _distinct_values((batch, height, width, 2), height * width)
    padded = CenteredPadToMultiple(multiple, mode=mode)(x)
    expected = (batch, -(-height // multiple) * multiple, -(-width // multiple) * multiple, 2)
    assert tuple(padded.shape) == expected
    if mode == "constant":
        assert float(np.asarray(padded).sum()) == float(x.sum())
    np.testing.assert_array_equal(np.asarray(CropToMatch()([padded, x])), x)


# --- data pipeline ----------------------------------------------------------------------------

REAL = 200.0  # third image channel of real pixels; padding fills it with 0


def _coordinate_pair(height, width):
    """An image whose pixels hold their own (row, column) and a mask labelling row * W + col."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([rows, cols, np.full_like(rows, REAL)], axis=-1).astype("float32")
    mask = (rows * width + cols).astype("int32")
    return image, mask


def _check_alignment(image, mask, width, tolerance):
    image, mask = np.asarray(image), np.asarray(mask)
    real = image[..., 2] > REAL / 2
    # Padding: mask ignored, image filled.
    assert (mask[~real] == 255).all()
    assert (image[~real] == 0).all()
    label_rows, label_cols = np.divmod(mask[real], width)
    np.testing.assert_allclose(image[real][:, 0], label_rows, atol=tolerance)
    np.testing.assert_allclose(image[real][:, 1], label_cols, atol=tolerance)


@FEW
@given(height=sides, width=sides, crop=st.tuples(sides, sides), seed=seeds)
def test_crop_pad_flip_move_image_and_mask_together(height, width, crop, seed):
    image, mask = _coordinate_pair(height, width)
    out_image, out_mask = augment_pair(
        image, mask, seed, crop, scale_range=None, jitter=False, image_fill=0.0
    )
    assert out_image.dtype == tf.float32 and out_mask.dtype == tf.int32
    assert tuple(out_image.shape) == (*crop, 3) and tuple(out_mask.shape) == crop
    _check_alignment(out_image, out_mask, width, tolerance=0)


@FEW
@given(height=sides, width=sides, crop=st.tuples(sides, sides), seed=seeds)
def test_random_scale_keeps_mask_within_a_pixel_of_the_image(height, width, crop, seed):
    # Bilinear image and nearest-neighbour mask sample points at most one source pixel apart.
    image, mask = _coordinate_pair(height, width)
    out_image, out_mask = augment_pair(
        image, mask, seed, crop, scale_range=(0.5, 2.0), jitter=False, image_fill=0.0
    )
    _check_alignment(out_image, out_mask, width, tolerance=1.0 + 1e-4)


@FEW
@given(
    height=sides,
    width=sides,
    labels=st.lists(st.sampled_from([0, 1, 254, 255]), min_size=1, max_size=4),
    seed=seeds,
)
def test_augmentation_invents_no_label_values(height, width, labels, seed):
    rng = np.random.default_rng(seed[0])
    mask = rng.choice(labels, size=(height, width)).astype("uint8")
    image = rng.uniform(0, 255, (height, width, 3)).astype("uint8")
    out_image, out_mask = augment_pair(image, mask, seed, (9, 7), ignore_label=255)
    assert out_image.dtype == tf.float32 and out_mask.dtype == tf.int32
    assert set(np.unique(out_mask)) <= set(labels) | {255}
    assert 0 <= float(tf.reduce_min(out_image)) and float(tf.reduce_max(out_image)) <= 255


@FEW
@given(
    height=sides,
    width=sides,
    dtype=st.sampled_from(["uint8", "int32", "int64"]),
    seed=seeds,
)
def test_geometric_helpers_keep_the_mask_dtype(height, width, dtype, seed):
    image = np.zeros((height, width, 3), "float32")
    mask = np.full((height, width), 254, dtype)
    size = (height + 2, width + 1)
    for out_image, out_mask in (
        resize_pair(image, mask, size),
        pad_to_size(image, mask, size),
        random_crop(image, mask, seed, (1, 1)),
        random_flip_left_right(image, mask, seed),
    ):
        assert out_mask.dtype == tf.as_dtype(dtype)
        assert out_image.dtype == tf.float32
        assert set(np.unique(out_mask)) <= {254, 255}


@FEW
@given(
    sizes=st.lists(st.tuples(sides, sides), min_size=1, max_size=3),
    batch_size=st.integers(1, 3),
    pad_multiple=st.sampled_from([1, 4, 8]),
)
def test_evaluation_batches_pad_with_the_ignore_label_and_keep_every_pixel(
    sizes, batch_size, pad_multiple
):
    pairs = [_coordinate_pair(h, w) for h, w in sizes]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(pairs),
        output_signature=(
            tf.TensorSpec((None, None, 3), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
        ),
    )
    batches = list(
        make_pipeline(ds, batch_size, augment=False, image_fill=0.0, pad_multiple=pad_multiple)
    )
    assert sum(int(images.shape[0]) for images, _ in batches) == len(pairs)
    index = 0
    for images, masks in batches:
        assert images.dtype == tf.float32 and masks.dtype == tf.int32
        assert images.shape[1] % pad_multiple == 0 and images.shape[2] % pad_multiple == 0
        for image, mask in zip(np.asarray(images), np.asarray(masks)):
            original_image, original_mask = pairs[index]
            h, w = original_mask.shape
            np.testing.assert_array_equal(image[:h, :w], original_image)
            np.testing.assert_array_equal(mask[:h, :w], original_mask)
            _check_alignment(image, mask, w, tolerance=0)
            index += 1


@pytest.mark.parametrize("seed", [0, 1])
def test_training_pipeline_keeps_pairs_aligned_in_static_batches(seed):
    pairs = [_coordinate_pair(h, w) for h, w in [(5, 9), (13, 3), (11, 11), (7, 7)]]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(pairs),
        output_signature=(
            tf.TensorSpec((None, None, 3), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
        ),
    )
    batches = make_pipeline(
        ds, 2, crop_size=(7, 5), jitter=False, scale_range=None, image_fill=0.0, seed=seed
    )
    assert batches.element_spec[0].shape.as_list() == [2, 7, 5, 3]
    seen = 0
    for images, masks in batches:
        for image, mask in zip(np.asarray(images), np.asarray(masks)):
            real = image[..., 2] > REAL / 2
            # The width is unknown after shuffling; the image's column bound and the mask agree.
            widths = {w for _, w in [p[1].shape for p in pairs]}
            assert any(
                np.array_equal(mask[real], (image[real][:, 0] * w + image[real][:, 1]).astype(int))
                for w in widths
            )
            assert (mask[~real] == 255).all()
            seen += 1
    assert seen == 4
