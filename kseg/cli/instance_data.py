"""The instance data the `kseg` commands read: `shapes` or `coco:ANNOTATIONS.json,IMAGE_DIR`."""

import os

import kseg.data

COCO_PREFIX = "coco:"
"""The prefix of a COCO-format `--data`: `coco:ANNOTATIONS.json,IMAGE_DIR`."""


def coco_source(source):
    """`coco:ANNOTATIONS.json,IMAGE_DIR` as `(annotations, image_dir)`; None for other sources."""
    text = os.fspath(source)
    if not text.startswith(COCO_PREFIX):
        return None
    parts = [part.strip() for part in text[len(COCO_PREFIX) :].split(",")]
    if len(parts) != 2 or not all(parts):
        raise SystemExit(
            "kseg: error: COCO data are given as coco:ANNOTATIONS.json,IMAGE_DIR. "
            f"Received: --data {text!r}"
        )
    return tuple(parts)


def instance_examples(source, split, num_samples):
    """Instance examples and their categories from `shapes` or `coco:ANNOTATIONS,IMAGE_DIR`."""
    coco = coco_source(source)
    if coco is not None:
        annotations, image_dir = coco
        # Both calls name a missing annotation file or image folder in a DatasetError.
        examples = kseg.data.coco_instance_dataset(annotations, image_dir)
        categories = kseg.data.coco_categories(annotations)
        if num_samples is not None:
            examples = examples.take(num_samples)
        return examples, categories
    if source == "shapes":
        kwargs = {} if num_samples is None else {"num_samples": num_samples}
        return kseg.data.shapes_instance_examples(split, **kwargs), kseg.data.shapes_info()
    raise SystemExit(
        "kseg: error: MaskRCNN models take instance annotations: --data shapes or "
        f"--data coco:ANNOTATIONS.json,IMAGE_DIR. Received: --data {source!r}"
    )


def category_names(categories):
    """The object class names (background left out) of COCO categories or a `DatasetInfo`."""
    if hasattr(categories, "coco_ids"):
        return tuple(categories.names)
    return tuple(categories.class_names[1:])
