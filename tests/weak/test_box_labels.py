"""Labels from boxes (Papandreou et al., ICCV 2015): EM-Fixed's box maps, Bbox-Rect and Bbox-Seg."""

import numpy as np
import pytest

from kseg.weak.box_labels import bbox_rect_labels, bbox_seg_labels, box_label_map


def test_box_label_map_properties():
    rng = np.random.default_rng(5)
    height, width, num_classes = 13, 17, 5
    for _ in range(20):
        count = rng.integers(0, 4)
        corners = rng.uniform(-4, 21, size=(count, 2, 2))
        corners.sort(axis=1)
        boxes = corners.transpose(0, 2, 1).reshape(count, 4)[:, [0, 2, 1, 3]]
        boxes[:, 2:] += 0.5
        inside = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < height)
        boxes = boxes[inside & (boxes[:, 1] < width)]
        classes = rng.integers(1, num_classes, size=len(boxes))
        allowed = box_label_map(boxes, classes, height, width, num_classes)
        assert allowed.shape == (height, width, num_classes) and allowed.dtype == np.uint8
        assert np.all(allowed[..., 0] == 1)
        for label in range(1, num_classes):
            expected = np.zeros((height, width), bool)
            for box in boxes[classes == label]:
                for i in range(height):
                    for j in range(width):
                        overlap_y = min(i + 1, box[2]) - max(i, box[0])
                        overlap_x = min(j + 1, box[3]) - max(j, box[1])
                        expected[i, j] |= overlap_y > 0 and overlap_x > 0
            np.testing.assert_array_equal(allowed[..., label], expected)


def test_box_label_map_clips_boxes_and_refuses_bad_ones():
    clipped = box_label_map([[-5, -2, 4, 30]], [1], height=8, width=10, num_classes=2)
    np.testing.assert_array_equal(
        clipped, box_label_map([[0, 0, 4, 10]], [1], height=8, width=10, num_classes=2)
    )
    with pytest.raises(ValueError, match=r"`boxes`\[1\] lies entirely outside the 8x10 image"):
        box_label_map([[0, 0, 2, 2], [9, 1, 12, 5]], [1, 1], height=8, width=10, num_classes=2)
    with pytest.raises(ValueError, match="box 0 has class 7, outside the model's classes"):
        box_label_map([[0, 0, 2, 2]], [7], height=8, width=10, num_classes=3)
    with pytest.raises(ValueError, match="background class"):
        box_label_map([[0, 0, 2, 2]], [0], height=8, width=10, num_classes=3)
    with pytest.raises(ValueError, match="y1 < y2"):
        box_label_map([[3, 0, 2, 2]], [1], height=8, width=10, num_classes=3)


def _random_boxes(rng, count, height, width):
    """Integer-cornered boxes inside a height x width image."""
    y = np.sort(rng.integers(0, height + 1, size=(count, 2)), axis=1)
    x = np.sort(rng.integers(0, width + 1, size=(count, 2)), axis=1)
    keep = (y[:, 1] > y[:, 0]) & (x[:, 1] > x[:, 0])
    return np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], axis=1)[keep].astype(np.float64)


@pytest.mark.parametrize(
    "background_class, ambiguity_ratio", [(0, None), (None, None), (None, 0.3)]
)
def test_bbox_rect_labels_give_each_pixel_its_smallest_covering_box(
    background_class, ambiguity_ratio
):
    # Brute force, pixel by pixel: the class of the smallest box holding the pixel (the first
    # such box on a tie), the background or the ignore label outside every box; with a ratio,
    # the ignore label where a box of another class is not more than 1/ratio times larger.
    rng = np.random.default_rng(21)
    height, width, num_classes = 9, 11, 4
    outside = 255 if background_class is None else background_class
    for _ in range(25):
        boxes = _random_boxes(rng, rng.integers(0, 6), height, width)
        classes = rng.integers(1, num_classes, size=len(boxes))
        labels = bbox_rect_labels(
            boxes,
            classes,
            height,
            width,
            num_classes,
            background_class=background_class,
            ambiguity_ratio=ambiguity_ratio,
        )
        assert labels.dtype == np.uint8
        for i in range(height):
            for j in range(width):
                holding = [
                    ((b[2] - b[0]) * (b[3] - b[1]), index)
                    for index, b in enumerate(boxes)
                    if b[0] <= i < b[2] and b[1] <= j < b[3]
                ]
                expected = classes[min(holding)[1]] if holding else outside
                if holding and ambiguity_ratio is not None:
                    rivals = [a for a, k in holding if classes[k] != expected]
                    if rivals and min(holding)[0] >= ambiguity_ratio * min(rivals):
                        expected = 255
                assert labels[i, j] == expected, (boxes, classes, i, j)


def test_bbox_rect_labels_keep_a_small_object_inside_a_large_region():
    # A car box on a road box, CamVid style: no background, both boxed.
    labels = bbox_rect_labels(
        [[4, 0, 10, 12], [5, 3, 8, 6]], [3, 8], 10, 12, num_classes=11, background_class=None
    )
    assert np.all(labels[:4] == 255)
    assert np.all(labels[5:8, 3:6] == 8)
    assert np.sum(labels == 3) == 6 * 12 - 9


def test_bbox_rect_labels_clip_boxes_and_name_a_bad_one():
    np.testing.assert_array_equal(
        bbox_rect_labels([[-3, -1, 4, 30]], [2], 6, 8, num_classes=3),
        bbox_rect_labels([[0, 0, 4, 8]], [2], 6, 8, num_classes=3),
    )
    with pytest.raises(ValueError, match=r"`boxes`\[1\] lies entirely outside the 6x8 image"):
        bbox_rect_labels([[0, 0, 2, 2], [7, 0, 9, 3]], [1, 2], 6, 8, num_classes=3)
    with pytest.raises(ValueError, match="box 0 has class 5, outside the model's classes"):
        bbox_rect_labels([[0, 0, 2, 2]], [5], 6, 8, num_classes=3)
    with pytest.raises(ValueError, match="ambiguity_ratio"):
        bbox_rect_labels([[0, 0, 2, 2]], [1], 6, 8, num_classes=3, ambiguity_ratio=0)


def test_bbox_rect_ambiguity_ratio_keeps_objects_and_drops_side_by_side_overlaps():
    # A 3x3 sign inside a 6x12 building box, and a 6x10 tree box overlapping the building.
    boxes = [[0, 0, 6, 12], [1, 1, 4, 4], [0, 8, 6, 18]]
    labels = bbox_rect_labels(
        boxes, [1, 6, 5], 6, 18, num_classes=11, background_class=None, ambiguity_ratio=0.5
    )
    assert np.all(labels[1:4, 1:4] == 6)  # 9 / 72 of the building box: kept
    assert np.all(labels[:, 8:12] == 255)  # 60 / 72: the two regions are alike in size
    assert np.all(labels[:, 12:] == 5) and labels[0, 0] == 1


@pytest.mark.parametrize("background_class", [0, None])
def test_box_label_map_marks_the_smallest_covering_box_in_front(background_class):
    rng = np.random.default_rng(8)
    height, width, num_classes = 9, 11, 4
    for _ in range(15):
        boxes = _random_boxes(rng, rng.integers(1, 6), height, width)
        classes = rng.integers(1, num_classes, size=len(boxes))
        options = {"background_class": background_class}
        plain = box_label_map(boxes, classes, height, width, num_classes, **options)
        marked = box_label_map(
            boxes, classes, height, width, num_classes, mark_front=True, **options
        )
        np.testing.assert_array_equal(marked > 0, plain > 0)
        rect = bbox_rect_labels(boxes, classes, height, width, num_classes, **options)
        front = np.where(np.any(marked == 2, axis=-1), np.argmax(marked == 2, axis=-1), -1)
        assert np.all(np.sum(marked == 2, axis=-1) <= 1)
        outside = 255 if background_class is None else background_class
        np.testing.assert_array_equal(np.where(front >= 0, front, outside), rect)


def _synthetic_boxes_image():
    """Two flat objects of distinct colours inside larger boxes, on a third colour, plus noise."""
    height, width = 48, 64
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (40, 90, 60)
    rows, columns = np.mgrid[:height, :width]
    disc = (rows - 22) ** 2 + (columns - 18) ** 2 <= 10**2
    square = (rows >= 14) & (rows < 34) & (columns >= 40) & (columns < 58)
    image[disc] = (220, 200, 40)
    image[square] = (180, 40, 200)
    noise = np.random.default_rng(10).normal(0, 10, image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    boxes = np.array([[8, 4, 37, 33], [9, 36, 40, 62]], np.float32)
    return image, boxes, np.array([1, 2]), {1: disc, 2: square}


def test_bbox_seg_labels_recover_objects_and_nothing_outside_their_boxes():
    image, boxes, classes, objects = _synthetic_boxes_image()
    labels = bbox_seg_labels(image, boxes, classes, num_classes=3)
    assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
    for index, label in enumerate(classes):
        predicted = labels == label
        intersection = np.sum(predicted & objects[label])
        union = np.sum(predicted | objects[label])
        assert intersection / union > 0.8, (label, intersection / union)
        y1, x1, y2, x2 = boxes[index].astype(int)
        in_box = np.zeros_like(predicted)
        in_box[y1:y2, x1:x2] = True
        assert not np.any(predicted & ~in_box)

    uncertain = bbox_seg_labels(image, boxes, classes, num_classes=3, uncertain_below=0.999)
    in_any_box = np.asarray(box_label_map(boxes, classes, 48, 64, 3)[..., 1:].any(axis=-1))
    assert np.any(uncertain == 255)
    assert not np.any((uncertain == 255) & ~in_any_box)
