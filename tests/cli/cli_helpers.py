"""Shared pieces of the `kseg` command tests: a tiny COCO folder and Mask R-CNN configuration."""

import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
COCO_CATEGORIES = [  # sparse COCO ids, numbered 1..4 by kseg in id order
    {"id": 2, "name": "block"},
    {"id": 5, "name": "wedge"},
    {"id": 9, "name": "bar"},
    {"id": 11, "name": "dot"},
]


def mask_rcnn_small_config():
    """The SMALL Mask R-CNN configuration of tests/models/test_mask_rcnn.py."""
    spec = importlib.util.spec_from_file_location(
        "mask_rcnn_model_tests", REPO / "tests" / "models" / "test_mask_rcnn.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SMALL


def write_tiny_coco(root, count=3, size=(64, 80), seed=0):
    """A COCO-format folder: `count` PNGs in root/images and root/annotations.json.

    Each image holds two polygons (a rectangle and a triangle) painted in flat colours over
    noise; their categories cycle through COCO_CATEGORIES. Returns (annotations, image_dir).
    """
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    height, width = size
    for index in range(count):
        image = Image.fromarray(rng.integers(0, 80, (height, width, 3), dtype=np.uint8))
        pen = ImageDraw.Draw(image)
        top, left = int(rng.integers(2, 20)), int(rng.integers(2, 30))
        rectangle = [left, top, left + 24, top, left + 24, top + 18, left, top + 18]
        triangle = [50, 40, 76, 60, 50, 62]
        for number, polygon in enumerate((rectangle, triangle)):
            pen.polygon(polygon, fill=(220, 60 + 120 * number, 40))
            xs, ys = polygon[0::2], polygon[1::2]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 10,
                    "category_id": COCO_CATEGORIES[(index + number) % 4]["id"],
                    "segmentation": [[float(v) for v in polygon]],
                    "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                    "area": 1.0,
                    "iscrowd": 0,
                }
            )
        image.save(image_dir / f"scene_{index}.png")
        images.append(
            {"id": index + 10, "file_name": f"scene_{index}.png", "height": height, "width": width}
        )
    path = root / "annotations.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": COCO_CATEGORIES})
    )
    return path, image_dir


def small_config_flags():
    """The SMALL Mask R-CNN configuration as `--backbone` / `--model-arg` flags."""
    flags = []
    for name, value in mask_rcnn_small_config().items():
        flags += (
            ["--backbone", value] if name == "backbone" else ["--model-arg", f"{name}={value!r}"]
        )
    return flags
