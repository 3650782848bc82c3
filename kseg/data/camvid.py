"""CamVid road scenes with 11 classes, in the layout of the SegNet tutorial."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from kseg.data import validate as checks
from kseg.data.folders import match_folder_pairs, paired_files_dataset
from kseg.data.info import DatasetInfo
from kseg.validation import IGNORE_LABEL

CAMVID_CLASS_NAMES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
CAMVID_NUM_CLASSES = len(CAMVID_CLASS_NAMES)
CAMVID_VOID_LABEL = 11
# The colours the SegNet tutorial uses for these classes (void is black); kseg's one palette type,
# a (classes, 3) uint8 array with row i the colour of label i.
CAMVID_PALETTE = np.array(
    [
        [128, 128, 128],
        [128, 0, 0],
        [192, 192, 128],
        [128, 64, 128],
        [60, 40, 222],
        [128, 128, 0],
        [192, 128, 128],
        [64, 64, 128],
        [64, 0, 128],
        [64, 64, 0],
        [0, 128, 192],
    ],
    dtype=np.uint8,
)


def camvid_info(ignore_label: int = IGNORE_LABEL) -> DatasetInfo:
    """Class names, palette and ignore label of the 11-class CamVid.

    Example:
        >>> kseg.data.camvid_info().class_names[3]
        'Road'
    """
    return DatasetInfo(CAMVID_NUM_CLASSES, CAMVID_CLASS_NAMES, ignore_label, CAMVID_PALETTE)


def _resolve_listed(root: Path, listed: str, split_file: Path, line_number: int) -> str:
    # SegNet's lists name files by absolute paths of its authors' machine
    # ("/SegNet/CamVid/trainannot/x.png"), so fall back to the last two parts below `root`.
    candidates = [Path(listed), root / listed.lstrip("/"), root / Path(*Path(listed).parts[-2:])]
    for candidate in candidates:
        if candidate.is_file():
            return os.fspath(candidate)
    raise checks.DatasetError(
        f"{str(split_file)!r} line {line_number} lists {listed!r}, which exists neither as given "
        f"nor below {str(root)!r}."
    )


def camvid_pairs(root, split: str = "train") -> tuple[list[str], list[str]]:
    """Image and mask paths of a CamVid split, from `<split>.txt` or else the split folders.

    Args:
        root: folder holding `train/`, `trainannot/`, `val/`, `valannot/` (and optionally
            `test/`, `testannot/`) and the `<split>.txt` lists of "image mask" pairs.
        split: "train", "val" or "test".

    Returns:
        Two equally long lists: image paths and mask paths.
    """
    root = Path(root)
    checks.require_dir(root, "CamVid root folder")
    split_file = root / f"{split}.txt"
    if split_file.is_file():
        images, masks = [], []
        for number, line in enumerate(split_file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise checks.DatasetError(
                    f"{str(split_file)!r} line {number} should hold an image and a mask path. "
                    f"Received: {line!r}"
                )
            images.append(_resolve_listed(root, fields[0], split_file, number))
            masks.append(_resolve_listed(root, fields[1], split_file, number))
        if not images:
            raise checks.DatasetError(f"The split file {str(split_file)!r} lists no pairs.")
        return images, masks
    if (root / split).is_dir() and (root / f"{split}annot").is_dir():
        return match_folder_pairs(root / split, root / f"{split}annot")
    raise checks.DatasetError(
        f"CamVid split {split!r} not found: expected the split file {str(split_file)!r} or the "
        f"folders {str(root / split)!r} and {str(root / (split + 'annot'))!r}."
    )


def camvid_dataset(
    root,
    split: str = "train",
    *,
    ignore_label: int = IGNORE_LABEL,
    validate: str = "header",
    shuffle_files: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """CamVid semantic segmentation pairs (360x480 road scenes, 11 classes plus void).

    Brostow et al., "Semantic object classes in video: A high-definition ground truth
    database", Pattern Recognition Letters 2009, in the 367/101/233 split and 11-class
    labelling used by SegNet (Badrinarayanan et al., TPAMI 2017). Mask values 0-10 are the
    classes of `CAMVID_CLASS_NAMES`; the void value 11 becomes `ignore_label`.

    Args:
        root: the CamVid folder (see `camvid_pairs`).
        split: "train", "val" or "test".
        ignore_label: label given to void pixels.
        validate: "header", "full" or "none"; see `kseg.data.paired_files_dataset`.
        shuffle_files: reshuffle the file order each epoch.
        seed: seed of that shuffle.

    Returns:
        A `tf.data.Dataset` of `(image, mask)`: float32 `(360, 480, 3)` in [0, 255] and int32
        `(360, 480)` with values in 0..10 and `ignore_label`.

    Example:
        >>> ds = kseg.data.camvid_dataset("data/camvid", "val")  # doctest: +SKIP
    """
    images, masks = camvid_pairs(root, split)
    return paired_files_dataset(
        images,
        masks,
        num_classes=CAMVID_NUM_CLASSES,
        ignore_label=ignore_label,
        label_map={CAMVID_VOID_LABEL: ignore_label},
        validate=validate,
        shuffle_files=shuffle_files,
        seed=seed,
        source=f"CamVid {split} at {os.fspath(root)!r}",
    )
