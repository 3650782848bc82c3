"""Class pixel counts and median-frequency weights against values computed by hand."""

import numpy as np
import pytest
import tensorflow as tf

import kseg


def _masks(*masks):
    dataset = tf.data.Dataset.from_tensors(np.asarray(masks[0], np.uint8))
    for mask in masks[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(np.asarray(mask, np.uint8)))
    return dataset


A = [[0, 0], [0, 1]]  # 3 pixels of class 0, 1 of class 1: 4 labelled pixels
B = [[1, 1, 2], [2, 255, 255]]  # 2 of class 1, 2 of class 2, 2 ignored: 4 labelled pixels


def test_counts_take_the_pixels_of_the_images_each_class_occurs_in():
    counts = kseg.data.class_pixel_counts(_masks(A, B), num_classes=3)
    assert counts["class_pixels"].tolist() == [3, 3, 2]
    # class 0 occurs in A (4 pixels), class 1 in A and B (8), class 2 in B (4)
    assert counts["image_pixels"].tolist() == [4, 8, 4]


def test_median_frequency_weights_by_hand():
    counts = kseg.data.class_pixel_counts(_masks(A, B), num_classes=3)
    # freq = 3/4, 3/8, 2/4; median 1/2; weight = median / freq
    np.testing.assert_allclose(
        kseg.data.median_frequency_weights(counts), [2 / 3, 4 / 3, 1.0], rtol=1e-12
    )


def test_pairs_are_counted_by_their_mask():
    pairs = _masks(A).map(lambda mask: (tf.zeros((2, 2, 3)), mask))
    assert kseg.data.class_pixel_counts(pairs, 2)["class_pixels"].tolist() == [3, 1]


def test_absent_class_and_stray_label_are_refused():
    counts = kseg.data.class_pixel_counts(_masks(A), num_classes=3)
    with pytest.raises(ValueError, match=r"\[2\] absent"):
        kseg.data.median_frequency_weights(counts)
    with pytest.raises(ValueError, match="label 7"):
        kseg.data.class_pixel_counts(_masks([[0, 7]]), num_classes=3)
