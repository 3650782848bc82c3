"""COCO evaluation reproduces pycocotools' stored reference statistics through kseg's converters."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_api

from kseg.data.coco import coco_categories, coco_instance_dataset
from kseg.data.info import DatasetInfo
from kseg.detection.boxes import boxes_from_masks
from kseg.detection.coco_eval import coco_evaluate, coco_ground_truth, detections_to_coco

REFS = Path(__file__).resolve().parents[2] / ".." / "shared" / "refs"


@pytest.fixture
def refs():
    if not (REFS / "coco_gt.json").is_file():
        pytest.skip(f"reference vectors {REFS} are absent")
    return REFS


@pytest.fixture
def ground_truth(refs, tmp_path):
    """pycocotools GT built by kseg from the reference annotations (crowd region kept)."""
    Image.fromarray(np.zeros((80, 100, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "b.png")
    categories = coco_categories(refs / "coco_gt.json")
    examples = coco_instance_dataset(refs / "coco_gt.json", tmp_path, skip_crowd=False)
    return coco_ground_truth(examples, categories), categories


def _batched_reference_detections(refs, categories):
    """The 8 reference detections as padded model outputs: masks decoded, boxes from masks."""
    detections = json.loads((refs / "coco_dt_segm.json").read_text())
    image_ids, height, width, rows = [1, 2], 80, 100, 6
    masks = np.zeros((2, rows, height, width), np.uint8)
    scores = np.zeros((2, rows), np.float32)
    classes = np.zeros((2, rows), np.int32)
    counts = np.zeros(2, np.int32)
    for detection in detections:
        b = image_ids.index(detection["image_id"])
        decoded = mask_api.decode(detection["segmentation"])
        masks[b, counts[b], : decoded.shape[0], : decoded.shape[1]] = decoded
        scores[b, counts[b]] = detection["score"]
        classes[b, counts[b]] = categories.class_of[detection["category_id"]]
        counts[b] += 1
    # Junk beyond num_detections must be ignored.
    masks[1, counts[1] :, :5, :5] = 1
    classes[1, counts[1] :] = 99
    boxes = boxes_from_masks(masks.reshape(-1, height, width)).numpy().reshape(2, rows, 4)
    return image_ids, boxes, scores, classes, masks, counts


def test_reference_stats_through_kseg_converters(refs, ground_truth):
    gt, categories = ground_truth
    reference = json.loads((refs / "coco_eval_segm.json").read_text())
    image_ids, boxes, scores, classes, masks, counts = _batched_reference_detections(
        refs, categories
    )
    results = detections_to_coco(
        image_ids,
        boxes,
        scores,
        classes,
        masks,
        counts,
        categories,
        image_shapes=[[80, 100], [30, 30]],
    )
    assert len(results) == 8
    json.dumps(results)  # RLE counts are str, the list is JSON-ready
    metrics = coco_evaluate(gt, results)
    for name, value in reference["stats"].items():
        assert metrics[f"mask_{name}"] == pytest.approx(value, abs=1e-12), name
    for name, value in reference["bbox_stats"].items():
        assert metrics[f"box_{name}"] == pytest.approx(value, abs=1e-12), name
    for category_id, value in reference["per_category_AP"].items():
        name = categories.names[categories.class_of[int(category_id)] - 1]
        assert metrics[f"mask_AP/{name}"] == pytest.approx(value, abs=1e-12)
    assert reference["stats"]["AP"] == pytest.approx(0.5586, abs=1e-4)
    assert reference["bbox_stats"]["AP"] == pytest.approx(0.6338, abs=1e-4)


def test_reference_files_evaluate_to_reference_stats(refs):
    reference = json.loads((refs / "coco_eval_segm.json").read_text())
    metrics = coco_evaluate(refs / "coco_gt.json", refs / "coco_dt_segm.json", per_category=False)
    assert metrics["mask_AP"] == pytest.approx(reference["stats"]["AP"], abs=1e-12)
    assert metrics["box_AP"] == pytest.approx(reference["bbox_stats"]["AP"], abs=1e-12)
    assert not any("/" in key for key in metrics)


def test_ground_truth_matches_reference_annotations(refs, ground_truth):
    gt, _ = ground_truth
    truth = np.load(refs / "coco_masks.npz")
    reference = {a["id"]: a for a in json.loads((refs / "coco_gt.json").read_text())["annotations"]}
    assert len(gt.anns) == len(reference)
    # kseg numbers annotations in file order, so ids line up with the reference file.
    for ann_id, annotation in gt.anns.items():
        expected = reference[ann_id]
        np.testing.assert_array_equal(gt.annToMask(annotation), truth[f"gt_{ann_id}"])
        assert annotation["area"] == expected["area"]
        np.testing.assert_allclose(annotation["bbox"], expected["bbox"])
        assert annotation["iscrowd"] == expected["iscrowd"]
        assert annotation["category_id"] == expected["category_id"]


def test_detections_to_coco_encodes_reference_rle_and_crops(refs):
    truth = np.load(refs / "coco_masks.npz")
    cases = json.loads((refs / "coco_rle_tests.json").read_text())
    disc = truth["gt_3"]
    padded = np.zeros((1, 2, 96, 128), np.uint8)
    padded[0, 0, :80, :100] = disc
    results = detections_to_coco(
        np.array([42]),
        [[[4.0, 29.0, 17.0, 42.0], [0.0, 0.0, 200.0, 300.0]]],
        [[0.75, 0.5]],
        [[2, 1]],
        padded,
        [2],
        [11, 17],
        image_shapes=[[80, 100]],
    )
    first, second = results
    assert first["segmentation"]["counts"] == cases["encode_disc_gt3"]["rle"]["counts"]
    assert first["segmentation"]["size"] == [80, 100]
    assert first["bbox"] == cases["encode_disc_gt3"]["bbox_xywh"]
    assert (first["image_id"], first["category_id"], first["score"]) == (42, 17, 0.75)
    # Boxes are clipped to the unpadded image.
    assert second["bbox"] == [0.0, 0.0, 100.0, 80.0] and second["category_id"] == 11

    box_only = detections_to_coco([3], [[[1.0, 2.0, 5.0, 9.0]]], [[0.3]], [[1]], None, [1], [7])
    assert box_only == [
        {"image_id": 3, "category_id": 7, "bbox": [2.0, 1.0, 7.0, 4.0], "score": 0.3}
    ]
    with pytest.raises(ValueError, match=r"1..2.*\[3\]"):
        detections_to_coco([1], [[[0, 0, 1, 1]]], [[1.0]], [[3]], None, [1], [5, 6])


def test_perfect_and_empty_detections(refs, ground_truth):
    gt, _ = ground_truth
    perfect = []
    for annotation in gt.anns.values():
        if annotation["iscrowd"]:
            continue
        perfect.append(
            {
                "image_id": annotation["image_id"],
                "category_id": annotation["category_id"],
                "segmentation": annotation["segmentation"],
                "bbox": annotation["bbox"],
                "score": 0.9,
            }
        )
    metrics = coco_evaluate(gt, perfect)
    assert metrics["mask_AP"] == pytest.approx(1.0) and metrics["box_AP"] == pytest.approx(1.0)

    empty = coco_evaluate(gt, [])
    for prefix in ("mask", "box"):
        assert empty[f"{prefix}_AP"] == 0.0 and empty[f"{prefix}_AR100"] == 0.0
        assert empty[f"{prefix}_APl"] == -1.0  # no large objects: COCO's "undefined"
    assert all(np.isfinite(v) for v in empty.values())


def test_ground_truth_from_plain_examples_and_errors():
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[0, 2:6, 3:9] = 1
    masks[1, 8:16, 0:4] = 1
    examples = [
        {"masks": masks, "classes": np.array([1, 2])},
        {"masks": np.zeros((0, 8, 8), np.uint8), "classes": np.zeros(0, np.int32)},
    ]
    info = DatasetInfo(3, ("background", "cat", "dog"))
    gt = coco_ground_truth(examples, info)
    assert sorted(gt.getImgIds()) == [1, 2] and gt.imgs[2]["height"] == 8
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == ["cat", "dog"]
    areas = sorted(a["area"] for a in gt.anns.values())
    assert areas == [24.0, 32.0]
    with pytest.raises(ValueError, match=r"1..2.*\[3\]"):
        coco_ground_truth([{"masks": masks, "classes": np.array([1, 3])}], ["cat", "dog"])
    with pytest.raises(ValueError, match="image ids not in the ground truth"):
        coco_evaluate(
            gt,
            [{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}],
            iou_types="bbox",
        )
    with pytest.raises(ValueError, match="'segmentation'"):
        coco_evaluate(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="iou_types"):
        coco_evaluate(gt, [], iou_types=("keypoints",))


def test_mask_evaluation_sizes_detections_by_mask_area():
    # A 10x10 object and a higher-scoring false positive shaped like an L: its mask area (199)
    # is "small" (< 32^2) but its box (60x60) is "medium". COCO sizes mask detections by mask
    # area, so the false positive halves mask APs; box APs ignores it (medium box).
    obj = np.zeros((1, 100, 100), np.uint8)
    obj[0, 5:15, 5:15] = 1
    gt = coco_ground_truth([{"masks": obj, "classes": np.array([1])}], ["thing"])
    ell = np.zeros((100, 100), np.uint8)
    ell[30:90, 30:32] = 1
    ell[88:90, 30:90] = 1
    masks = np.stack([ell, obj[0]])[None]
    boxes = boxes_from_masks(masks[0]).numpy()[None]
    results = detections_to_coco([1], boxes, [[0.9, 0.8]], [[1, 1]], masks, [2], [1])
    metrics = coco_evaluate(gt, results)
    assert metrics["mask_APs"] == pytest.approx(0.5)
    assert metrics["box_APs"] == pytest.approx(1.0)
