"""Segmentation datasets read from image files and mask files on disk."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from kseg.data import validate as checks
from kseg.data.info import DatasetInfo
from kseg.data.mask_values import parse_mask_values, resolve_mask_values
from kseg.validation import IGNORE_LABEL

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


def paired_files_dataset(
    image_paths: Sequence,
    mask_paths: Sequence,
    *,
    num_classes: int | None = None,
    ignore_label: int = IGNORE_LABEL,
    label_map: Mapping[int, int] | None = None,
    mask_colors=None,
    validate: str = "header",
    shuffle_files: bool = False,
    seed: int | None = None,
    source: str = "file list",
) -> tf.data.Dataset:
    """Build a `(image, mask)` dataset from parallel lists of image and mask files.

    Files are decoded with Pillow inside the pipeline, so palette masks yield their palette
    indices and every decoding, size or label error names its file (see `kseg.data.validate`).
    Other kseg loaders (folders, VOC, CamVid) are thin wrappers around this function.

    Args:
        image_paths: image files (any format Pillow reads: png, jpg, bmp, tif).
        mask_paths: mask files, one per image, in the same order.
        num_classes: if given, mask values (after `label_map`) must lie in `[0, num_classes)`
            or equal `ignore_label`.
        ignore_label: label of pixels excluded from losses and metrics.
        label_map: `{raw_value: label}` applied to mask values; unlisted values are kept.
        mask_colors: for colour-coded RGB masks, the colour of each class (`[(r, g, b), ...]`
            indexed by class id, or `{(r, g, b): class_id}`).
        validate: eager checks at construction: "header" (readable files, equal sizes; fast),
            "full" (decode everything and check labels too) or "none". The same checks run
            again on each decoded pair in the pipeline.
        shuffle_files: shuffle the file order each epoch, before decoding (cheaper than a
            shuffle buffer of decoded images).
        seed: seed of that shuffle.
        source: a name for the dataset used in error messages (e.g. the folder).

    Returns:
        A `tf.data.Dataset` of `(image, mask)`: float32 `(H, W, 3)` in [0, 255] and int32
        `(H, W)`.

    Example:
        >>> ds = kseg.data.paired_files_dataset(  # doctest: +SKIP
        ...     ["a.jpg"], ["a.png"], num_classes=21)
    """
    image_paths = [os.fspath(p) for p in image_paths]
    mask_paths = [os.fspath(p) for p in mask_paths]
    if len(image_paths) != len(mask_paths):
        raise ValueError(
            f"image_paths and mask_paths must have the same length. Received: "
            f"{len(image_paths)} images and {len(mask_paths)} masks"
        )
    if not image_paths:
        raise checks.DatasetError(f"The dataset {source} holds no image/mask pairs.")
    checks.check_mode(validate)
    label_table = checks.make_label_lookup(label_map)
    decoding = {
        "num_classes": num_classes,
        "ignore_label": ignore_label,
        "label_table": label_table,
        "mask_colors": mask_colors,
    }
    checks.scan_pairs(image_paths, mask_paths, validate=validate, **decoding)

    def load(image_path, mask_path):
        return checks.read_pair(image_path, mask_path, image_dtype=np.uint8, **decoding)

    def load_graph(image_path, mask_path):
        # Decoded as uint8 and cast here: the same float32 values, with less work under the
        # interpreter lock, which the parallel decoding calls share.
        image, mask = tf.numpy_function(
            load, [image_path, mask_path], (tf.uint8, tf.int32), stateful=False
        )
        image = tf.cast(image, tf.float32)
        image.set_shape([None, None, 3])
        mask.set_shape([None, None])
        return image, mask

    ds = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    if shuffle_files:
        ds = ds.shuffle(len(image_paths), seed=seed, reshuffle_each_iteration=True)
    return ds.map(load_graph, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _index_by_stem(folder: Path, extensions, suffix: str, what: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in extensions:
            continue
        stem = path.stem
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if stem in found:
            raise checks.DatasetError(
                f"Two {what} files share the name {stem!r}: {str(found[stem])!r} and {str(path)!r}."
            )
        found[stem] = path
    return found


def match_folder_pairs(
    images_dir, masks_dir, *, mask_suffix: str = "", strict: bool = True
) -> tuple[list[str], list[str]]:
    """Pair the files of two folders by file stem (`a.jpg` with `a.png`).

    Args:
        images_dir: folder of images.
        masks_dir: folder of masks.
        mask_suffix: text after the image stem in mask names (`"_mask"` pairs `a.jpg` with
            `a_mask.png`).
        strict: raise when an image has no mask or a mask has no image; otherwise skip them.

    Returns:
        Two sorted, equally long lists of image paths and mask paths.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    checks.require_dir(images_dir, "image folder")
    checks.require_dir(masks_dir, "mask folder")
    images = _index_by_stem(images_dir, IMAGE_EXTENSIONS, "", "image")
    masks = _index_by_stem(masks_dir, MASK_EXTENSIONS, mask_suffix, "mask")
    if not images:
        raise checks.DatasetError(
            f"The image folder {str(images_dir)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})."
        )
    if not masks:
        raise checks.DatasetError(
            f"The mask folder {str(masks_dir)!r} holds no masks ({', '.join(MASK_EXTENSIONS)})."
        )
    if strict:
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask:
            raise checks.DatasetError(
                f"{len(no_mask)} image(s) in {str(images_dir)!r} have no mask in "
                f"{str(masks_dir)!r} (suffix {mask_suffix!r}), e.g. {no_mask[:5]}."
            )
        if no_image:
            raise checks.DatasetError(
                f"{len(no_image)} mask(s) in {str(masks_dir)!r} have no image in "
                f"{str(images_dir)!r}, e.g. {no_image[:5]}."
            )
    stems = sorted(set(images) & set(masks))
    if not stems:
        raise checks.DatasetError(
            f"No image in {str(images_dir)!r} has a mask of the same name in {str(masks_dir)!r}."
        )
    return [str(images[s]) for s in stems], [str(masks[s]) for s in stems]


def folder_dataset(
    images_dir,
    masks_dir,
    *,
    num_classes: int | None = None,
    ignore_label: int = IGNORE_LABEL,
    label_map: Mapping[int, int] | None = None,
    mask_values=None,
    mask_colors=None,
    mask_suffix: str = "",
    strict: bool = True,
    validate: str = "header",
    shuffle_files: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """A segmentation dataset from a folder of images and a folder of masks paired by name.

    Masks are palette or grayscale PNGs whose values are class ids (after `label_map`, e.g.
    `{0: 255}` to ignore an "unlabelled" value), or colour-coded RGB PNGs with `mask_colors`.

    Binary masks saved as 0/255 would have every foreground pixel ignored (255 is the ignore
    label), so a folder whose masks hold nothing but 0 and 255 is refused with a `DatasetError`
    saying what was seen, unless `mask_values` says what 255 means ("binary": foreground;
    "labels": ignore). The check reads a sample of the masks (`kseg.data.mask_values`).

    Args:
        images_dir: folder of png/jpg images.
        masks_dir: folder of masks named like the images (plus `mask_suffix`).
        num_classes: number of classes; if given, out-of-range labels raise an error naming the
            file.
        ignore_label: label of pixels excluded from losses and metrics.
        label_map: `{raw_value: label}` applied to mask values.
        mask_values: how stored values become labels: None (values are class ids; masks of
            only 0 and 255 are refused), "binary" (0 background, 255 class 1), "labels"
            (class ids as stored, 255 ignored, no check), or a `{stored: label}` mapping or its
            text `"0:0,255:1"`. Not combined with `label_map`.
        mask_colors: colours of the classes, for colour-coded masks.
        mask_suffix: text after the image stem in mask names.
        strict: raise on unmatched files instead of skipping them.
        validate: "header", "full" or "none"; see `kseg.data.paired_files_dataset`.
        shuffle_files: reshuffle the file order each epoch.
        seed: seed of that shuffle.

    Returns:
        A `tf.data.Dataset` of `(image, mask)` pairs: float32 `(H, W, 3)`, int32 `(H, W)`.

    Example:
        >>> ds = kseg.data.folder_dataset(  # doctest: +SKIP
        ...     "data/images", "data/masks", num_classes=2)
    """
    image_paths, mask_paths = match_folder_pairs(
        images_dir, masks_dir, mask_suffix=mask_suffix, strict=strict
    )
    mask_values = parse_mask_values(mask_values)
    try:
        label_map = resolve_mask_values(
            mask_values,
            mask_paths,
            label_map=label_map,
            mask_colors=mask_colors,
            ignore_label=ignore_label,
        )
    except checks.DatasetError as error:
        raise checks.DatasetError(f"The mask folder {os.fspath(masks_dir)!r}: {error}") from None
    return paired_files_dataset(
        image_paths,
        mask_paths,
        num_classes=num_classes,
        ignore_label=ignore_label,
        label_map=label_map,
        mask_colors=mask_colors,
        validate=validate,
        shuffle_files=shuffle_files,
        seed=seed,
        source=f"{os.fspath(images_dir)!r} + {os.fspath(masks_dir)!r}",
    )


def folder_info(
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    ignore_label: int = IGNORE_LABEL,
    palette=None,
) -> DatasetInfo:
    """The `DatasetInfo` of a folder dataset: whatever the caller declares about it.

    Example:
        >>> kseg.data.folder_info(num_classes=2, class_names=["background", "cell"]).ignore_label
        255
    """
    return DatasetInfo(
        num_classes=num_classes,
        class_names=tuple(class_names) if class_names is not None else None,
        ignore_label=ignore_label,
        palette=palette,
    )
