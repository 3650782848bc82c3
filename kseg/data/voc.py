"""PASCAL VOC semantic segmentation (VOC2012 layout, 20 classes + background)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from kseg.data import validate as checks
from kseg.data.folders import paired_files_dataset
from kseg.data.info import DatasetInfo
from kseg.validation import IGNORE_LABEL

VOC_CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_NUM_CLASSES = len(VOC_CLASS_NAMES)


def voc_colormap(size: int = 256) -> np.ndarray:
    """The PASCAL VOC palette: an `(size, 3)` uint8 array, row i the colour of label i.

    The VOC development kit spreads the bits of the label over the high bits of the three
    channels (bit 0 to red, bit 1 to green, bit 2 to blue, then the next three bits one place
    lower, ...), giving (128, 0, 0) for aeroplane and (224, 224, 192) for the 255 boundary.

    Args:
        size: number of labels to colour (256 covers the boundary label 255).

    Returns:
        uint8 array of shape `(size, 3)`.

    Example:
        >>> kseg.data.voc_colormap()[15].tolist()  # person
        [192, 128, 128]
    """
    labels = np.arange(size)
    colours = np.zeros((size, 3), dtype=np.int64)
    for shift in range(7, -1, -1):
        for channel in range(3):
            colours[:, channel] |= ((labels >> channel) & 1) << shift
        labels = labels >> 3
    return colours.astype(np.uint8)


def voc_info(ignore_label: int = IGNORE_LABEL) -> DatasetInfo:
    """Class names, palette and ignore label of PASCAL VOC segmentation.

    Example:
        >>> kseg.data.voc_info().num_classes
        21
    """
    palette = tuple(tuple(int(c) for c in row) for row in voc_colormap(VOC_NUM_CLASSES))
    return DatasetInfo(VOC_NUM_CLASSES, VOC_CLASS_NAMES, ignore_label, palette)


def find_voc_root(root) -> Path:
    """Return the folder holding `JPEGImages/`, accepting `VOCdevkit/` or its parent too."""
    root = Path(root)
    checks.require_dir(root, "VOC root folder")
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise checks.DatasetError(
        f"{str(root)!r} is not a PASCAL VOC folder: expected {str(root / 'JPEGImages')!r} "
        "(or VOC2012/JPEGImages below it)."
    )


def read_split_file(path) -> list[str]:
    """Read the non-empty, whitespace-stripped lines of a split file (naming it if missing)."""
    path = Path(path)
    checks.require_file(path, "split file")
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n]
    if not names:
        raise checks.DatasetError(f"The split file {str(path)!r} lists no samples.")
    return names


def voc_dataset(
    root,
    split: str = "train",
    *,
    mask_dir: str = "SegmentationClass",
    ignore_label: int = IGNORE_LABEL,
    validate: str = "header",
    shuffle_files: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """PASCAL VOC semantic segmentation pairs from an extracted VOC tree.

    Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010. The
    masks are palette PNGs whose palette *index* is the class (0 background, 1..20 objects,
    255 the object boundary / "difficult" band, kept as the ignore label). They are read as
    indices with Pillow, which does not depend on the colours stored in the file.

    Args:
        root: the VOC2012 folder (holding `JPEGImages/`, `SegmentationClass/` and
            `ImageSets/Segmentation/`), or the `VOCdevkit/` folder above it.
        split: name of a file in `ImageSets/Segmentation/` without `.txt` ("train", "val",
            "trainval", or e.g. "train_aug" for the SBD-augmented list).
        mask_dir: folder of masks beside `JPEGImages/` (e.g. "SegmentationClassAug" for
            grayscale SBD-augmented masks).
        ignore_label: label given to the boundary value 255.
        validate: "header", "full" or "none"; see `kseg.data.paired_files_dataset`.
        shuffle_files: reshuffle the file order each epoch.
        seed: seed of that shuffle.

    Returns:
        A `tf.data.Dataset` of `(image, mask)`: float32 `(H, W, 3)` in [0, 255], int32
        `(H, W)` with values in 0..20 and `ignore_label`.

    Example:
        >>> ds = kseg.data.voc_dataset("VOCdevkit/VOC2012", "val")  # doctest: +SKIP
    """
    root = find_voc_root(root)
    names = read_split_file(root / "ImageSets" / "Segmentation" / f"{split}.txt")
    checks.require_dir(root / mask_dir, "VOC mask folder")
    image_paths = [root / "JPEGImages" / f"{n}.jpg" for n in names]
    mask_paths = [root / mask_dir / f"{n}.png" for n in names]
    for image_path, mask_path in zip(image_paths, mask_paths):
        checks.require_file(image_path, f"image of {split!r} sample {image_path.stem!r}")
        checks.require_file(mask_path, f"mask of {split!r} sample {mask_path.stem!r}")
    return paired_files_dataset(
        image_paths,
        mask_paths,
        num_classes=VOC_NUM_CLASSES,
        ignore_label=ignore_label,
        label_map={255: ignore_label} if ignore_label != 255 else None,
        validate=validate,
        shuffle_files=shuffle_files,
        seed=seed,
        source=f"VOC {split} at {str(root)!r}",
    )
