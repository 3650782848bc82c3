"""Reading image/mask files with checks whose errors name the offending file.

Validation happens in two places so that a broken dataset fails before or during the first
epoch, never silently later:

* at construction, `scan_pairs` opens every file's header (cheap: no pixel decoding) and checks
  that it is a readable image and that image and mask sizes agree; `validate="full"` also decodes
  every pair and checks label values, which suits small datasets;
* inside the pipeline, `read_pair` (run through `tf.numpy_function`) re-checks sizes and label
  values on the decoded arrays and turns decoder failures (truncated or corrupt files) into
  errors that name the file. tf.data reports them as `tf.errors.InvalidArgumentError` whose
  message carries the text of the `DatasetError` below.

For datasets that arrive as tensors (tensorflow-datasets), `assert_valid_example` performs the
same checks in graph with `tf.debugging`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from kseg.validation import IGNORE_LABEL

VALIDATION_MODES = ("none", "header", "full")
_INDEX_MODES = ("P", "L", "I", "I;16", "I;16L", "I;16B", "1")
_COLOUR_MODES = ("RGB", "RGBA")


class DatasetError(ValueError):
    """A dataset file or folder is missing, unreadable or inconsistent."""


def require_dir(path, what: str = "dataset folder"):
    """Raise `DatasetError` naming `path` unless it is an existing directory."""
    if not os.path.isdir(path):
        raise DatasetError(f"The {what} {os.fspath(path)!r} does not exist or is not a directory.")


def require_file(path, what: str = "file"):
    """Raise `DatasetError` naming `path` unless it is an existing file."""
    if not os.path.isfile(path):
        raise DatasetError(f"Expected {what} at {os.fspath(path)!r}, but it does not exist.")


def check_mode(mode: str) -> str:
    """Return `mode` if it is a known validation mode, else raise ValueError."""
    if mode not in VALIDATION_MODES:
        raise ValueError(f"validate must be one of {VALIDATION_MODES}. Received: validate={mode!r}")
    return mode


def _as_str(path) -> str:
    return path.decode() if isinstance(path, bytes) else os.fspath(path)


def read_image(path, dtype=np.float32) -> np.ndarray:
    """Decode an image file into an `(H, W, 3)` array in [0, 255].

    Grayscale, palette and RGBA images are converted to RGB. Any decoder failure becomes a
    `DatasetError` naming the file. The RGB conversion yields 8-bit values, so `dtype=np.uint8`
    loses nothing: the input pipeline decodes to uint8 and casts to float32 in the graph, which
    is cheaper than converting in numpy under the interpreter lock.
    """
    path = _as_str(path)
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=dtype)
    except Exception as exc:  # PIL raises several unrelated exception types
        raise DatasetError(f"Cannot read image file {path!r}: {exc}") from exc
    return array


def _colour_keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colours_to_indices(rgb: np.ndarray, palette, path: str = "<array>") -> np.ndarray:
    """Map an `(H, W, 3)` colour-coded mask to class ids, where `palette[i]` is class i's colour.

    `palette` is a sequence of `(r, g, b)` (its position is the class id) or a mapping
    `{(r, g, b): class_id}`. A colour absent from the palette raises `DatasetError` naming the
    file and the first unknown colours.
    """
    if isinstance(palette, Mapping):
        colours = np.asarray(list(palette.keys()), dtype=np.int64).reshape(-1, 3)
        ids = np.asarray(list(palette.values()), dtype=np.int32)
    else:
        colours = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
        ids = np.arange(len(colours), dtype=np.int32)
    keys = _colour_keys(colours)
    order = np.argsort(keys)
    keys, ids = keys[order], ids[order]
    pixel_keys = _colour_keys(rgb[..., :3])
    position = np.clip(np.searchsorted(keys, pixel_keys), 0, len(keys) - 1)
    known = keys[position] == pixel_keys
    if not known.all():
        unknown = np.unique(pixel_keys[~known])[:5]
        shown = [((int(k) >> 16) & 255, (int(k) >> 8) & 255, int(k) & 255) for k in unknown]
        raise DatasetError(
            f"Mask file {path!r} contains colours that are not in the palette, e.g. {shown}."
        )
    return ids[position]


def read_mask(path, mask_colors=None) -> np.ndarray:
    """Decode a mask file into an int32 `(H, W)` array of raw label values.

    Palette ("P") images give their palette *indices*, which are the class ids in VOC-style
    files, whatever colours the embedded palette holds; grayscale and 16-bit images give their
    values. Colour (RGB/RGBA) masks need `mask_colors` (see `colours_to_indices`), unless all
    three channels are equal, in which case the first channel is the label.
    """
    path = _as_str(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            array = np.asarray(im)
    except Exception as exc:
        raise DatasetError(f"Cannot read mask file {path!r}: {exc}") from exc
    if mode in _INDEX_MODES:
        return array.astype(np.int32)
    if mode in _COLOUR_MODES or mode == "LA":
        if mode == "LA":
            return array[..., 0].astype(np.int32)
        if mask_colors is not None:
            return colours_to_indices(array, mask_colors, path)
        rgb = array[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0].astype(np.int32)
        raise DatasetError(
            f"Mask file {path!r} is a colour ({mode}) image; pass mask_colors=[(r, g, b), ...] "
            "to map its colours to class ids, or store masks as palette/grayscale PNGs."
        )
    raise DatasetError(f"Mask file {path!r} has unsupported image mode {mode!r}.")


def make_label_lookup(label_map: Mapping[int, int] | None) -> np.ndarray | None:
    """Build an int32 lookup table from `{raw_value: label}`; unlisted values map to themselves."""
    if not label_map:
        return None
    keys = np.asarray(list(label_map.keys()), dtype=np.int64)
    if keys.min() < 0:
        raise ValueError(f"label_map keys must be non-negative. Received: label_map={label_map!r}")
    table = np.arange(max(256, int(keys.max()) + 1), dtype=np.int32)
    table[keys] = np.asarray(list(label_map.values()), dtype=np.int32)
    return table


def apply_label_lookup(mask: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """Map raw mask values through `table`; values past its end are left unchanged."""
    if table is None:
        return mask
    inside = mask < len(table)
    return np.where(inside, table[np.clip(mask, 0, len(table) - 1)], mask).astype(np.int32)


def check_same_size(image_shape, mask_shape, image_path, mask_path):
    """Raise `DatasetError` naming both files when image and mask heights/widths differ."""
    if tuple(image_shape[:2]) != tuple(mask_shape[:2]):
        raise DatasetError(
            f"Image and mask sizes differ: image {_as_str(image_path)!r} is "
            f"{image_shape[1]}x{image_shape[0]} (WxH) but mask {_as_str(mask_path)!r} is "
            f"{mask_shape[1]}x{mask_shape[0]} (WxH)."
        )


def check_labels(mask: np.ndarray, num_classes: int | None, ignore_label: int, mask_path):
    """Raise `DatasetError` naming the file and values outside [0, num_classes) ∪ {ignore}."""
    if num_classes is None:
        bad = mask < 0
    else:
        bad = ((mask < 0) | (mask >= num_classes)) & (mask != ignore_label)
    if bad.any():
        values = np.unique(mask[bad])
        shown = ", ".join(str(v) for v in values[:10])
        valid = f"[0, {num_classes})" if num_classes is not None else "non-negative values"
        raise DatasetError(
            f"Mask file {_as_str(mask_path)!r} contains label value(s) {shown} outside "
            f"{valid} that are not the ignore label {ignore_label}."
        )


def read_pair(
    image_path,
    mask_path,
    *,
    num_classes: int | None = None,
    ignore_label: int = IGNORE_LABEL,
    label_table: np.ndarray | None = None,
    mask_colors=None,
    image_dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode, map and check one image/mask pair; every failure names its file.

    The image comes as `image_dtype` (see `read_image`), the mask as int32.
    """
    image = read_image(image_path, image_dtype)
    mask = read_mask(mask_path, mask_colors)
    check_same_size(image.shape, mask.shape, image_path, mask_path)
    mask = apply_label_lookup(mask, label_table)
    check_labels(mask, num_classes, ignore_label, mask_path)
    return image, mask


def _header(path, what: str):
    try:
        with Image.open(path) as im:
            return im.size, im.mode
    except Exception as exc:
        raise DatasetError(f"Cannot read {what} file {os.fspath(path)!r}: {exc}") from exc


def scan_pairs(image_paths: Sequence, mask_paths: Sequence, *, validate="header", **decoding):
    """Check a list of pairs eagerly according to `validate` ("none", "header" or "full").

    "full" decodes every pair with `read_pair(image_path, mask_path, **decoding)`.
    """
    check_mode(validate)
    if validate == "none":
        return
    if validate == "full":
        for image_path, mask_path in zip(image_paths, mask_paths):
            read_pair(image_path, mask_path, **decoding)
        return
    for image_path, mask_path in zip(image_paths, mask_paths):
        (iw, ih), _ = _header(image_path, "image")
        (mw, mh), mode = _header(mask_path, "mask")
        check_same_size((ih, iw), (mh, mw), image_path, mask_path)
        if mode not in _INDEX_MODES + _COLOUR_MODES + ("LA",):
            raise DatasetError(
                f"Mask file {os.fspath(mask_path)!r} has unsupported image mode {mode!r}."
            )


def assert_valid_example(image, mask, num_classes, ignore_label, source: str):
    """In-graph checks for tensor datasets: equal sizes and labels in range, naming `source`."""
    image_hw, mask_hw = tf.shape(image)[:2], tf.shape(mask)[:2]
    checks = [
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(image_hw, mask_hw)),
            [
                f"Image and mask sizes differ in {source}: image (H, W) =",
                image_hw,
                "mask (H, W) =",
                mask_hw,
            ],
        )
    ]
    if num_classes is not None:
        bad = tf.logical_and(
            tf.logical_or(mask < 0, mask >= num_classes), tf.not_equal(mask, ignore_label)
        )
        checks.append(
            tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(bad)),
                [
                    (
                        f"{source}: mask contains label values outside [0, {num_classes}) that are "
                        f"not the ignore label {ignore_label}; offending values:"
                    ),
                    tf.unique(tf.boolean_mask(mask, bad))[0],
                ],
                summarize=10,
            )
        )
    with tf.control_dependencies(checks):
        return tf.identity(image), tf.identity(mask)
