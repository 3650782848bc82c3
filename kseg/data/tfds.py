"""Segmentation datasets from tensorflow-datasets, mapped to kseg's `(image, mask)` pairs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from kseg.data.info import DatasetInfo
from kseg.data.validate import assert_valid_example
from kseg.validation import IGNORE_LABEL


@dataclasses.dataclass(frozen=True)
class TfdsSegmentationSpec:
    """Where a tensorflow-datasets builder keeps its image and mask, and how labels map.

    Args:
        image_key: feature holding the RGB image.
        mask_key: feature holding the label image (its first channel is used).
        label_map: `{stored_value: label}`.
        unlisted_label: label of stored values absent from `label_map`; None keeps them.
        class_names: names of the mapped labels 0..n-1.
        palette: their colours.
    """

    image_key: str
    mask_key: str
    label_map: Mapping[int, int] | None
    unlisted_label: int | None
    class_names: tuple[str, ...] | None
    palette: tuple[tuple[int, int, int], ...] | None = None


# Cityscapes labelIds -> trainIds, from the benchmark's own label table (cityscapesScripts):
# the 19 evaluated classes get 0..18, every other id is ignored.
_CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

PRESETS: dict[str, TfdsSegmentationSpec] = {
    # The pet trimaps store 1 = pet, 2 = background, 3 = undecided border band.
    "oxford_iiit_pet": TfdsSegmentationSpec(
        image_key="image",
        mask_key="segmentation_mask",
        label_map={1: 1, 2: 0, 3: IGNORE_LABEL},
        unlisted_label=None,
        class_names=("background", "pet"),
        palette=((0, 0, 0), (200, 40, 40)),
    ),
    "cityscapes": TfdsSegmentationSpec(
        image_key="image_left",
        mask_key="segmentation_label",
        label_map=_CITYSCAPES_TRAIN_IDS,
        unlisted_label=IGNORE_LABEL,
        class_names=(
            "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
            "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
            "bus", "train", "motorcycle", "bicycle",
        ),
        palette=(
            (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
            (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
            (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
            (0, 80, 100), (0, 0, 230), (119, 11, 32),
        ),
    ),
}  # fmt: skip


def _resolve_spec(name, image_key, mask_key, label_map, class_names, num_classes):
    base = name.split("/")[0].split(":")[0]
    spec = PRESETS.get(base)
    if spec is None:
        if image_key is None or mask_key is None:
            raise ValueError(
                f"No preset for tensorflow-datasets dataset {name!r} (presets: "
                f"{sorted(PRESETS)}); pass image_key= and mask_key= naming its features."
            )
        spec = TfdsSegmentationSpec(image_key, mask_key, None, None, None)
    overrides = {}
    if image_key is not None:
        overrides["image_key"] = image_key
    if mask_key is not None:
        overrides["mask_key"] = mask_key
    if label_map is not None:
        overrides.update(label_map=dict(label_map), unlisted_label=None)
    if class_names is not None:
        overrides["class_names"] = tuple(class_names)
    if label_map is not None or class_names is not None or num_classes is not None:
        overrides["palette"] = None
    return dataclasses.replace(spec, **overrides)


def _num_classes(spec, num_classes):
    if num_classes is not None:
        return int(num_classes)
    return len(spec.class_names) if spec.class_names is not None else None


def tfds_info(
    name: str,
    *,
    image_key: str | None = None,
    mask_key: str | None = None,
    label_map: Mapping[int, int] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    ignore_label: int = IGNORE_LABEL,
) -> DatasetInfo:
    """The `DatasetInfo` of a tensorflow-datasets segmentation dataset (see `tfds_dataset`).

    Example:
        >>> kseg.data.tfds_info("oxford_iiit_pet").class_names
        ('background', 'pet')
    """
    spec = _resolve_spec(name, image_key, mask_key, label_map, class_names, num_classes)
    return DatasetInfo(
        num_classes=_num_classes(spec, num_classes),
        class_names=spec.class_names,
        ignore_label=ignore_label,
        palette=spec.palette,
    )


def _lookup_table(spec, ignore_label, preset_labels):
    if spec.label_map is None and spec.unlisted_label is None:
        return None
    size = 256 if not spec.label_map else max(256, max(spec.label_map) + 1)
    if spec.unlisted_label is None:
        table = np.arange(size, dtype=np.int32)
    else:
        table = np.full(size, spec.unlisted_label, dtype=np.int32)
    for stored, label in (spec.label_map or {}).items():
        table[stored] = label
    if preset_labels:
        # Presets are written with IGNORE_LABEL and rewritten to the caller's ignore label.
        table[table == IGNORE_LABEL] = ignore_label
    return tf.constant(table)


def tfds_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    download: bool = True,
    image_key: str | None = None,
    mask_key: str | None = None,
    label_map: Mapping[int, int] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    ignore_label: int = IGNORE_LABEL,
    shuffle_files: bool = False,
    validate: bool = True,
) -> tf.data.Dataset:
    """A tensorflow-datasets segmentation dataset as kseg `(image, mask)` pairs.

    Presets know the feature names and label mapping of "oxford_iiit_pet" (Parkhi et al.,
    CVPR 2012; trimap 1 = pet -> 1, 2 = background -> 0, 3 = border -> ignore) and
    "cityscapes/semantic_segmentation" (Cordts et al., CVPR 2016; labelIds -> the 19 trainIds,
    everything else ignored). Any other builder works by naming its features.

    Args:
        name: builder name as `tfds.load` takes it, e.g. "oxford_iiit_pet:4.*.*".
        split: split (or split expression such as "train[:10%]").
        data_dir: tensorflow-datasets data folder.
        download: let tensorflow-datasets download and prepare the data if needed.
        image_key: feature holding the image (overrides the preset).
        mask_key: feature holding the mask; its first channel is the label.
        label_map: `{stored_value: label}` replacing the preset's mapping.
        num_classes: number of classes, if the preset does not say or is overridden.
        class_names: class names replacing the preset's.
        ignore_label: label of ignored pixels.
        shuffle_files: shuffle the input files (tfds option).
        validate: add in-graph checks (equal sizes, labels in range) whose errors name the
            dataset.

    Returns:
        A `tf.data.Dataset` of `(image, mask)`: float32 `(H, W, 3)` in [0, 255] and int32
        `(H, W)`.

    Example:
        >>> ds = kseg.data.tfds_dataset("oxford_iiit_pet", "train")  # doctest: +SKIP
    """
    import tensorflow_datasets as tfds

    spec = _resolve_spec(name, image_key, mask_key, label_map, class_names, num_classes)
    classes = _num_classes(spec, num_classes)
    preset_labels = label_map is None and name.split("/")[0].split(":")[0] in PRESETS
    table = _lookup_table(spec, ignore_label, preset_labels)
    ds = tfds.load(
        name, split=split, data_dir=data_dir, download=download, shuffle_files=shuffle_files
    )
    features = ds.element_spec
    for key in (spec.image_key, spec.mask_key):
        if key not in features:
            raise ValueError(
                f"tensorflow-datasets dataset {name!r} has no feature {key!r}; its features are "
                f"{sorted(features)}."
            )
    source = f"tensorflow-datasets {name!r} split {split!r}"

    def to_pair(example):
        image = tf.cast(example[spec.image_key], tf.float32)
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        mask = tf.cast(example[spec.mask_key], tf.int32)
        if mask.shape.rank == 3:
            mask = mask[..., 0]
        if table is not None:
            inside = tf.logical_and(mask >= 0, mask < tf.shape(table)[0])
            mask = tf.where(
                inside, tf.gather(table, tf.clip_by_value(mask, 0, table.shape[0] - 1)), mask
            )
        if validate:
            image, mask = assert_valid_example(image, mask, classes, ignore_label, source)
        return image, mask

    return ds.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
