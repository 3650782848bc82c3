"""One entry point that recognises a dataset source and calls the matching loader."""

from __future__ import annotations

import os
from pathlib import Path

from kseg.data import validate as checks
from kseg.data.camvid import camvid_dataset, camvid_info
from kseg.data.folders import folder_dataset, folder_info
from kseg.data.mask_values import BINARY_CLASS_NAMES, parse_mask_values
from kseg.data.shapes import shapes_dataset, shapes_info
from kseg.data.tfds import tfds_dataset, tfds_info
from kseg.data.voc import voc_dataset, voc_info

_MASK_FOLDER_NAMES = ("masks", "labels", "annotations", "annot", "gt")
_FOLDER_INFO_KEYS = ("num_classes", "class_names", "ignore_label", "palette")


def _folder_pair(images, masks, split):
    images, masks = Path(images), Path(masks)
    if (images / split).is_dir() and (masks / split).is_dir():
        return images / split, masks / split
    return images, masks


def _folder_source(images, masks, split, with_info, kwargs):
    images, masks = _folder_pair(images, masks, split)
    kwargs = dict(kwargs, mask_values=parse_mask_values(kwargs.get("mask_values")))
    if kwargs["mask_values"] == "binary":
        # Binary masks have two classes, whatever the caller left undeclared.
        kwargs.setdefault("num_classes", 2)
        kwargs.setdefault("class_names", BINARY_CLASS_NAMES)
    info_kwargs = {k: kwargs[k] for k in _FOLDER_INFO_KEYS if k in kwargs}
    loader_kwargs = {k: v for k, v in kwargs.items() if k not in ("class_names", "palette")}
    ds = folder_dataset(images, masks, **loader_kwargs)
    return (ds, folder_info(**info_kwargs)) if with_info else ds


def describe_source(source) -> str:
    """Name the kind of dataset `load_dataset` would load from `source` ("voc", "camvid"...)."""
    if isinstance(source, (tuple, list)):
        return "folders"
    text = os.fspath(source)
    if text == "shapes":
        return "shapes"
    if text.startswith("tfds:"):
        return "tfds"
    if "," in text and not Path(text).is_dir():
        return "folders"
    root = Path(text)
    checks.require_dir(root, "dataset folder")
    if any(
        (c / "JPEGImages").is_dir()
        for c in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012")
    ):
        return "voc"
    if (root / "trainannot").is_dir() or (root / "valannot").is_dir():
        return "camvid"
    if (root / "images").is_dir() and any((root / m).is_dir() for m in _MASK_FOLDER_NAMES):
        return "folders"
    raise checks.DatasetError(
        f"Cannot tell what dataset {text!r} holds: expected a PASCAL VOC tree (JPEGImages/), a "
        "CamVid folder (train/ + trainannot/), a folder with images/ and masks/ (or labels/), "
        "'IMAGES_DIR,MASKS_DIR', 'shapes' or 'tfds:<name>'."
    )


def load_dataset(source, split: str = "train", *, with_info: bool = False, **kwargs):
    """Load a segmentation dataset from any source kseg knows.

    `source` may be:

    * `"shapes"`: the built-in procedural dataset (`kseg.data.shapes_dataset`);
    * `"tfds:<name>"`: a tensorflow-datasets builder (`kseg.data.tfds_dataset`);
    * a PASCAL VOC folder (`kseg.data.voc_dataset`);
    * a CamVid folder with `train/`, `trainannot/`... (`kseg.data.camvid_dataset`);
    * a pair `(images_dir, masks_dir)`, the string `"IMAGES_DIR,MASKS_DIR"`, or a folder
      holding `images/` and `masks/` (or `labels/`, `annotations/`): image/mask folders paired
      by file name (`kseg.data.folder_dataset`); if both hold a `<split>/` subfolder, that is
      used.

    Args:
        source: the dataset, as above.
        split: split name ("train", "val", ...).
        with_info: also return the `DatasetInfo`, as `tfds.load(with_info=True)` does.
        **kwargs: passed to the loader (e.g. `num_samples=` for shapes, `validate=` for file
            datasets, `num_classes=` / `class_names=` / `mask_values=` for folders). Folders
            with `mask_values="binary"` (0/255 masks) have 2 classes named "background" and
            "foreground" unless `num_classes` / `class_names` say otherwise.

    Returns:
        The `tf.data.Dataset` of `(image, mask)`, or `(dataset, info)` with `with_info=True`.

    Example:
        >>> ds, info = kseg.data.load_dataset("shapes", "val", num_samples=100, with_info=True)
    """
    kind = describe_source(source)
    if kind != "folders" and kwargs.pop("mask_values", None) is not None:
        raise checks.DatasetError(
            f"mask_values (--mask-values) applies to image/mask folders; {os.fspath(source)!r} "
            f"is a {kind} dataset, whose loader knows its own mask values."
        )
    if kind == "shapes":
        ds, info = shapes_dataset(split, **kwargs), shapes_info()
    elif kind == "tfds":
        name = os.fspath(source)[len("tfds:") :]
        info_keys = (
            "image_key",
            "mask_key",
            "label_map",
            "num_classes",
            "class_names",
            "ignore_label",
        )
        info = tfds_info(name, **{k: kwargs[k] for k in info_keys if k in kwargs})
        ds = tfds_dataset(name, split, **kwargs)
    elif kind == "voc":
        ds = voc_dataset(source, split, **kwargs)
        info = voc_info(kwargs.get("ignore_label", 255))
    elif kind == "camvid":
        ds = camvid_dataset(source, split, **kwargs)
        info = camvid_info(kwargs.get("ignore_label", 255))
    else:
        if isinstance(source, (tuple, list)):
            if len(source) != 2:
                raise ValueError(
                    f"A folder source must be (images_dir, masks_dir). Received: source={source!r}"
                )
            images, masks = source
        elif not Path(source).is_dir():
            images, masks = (part.strip() for part in os.fspath(source).split(",", 1))
        else:
            root = Path(source)
            images = root / "images"
            masks = next(root / m for m in _MASK_FOLDER_NAMES if (root / m).is_dir())
        return _folder_source(images, masks, split, with_info, kwargs)
    return (ds, info) if with_info else ds
