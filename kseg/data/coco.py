"""Instance-segmentation examples read from a COCO-format annotation file.

The COCO format (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014) stores one
JSON file per split with `images`, `annotations` and `categories`. Instance masks arrive as
polygons, uncompressed run-length encodings (RLE, used for crowd regions) or compressed RLE
strings; pycocotools, the reference implementation shipped with the dataset, rasterises and
decodes all three, so the masks here match what the official evaluation sees.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from kseg.data.info import DatasetInfo
from kseg.data.validate import DatasetError, require_file
from kseg.detection.boxes import numpy_boxes_from_masks

MISSING_IMAGE_MODES = ("error", "skip")
# Polygon extents are continuous while mask extents snap to whole pixels, so the two boxes
# legitimately differ by up to about a pixel per side.
_BOX_AGREEMENT_TOLERANCE = 1.5
_REQUIRED_IMAGE_KEYS = ("id", "file_name", "height", "width")
_REQUIRED_ANNOTATION_KEYS = ("image_id", "category_id", "segmentation")
_logger = logging.getLogger(__name__)


def _mask_api():
    try:
        from pycocotools import mask as mask_api
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("COCO annotations need pycocotools: `pip install pycocotools`.") from exc
    return mask_api


@dataclasses.dataclass(frozen=True)
class CocoCategories:
    """The mapping between COCO category ids and kseg's contiguous class ids.

    COCO's category ids are sparse (1..90 with gaps for the 80 detection classes); models want
    classes 1..K with 0 for the background. Contiguous class `k` is COCO category
    `coco_ids[k - 1]`.

    Args:
        coco_ids: COCO category id of contiguous classes 1..K, in order.
        names: their names, in the same order.

    Example:
        >>> categories = kseg.data.CocoCategories((1, 3), ("person", "car"))
        >>> categories.num_classes, categories.coco_ids
        (3, (1, 3))
    """

    coco_ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "coco_ids", tuple(int(i) for i in self.coco_ids))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if len(self.coco_ids) != len(self.names):
            raise ValueError(
                f"coco_ids and names must have the same length. Received: "
                f"{len(self.coco_ids)} ids and {len(self.names)} names"
            )
        if len(set(self.coco_ids)) != len(self.coco_ids):
            raise ValueError(f"coco_ids must be unique. Received: coco_ids={self.coco_ids}")

    @property
    def num_classes(self) -> int:
        """Number of classes counting the background (K + 1)."""
        return len(self.coco_ids) + 1

    @property
    def class_of(self) -> dict[int, int]:
        """`{coco_category_id: contiguous_class}`."""
        return {coco_id: k + 1 for k, coco_id in enumerate(self.coco_ids)}

    def info(self) -> DatasetInfo:
        """The matching `DatasetInfo` (class 0 named "background")."""
        return DatasetInfo(self.num_classes, ("background",) + self.names)


def _load_json(annotation_file) -> dict:
    path = os.fspath(annotation_file)
    require_file(path, "COCO annotation file")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"COCO annotation file {path!r} is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}."
        ) from exc
    if not isinstance(data, dict):
        raise DatasetError(
            f"COCO annotation file {path!r} must hold a JSON object with 'images', "
            f"'annotations' and 'categories'; it holds a {type(data).__name__}."
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"COCO annotation file {path!r} has no top-level key {key!r}.")
        if not isinstance(data[key], list):
            raise DatasetError(
                f"COCO annotation file {path!r}: {key!r} must be a list, got "
                f"{type(data[key]).__name__}."
            )
    return data


def _require_keys(entry, keys, path, section, index):
    if not isinstance(entry, dict):
        raise DatasetError(
            f"COCO annotation file {path!r}: {section}[{index}] must be an object, got "
            f"{type(entry).__name__}."
        )
    for key in keys:
        if key not in entry:
            raise DatasetError(
                f"COCO annotation file {path!r}: {section}[{index}] "
                f"(id={entry.get('id', '?')}) has no key {key!r}."
            )


def _categories_from(data, path, category_ids) -> CocoCategories:
    by_id = {}
    for index, category in enumerate(data["categories"]):
        _require_keys(category, ("id", "name"), path, "categories", index)
        by_id[int(category["id"])] = str(category["name"])
    if category_ids is None:
        chosen = sorted(by_id)
    else:
        chosen = [int(c) for c in category_ids]
        unknown = [c for c in chosen if c not in by_id]
        if unknown:
            raise DatasetError(
                f"COCO annotation file {path!r} has no categories {unknown}; it defines "
                f"{sorted(by_id)}."
            )
    if not chosen:
        raise DatasetError(f"COCO annotation file {path!r} defines no categories.")
    return CocoCategories(tuple(chosen), tuple(by_id[c] for c in chosen))


def coco_categories(annotation_file, category_ids: Sequence[int] | None = None) -> CocoCategories:
    """Read the category table of a COCO annotation file.

    Args:
        annotation_file: path of the JSON file.
        category_ids: COCO category ids to keep, in the order that numbers them 1..K; by
            default every category, sorted by id (the order Detectron and torchvision use).

    Returns:
        A `CocoCategories`.

    Example:
        >>> categories = kseg.data.coco_categories("instances_val2017.json")  # doctest: +SKIP
        >>> categories.info().class_names[:2]  # doctest: +SKIP
        ('background', 'person')
    """
    path = os.fspath(annotation_file)
    return _categories_from(_load_json(path), path, category_ids)


def _polygon_parts(segmentation):
    # pycocotools reads a 4-number list as a box, and fewer than 3 points enclose nothing.
    return [
        [float(v) for v in part]
        for part in segmentation
        if isinstance(part, (list, tuple)) and len(part) >= 6 and len(part) % 2 == 0
    ]


def _is_degenerate(annotation) -> bool:
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list) and not _polygon_parts(segmentation):
        return True
    if "area" in annotation and float(annotation["area"]) <= 0:
        return True
    bbox = annotation.get("bbox")
    return isinstance(bbox, list) and len(bbox) == 4 and min(float(bbox[2]), float(bbox[3])) <= 0


def decode_segmentation(segmentation, height: int, width: int, *, source: str = "") -> np.ndarray:
    """Rasterise one COCO segmentation into a uint8 `(height, width)` binary mask.

    Polygons cover the pixels whose area they enclose by pycocotools' rule (a polygon with
    corners x0, y0, x1, y1 covers rows [y0, y1) and columns [x0, x1)); uncompressed RLE has
    integer `counts`, compressed RLE a string.

    Args:
        segmentation: a list of polygons `[[x1, y1, x2, y2, ...], ...]` or an RLE dict with
            `size` `[height, width]` and `counts`.
        height: image height.
        width: image width.
        source: text naming where the segmentation came from, used in errors.

    Returns:
        uint8 array `(height, width)` of 0/1.

    Example:
        >>> int(kseg.data.coco.decode_segmentation([[0, 0, 4, 0, 4, 2, 0, 2]], 3, 5).sum())
        8
    """
    mask_api = _mask_api()
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise DatasetError(f"{source}: RLE segmentation needs 'counts' and 'size'.")
        size = [int(s) for s in segmentation["size"]]
        if size != [int(height), int(width)]:
            raise DatasetError(
                f"{source}: RLE size {size} differs from the image size [{height}, {width}]."
            )
        if isinstance(segmentation["counts"], list):
            rle = mask_api.frPyObjects(segmentation, int(height), int(width))
        else:
            rle = segmentation
        return np.ascontiguousarray(mask_api.decode(rle), dtype=np.uint8)
    if isinstance(segmentation, list):
        parts = _polygon_parts(segmentation)
        if not parts:
            return np.zeros((int(height), int(width)), dtype=np.uint8)
        rles = mask_api.frPyObjects(parts, int(height), int(width))
        return np.ascontiguousarray(mask_api.decode(mask_api.merge(rles)), dtype=np.uint8)
    raise DatasetError(
        f"{source}: segmentation must be a polygon list or an RLE dict, got "
        f"{type(segmentation).__name__}."
    )


def _read_rgb(path: str, height: int, width: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several unrelated exception types
        raise DatasetError(f"Cannot read image file {path!r}: {exc}") from exc
    if array.shape[:2] != (height, width):
        raise DatasetError(
            f"Image file {path!r} is {array.shape[1]}x{array.shape[0]} (WxH) but the annotation "
            f"file says {width}x{height}."
        )
    return array


class _ExampleReader:
    """Decodes image `index` and its annotations; run inside `tf.numpy_function`."""

    def __init__(self, records, annotation_path):
        self.records = records
        self.annotation_path = annotation_path
        self.warned_empty = False
        self.warned_boxes = False

    def __call__(self, index):
        record = self.records[int(index)]
        height, width = record["height"], record["width"]
        image = _read_rgb(record["path"], height, width)
        masks, classes, crowd, kept_boxes = [], [], [], []
        for annotation, class_id in record["annotations"]:
            source = (
                f"COCO annotation file {self.annotation_path!r}, annotation "
                f"id={annotation.get('id', '?')} of image {record['file_name']!r}"
            )
            mask = decode_segmentation(annotation["segmentation"], height, width, source=source)
            if not mask.any():
                if not self.warned_empty:
                    self.warned_empty = True
                    warnings.warn(
                        f"{source} decodes to an empty mask and is dropped (further empty "
                        "masks are dropped silently).",
                        stacklevel=2,
                    )
                continue
            box = numpy_boxes_from_masks(mask[None])[0]
            self._check_box(annotation, box, source)
            masks.append(mask)
            classes.append(class_id)
            crowd.append(bool(annotation.get("iscrowd", 0)))
            kept_boxes.append(box)
        if masks:
            mask_array = np.stack(masks)
            boxes = np.stack(kept_boxes)
        else:
            mask_array = np.zeros((0, height, width), dtype=np.uint8)
            boxes = np.zeros((0, 4), dtype=np.float32)
        return (
            image,
            boxes.astype(np.float32),
            np.asarray(classes, dtype=np.int32).reshape(-1),
            mask_array,
            np.int64(record["id"]),
            np.asarray(crowd, dtype=bool).reshape(-1),
        )

    def _check_box(self, annotation, box, source):
        bbox = annotation.get("bbox")
        if self.warned_boxes or not (isinstance(bbox, list) and len(bbox) == 4):
            return
        x, y, w, h = (float(v) for v in bbox)
        stated = np.array([y, x, y + h, x + w], dtype=np.float32)
        if np.abs(stated - box).max() > _BOX_AGREEMENT_TOLERANCE:
            self.warned_boxes = True
            warnings.warn(
                f"{source}: its bbox [x, y, w, h] = {bbox} disagrees with the extent of its "
                f"decoded mask [y1, x1, y2, x2] = {box.tolist()}; kseg uses the mask extent "
                "(further disagreements are not reported).",
                stacklevel=2,
            )


def _build_records(data, path, image_dir, categories, skip_crowd, missing_images):
    class_of = categories.class_of
    images = {}
    for index, image in enumerate(data["images"]):
        _require_keys(image, _REQUIRED_IMAGE_KEYS, path, "images", index)
        if image["id"] in images:
            raise DatasetError(
                f"COCO annotation file {path!r}: images[{index}] repeats image id {image['id']!r}."
            )
        images[image["id"]] = {
            "id": int(image["id"]),
            "file_name": str(image["file_name"]),
            "path": os.path.join(os.fspath(image_dir), str(image["file_name"])),
            "height": int(image["height"]),
            "width": int(image["width"]),
            "annotations": [],
        }
    degenerate = crowd_skipped = 0
    for index, annotation in enumerate(data["annotations"]):
        _require_keys(annotation, _REQUIRED_ANNOTATION_KEYS, path, "annotations", index)
        record = images.get(annotation["image_id"])
        if record is None:
            raise DatasetError(
                f"COCO annotation file {path!r}: annotations[{index}] "
                f"(id={annotation.get('id', '?')}) refers to image_id="
                f"{annotation['image_id']!r}, which is not in 'images'."
            )
        class_id = class_of.get(int(annotation["category_id"]))
        if class_id is None:
            continue
        if annotation.get("iscrowd", 0) and skip_crowd:
            crowd_skipped += 1
            continue
        if _is_degenerate(annotation):
            degenerate += 1
            continue
        record["annotations"].append((annotation, class_id))
    if degenerate:
        warnings.warn(
            f"COCO annotation file {path!r}: dropped {degenerate} annotation(s) with zero area "
            "or degenerate polygons (fewer than 3 points).",
            stacklevel=3,
        )
    if crowd_skipped:
        _logger.info("Skipped %d crowd annotation(s) in %s.", crowd_skipped, path)
    records = list(images.values())
    missing = [r["path"] for r in records if not os.path.isfile(r["path"])]
    if missing:
        shown = ", ".join(repr(p) for p in missing[:5])
        if missing_images == "error":
            raise DatasetError(
                f"{len(missing)} image file(s) listed in {path!r} do not exist, e.g. {shown}. "
                "Pass missing_images='skip' to leave them out."
            )
        warnings.warn(
            f"Skipping {len(missing)} image(s) listed in {path!r} whose files do not exist, "
            f"e.g. {shown}.",
            stacklevel=3,
        )
        missing_set = set(missing)
        records = [r for r in records if r["path"] not in missing_set]
    return records


def coco_instance_dataset(
    annotation_file,
    image_dir,
    *,
    category_ids: Sequence[int] | None = None,
    skip_crowd: bool = True,
    missing_images: str = "error",
    skip_empty_images: bool = False,
    shuffle: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Instance-segmentation examples (image, boxes, classes, masks) from a COCO-format file.

    The JSON file is read and checked when the dataset is built, so a malformed file, a
    missing key or a missing image file fails before training starts, with an error naming
    the file (and the key or image). Images and masks are decoded lazily, one image per
    element; masks go through pycocotools, so polygons, uncompressed and compressed RLE all
    work. Boxes are the extents of the decoded masks (the annotation's own `[x, y, w, h]`
    bbox is only checked against them, with a warning when they disagree by more than
    1.5 px). Annotations with zero area or degenerate polygons are dropped, counted in a
    warning. Crowd regions (`iscrowd: 1`, a blob covering many objects) are dropped by
    default, as in Mask R-CNN training (He et al., 2017); with `skip_crowd=False` they are
    kept and flagged in `"is_crowd"` so that a loss or `kseg.detection.coco_eval` can treat
    them as regions to ignore. Grayscale, palette and RGBA images are converted to RGB.

    Args:
        annotation_file: path of the COCO JSON file.
        image_dir: folder holding the images' `file_name`s.
        category_ids: COCO category ids to keep (their order numbers them 1..K); default every
            category sorted by id. Annotations of other categories are dropped.
        skip_crowd: drop crowd regions.
        missing_images: "error" raises `DatasetError` listing missing image files when the
            dataset is built; "skip" leaves those images out with a warning.
        skip_empty_images: leave out images with no (kept) annotations; by default they are
            examples with N = 0.
        shuffle: shuffle the image order each epoch (cheap: indices are shuffled before
            decoding).
        seed: shuffle seed.

    Returns:
        A `tf.data.Dataset` of dicts: "image" uint8 `(H, W, 3)`, "boxes" float32 `(N, 4)`
        as `[y1, x1, y2, x2]` in pixels (max exclusive), "classes" int32 `(N,)` in 1..K,
        "masks" uint8 `(N, H, W)` of 0/1, "image_id" int64 (the COCO image id) and
        "is_crowd" bool `(N,)`. `coco_categories(annotation_file, category_ids)` gives the
        class mapping. A file that cannot be decoded raises an error naming it while
        iterating.

    Example:
        >>> ds = kseg.data.coco_instance_dataset(  # doctest: +SKIP
        ...     "annotations/instances_val2017.json", "val2017", missing_images="skip")
        >>> batches = kseg.data.pad_instance_batch(ds, 2)  # doctest: +SKIP
    """
    if missing_images not in MISSING_IMAGE_MODES:
        raise ValueError(
            f"missing_images must be one of {MISSING_IMAGE_MODES}. "
            f"Received: missing_images={missing_images!r}"
        )
    path = os.fspath(annotation_file)
    if not os.path.isdir(image_dir):
        raise DatasetError(f"The image folder {os.fspath(image_dir)!r} does not exist.")
    data = _load_json(path)
    categories = _categories_from(data, path, category_ids)
    records = _build_records(data, path, image_dir, categories, skip_crowd, missing_images)
    if skip_empty_images:
        records = [r for r in records if r["annotations"]]
    if not records:
        raise DatasetError(f"COCO annotation file {path!r} leaves no images to read.")
    reader = _ExampleReader(records, path)

    def load(index):
        image, boxes, classes, masks, image_id, crowd = tf.numpy_function(
            reader,
            [index],
            [tf.uint8, tf.float32, tf.int32, tf.uint8, tf.int64, tf.bool],
            stateful=False,
        )
        image.set_shape([None, None, 3])
        boxes.set_shape([None, 4])
        classes.set_shape([None])
        masks.set_shape([None, None, None])
        image_id.set_shape([])
        crowd.set_shape([None])
        return {
            "image": image,
            "boxes": boxes,
            "classes": classes,
            "masks": masks,
            "image_id": image_id,
            "is_crowd": crowd,
        }

    ds = tf.data.Dataset.range(len(records))
    if shuffle:
        ds = ds.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
