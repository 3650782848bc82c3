import numpy as np
import pytest
import tensorflow as tf

from kseg.data import (
    augment_pair,
    make_pipeline,
    pad_to_size,
    photometric_jitter,
    random_crop,
    random_flip_left_right,
    random_scale,
    resize_pair,
)


def _coordinate_pair(height, width):
    """An image whose channels hold each pixel's (col, row, 0) and a mask encoding the same."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([cols, rows, np.zeros_like(rows)], axis=-1).astype(np.float32)
    mask = (rows * width + cols).astype(np.int32)
    return tf.constant(image), tf.constant(mask)


def _random_mask(rng, shape, labels):
    return tf.constant(rng.choice(np.asarray(labels, np.int32), size=shape))


@pytest.mark.parametrize("seed", range(6))
def test_crop_and_flip_move_image_and_mask_together(seed):
    image, mask = _coordinate_pair(20, 30)
    out_image, out_mask = augment_pair(
        image, mask, [seed, 1], crop_size=(16, 24), scale_range=None, jitter=False
    )
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    # Each output pixel's mask must encode the very source pixel its image came from.
    decoded = out_image[..., 1] * 30 + out_image[..., 0]
    np.testing.assert_array_equal(out_mask, decoded.astype(np.int32))


def test_flip_happens_and_mirrors_both():
    image, mask = _coordinate_pair(4, 5)
    flips = 0
    for seed in range(20):
        out_image, out_mask = random_flip_left_right(image, mask, [seed, 0])
        flipped = out_image.numpy()[0, 0, 0] == 4
        flips += flipped
        expected = mask.numpy()[:, ::-1] if flipped else mask.numpy()
        np.testing.assert_array_equal(out_mask, expected)
        np.testing.assert_array_equal(
            out_image.numpy()[..., 1] * 5 + out_image.numpy()[..., 0], expected
        )
    assert 0 < flips < 20


@pytest.mark.parametrize("seed", range(5))
def test_scaled_mask_points_at_the_pixel_the_image_samples(seed):
    # Bilinear resampling of a coordinate ramp returns the sampled source position; nearest
    # resampling of the mask must pick a source pixel within half a pixel of it.
    image, mask = _coordinate_pair(24, 32)
    out_image, out_mask = random_scale(image, mask, [seed, 5], (0.5, 2.0))
    rows, cols = np.divmod(out_mask.numpy(), 32)
    assert np.abs(rows - out_image.numpy()[..., 1]).max() <= 0.5 + 1e-4
    assert np.abs(cols - out_image.numpy()[..., 0]).max() <= 0.5 + 1e-4


@pytest.mark.parametrize("scale", [0.5, 0.75, 1.3, 2.0])
def test_scale_changes_size_as_asked(scale):
    image = tf.zeros((30, 41, 3))
    mask = tf.zeros((30, 41), tf.int32)
    out_image, out_mask = random_scale(image, mask, [0, 0], (scale, scale))
    expected = (round(30 * scale), round(41 * scale))
    assert tuple(out_image.shape[:2]) == expected == tuple(out_mask.shape)
    for seed in range(5):
        out_image, _ = random_scale(image, mask, [seed, 1], (0.5, 2.0))
        assert 15 <= out_image.shape[0] <= 60 and 20 <= out_image.shape[1] <= 82


@pytest.mark.parametrize("input_hw", [(10, 12), (40, 50), (33, 17)])
def test_augmented_crop_size_is_exact_and_labels_survive(input_hw, rng):
    labels = [0, 3, 7]
    image = tf.constant(rng.uniform(0, 255, input_hw + (3,)).astype(np.float32))
    mask = _random_mask(rng, input_hw, labels)
    for seed in range(8):
        out_image, out_mask = augment_pair(image, mask, [seed, 2], crop_size=(24, 20))
        assert out_image.shape == (24, 20, 3) and out_mask.shape == (24, 20)
        assert out_image.dtype == tf.float32 and out_mask.dtype == tf.int32
        assert set(np.unique(out_mask.numpy())) <= set(labels) | {255}
        assert 0.0 <= float(tf.reduce_min(out_image)) and float(tf.reduce_max(out_image)) <= 255.0


def test_resize_pair_keeps_label_set(rng):
    mask = _random_mask(rng, (9, 13), [1, 4, 200])
    _, out = resize_pair(tf.zeros((9, 13, 3)), mask, (31, 7))
    assert out.dtype == tf.int32 and set(np.unique(out.numpy())) <= {1, 4, 200}


def test_padding_uses_fill_and_ignore_label():
    image = tf.fill((3, 4, 3), 10.0)
    mask = tf.ones((3, 4), tf.int32)
    out_image, out_mask = pad_to_size(
        image, mask, (5, 6), image_fill=(1.0, 2.0, 3.0), ignore_label=99
    )
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    assert out_image.shape == (5, 6, 3)
    np.testing.assert_array_equal(out_image[:3, :4], 10.0)
    np.testing.assert_array_equal(out_image[3:, :, 2], 3.0)
    np.testing.assert_array_equal(out_image[:, 4:, 0], 1.0)
    np.testing.assert_array_equal(out_mask[:3, :4], 1)
    assert (out_mask[3:] == 99).all() and (out_mask[:, 4:] == 99).all()
    # Already large enough: unchanged.
    same_image, _ = pad_to_size(image, mask, (2, 2))
    assert same_image.shape == (3, 4, 3)


def test_random_crop_rejects_small_input():
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 8x8"):
        random_crop(tf.zeros((4, 9, 3)), tf.zeros((4, 9), tf.int32), [0, 0], (8, 8))


def test_photometric_jitter(rng):
    image = tf.constant(rng.uniform(0, 255, (8, 8, 3)).astype(np.float32))
    np.testing.assert_allclose(
        photometric_jitter(image, [0, 0], brightness=0, contrast=0, saturation=0, hue=0),
        image,
        atol=1e-3,
    )
    first = photometric_jitter(image, [3, 4]).numpy()
    np.testing.assert_array_equal(first, photometric_jitter(image, [3, 4]).numpy())
    assert not np.allclose(first, image.numpy())
    assert first.min() >= 0 and first.max() <= 255
    with pytest.raises(ValueError, match="contrast"):
        photometric_jitter(image, [0, 0], contrast=1.5)


def _dataset(rng, sizes, labels=(0, 1, 2)):
    images = [rng.uniform(0, 255, hw + (3,)).astype(np.float32) for hw in sizes]
    masks = [rng.choice(np.asarray(labels, np.int32), size=hw) for hw in sizes]
    ds = tf.data.Dataset.from_generator(
        lambda: zip(images, masks),
        output_signature=(
            tf.TensorSpec((None, None, 3), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
        ),
    )
    return ds, images, masks


def test_training_pipeline_batches_static_and_reproducible(rng):
    ds, _, _ = _dataset(rng, [(20, 30), (50, 40), (33, 33), (16, 16), (40, 20)])
    pipeline = make_pipeline(ds, batch_size=2, crop_size=24, seed=3)
    assert pipeline.element_spec[0].shape == (2, 24, 24, 3)
    assert pipeline.element_spec[1].shape == (2, 24, 24)
    batches = list(pipeline.as_numpy_iterator())
    assert len(batches) == 2  # 5 samples, last partial batch dropped
    again = list(make_pipeline(ds, batch_size=2, crop_size=24, seed=3).as_numpy_iterator())
    for (a_image, a_mask), (b_image, b_mask) in zip(batches, again):
        np.testing.assert_array_equal(a_image, b_image)
        np.testing.assert_array_equal(a_mask, b_mask)
    for _, masks in batches:
        assert set(np.unique(masks)) <= {0, 1, 2, 255}


def test_training_pipeline_needs_crop_size(rng):
    ds, _, _ = _dataset(rng, [(8, 8)])
    with pytest.raises(ValueError, match="crop_size"):
        make_pipeline(ds, 1)


def test_eval_pipeline_pads_to_multiple_and_keeps_pixels(rng):
    ds, images, masks = _dataset(rng, [(20, 30), (35, 10), (12, 12)])
    batches = list(
        make_pipeline(ds, batch_size=2, augment=False, image_fill=0.0).as_numpy_iterator()
    )
    assert [b[0].shape for b in batches] == [(2, 64, 32, 3), (1, 32, 32, 3)]
    flat_images = [img for b in batches for img in b[0]]
    flat_masks = [m for b in batches for m in b[1]]
    for image, mask, padded_image, padded_mask in zip(images, masks, flat_images, flat_masks):
        h, w = mask.shape
        np.testing.assert_array_equal(padded_image[:h, :w], image)
        np.testing.assert_array_equal(padded_mask[:h, :w], mask)
        assert (padded_mask[h:] == 255).all() and (padded_mask[:, w:] == 255).all()
        assert (padded_image[h:] == 0).all()


def test_eval_pipeline_fixed_size(rng):
    ds, _, masks = _dataset(rng, [(20, 30), (35, 10)])
    pipeline = make_pipeline(ds, batch_size=2, augment=False, eval_size=(40, 40))
    assert pipeline.element_spec[0].shape[1:] == (40, 40, 3)
    ((_images, out_masks),) = list(pipeline.as_numpy_iterator())
    np.testing.assert_array_equal(out_masks[1][:35, :10], masks[1])
    too_small = make_pipeline(ds, batch_size=1, augment=False, eval_size=(24, 24))
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than eval_size"):
        list(too_small.as_numpy_iterator())


def test_eval_pipeline_keeps_static_shapes_when_known():
    ds = tf.data.Dataset.from_tensors((tf.zeros((64, 96, 3)), tf.zeros((64, 96), tf.int32))).repeat(
        3
    )
    pipeline = make_pipeline(ds, batch_size=2, augment=False)
    assert pipeline.element_spec[0].shape.as_list() == [None, 64, 96, 3]
