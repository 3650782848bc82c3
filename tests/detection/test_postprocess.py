"""detect against torchvision's NMS keep sets and hand-made heads; paste_masks against geometry."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kseg.detection.postprocess import detect, paste_masks

TORCHVISION_PASTE = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision_paste_masks.npz"


@pytest.fixture
def nms_refs(shared_dir):
    path = shared_dir / "refs" / "nms.npz"
    if not path.is_file():
        pytest.skip(f"reference file {path} is absent")
    return np.load(path)


def _logits_for(probabilities, classes, num_classes):
    """Logits whose softmax gives `probabilities[i]` to `classes[i]`, the rest to background."""
    probabilities = np.asarray(probabilities, np.float64)
    logits = np.full((len(probabilities), num_classes), -1e4)
    logits[:, 0] = np.log1p(-probabilities)
    logits[np.arange(len(probabilities)), classes] = np.log(probabilities)
    return logits.astype(np.float32)


def _detect_boxes(boxes, scores, classes, num_classes, **kwargs):
    boxes = np.asarray(boxes, np.float32)
    return detect(
        tf.constant(boxes[None]),
        tf.constant(_logits_for(scores, classes, num_classes)[None]),
        tf.zeros((1, len(boxes), num_classes, 4)),
        80,
        80,
        **kwargs,
    )


@pytest.mark.parametrize("iou", [3, 5, 7])
@pytest.mark.parametrize("batched", [False, True])
def test_classwise_nms_keeps_what_torchvision_keeps(nms_refs, iou, batched):
    boxes, scores = nms_refs["boxes_yxyx"], nms_refs["scores"]
    classes = nms_refs["class_idxs"] + 1 if batched else np.ones(len(boxes), np.int64)
    keep = nms_refs[f"keep_batched_iou{iou}" if batched else f"keep_iou{iou}"]
    out = _detect_boxes(
        boxes, scores, classes, 4, score_threshold=0.0, nms_iou=iou / 10, max_detections=40
    )
    count = int(out["num_detections"][0])
    assert count == len(keep)
    np.testing.assert_allclose(out["boxes"][0, :count], boxes[keep], atol=1e-4)
    np.testing.assert_allclose(out["scores"][0, :count], scores[keep], atol=1e-5)
    np.testing.assert_array_equal(out["classes"][0, :count], classes[keep])
    assert not out["boxes"][0, count:].numpy().any()
    assert not out["classes"][0, count:].numpy().any()


def test_iou_exactly_at_the_threshold_keeps_both(nms_refs):
    out = _detect_boxes(nms_refs["tie_boxes"], nms_refs["tie_scores"], [1, 1], 2, nms_iou=0.5)
    assert int(out["num_detections"][0]) == 2


def test_hand_made_head_outputs_decode_to_the_expected_boxes():
    rois = np.array([[[10, 10, 30, 30], [20, 40, 30, 60]]], np.float32)
    logits = np.array([[[0, 0, 5], [0, 4, 0]]], np.float32)
    deltas = np.zeros((1, 2, 3, 4), np.float32)
    # Roi 0, class 2: centre down by a quarter of its height, height doubled (weights 10, 5).
    deltas[0, 0, 2] = [10 * 0.25, 0, 5 * np.log(2), 0]
    # Roi 1, class 1: centre left by a tenth of its width, width halved.
    deltas[0, 1, 1] = [0, 10 * -0.1, 0, 5 * np.log(0.5)]
    out = detect(rois, logits, deltas, 40, 64)

    probabilities = np.exp(logits[0]) / np.exp(logits[0]).sum(-1, keepdims=True)
    assert int(out["num_detections"][0]) == 2
    np.testing.assert_allclose(
        out["boxes"][0, :2], [[5, 10, 40, 30], [20, 43, 30, 53]], atol=1e-4
    )  # the first box is clipped at the image's bottom edge (y = 40)
    np.testing.assert_array_equal(out["classes"][0, :2], [2, 1])
    np.testing.assert_allclose(out["scores"][0, :2], [probabilities[0, 2], probabilities[1, 1]])
    assert out["boxes"].shape == (1, 100, 4) and out["classes"].dtype == tf.int32


def test_overlapping_boxes_of_different_classes_both_survive():
    boxes = [[10, 10, 40, 40], [11, 10, 41, 40]]
    different = _detect_boxes(boxes, [0.9, 0.8], [1, 2], 3)
    same = _detect_boxes(boxes, [0.9, 0.8], [1, 1], 3)
    assert int(different["num_detections"][0]) == 2
    np.testing.assert_array_equal(different["classes"][0, :2], [1, 2])
    assert int(same["num_detections"][0]) == 1
    np.testing.assert_allclose(same["boxes"][0, 0], boxes[0], atol=1e-4)


def test_max_detections_keeps_the_best_over_all_classes():
    boxes = [[0, 10 * i, 8, 10 * i + 8] for i in range(6)]
    scores = [0.3, 0.9, 0.5, 0.8, 0.6, 0.7]
    classes = [1, 2, 1, 2, 1, 2]
    out = _detect_boxes(boxes, scores, classes, 3, max_detections=4)
    assert out["boxes"].shape == (1, 4, 4) and int(out["num_detections"][0]) == 4
    np.testing.assert_allclose(out["scores"][0], [0.9, 0.8, 0.7, 0.6], atol=1e-5)
    np.testing.assert_array_equal(out["classes"][0], [2, 2, 2, 1])


def test_score_threshold_is_respected():
    boxes = [[0, 0, 8, 8], [0, 20, 8, 28], [0, 40, 8, 48]]
    out = _detect_boxes(boxes, [0.3, 0.2, 0.26], [1, 1, 1], 2, score_threshold=0.25)
    assert int(out["num_detections"][0]) == 2
    np.testing.assert_allclose(out["scores"][0, :3], [0.3, 0.26, 0.0], atol=1e-5)


def test_padding_rois_and_empty_images_give_zero_rows_without_nan():
    rois = np.zeros((2, 3, 4), np.float32)
    rois[1, 0] = [4, 4, 20, 20]
    logits = np.tile(np.array([0, 9, 0], np.float32), (2, 3, 1))
    deltas = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype(np.float32)
    out = detect(rois, logits, deltas, 32, 32, max_detections=5)
    np.testing.assert_array_equal(out["num_detections"], [0, 1])
    for value in out.values():
        assert np.isfinite(value.numpy()).all()
    assert not out["boxes"][0].numpy().any() and not out["scores"][0].numpy().any()
    assert not out["classes"][0].numpy().any()
    assert int(out["classes"][1, 0]) == 1


def test_low_precision_head_outputs_are_computed_in_float32():
    rois = tf.constant([[[4.0, 4.0, 20.0, 20.0]]])
    logits = tf.constant([[[0.0, 3.0]]], tf.bfloat16)
    out = detect(rois, logits, tf.zeros((1, 1, 2, 4), tf.float16), 32, 32)
    assert out["boxes"].dtype == tf.float32 and out["scores"].dtype == tf.float32
    np.testing.assert_allclose(out["boxes"][0, 0], [4, 4, 20, 20])
    masks = paste_masks(tf.ones((1, 1, 7, 7), tf.bfloat16), out["boxes"][:, :1], 32, 32)
    np.testing.assert_array_equal(masks[0, 0], _box_image([4, 4, 20, 20], 32, 32))


def test_bad_detect_arguments_are_named():
    rois, logits, deltas = tf.zeros((1, 2, 4)), tf.zeros((1, 2, 3)), tf.zeros((1, 2, 3, 4))
    with pytest.raises(ValueError, match="box_deltas"):
        detect(rois, logits, tf.zeros((1, 2, 12)), 32, 32)
    with pytest.raises(ValueError, match="K >= 2"):
        detect(rois, tf.zeros((1, 2, 1)), tf.zeros((1, 2, 1, 4)), 32, 32)
    with pytest.raises(ValueError, match="max_detections"):
        detect(rois, logits, deltas, 32, 32, max_detections=0)
    with pytest.raises(ValueError, match="threshold"):
        paste_masks(tf.ones((1, 1, 4, 4)), tf.zeros((1, 1, 4)), 8, 8, threshold=0.0)


def _box_image(box, height, width):
    expected = np.zeros((height, width), np.uint8)
    y1, x1, y2, x2 = (int(v) for v in box)
    expected[max(y1, 0) : y2, max(x1, 0) : x2] = 1
    return expected


def test_a_mask_of_ones_pastes_as_exactly_the_box_pixels():
    # Boxes smaller and larger than the mask, the whole image, and one crossing the border.
    boxes = np.array([[[2, 3, 10, 7], [5, 1, 45, 37], [0, 0, 48, 40], [-4, 30, 6, 52]]], np.float32)
    pasted = paste_masks(tf.ones((1, 4, 28, 28)), boxes, 48, 40)
    assert pasted.dtype == tf.uint8 and pasted.shape == (1, 4, 48, 40)
    for i, box in enumerate(boxes[0]):
        np.testing.assert_array_equal(pasted[0, i], _box_image(box, 48, 40))


def test_a_split_mask_pastes_with_the_split_at_the_box_centre():
    size = 28
    left_right = np.zeros((size, size), np.float32)
    left_right[:, size // 2 :] = 1
    masks = np.stack([left_right, left_right.T, left_right])[None]
    box = [4, 6, 20, 30]  # centre at y = 12, x = 18
    # A box much wider than the mask: a half-cell misalignment would move the split by 1.1 pixels.
    wide = [2, 4, 30, 68]  # centre at x = 36
    pasted = paste_masks(masks, np.array([[box, box, wide]], np.float32), 32, 72).numpy()
    np.testing.assert_array_equal(pasted[0, 0], _box_image([4, 18, 20, 30], 32, 72))
    np.testing.assert_array_equal(pasted[0, 1], _box_image([12, 6, 20, 30], 32, 72))
    np.testing.assert_array_equal(pasted[0, 2], _box_image([2, 36, 30, 68], 32, 72))


def _crop_like_mask_targets(image, boxes, size):
    """Samples `image` at the centres of a size x size grid over each box (the contract)."""
    height, width = image.shape
    y1, x1, y2, x2 = boxes.T
    half_y, half_x = 0.5 * (y2 - y1) / size, 0.5 * (x2 - x1) / size
    normalised = np.stack(
        [
            (y1 + half_y - 0.5) / (height - 1),
            (x1 + half_x - 0.5) / (width - 1),
            (y2 - half_y - 0.5) / (height - 1),
            (x2 - half_x - 0.5) / (width - 1),
        ],
        axis=1,
    )
    crops = tf.image.crop_and_resize(
        image[None, :, :, None], normalised, tf.zeros(len(boxes), tf.int32), (size, size)
    )
    return crops[..., 0].numpy()


def test_crop_then_paste_recovers_a_smooth_blob():
    height, width = 96, 80
    yy, xx = np.mgrid[:height, :width] + 0.5
    blobs = [
        np.exp(-((yy - 30.3) ** 2 / (2 * 12.0**2) + (xx - 25.7) ** 2 / (2 * 7.0**2))),
        np.exp(-((yy - 60.0) ** 2 / (2 * 5.0**2) + (xx - 55.2) ** 2 / (2 * 14.0**2))),
    ]
    boxes, crops = [], []
    for blob in blobs:
        ys, xs = np.nonzero(blob >= 0.2)
        box = np.array([ys.min() - 0.7, xs.min() - 1.3, ys.max() + 1.6, xs.max() + 0.4])
        boxes.append(box)
        crops.append(_crop_like_mask_targets(blob.astype(np.float32), box[None], 28)[0])
    pasted = paste_masks(np.stack(crops)[None], np.stack(boxes)[None].astype(np.float32), 96, 80)
    for i, blob in enumerate(blobs):
        truth, found = blob >= 0.5, pasted[0, i].numpy().astype(bool)
        iou = (truth & found).sum() / (truth | found).sum()
        assert iou > 0.9, f"blob {i}: IoU {iou:.3f}"


def test_empty_boxes_give_empty_masks():
    boxes = np.array([[[5, 5, 5, 9], [0, 0, 0, 0], [7, 3, 12, 3]]], np.float32)
    pasted = paste_masks(tf.ones((1, 3, 28, 28)), boxes, 16, 16)
    assert not pasted.numpy().any()


def test_detect_and_paste_export_with_dynamic_image_size(tmp_path):
    class Postprocess(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None, 4], tf.float32),
                tf.TensorSpec([None, None, 3], tf.float32),
                tf.TensorSpec([None, None, 3, 4], tf.float32),
                tf.TensorSpec([None, None, 3], tf.float32),
                tf.TensorSpec([None, None, None, 3], tf.uint8),
            ]
        )
        def __call__(self, rois, logits, deltas, mask_probabilities, images):
            height, width = tf.shape(images)[1], tf.shape(images)[2]
            found = detect(rois, logits, deltas, height, width, max_detections=3)
            masks = paste_masks(
                tf.tile(mask_probabilities[:, None], [1, 3, 1, 1]), found["boxes"], height, width
            )
            return found["boxes"], found["classes"], masks

    tf.saved_model.save(Postprocess(), str(tmp_path))
    restored = tf.saved_model.load(str(tmp_path))

    rois = np.array([[[2, 2, 10, 14], [0, 0, 0, 0]]], np.float32)
    logits = np.array([[[0, 6, 0], [0, 6, 0]]], np.float32)
    deltas = np.zeros((1, 2, 3, 4), np.float32)
    for height, width in ((16, 24), (20, 12)):
        images = tf.zeros((1, height, width, 3), tf.uint8)
        boxes, classes, masks = restored(rois, logits, deltas, tf.ones((1, 3, 3)), images)
        np.testing.assert_allclose(boxes[0, 0], np.minimum(rois[0, 0], [height, width] * 2))
        np.testing.assert_array_equal(classes[0], [1, 0, 0])
        assert masks.shape == (1, 3, height, width) and masks.dtype == tf.uint8
        box = np.minimum(rois[0, 0], [height, width] * 2)
        np.testing.assert_array_equal(masks[0, 0], _box_image(box, height, width))
        assert not masks[0, 1:].numpy().any()


def test_min_size_drops_boxes_with_a_short_side():
    rois = tf.constant([[[10.0, 10.0, 30.0, 30.0], [10.0, 40.0, 10.005, 60.0]]])
    logits = tf.constant([[[0.0, 4.0], [0.0, 4.0]]])
    deltas = tf.zeros((1, 2, 2, 4))
    kept = detect(rois, logits, deltas, 64, 64)["num_detections"].numpy()
    # torchvision's remove_small_boxes(boxes, 1e-2) drops the 0.005-pixel-high box.
    small = detect(rois, logits, deltas, 64, 64, min_size=1e-2)["num_detections"].numpy()
    assert kept.tolist() == [2] and small.tolist() == [1]


def test_torchvision_paste_is_paste_masks_in_image():
    # Written by tests/fixtures/make_torchvision_paste_masks.py with torchvision 0.29.1.
    reference = np.load(TORCHVISION_PASTE)
    boxes = reference["boxes"][None][..., [1, 0, 3, 2]]
    pasted = paste_masks(reference["masks"][None], boxes, 37, 45, method="torchvision")
    expected = reference["pasted"] >= 0.5
    np.testing.assert_array_equal(pasted.numpy()[0].astype(bool), expected)
    # Padding rows (zero boxes) stay empty, which torchvision never sees.
    empty = paste_masks(tf.ones((1, 1, 28, 28)), tf.zeros((1, 1, 4)), 8, 8, method="torchvision")
    assert int(tf.reduce_sum(tf.cast(empty, tf.int32))) == 0
    with pytest.raises(ValueError, match="method must be one of"):
        paste_masks(tf.ones((1, 1, 28, 28)), tf.zeros((1, 1, 4)), 8, 8, method="nearest")
