"""select_proposals against torchvision's NMS keep sets and a numpy version of the FPN rule."""

import numpy as np
import pytest
import tensorflow as tf

from kseg.detection.proposals import select_proposals

MAX_LOG_SCALE = np.log(1000.0 / 16.0)


@pytest.fixture
def nms_refs(shared_dir):
    path = shared_dir / "refs" / "nms.npz"
    if not path.is_file():
        pytest.skip(f"reference file {path} is absent")
    return np.load(path)


def _logit(probability):
    probability = np.asarray(probability, np.float64)
    return np.log(probability / (1.0 - probability)).astype(np.float32)


def _one_level(boxes, scores, **kwargs):
    """select_proposals on a single image and level whose anchors are `boxes` (zero deltas)."""
    boxes = np.asarray(boxes, np.float32)
    proposals, out_scores = select_proposals(
        [tf.constant(_logit(scores)[None])],
        [tf.zeros((1, len(boxes), 4))],
        [tf.constant(boxes)],
        80,
        80,
        **kwargs,
    )
    return proposals.numpy()[0], out_scores.numpy()[0]


@pytest.mark.parametrize("iou", [3, 5, 7])
def test_nms_keeps_what_torchvision_nms_keeps(nms_refs, iou):
    boxes, scores = nms_refs["boxes_yxyx"], nms_refs["scores"]
    assert boxes.max() < 80  # nothing gets clipped in an 80 x 80 image
    keep = nms_refs[f"keep_iou{iou}"]
    proposals, out_scores = _one_level(
        boxes, scores, pre_nms_top_n=40, post_nms_top_n=40, nms_iou=iou / 10
    )
    np.testing.assert_allclose(proposals[: len(keep)], boxes[keep], atol=1e-4)
    np.testing.assert_allclose(out_scores[: len(keep)], scores[keep], atol=1e-6)
    assert not proposals[len(keep) :].any() and not out_scores[len(keep) :].any()


def test_iou_exactly_at_the_threshold_keeps_both_boxes(nms_refs):
    proposals, scores = _one_level(
        nms_refs["tie_boxes"], nms_refs["tie_scores"], post_nms_top_n=3, nms_iou=0.5
    )
    np.testing.assert_allclose(proposals[:2], nms_refs["tie_boxes"][nms_refs["tie_keep_iou5"]])
    assert scores[2] == 0


def test_boxes_that_clipping_empties_are_dropped_by_default():
    """torchvision's RPN keeps a clipped box only if both sides are at least 1e-3 pixels."""
    rng = np.random.default_rng(5)
    centres = rng.uniform(-40, 120, (300, 2))
    sizes = rng.uniform(4, 40, (300, 2))
    anchors = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype(np.float32)
    scores = rng.uniform(0.05, 0.95, 300)
    # nms_iou=1 suppresses nothing, so the output is every kept box, best first.
    proposals, out_scores = _one_level(
        anchors, scores, pre_nms_top_n=300, post_nms_top_n=300, nms_iou=1.0
    )
    clipped = np.clip(anchors, 0, 80)
    sides = clipped[:, 2:] - clipped[:, :2]
    keep = (sides >= 1e-3).all(axis=1)
    assert 0 < (~keep).sum() < 300, "the case must hold boxes that clipping empties"
    order = np.argsort(-scores[keep], kind="stable")
    count = int(keep.sum())
    np.testing.assert_allclose(proposals[:count], clipped[keep][order], atol=1e-4)
    np.testing.assert_allclose(out_scores[:count], scores[keep][order], atol=1e-5)
    assert not out_scores[count:].any()
    kept_sides = proposals[:count, 2:] - proposals[:count, :2]
    assert (kept_sides >= 1e-3).all()


def test_zero_deltas_return_the_anchors_sorted_by_score():
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 50, (12, 2))
    anchors = np.concatenate([corners, corners + rng.uniform(4, 30, (12, 2))], 1)
    logits = rng.normal(size=12).astype(np.float32)
    proposals, scores = select_proposals(
        [tf.constant(logits[None])],
        [tf.zeros((1, 12, 4))],
        [tf.constant(anchors, tf.float32)],
        80,
        80,
        nms_iou=1.0,  # IoU is never above 1, so nothing is suppressed
    )
    order = np.argsort(-logits)
    np.testing.assert_allclose(proposals[0, :12], anchors[order], atol=1e-4)
    np.testing.assert_allclose(scores[0, :12], 1 / (1 + np.exp(-logits[order])), atol=1e-6)


def _np_decode(deltas, anchors):
    heights, widths = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cy = anchors[:, 0] + heights / 2 + deltas[:, 0] * heights
    cx = anchors[:, 1] + widths / 2 + deltas[:, 1] * widths
    h = heights * np.exp(np.minimum(deltas[:, 2], MAX_LOG_SCALE))
    w = widths * np.exp(np.minimum(deltas[:, 3], MAX_LOG_SCALE))
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], 1)


def _np_area(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _np_iou(box, boxes):
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), 1)
    union = _np_area(box) + _np_area(boxes) - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def _np_greedy_nms(boxes, scores, iou):
    order = np.argsort(-scores, kind="stable")
    keep = []
    for i in order:
        if all(_np_iou(boxes[i], boxes[[k]])[0] <= iou for k in keep):
            keep.append(i)
    return keep


def _np_select(logits, deltas, anchors, height, width, pre, post, iou, min_size):
    """The FPN proposal rule for one image, written from its description with numpy."""
    all_boxes, all_scores = [], []
    for level_logits, level_deltas, level_anchors in zip(logits, deltas, anchors):
        top = np.argsort(-level_logits, kind="stable")[:pre]
        boxes = _np_decode(level_deltas[top], level_anchors[top])
        boxes = np.clip(boxes, 0, [height, width, height, width])
        scores = 1 / (1 + np.exp(-level_logits[top].astype(np.float64)))
        big = (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)
        boxes, scores = boxes[big], scores[big]
        keep = _np_greedy_nms(boxes, scores, iou)
        all_boxes.append(boxes[keep])
        all_scores.append(scores[keep])
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    order = np.argsort(-scores, kind="stable")[:post]
    return boxes[order], scores[order]


def _random_rpn_outputs(seed, batch, level_sizes, image_size):
    rng = np.random.default_rng(seed)
    logits, deltas, anchors = [], [], []
    for size in level_sizes:
        corners = rng.uniform(-8, image_size - 8, (size, 2))
        anchors.append(
            np.concatenate([corners, corners + rng.uniform(3, 32, (size, 2))], 1).astype(np.float32)
        )
        logits.append(rng.normal(size=(batch, size)).astype(np.float32))
        deltas.append((0.3 * rng.normal(size=(batch, size, 4))).astype(np.float32))
    return logits, deltas, anchors


def test_matches_a_numpy_implementation_of_the_fpn_rule():
    image_size, pre, post, iou, min_size = 48, 15, 25, 0.5, 4.0
    logits, deltas, anchors = _random_rpn_outputs(3, 2, (30, 20, 12), image_size)
    proposals, scores = select_proposals(
        [tf.constant(x) for x in logits],
        [tf.constant(x) for x in deltas],
        [tf.constant(x) for x in anchors],
        image_size,
        image_size,
        pre_nms_top_n=pre,
        post_nms_top_n=post,
        nms_iou=iou,
        min_size=min_size,
    )
    assert proposals.shape == (2, post, 4) and scores.shape == (2, post)
    for image in range(2):
        expected_boxes, expected_scores = _np_select(
            [x[image] for x in logits],
            [x[image] for x in deltas],
            anchors,
            image_size,
            image_size,
            pre,
            post,
            iou,
            min_size,
        )
        count = len(expected_scores)
        assert 0 < count
        np.testing.assert_allclose(proposals[image, :count], expected_boxes, atol=1e-4)
        np.testing.assert_allclose(scores[image, :count], expected_scores, atol=1e-6)
        assert not proposals[image, count:].numpy().any()
        assert not scores[image, count:].numpy().any()


def test_post_nms_top_n_bounds_the_output_and_keeps_the_best():
    logits, deltas, anchors = _random_rpn_outputs(4, 1, (40, 40), 64)
    all_boxes, all_scores = select_proposals(
        logits, deltas, anchors, 64, 64, post_nms_top_n=200, nms_iou=0.7
    )
    survivors = int(np.count_nonzero(all_scores[0]))
    assert survivors > 10
    boxes, scores = select_proposals(
        logits, deltas, anchors, 64, 64, post_nms_top_n=10, nms_iou=0.7
    )
    assert boxes.shape == (1, 10, 4) and np.count_nonzero(scores[0]) == 10
    np.testing.assert_allclose(boxes[0], all_boxes[0, :10], atol=1e-5)


def test_empty_inputs_give_zero_padding_without_nan():
    empty = select_proposals(
        [tf.zeros((2, 0))], [tf.zeros((2, 0, 4))], [tf.zeros((0, 4))], 64, 64, post_nms_top_n=5
    )
    # Every box is narrower than min_size, so all of them are dropped.
    logits, deltas, anchors = _random_rpn_outputs(5, 2, (10,), 64)
    tiny = select_proposals(logits, deltas, anchors, 64, 64, post_nms_top_n=5, min_size=100.0)
    for proposals, scores in (empty, tiny):
        assert proposals.shape == (2, 5, 4) and scores.shape == (2, 5)
        assert not proposals.numpy().any() and not scores.numpy().any()


def test_graph_with_dynamic_sizes_matches_eager_and_blocks_gradients():
    logits, deltas, anchors = _random_rpn_outputs(6, 2, (24, 8), 64)
    spec = [
        [tf.TensorSpec([None, None], tf.float32)] * 2,
        [tf.TensorSpec([None, None, 4], tf.float32)] * 2,
        [tf.TensorSpec([None, 4], tf.float32)] * 2,
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.int32),
    ]
    graph = tf.function(
        lambda o, d, a, h, w: select_proposals(o, d, a, h, w, post_nms_top_n=12),
        input_signature=spec,
    )
    eager = select_proposals(logits, deltas, anchors, 64, 64, post_nms_top_n=12)
    traced = graph(logits, deltas, anchors, tf.constant(64), tf.constant(64))
    for a, b in zip(eager, traced):
        np.testing.assert_allclose(a, b, atol=1e-6)

    variables = [tf.Variable(x) for x in logits + deltas]
    with tf.GradientTape() as tape:
        boxes, scores = select_proposals(
            variables[:2], variables[2:], anchors, 64, 64, post_nms_top_n=12
        )
        total = tf.reduce_sum(boxes) + tf.reduce_sum(scores)
    assert all(g is None for g in tape.gradient(total, variables))


def test_mixed_precision_inputs_are_computed_in_float32():
    logits, deltas, anchors = _random_rpn_outputs(7, 1, (16,), 64)
    boxes, scores = select_proposals(
        [tf.constant(logits[0], tf.bfloat16)],
        [tf.constant(deltas[0], tf.bfloat16)],
        anchors,
        64,
        64,
    )
    assert boxes.dtype == tf.float32 and scores.dtype == tf.float32
    assert np.isfinite(boxes.numpy()).all()


def test_bad_arguments_are_named():
    logits, deltas, anchors = _random_rpn_outputs(8, 1, (4, 4), 64)
    with pytest.raises(ValueError, match="same number of levels"):
        select_proposals(logits, deltas[:1], anchors, 64, 64)
    with pytest.raises(ValueError, match="post_nms_top_n"):
        select_proposals(logits, deltas, anchors, 64, 64, post_nms_top_n=0)
    with pytest.raises(ValueError, match="nms_iou"):
        select_proposals(logits, deltas, anchors, 64, 64, nms_iou=1.5)
    with pytest.raises(TypeError, match="objectness"):
        select_proposals(logits[0], deltas, anchors, 64, 64)


def test_saved_model_export_with_dynamic_image_size(tmp_path):
    class Proposals(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.float32),
                tf.TensorSpec([None, None, 4], tf.float32),
                tf.TensorSpec([None, 4], tf.float32),
                tf.TensorSpec([None, None, None, 3], tf.float32),
            ]
        )
        def __call__(self, logits, deltas, anchors, images):
            shape = tf.shape(images)
            return select_proposals(
                [logits], [deltas], [anchors], shape[1], shape[2], post_nms_top_n=8
            )

    tf.saved_model.save(Proposals(), str(tmp_path))
    restored = tf.saved_model.load(str(tmp_path))
    logits, deltas, anchors = _random_rpn_outputs(9, 2, (20,), 64)
    for height, width in ((64, 64), (32, 96)):
        expected = select_proposals(logits, deltas, anchors, height, width, post_nms_top_n=8)
        found = restored(logits[0], deltas[0], anchors[0], tf.zeros((2, height, width, 3)))
        for a, b in zip(expected, found):
            np.testing.assert_allclose(a, b, atol=1e-6)
        assert float(tf.reduce_max(found[0][..., 2])) <= height
