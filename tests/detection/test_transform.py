"""The min/max-side resize and box mapping against torchvision's GeneralizedRCNNTransform."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kseg.detection.transform import min_max_resized_size, rescale_boxes, resize_min_max_side

# Written by tests/fixtures/make_torchvision_detection_parts.py with torchvision 0.29.1.
PARTS = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision_detection_parts.npz"


def test_resized_sizes_are_torchvisions():
    parts = np.load(PARTS)
    for (height, width), (low, high), expected in zip(
        parts["resize_inputs"], parts["resize_limits"], parts["resize_outputs"], strict=True
    ):
        size = [int(side) for side in min_max_resized_size(height, width, low, high)]
        assert size == expected.tolist(), (height, width, low, high)


def test_resize_values_are_torchs_bilinear_interpolation():
    parts = np.load(PARTS)
    image = parts["resize_image"].transpose(0, 2, 3, 1)
    # torch's interpolate(size=(40, 60), mode="bilinear", align_corners=False) of the fixture.
    resized = tf.image.resize(image, (40, 60), method="bilinear").numpy()
    np.testing.assert_allclose(resized, parts["resized_image"].transpose(0, 2, 3, 1), atol=1e-6)
    assert resize_min_max_side(image, 40, 60).shape == (1, 40, 53, 3)


def test_boxes_map_back_by_the_size_ratio():
    boxes = tf.constant([[[10.0, 20.0, 30.0, 40.0]]])
    mapped = rescale_boxes(boxes, 160, 212, 113, 150).numpy()
    np.testing.assert_allclose(
        mapped, [[[10 * 113 / 160, 20 * 150 / 212, 30 * 113 / 160, 40 * 150 / 212]]], rtol=1e-6
    )


def test_bad_limits_are_named():
    with pytest.raises(ValueError, match="min_side=900, max_side=800"):
        min_max_resized_size(10, 10, 900, 800)
