import math

import numpy as np
import pytest
import tensorflow as tf

from kseg.detection.boxes import (
    as_boxes,
    box_area,
    box_iou,
    boxes_from_masks,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    image_boxes,
    numpy_boxes_from_masks,
)


def numpy_iou(a, b):
    """Brute-force pairwise IoU, one pair at a time."""
    out = np.zeros((len(a), len(b)), np.float64)
    for i, (ay1, ax1, ay2, ax2) in enumerate(a):
        for j, (by1, bx1, by2, bx2) in enumerate(b):
            ih = max(0.0, min(ay2, by2) - max(ay1, by1))
            iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            inter = ih * iw
            union = (ay2 - ay1) * (ax2 - ax1) + (by2 - by1) * (bx2 - bx1) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


SPECIAL_A = np.array(
    [
        [0, 0, 10, 10],  # identical to B[0]
        [2, 2, 4, 4],  # nested inside B[0]
        [20, 20, 30, 30],  # disjoint from B[0]
        [5, 5, 5, 5],  # zero area
        [0, 0, 0, 0],  # padding row
        [10, 0, 20, 10],  # touches B[0] along an edge
    ],
    np.float32,
)
SPECIAL_B = np.array([[0, 0, 10, 10], [5, 5, 5, 5], [0, 0, 0, 0], [5, 0, 15, 10]], np.float32)


def test_iou_special_cases_match_brute_force():
    got = box_iou(SPECIAL_A, SPECIAL_B).numpy()
    np.testing.assert_allclose(got, numpy_iou(SPECIAL_A, SPECIAL_B), atol=1e-6)
    assert got[0, 0] == pytest.approx(1.0)
    assert got[1, 0] == pytest.approx(4.0 / 100.0)
    assert got[2, 0] == 0.0 and got[5, 0] == 0.0
    assert np.all(got[3] == 0.0) and np.all(got[4] == 0.0)
    assert np.all(np.isfinite(got))


def test_iou_random_batched_with_broadcasting():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, size=(2, 7, 2, 2))
    a = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1).astype(np.float32)
    b = np.concatenate([rng.uniform(0, 30, (5, 2)), rng.uniform(30, 60, (5, 2))], -1)
    b = b.astype(np.float32)
    got = box_iou(a, b[None]).numpy()
    assert got.shape == (2, 7, 5)
    for batch in range(2):
        np.testing.assert_allclose(got[batch], numpy_iou(a[batch], b), atol=1e-5)


def test_box_area_clamps_inverted_boxes_and_casts():
    boxes = tf.constant([[1, 2, 4, 7], [5, 5, 3, 9]], tf.bfloat16)
    area = box_area(boxes)
    assert area.dtype == tf.float32
    np.testing.assert_allclose(area.numpy(), [15.0, 0.0])


def test_encode_matches_hand_computed_deltas():
    anchor = [[10.0, 20.0, 30.0, 60.0]]  # centre (20, 40), h 20, w 40
    box = [[14.0, 16.0, 54.0, 36.0]]  # centre (34, 26), h 40, w 20
    expected = [(34 - 20) / 20, (26 - 40) / 40, math.log(2.0), math.log(0.5)]
    np.testing.assert_allclose(encode_boxes(box, anchor).numpy()[0], expected, rtol=1e-6)
    weighted = encode_boxes(box, anchor, weights=(10.0, 10.0, 5.0, 5.0)).numpy()[0]
    np.testing.assert_allclose(weighted, np.multiply(expected, [10, 10, 5, 5]), rtol=1e-6)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip(weights):
    rng = np.random.default_rng(1)
    anchors = np.concatenate([rng.uniform(0, 100, (3, 50, 2)), rng.uniform(5, 80, (3, 50, 2))], -1)
    anchors[..., 2:] += anchors[..., :2]
    boxes = np.concatenate([rng.uniform(0, 100, (3, 50, 2)), rng.uniform(5, 80, (3, 50, 2))], -1)
    boxes[..., 2:] += boxes[..., :2]
    deltas = encode_boxes(boxes.astype(np.float32), anchors.astype(np.float32), weights)
    back = decode_boxes(deltas, anchors.astype(np.float32), weights).numpy()
    np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_decode_clamps_size_deltas():
    anchor = tf.constant([[0.0, 0.0, 16.0, 16.0]])
    huge = decode_boxes([[0.0, 0.0, 50.0, 50.0]], anchor).numpy()[0]
    assert np.all(np.isfinite(huge))
    np.testing.assert_allclose(huge[2] - huge[0], 1000.0, rtol=1e-4)
    np.testing.assert_allclose(huge[3] - huge[1], 1000.0, rtol=1e-4)


def test_decode_broadcasts_anchors_over_batch():
    anchors = tf.constant([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 25.0, 15.0]])
    deltas = tf.zeros([4, 2, 4])
    np.testing.assert_allclose(
        decode_boxes(deltas, anchors).numpy(), np.broadcast_to(anchors, (4, 2, 4))
    )


def test_clip_boxes_with_tensor_sizes_in_graph():
    signature = [tf.TensorSpec([None, 4]), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)]

    @tf.function(input_signature=signature)
    def clip(boxes, height, width):
        return clip_boxes(boxes, height, width)

    got = clip(tf.constant([[-3.0, 5.0, 70.0, 200.0], [1.0, -1.0, 2.0, 3.0]]), 64, 128).numpy()
    np.testing.assert_allclose(got, [[0.0, 5.0, 64.0, 128.0], [1.0, 0.0, 2.0, 3.0]])


def test_bad_box_shape_is_named():
    with pytest.raises(ValueError, match="boxes_a"):
        box_iou(np.zeros((3, 5), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="weights"):
        encode_boxes([[0.0, 0.0, 1.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]], weights=(1.0, 1.0))


def _numpy_extents(masks):
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.nonzero(mask)
        if rows.size:
            boxes[i] = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    return boxes


def _test_masks():
    rng = np.random.default_rng(3)
    masks = np.zeros((5, 9, 13), np.uint8)
    masks[0] = 1  # whole image -> [0, 0, H, W]
    masks[1, 4, 7] = 1  # one pixel
    masks[2] = rng.random((9, 13)) < 0.1
    masks[3, 2:5, 0:13] = 1
    # masks[4] stays empty
    return masks


def test_boxes_from_masks_matches_numpy_extents():
    masks = _test_masks()
    boxes = boxes_from_masks(tf.constant(masks)).numpy()
    np.testing.assert_array_equal(boxes, _numpy_extents(masks))
    np.testing.assert_array_equal(boxes[0], [0, 0, 9, 13])
    np.testing.assert_array_equal(boxes[4], [0, 0, 0, 0])


def test_numpy_boxes_from_masks_stays_in_numpy():
    masks = _test_masks()
    boxes = numpy_boxes_from_masks(masks.astype(bool))
    assert isinstance(boxes, np.ndarray) and boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, _numpy_extents(masks))
    assert numpy_boxes_from_masks(np.zeros((0, 4, 4), bool)).shape == (0, 4)
    assert boxes_from_masks(np.zeros((0, 4, 4), bool)).shape == (0, 4)


def test_boxes_from_masks_in_a_graph_with_unknown_sizes():
    signature = [tf.TensorSpec((None, None, None), tf.uint8)]
    boxes = tf.function(boxes_from_masks, input_signature=signature)(tf.constant(_test_masks()))
    np.testing.assert_array_equal(boxes.numpy(), _numpy_extents(_test_masks()))


def test_as_boxes_checks_rank_and_last_axis():
    assert as_boxes(np.zeros((2, 3, 4), np.int32), rank=3).dtype == tf.float32
    with pytest.raises(ValueError, match=r"`gt_boxes` must have rank 3.*gt_boxes.shape=\(3, 4\)"):
        as_boxes(np.zeros((3, 4)), "gt_boxes", rank=3)
    with pytest.raises(ValueError, match=r"`anchors` must have a last axis of 4"):
        as_boxes(np.zeros((3, 5)), "anchors")
    with pytest.raises(ValueError, match="rank >= 1"):
        as_boxes(1.0)


def test_image_boxes_accepts_boxes_reaching_past_the_border():
    boxes = image_boxes([[-2, 1, 5, 7], [6, 6, 12, 12]], height=8, width=8)
    assert boxes.dtype == np.float64
    np.testing.assert_array_equal(boxes, [[-2, 1, 5, 7], [6, 6, 12, 12]])
    assert image_boxes([], 8, 8).shape == (0, 4)


@pytest.mark.parametrize(
    "boxes, message",
    [
        ([[0, 0, 1]], r"must be \(N, 4\)"),
        ([[0, 0, 4, 4], [3, 1, 3, 5]], r"`boxes`\[1\] is not a box.*\[3.0, 1.0, 3.0, 5.0\]"),
        ([[0, 0, np.nan, 4]], "is not a box"),
        ([[8, 0, 9, 4]], r"entirely outside the 8x8 image"),
        ([[0, -5, 4, 0]], r"entirely outside"),
    ],
)
def test_image_boxes_names_the_bad_box(boxes, message):
    with pytest.raises(ValueError, match=message):
        image_boxes(boxes, height=8, width=8)
