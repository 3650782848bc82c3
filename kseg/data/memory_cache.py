"""A decoded training set kept in memory when it fits: epochs after the first skip decoding."""

import numpy as np
import tensorflow as tf

DEFAULT_MAX_BYTES = 2 * 2**30
"""Largest decoded dataset `cache_if_it_fits` keeps in memory by default (2 GiB)."""


def _element_bytes(element):
    return sum(np.asarray(part).nbytes for part in tf.nest.flatten(element))


def cache_if_it_fits(dataset, max_bytes=DEFAULT_MAX_BYTES):
    """`dataset` cached in memory when its elements take at most `max_bytes`, with its size.

    Decoding image files is most of what a training pipeline costs (about 6 of 9 CPU
    milliseconds per CamVid image on this project's benchmark machine), and on two cores
    that CPU comes out of the training step. One pass counts the elements and adds up their
    bytes; a dataset within the budget comes back as `dataset.cache()`, which the first
    epoch fills and later epochs read, element for element the same. A larger one comes back
    unchanged, and the pass stops at the first element past the budget.

    Args:
        dataset: a finite `tf.data.Dataset`.
        max_bytes: the memory budget, in bytes.

    Returns:
        `(dataset, count, cached)`: `count` is the number of elements, or None when the pass
        stopped early.

    Example:
    >>> from kseg.data.memory_cache import cache_if_it_fits
    >>> source = tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8, 3), "float32"))
    >>> cache_if_it_fits(source, max_bytes=4096)[1:]
    (4, True)
    >>> cache_if_it_fits(source, max_bytes=1024)[1:]
    (None, False)
    """
    count = total = 0
    for element in dataset:
        count += 1
        total += _element_bytes(element)
        if total > max_bytes:
            return dataset, None, False
    return dataset.cache(), count, True
