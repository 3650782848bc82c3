from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kseg.detection.anchors import generate_anchors, generate_grid_anchors

STRIDES = (4, 8, 16, 32, 64)
SIZES = (32, 64, 128, 256, 512)
RATIOS = (0.5, 1.0, 2.0)


def test_count_area_ratio_and_centres_per_level():
    height, width = 128, 192
    levels = generate_anchors(height, width)
    assert len(levels) == 5
    assert all(level.dtype == tf.float32 for level in levels)
    for anchors, stride, size in zip(levels, STRIDES, SIZES):
        anchors = anchors.numpy().astype(np.float64)
        rows, cols = height // stride, width // stride
        assert anchors.shape == (rows * cols * 3, 4)
        h = anchors[:, 2] - anchors[:, 0]
        w = anchors[:, 3] - anchors[:, 1]
        np.testing.assert_allclose(h * w, size**2, rtol=1e-4)
        np.testing.assert_allclose(h / w, np.tile(RATIOS, rows * cols), rtol=1e-4)
        grid = anchors.reshape(rows, cols, 3, 4)
        centre_y = (grid[..., 0] + grid[..., 2]) / 2
        centre_x = (grid[..., 1] + grid[..., 3]) / 2
        expected_y = (np.arange(rows) + 0.5)[:, None, None] * stride
        expected_x = (np.arange(cols) + 0.5)[None, :, None] * stride
        np.testing.assert_allclose(centre_y, np.broadcast_to(expected_y, centre_y.shape), atol=1e-3)
        np.testing.assert_allclose(centre_x, np.broadcast_to(expected_x, centre_x.shape), atol=1e-3)


def test_order_matches_rpn_head_reshape():
    # A head output (1, Hl, Wl, A * 4) reshaped to (1, Hl * Wl * A, 4) must line up row by row.
    stride, rows, cols = 16, 4, 6
    anchors = generate_anchors(rows * stride, cols * stride, strides=(stride,), sizes=(64,))[0]
    per_cell = tf.reshape(anchors, [rows, cols, 3 * 4]).numpy()
    for i in range(rows):
        for j in range(cols):
            cell = per_cell[i, j].reshape(3, 4)
            np.testing.assert_allclose((cell[:, 0] + cell[:, 2]) / 2, (i + 0.5) * stride, atol=1e-4)
            np.testing.assert_allclose((cell[:, 1] + cell[:, 3]) / 2, (j + 0.5) * stride, atol=1e-4)
            heights = cell[:, 2] - cell[:, 0]
            assert heights[0] < heights[1] < heights[2]  # ratios 0.5, 1, 2 in order


def test_tensor_sizes_under_tf_function():
    @tf.function(input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    def count(height, width):
        return [tf.shape(level)[0] for level in generate_anchors(height, width)]

    got = [int(n) for n in count(tf.constant(256), tf.constant(64))]
    assert got == [(256 // s) * (64 // s) * 3 for s in STRIDES]


def test_mismatched_levels_are_rejected():
    with pytest.raises(ValueError, match="strides and sizes"):
        generate_anchors(64, 64, strides=(4, 8), sizes=(32,))
    with pytest.raises(ValueError, match="aspect_ratios"):
        generate_anchors(64, 64, aspect_ratios=(0.0,))


# Written by tests/fixtures/make_torchvision_detection_parts.py with torchvision 0.29.1.
PARTS = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision_detection_parts.npz"


@pytest.mark.parametrize("index", [0, 1])
def test_grid_anchors_are_torchvisions_anchor_generator(index):
    parts = np.load(PARTS)
    height, width = parts[f"anchor_input{index}"]
    grids = parts[f"anchor_grids{index}"]
    levels = generate_grid_anchors(height, width, [tuple(grid) for grid in grids])
    for level, anchors in enumerate(levels):
        expected = parts[f"anchors{index}_{level}"][:, [1, 0, 3, 2]]
        np.testing.assert_array_equal(anchors.numpy(), expected)


def test_grid_anchor_strides_follow_the_feature_grid():
    # A 96-pixel side has a 2-cell P6 grid: torchvision's stride is 96 // 2 = 48, not 64.
    (level,) = generate_grid_anchors(96, 64, [(2, 1)], sizes=(512,), aspect_ratios=(1.0,))
    np.testing.assert_array_equal(level.numpy()[:, 0], [-256.0, -256.0 + 48.0])
    with pytest.raises(ValueError, match="one anchor size per level"):
        generate_grid_anchors(64, 64, [(16, 16)], sizes=(32, 64))
