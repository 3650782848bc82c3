import numpy as np
import pytest
import tensorflow as tf

from kseg.detection.anchors import generate_anchors
from kseg.detection.boxes import decode_boxes
from kseg.detection.targets import roi_targets, rpn_targets


def numpy_iou(a, b):
    """Pairwise IoU in float64, 0 where the union is empty."""
    a = np.asarray(a, np.float64)[:, None, :]
    b = np.asarray(b, np.float64)[None, :, :]
    ih = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iw = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ih * iw
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def rpn_rule(anchors, boxes, positive_iou=0.7, negative_iou=0.3):
    """Ren et al.'s labelling of every anchor, written independently in numpy (no sampling).

    Returns labels, the best-IoU box per anchor, and a mask of anchors whose IoU with some box
    is within float32 rounding of that box's maximum without equalling it in float64: whether
    such a near-tie counts as a tie depends on the precision, so either label is accepted.
    """
    if len(boxes) == 0:
        none = np.zeros(len(anchors), bool)
        return np.zeros(len(anchors), np.int32), np.zeros(len(anchors), np.int64), none
    iou = numpy_iou(anchors, boxes)
    best = iou.max(axis=1)
    per_gt = iou.max(axis=0)[None]
    forced = ((iou == per_gt) & (per_gt > 0)).any(axis=1)
    near = ((np.abs(iou - per_gt) <= 1e-5 * per_gt) & (iou != per_gt)).any(axis=1)
    labels = np.full(len(anchors), -1, np.int32)
    labels[best < negative_iou] = 0
    labels[(best >= positive_iou) | forced] = 1
    return labels, iou.argmax(axis=1), near


ANCHORS = tf.concat(generate_anchors(128, 128), axis=0)
GT_BOXES = np.array(
    [
        [[10, 20, 60, 90], [70, 64, 120, 100], [3, 100, 9, 106]],  # the last is tiny
        [[30, 30, 94, 94], [0, 0, 0, 0], [0, 0, 0, 0]],
    ],
    np.float32,
)
GT_CLASSES = np.array([[1, 2, 3], [4, -1, -1]], np.int32)


def valid_boxes(batch):
    return GT_BOXES[batch][GT_CLASSES[batch] >= 1]


def test_rpn_labels_without_subsampling_equal_the_paper_rule():
    num_anchors = int(ANCHORS.shape[0])
    labels, _ = rpn_targets(
        ANCHORS, GT_BOXES, GT_CLASSES, num_samples=num_anchors, positive_fraction=1.0, seed=3
    )
    for batch in range(2):
        expected, _, near = rpn_rule(ANCHORS.numpy(), valid_boxes(batch))
        got = labels.numpy()[batch]
        np.testing.assert_array_equal(got[~near], expected[~near])
        assert np.all(got[near] >= expected[near])


def test_rpn_sampling_respects_rule_caps_and_gives_every_gt_a_positive():
    labels, deltas = rpn_targets(ANCHORS, GT_BOXES, GT_CLASSES, seed=0)
    labels, deltas = labels.numpy(), deltas.numpy()
    anchors = ANCHORS.numpy()
    for batch in range(2):
        boxes = valid_boxes(batch)
        rule, matched, near = rpn_rule(anchors, boxes)
        got = labels[batch]
        # A near-tie may be labelled positive; otherwise it follows the thresholds.
        assert np.all(((rule == 1) | near)[got == 1]) and np.all(rule[got == 0] == 0)
        positives, negatives = int((got == 1).sum()), int((got == 0).sum())
        assert positives <= 128 and positives + negatives <= 256
        # Fewer than 128 rule positives here, so all of them survive and negatives fill up.
        assert int((rule == 1).sum()) <= positives <= int(((rule == 1) | near).sum()) < 128
        assert negatives == 256 - positives
        iou = numpy_iou(anchors, boxes)
        for gt in range(len(boxes)):
            near_best = iou[:, gt] >= iou[:, gt].max() * (1 - 1e-5)
            assert got[near_best].max() == 1, f"GT {gt} has no positive"
        # Positive deltas decode back to the anchor's best-IoU box; the rest are zero.
        decoded = decode_boxes(deltas[batch], anchors).numpy()
        np.testing.assert_allclose(decoded[got == 1], boxes[matched[got == 1]], atol=1e-3)
        assert np.all(deltas[batch][got != 1] == 0.0)
    assert valid_boxes(0)[2].tolist() == [3, 100, 9, 106]
    assert numpy_iou(anchors, valid_boxes(0)[2:]).max() < 0.3  # positive only by the max rule


def test_rpn_caps_positives_at_half_the_sample():
    big = np.array([[[0, 0, 128, 128], [16, 16, 112, 112]]], np.float32)
    labels, _ = rpn_targets(ANCHORS, big, [[1, 1]], positive_iou=0.2, negative_iou=0.1, seed=1)
    rule, _, _ = rpn_rule(ANCHORS.numpy(), big[0], 0.2, 0.1)
    assert (rule == 1).sum() > 128
    assert int((labels.numpy() == 1).sum()) == 128
    assert int((labels.numpy() == 0).sum()) == 128


def test_rpn_zero_ground_truth_gives_negatives_and_finite_deltas():
    boxes = np.zeros((2, 2, 4), np.float32)
    boxes[0, 0] = [10, 10, 50, 50]
    classes = np.array([[1, -1], [-1, -1]], np.int32)
    labels, deltas = rpn_targets(ANCHORS, boxes, classes, seed=2)
    assert set(np.unique(labels.numpy()[1])) <= {0, -1}
    assert int((labels.numpy()[1] == 0).sum()) == 256
    assert np.all(np.isfinite(deltas.numpy()))
    # No instance rows at all (M = 0) also works.
    labels, deltas = rpn_targets(ANCHORS, np.zeros((1, 0, 4), np.float32), np.zeros((1, 0)), seed=2)
    assert int((labels.numpy() == 0).sum()) == 256 and np.all(deltas.numpy() == 0.0)


def test_rpn_seed_reproducible_and_graph_with_dynamic_shapes():
    first = rpn_targets(ANCHORS, GT_BOXES, GT_CLASSES, seed=7)[0].numpy()
    again = rpn_targets(ANCHORS, GT_BOXES, GT_CLASSES, seed=7)[0].numpy()
    other = rpn_targets(ANCHORS, GT_BOXES, GT_CLASSES, seed=8)[0].numpy()
    np.testing.assert_array_equal(first, again)
    assert np.any(first != other)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4]),
            tf.TensorSpec([None, None, 4]),
            tf.TensorSpec([None, None], tf.int32),
        ]
    )
    def graph(anchors, boxes, classes):
        return rpn_targets(anchors, boxes, classes, seed=7)

    labels, _ = graph(ANCHORS, GT_BOXES, GT_CLASSES)
    np.testing.assert_array_equal(labels.numpy(), first)
    labels, _ = graph(ANCHORS[:600], GT_BOXES[:1, :1], GT_CLASSES[:1, :1])
    assert labels.shape == (1, 600)


# RoI targets: a 64 x 96 image, two images with different instance counts.
HEIGHT, WIDTH, SIZE = 64, 96, 28


def rectangle_mask(y1, x1, y2, x2):
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def roi_ground_truth():
    boxes = np.array(
        [
            [[8, 16, 40, 48], [30, 50, 60, 90], [0, 0, 0, 0]],
            [[4, 4, 36, 60], [0, 0, 0, 0]] + [[0] * 4],
        ],
        np.float32,
    )
    classes = np.array([[3, 5, -1], [2, -1, -1]], np.int32)
    masks = np.zeros((2, 3, HEIGHT, WIDTH), np.uint8)
    masks[0, 0] = rectangle_mask(8, 16, 40, 48)
    masks[0, 1] = rectangle_mask(30, 50, 60, 70)  # only the left half of its box
    masks[0, 1, 45:60, 70:90] = 1  # plus a lower-right block: an L shape
    masks[1, 0] = rectangle_mask(4, 4, 36, 60)
    return boxes, classes, masks


def jittered_proposals(boxes, count, rng):
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], -1)
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], -1)
    pick = rng.integers(0, len(boxes), count)
    c = centre[pick] + rng.normal(0, 0.15, (count, 2)) * size[pick]
    s = size[pick] * np.exp(rng.normal(0, 0.25, (count, 2)))
    out = np.concatenate([c - s / 2, c + s / 2], -1)
    return np.clip(out, 0, [HEIGHT, WIDTH, HEIGHT, WIDTH]).astype(np.float32)


def numpy_crop(mask, roi, size):
    """Bilinear samples at the centres of a size x size grid over roi, 0 outside pixel centres."""
    y1, x1, y2, x2 = (float(v) for v in roi)
    ys = y1 + (np.arange(size) + 0.5) * (y2 - y1) / size - 0.5
    xs = x1 + (np.arange(size) + 0.5) * (x2 - x1) / size - 0.5
    out = np.zeros((size, size))
    height, width = mask.shape
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            if not (0 <= y <= height - 1 and 0 <= x <= width - 1):
                continue
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1_, x1_ = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
            fy, fx = y - y0, x - x0
            top = mask[y0, x0] * (1 - fx) + mask[y0, x1_] * fx
            bottom = mask[y1_, x0] * (1 - fx) + mask[y1_, x1_] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.fixture(scope="module")
def roi_case():
    boxes, classes, masks = roi_ground_truth()
    rng = np.random.default_rng(0)
    proposals = np.zeros((2, 260, 4), np.float32)  # trailing zero rows are padding
    proposals[0, :250] = jittered_proposals(boxes[0, :2], 250, rng)
    proposals[1, :40] = jittered_proposals(boxes[1, :1], 40, rng)
    out = roi_targets(proposals, boxes, classes, masks, seed=5)
    return proposals, boxes, classes, masks, {k: v.numpy() for k, v in out.items()}


def test_roi_sample_counts_follow_the_1_to_3_rule(roi_case):
    proposals, boxes, classes, _, out = roi_case
    assert out["rois"].shape == (2, 512, 4) and out["mask_targets"].shape == (2, 512, SIZE, SIZE)
    for batch in range(2):
        valid = classes[batch] >= 1
        real = proposals[batch][np.any(proposals[batch] != 0, axis=1)]
        candidates = np.concatenate([real, boxes[batch][valid]])
        best = numpy_iou(candidates, boxes[batch][valid]).max(axis=1)
        fg, bg = int((best >= 0.5).sum()), int((best < 0.5).sum())
        got = out["classes"][batch]
        positives = int((got >= 1).sum())
        assert positives == min(fg, 128)
        assert int((got == 0).sum()) == min(bg, 512 - positives)
        assert int((got == -1).sum()) == 512 - positives - int((got == 0).sum())
        # Rows are ordered: positives, negatives, padding.
        order = np.where(got >= 1, 0, np.where(got == 0, 1, 2))
        assert np.all(np.diff(order) >= 0)
        assert np.all(out["rois"][batch][got == -1] == 0.0)
    assert int((out["classes"][0] >= 1).sum()) == 128  # image 0 has more foreground than 128


def test_roi_classes_iou_and_deltas_match_the_ground_truth(roi_case):
    _, boxes, classes, _, out = roi_case
    for batch in range(2):
        valid = classes[batch] >= 1
        gt, gt_classes = boxes[batch][valid], classes[batch][valid]
        got = out["classes"][batch]
        rois = out["rois"][batch]
        iou = numpy_iou(rois, gt)
        best, matched = iou.max(axis=1), iou.argmax(axis=1)
        fg, bg = got >= 1, got == 0
        assert np.all(best[fg] >= 0.5) and np.all(best[bg] < 0.5)
        np.testing.assert_array_equal(got[fg], gt_classes[matched[fg]])
        decoded = decode_boxes(out["box_deltas"][batch][fg], rois[fg], (10.0, 10.0, 5.0, 5.0))
        np.testing.assert_allclose(decoded.numpy(), gt[matched[fg]], atol=1e-3)
        assert np.all(out["box_deltas"][batch][~fg] == 0.0)
        assert np.all(out["mask_targets"][batch][~fg] == 0.0)


def test_roi_mask_targets_match_numpy_bilinear(roi_case):
    _, boxes, classes, masks, out = roi_case
    checked = 0
    for batch in range(2):
        valid = classes[batch] >= 1
        fg = np.where(out["classes"][batch] >= 1)[0]
        iou = numpy_iou(out["rois"][batch], boxes[batch][valid])
        for row in fg:
            gt = np.where(valid)[0][iou[row].argmax()]
            expected = numpy_crop(
                masks[batch, gt].astype(np.float64), out["rois"][batch, row], SIZE
            )
            decided = np.abs(expected - 0.5) > 1e-3  # skip samples sitting on the threshold
            np.testing.assert_array_equal(
                out["mask_targets"][batch, row][decided],
                (expected >= 0.5)[decided].astype(np.float32),
            )
            checked += 1
    assert checked > 100


def test_roi_equal_to_gt_box_gives_the_downsampled_mask():
    boxes, classes, masks = roi_ground_truth()
    no_proposals = np.zeros((2, 4, 4), np.float32)
    out = roi_targets(no_proposals, boxes, classes, masks, num_samples=8, seed=0)
    rois, got, targets = (out[k].numpy() for k in ("rois", "classes", "mask_targets"))
    # Only the appended ground-truth boxes are candidates: all of them are positives.
    assert got.tolist() == [[3, 5, -1, -1, -1, -1, -1, -1], [2, -1, -1, -1, -1, -1, -1, -1]]
    np.testing.assert_array_equal(rois[0, :2], boxes[0, :2])
    np.testing.assert_allclose(out["box_deltas"].numpy()[:, :2], 0.0, atol=1e-6)
    # A rectangle mask filling its box is all ones.
    assert np.all(targets[0, 0] == 1.0) and np.all(targets[1, 0] == 1.0)
    # Box [30, 50, 60, 90]: columns 50..69 everywhere plus rows 45..59 of columns 70..89.
    # Sample x index 50 + (k + 0.5) * 40 / 28 - 0.5 is <= 69.5 for k <= 13, and sample y index
    # 30 + (k + 0.5) * 30 / 28 - 0.5 is >= 44.5 for k >= 14.
    expected = np.zeros((SIZE, SIZE), np.float32)
    expected[:, :14] = 1.0
    expected[14:, 14:] = 1.0
    np.testing.assert_array_equal(targets[0, 1], expected)


def test_roi_zero_ground_truth_images():
    boxes, classes, masks = roi_ground_truth()
    classes[1] = -1
    masks[1] = 0
    proposals = np.tile(
        np.array([[[0, 0, 20, 20], [10, 10, 50, 60], [0, 0, 0, 0]]], np.float32), (2, 1, 1)
    )
    out = roi_targets(proposals, boxes, classes, masks, num_samples=6, seed=0)
    assert out["classes"].numpy()[1].tolist() == [0, 0, -1, -1, -1, -1]
    for value in out.values():
        assert np.all(np.isfinite(value.numpy()))
    assert np.all(out["mask_targets"].numpy()[1] == 0.0)
    # No instance rows in the whole batch (M = 0).
    empty = roi_targets(
        proposals,
        np.zeros((2, 0, 4)),
        np.zeros((2, 0), np.int32),
        np.zeros((2, 0, HEIGHT, WIDTH), np.uint8),
        num_samples=6,
        seed=0,
    )
    assert empty["classes"].numpy().tolist() == [[0, 0, -1, -1, -1, -1]] * 2
    assert np.all(empty["box_deltas"].numpy() == 0.0)


def test_roi_seed_reproducible_and_graph_with_dynamic_shapes(roi_case):
    proposals, boxes, classes, masks, out = roi_case
    again = roi_targets(proposals, boxes, classes, masks, seed=5)
    for key in out:
        np.testing.assert_array_equal(again[key].numpy(), out[key])
    other = roi_targets(proposals, boxes, classes, masks, seed=6)
    assert np.any(other["rois"].numpy() != out["rois"])

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 4]),
            tf.TensorSpec([None, None, 4]),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None, None, None], tf.uint8),
        ]
    )
    def graph(proposals, boxes, classes, masks):
        return roi_targets(proposals, boxes, classes, masks, seed=5)

    traced = graph(proposals, boxes, classes, masks)
    for key in out:
        np.testing.assert_array_equal(traced[key].numpy(), out[key])
    small = graph(proposals[:1, :10], boxes[:1, :1], classes[:1, :1], masks[:1, :1, :32, :48])
    assert small["mask_targets"].shape == (1, 512, SIZE, SIZE)
    assert int((small["classes"].numpy() == 3).sum()) >= 1


def test_roi_bad_arguments_are_named():
    boxes, classes, masks = roi_ground_truth()
    with pytest.raises(ValueError, match="gt_masks"):
        roi_targets(np.zeros((2, 3, 4), np.float32), boxes, classes, masks[:, :, :, 0])
    with pytest.raises(ValueError, match="positive_fraction"):
        roi_targets(np.zeros((2, 3, 4), np.float32), boxes, classes, masks, positive_fraction=2.0)
