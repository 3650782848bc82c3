"""COCO-style evaluation of instance segmentation and detection with pycocotools.

Mask AP and box AP as reported for Mask R-CNN (He et al., "Mask R-CNN", ICCV 2017) are COCO's
metrics (Lin et al., ECCV 2014): precision averaged over recall, categories and IoU thresholds
0.50:0.05:0.95, computed by pycocotools' `COCOeval`, the reference implementation. This module
builds pycocotools' ground-truth object from kseg example dicts, converts batched model
outputs into COCO result dicts, and runs the evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
IOU_TYPE_PREFIX = {"segm": "mask", "bbox": "box"}


def _pycocotools():
    try:
        from pycocotools import mask as mask_api
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("COCO evaluation needs pycocotools: `pip install pycocotools`.") from exc
    return COCO, COCOeval, mask_api


def _category_table(categories) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """COCO ids and names of contiguous classes 1..K from any accepted description."""
    if hasattr(categories, "coco_ids") and hasattr(categories, "names"):
        return tuple(int(i) for i in categories.coco_ids), tuple(categories.names)
    if hasattr(categories, "class_names") and hasattr(categories, "num_classes"):
        if categories.class_names is None:
            raise ValueError("categories is a DatasetInfo without class_names.")
        names = tuple(categories.class_names[1:])
        return tuple(range(1, len(names) + 1)), names
    names = tuple(str(n) for n in categories)
    if not names:
        raise ValueError("categories must name at least one class.")
    return tuple(range(1, len(names) + 1)), names


def _encode(mask_api, masks: np.ndarray) -> list[dict]:
    """RLE-encode `(N, H, W)` binary masks, counts as str so the dicts are JSON-ready."""
    if masks.shape[0] == 0:
        return []
    rles = mask_api.encode(np.asfortranarray(np.transpose(masks.astype(np.uint8), (1, 2, 0))))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _numpy(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _quiet_coco(COCO, dataset: dict):
    coco = COCO()
    coco.dataset = dataset
    # pycocotools reports its progress on stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_ground_truth(dataset_or_examples: Iterable, categories):
    """Build an in-memory pycocotools `COCO` ground truth from instance example dicts.

    Masks are stored as compressed RLE, areas are mask areas and boxes the masks' extents, so
    mask and box AP computed against it match what the data pipeline trains on. Examples with
    an "is_crowd" entry (`kseg.data.coco_instance_dataset(..., skip_crowd=False)`) mark those
    instances as crowd regions, which COCOeval ignores when unmatched; all others have
    `iscrowd` 0. Evaluate against the original annotation file instead when the official
    numbers are wanted (COCO's own boxes are polygon extents, up to a pixel wider).

    Args:
        dataset_or_examples: a `tf.data.Dataset` or an iterable of unbatched example dicts with
            "masks" `(N, H, W)`, "classes" `(N,)` in 1..K and optionally "image_id" (else
            images are numbered 1, 2, ... in order) and "is_crowd" `(N,)`.
        categories: a `kseg.data.coco.CocoCategories` (COCO ids kept), a `DatasetInfo` whose
            class_names start with the background, or a sequence of the K class names (COCO
            ids 1..K).

    Returns:
        A `pycocotools.coco.COCO` object.

    Example:
        >>> ds = kseg.data.instances.shapes_instance_examples("val", num_samples=4, image_size=64)
        >>> gt = kseg.detection.coco_eval.coco_ground_truth(ds, kseg.data.shapes_info())
        >>> len(gt.getImgIds())
        4
    """
    COCO, _, mask_api = _pycocotools()
    coco_ids, names = _category_table(categories)
    images, annotations = [], []
    seen_ids = set()
    for position, example in enumerate(dataset_or_examples):
        masks = _numpy(example["masks"]).astype(np.uint8)
        classes = _numpy(example["classes"]).astype(np.int64).reshape(-1)
        if masks.ndim != 3 or masks.shape[0] != classes.shape[0]:
            raise ValueError(
                f"Example {position}: masks must be (N, H, W) with N = len(classes). "
                f"Received: masks {masks.shape}, classes {classes.shape}"
            )
        bad = classes[(classes < 1) | (classes > len(coco_ids))]
        if bad.size:
            raise ValueError(
                f"Example {position}: class ids must lie in 1..{len(coco_ids)}. "
                f"Received: {sorted(set(bad.tolist()))}"
            )
        image_id = int(_numpy(example["image_id"])) if "image_id" in example else position + 1
        if image_id in seen_ids:
            raise ValueError(f"Example {position}: image_id {image_id} occurs twice.")
        seen_ids.add(image_id)
        crowd = (
            _numpy(example["is_crowd"]).astype(bool).reshape(-1)
            if "is_crowd" in example
            else np.zeros(classes.shape, dtype=bool)
        )
        height, width = masks.shape[1:]
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        rles = _encode(mask_api, masks)
        for rle, class_id, is_crowd in zip(rles, classes, crowd):
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCOeval treats id 0 as "unmatched"
                    "image_id": image_id,
                    "category_id": coco_ids[class_id - 1],
                    "segmentation": rle,
                    "area": float(mask_api.area(rle)),
                    "bbox": [float(v) for v in mask_api.toBbox(rle)],
                    "iscrowd": int(is_crowd),
                }
            )
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in zip(coco_ids, names)],
    }
    return _quiet_coco(COCO, dataset)


def detections_to_coco(
    image_ids,
    boxes,
    scores,
    classes,
    masks,
    num_detections,
    category_ids,
    *,
    image_shapes=None,
) -> list[dict]:
    """Convert batched detections into COCO result dicts.

    Takes the padded outputs of `kseg.detection.postprocess.detect` and `paste_masks`: only
    the first `num_detections[b]` rows of image b count.

    Args:
        image_ids: `(B,)` COCO image ids.
        boxes: `(B, D, 4)` boxes `[y1, x1, y2, x2]` in pixels.
        scores: `(B, D)` confidences.
        classes: `(B, D)` contiguous class ids in 1..K.
        masks: `(B, D, H, W)` binary masks (uint8 or bool), or None for box-only results.
        num_detections: `(B,)` valid rows per image.
        category_ids: COCO category id of each contiguous class (`category_ids[k - 1]` for
            class k), or a `kseg.data.coco.CocoCategories`.
        image_shapes: optional `(B, 2)` original (height, width): masks are cropped to it and
            boxes clipped, undoing the bottom/right padding of `pad_instance_batch`.

    Returns:
        A list of dicts with "image_id", "category_id", "score", "bbox" `[x, y, w, h]` and
        (with masks) "segmentation" as compressed RLE whose "counts" is a str, ready for
        `json.dump` and `coco_evaluate`.

    Example:
        >>> results = kseg.detection.coco_eval.detections_to_coco(
        ...     [7], [[[0., 0., 2., 3.]]], [[0.9]], [[1]], None, [1], [18])
        >>> results[0]["bbox"], results[0]["category_id"]
        ([0.0, 0.0, 3.0, 2.0], 18)
    """
    _, _, mask_api = _pycocotools()
    if hasattr(category_ids, "coco_ids"):
        category_ids = category_ids.coco_ids
    category_ids = [int(c) for c in category_ids]
    image_ids = _numpy(image_ids).reshape(-1)
    boxes = _numpy(boxes).astype(np.float64)
    scores = _numpy(scores).astype(np.float64)
    classes = _numpy(classes).astype(np.int64)
    counts = _numpy(num_detections).astype(np.int64).reshape(-1)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, D, 4). Received: boxes.shape={boxes.shape}")
    batch = boxes.shape[0]
    for name, value in (("image_ids", image_ids), ("num_detections", counts)):
        if value.shape[0] != batch:
            raise ValueError(f"{name} must have B={batch} entries. Received: {value.shape[0]}")
    if masks is not None:
        masks = _numpy(masks)
        if masks.ndim != 4 or masks.shape[:2] != boxes.shape[:2]:
            raise ValueError(
                f"masks must be (B, D, H, W) matching boxes {boxes.shape[:2]}. "
                f"Received: masks.shape={masks.shape}"
            )
    shapes = None if image_shapes is None else _numpy(image_shapes).astype(np.int64)
    results = []
    for b in range(batch):
        n = int(min(counts[b], boxes.shape[1]))
        image_classes = classes[b, :n]
        bad = image_classes[(image_classes < 1) | (image_classes > len(category_ids))]
        if bad.size:
            raise ValueError(
                f"Image {int(image_ids[b])}: detection classes must lie in "
                f"1..{len(category_ids)}. Received: {sorted(set(bad.tolist()))}"
            )
        image_boxes = boxes[b, :n]
        if shapes is not None:
            height, width = shapes[b]
            image_boxes = np.clip(image_boxes, 0.0, [height, width, height, width])
        rles = None
        if masks is not None:
            image_masks = masks[b, :n]
            if shapes is not None:
                image_masks = image_masks[:, : shapes[b][0], : shapes[b][1]]
            rles = _encode(mask_api, (image_masks > 0).astype(np.uint8))
        for i in range(n):
            y1, x1, y2, x2 = image_boxes[i]
            result = {
                "image_id": int(image_ids[b]),
                "category_id": category_ids[int(image_classes[i]) - 1],
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "score": float(scores[b, i]),
            }
            if rles is not None:
                result["segmentation"] = rles[i]
            results.append(result)
    return results


def _load_ground_truth(COCO, ground_truth):
    if isinstance(ground_truth, (str, os.PathLike)):
        path = os.fspath(ground_truth)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"COCO annotation file {path!r} does not exist.")
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(path)
    if not hasattr(ground_truth, "getImgIds"):
        raise TypeError(
            "ground_truth must be a pycocotools COCO object or an annotation file path. "
            f"Received: {type(ground_truth).__name__}"
        )
    return ground_truth


def _load_detections(detections) -> list[dict]:
    if isinstance(detections, (str, os.PathLike)):
        with open(os.fspath(detections), encoding="utf-8") as handle:
            detections = json.load(handle)
    detections = list(detections)
    for index, result in enumerate(detections):
        for key in ("image_id", "category_id", "score"):
            if key not in result:
                raise ValueError(f"Detection {index} has no key {key!r}.")
    return detections


def _results_for(COCO, ground_truth, detections, iou_type):
    if iou_type == "segm":
        missing = [i for i, d in enumerate(detections) if "segmentation" not in d]
        if missing:
            raise ValueError(
                f"iou_type 'segm' needs a 'segmentation' in every detection; detection "
                f"{missing[0]} has none (pass masks to detections_to_coco)."
            )
    results = copy.deepcopy(detections)
    if iou_type == "segm":
        # With a bbox present, pycocotools takes the box area as the detection's area, which
        # would change which size range (small/medium/large) a detection counts in.
        for result in results:
            result.pop("bbox", None)
    if not results:
        dataset = {
            "images": list(ground_truth.dataset["images"]),
            "annotations": [],
            "categories": copy.deepcopy(ground_truth.dataset["categories"]),
        }
        return _quiet_coco(COCO, dataset)
    unknown_images = {d["image_id"] for d in results} - set(ground_truth.getImgIds())
    if unknown_images:
        raise ValueError(
            f"Detections refer to image ids not in the ground truth: {sorted(unknown_images)[:10]}"
        )
    unknown_categories = {d["category_id"] for d in results} - set(ground_truth.getCatIds())
    if unknown_categories:
        raise ValueError(
            "Detections refer to category ids not in the ground truth: "
            f"{sorted(unknown_categories)}"
        )
    with contextlib.redirect_stdout(io.StringIO()):
        return ground_truth.loadRes(results)


def coco_evaluate(
    ground_truth,
    detections,
    iou_types: Sequence[str] = ("segm", "bbox"),
    *,
    per_category: bool = True,
    verbose: bool = False,
) -> dict:
    """COCO mask and box AP/AR of detections against a ground truth.

    Runs pycocotools' COCOeval (evaluate, accumulate, summarize) once per IoU type. For mask
    evaluation the detections' boxes are set aside so that pycocotools measures each
    detection's size by its mask area, as the ground truth's is. An empty detection list
    gives AP 0 (and -1, COCO's "undefined", for size ranges with no ground truth).

    Args:
        ground_truth: a pycocotools `COCO` (e.g. from `coco_ground_truth`) or the path of a
            COCO annotation file.
        detections: a list of COCO result dicts (e.g. from `detections_to_coco`) or the path of
            a results JSON file.
        iou_types: any of "segm" (mask AP) and "bbox" (box AP).
        per_category: also report each category's AP (IoU 0.50:0.95, all areas, 100 dets).
        verbose: print pycocotools' summary tables.

    Returns:
        A dict of floats: for "segm" `mask_AP, mask_AP50, mask_AP75, mask_APs, mask_APm,
        mask_APl, mask_AR1, mask_AR10, mask_AR100, mask_ARs, mask_ARm, mask_ARl` (COCOeval's
        12 stats in order), for "bbox" the same with the `box_` prefix, and with
        `per_category` entries `mask_AP/<category name>` (NaN for a category without ground
        truth).

    Example:
        >>> metrics = kseg.detection.coco_eval.coco_evaluate(  # doctest: +SKIP
        ...     "instances_val2017.json", results)
        >>> metrics["mask_AP"], metrics["box_AP"]  # doctest: +SKIP
    """
    COCO, COCOeval, _ = _pycocotools()
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    for iou_type in iou_types:
        if iou_type not in IOU_TYPE_PREFIX:
            raise ValueError(
                f"iou_types entries must be 'segm' or 'bbox'. Received: iou_types={iou_types!r}"
            )
    gt = _load_ground_truth(COCO, ground_truth)
    detections = _load_detections(detections)
    metrics = {}
    for iou_type in iou_types:
        prefix = IOU_TYPE_PREFIX[iou_type]
        dt = _results_for(COCO, gt, detections, iou_type)
        evaluator = COCOeval(gt, dt, iou_type)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        if verbose:
            print(f"COCO {iou_type} evaluation")
            print(
                "\n".join(
                    line
                    for line in log.getvalue().splitlines()
                    if "Precision" in line or "Recall" in line
                )
            )
        for name, value in zip(STAT_NAMES, evaluator.stats):
            metrics[f"{prefix}_{name}"] = float(value)
        if per_category:
            # precision axes: IoU threshold, recall threshold, category, area range, maxDets.
            precision = evaluator.eval["precision"][:, :, :, 0, -1]
            for k, category_id in enumerate(evaluator.params.catIds):
                values = precision[:, :, k]
                values = values[values > -1]
                name = gt.cats[category_id]["name"]
                metrics[f"{prefix}_AP/{name}"] = (
                    float(values.mean()) if values.size else float("nan")
                )
    return metrics
