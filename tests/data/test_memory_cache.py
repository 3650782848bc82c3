"""cache_if_it_fits: same elements, decoded once when cached, untouched past the budget."""

import numpy as np
import tensorflow as tf

from kseg.data.memory_cache import cache_if_it_fits


def _counting_source(count, calls):
    def decode(index):
        calls.append(int(index))
        return np.full((4, 4, 3), index, "float32"), np.full((4, 4), index, "uint8")

    def load(index):
        image, mask = tf.numpy_function(decode, [index], (tf.float32, tf.uint8))
        return tf.ensure_shape(image, (4, 4, 3)), tf.ensure_shape(mask, (4, 4))

    return tf.data.Dataset.range(count).map(load)


def _elements(dataset):
    return [(image.numpy(), mask.numpy()) for image, mask in dataset]


def test_a_dataset_within_the_budget_is_decoded_once_more_then_read_from_memory():
    calls = []
    source = _counting_source(5, calls)
    expected = _elements(source)
    calls.clear()
    cached, count, is_cached = cache_if_it_fits(source, max_bytes=5 * (4 * 4 * 3 * 4 + 16))
    assert (count, is_cached) == (5, True)
    assert len(calls) == 5  # the sizing pass
    for _ in range(3):
        got = _elements(cached)
        assert all(
            np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
            for a, b in zip(got, expected, strict=True)
        )
    assert len(calls) == 10  # the first epoch filled the cache; later ones decoded nothing


def test_a_dataset_past_the_budget_comes_back_unchanged_after_a_short_pass():
    calls = []
    source = _counting_source(6, calls)
    returned, count, is_cached = cache_if_it_fits(source, max_bytes=2 * (4 * 4 * 3 * 4 + 16))
    assert returned is source and count is None and not is_cached
    # It stopped at the first element past the budget (tf.data may decode one ahead).
    assert 3 <= len(calls) < 6
