"""How the pretrained-load benchmark compares kseg's Mask R-CNN detections with torchvision's."""

import numpy as np
from benchmark_scripts import load_benchmark

instance = load_benchmark("pretrained_load_instance")


def _torchvision_reference():
    masks = np.zeros((2, 4, 5), np.uint8)
    masks[0, :2] = 1
    masks[1, :, :3] = 1
    return {
        "boxes0": np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 5.0, 4.0]], "float32"),
        "scores0": np.array([0.9, 0.5], "float32"),
        "labels0": np.array([7, 3]),
        "masks0": masks,
    }


def _kseg_detections(reference, slots=4):
    """kseg's padded layout: [y1, x1, y2, x2] boxes, rows past num_detections zero."""
    count = len(reference["boxes0"])
    boxes = np.zeros((1, slots, 4), "float32")
    boxes[0, :count] = reference["boxes0"][:, [1, 0, 3, 2]]
    scores = np.zeros((1, slots), "float32")
    scores[0, :count] = reference["scores0"]
    classes = np.zeros((1, slots), "int32")
    classes[0, :count] = reference["labels0"]
    masks = np.zeros((1, slots, 4, 5), "uint8")
    masks[0, :count] = reference["masks0"]
    return {
        "boxes": boxes,
        "scores": scores,
        "classes": classes,
        "masks": masks,
        "num_detections": np.array([count], "int32"),
    }


def test_identical_detections_in_each_librarys_box_order_agree_exactly():
    reference = _torchvision_reference()
    figures = instance.detection_parity(_kseg_detections(reference), reference, 0)
    assert figures == {
        "detections_kseg": 2,
        "detections_torchvision": 2,
        "boxes_max_abs_px": 0.0,
        "scores_max_abs": 0.0,
        "same_labels_and_order": True,
        "mask_pixels_equal": 1.0,
        "near_tie_swaps": 0,
        "boxes_max_abs_px_ties_paired": 0.0,
        "mask_pixels_equal_ties_paired": 1.0,
    }


def test_differences_are_measured_per_figure():
    reference = _torchvision_reference()
    detections = _kseg_detections(reference)
    detections["boxes"][0, 1, 3] += 0.25  # x2 of the second box, in kseg's order
    detections["scores"][0, 0] -= 1e-3
    detections["masks"][0, 1, 0, 4] = 1  # one of the 40 mask pixels
    figures = instance.detection_parity(detections, reference, 0)
    assert np.isclose(figures["boxes_max_abs_px"], 0.25)
    assert np.isclose(figures["scores_max_abs"], 1e-3)
    assert figures["mask_pixels_equal"] == 39 / 40
    assert figures["same_labels_and_order"]


def test_swapped_labels_or_a_missing_detection_are_not_the_same_order():
    reference = _torchvision_reference()
    swapped = _kseg_detections(reference)
    swapped["classes"][0, :2] = [3, 7]
    assert not instance.detection_parity(swapped, reference, 0)["same_labels_and_order"]
    fewer = _kseg_detections(reference)
    fewer["num_detections"][0] = 1
    figures = instance.detection_parity(fewer, reference, 0)
    assert (figures["detections_kseg"], figures["same_labels_and_order"]) == (1, False)
    # The figures cover the detection both sides have.
    assert figures["boxes_max_abs_px"] == 0.0 and figures["mask_pixels_equal"] == 1.0


def test_a_swapped_near_tie_of_one_label_is_paired_back():
    reference = _torchvision_reference()
    reference["labels0"] = np.array([7, 7])
    reference["scores0"] = np.array([0.5, 0.5 - 1e-7], "float32")
    detections = _kseg_detections(reference)
    for key in ("boxes", "masks"):
        detections[key][0, :2] = detections[key][0, [1, 0]]
    figures = instance.detection_parity(detections, reference, 0)
    # Position by position the swap shows; paired across it, the rows agree.
    assert figures["same_labels_and_order"] and figures["near_tie_swaps"] == 2
    assert figures["boxes_max_abs_px"] == 2.0 and figures["mask_pixels_equal"] < 1.0
    assert figures["boxes_max_abs_px_ties_paired"] == 0.0
    assert figures["mask_pixels_equal_ties_paired"] == 1.0


def test_rows_of_other_labels_or_distinct_scores_are_never_paired():
    labels = np.array([7, 3, 7])
    scores = np.array([0.5, 0.5, 0.4], "float32")
    boxes = np.zeros((3, 4), "float32")
    # kseg's rows 0 and 1 hold each other's boxes, but their labels differ: no pairing.
    reference_boxes = np.array([[0, 0, 9, 9], [0, 0, 0, 0], [0, 0, 0, 0]], "float32")
    paired = instance.tie_pairing(boxes, labels, scores, reference_boxes, labels, scores)
    np.testing.assert_array_equal(paired, [0, 1, 2])
