"""How the values stored in mask files become labels: binary 0/255 masks and explicit mappings.

A mask's values are class ids, with 255 the ignore label. Binary masks are most often saved
as 0 (background) and 255 (foreground), which read that way would ignore every foreground
pixel: the model would learn background alone and its mean IoU, over the one class left,
would read 1.0. So a folder whose masks hold nothing but 0 and 255 is refused unless the
caller says what 255 means:

* `mask_values="binary"`: 0 is background (class 0), 255 foreground (class 1);
* `mask_values="labels"`: the values are class ids as stored, 255 ignored;
* a mapping `{stored value: label}` (or its text form `"0:0,255:1"`), e.g. an Oxford-IIIT Pet
  trimap `{1: 1, 2: 0, 3: 255}`: pet, background, and the border ignored.

The check decodes up to `SAMPLED_MASKS` masks spread evenly over the sorted file list (the
first one included) and refuses when, together, they hold the value 255 and no value but 0
and 255. Masks with class ids besides (`{0, 1, 255}`: classes 0 and 1 with an ignored border,
the usual convention) pass untouched, as do masks without 255.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from kseg.data.validate import DatasetError, read_mask

SAMPLED_MASKS = 16
"""How many masks, spread over a folder, the 0/255 check decodes."""

BINARY_MASK_VALUES = {0: 0, 255: 1}
"""The mapping `mask_values="binary"` stands for: 0 background, 255 foreground."""

BINARY_CLASS_NAMES = ("background", "foreground")
"""The class names of a binary mask folder when none are given."""

_AMBIGUOUS = {0, 255}
_FLAG = "--mask-values"


def parse_mask_values(mask_values):
    """Reads a `mask_values` option: "binary", "labels", a mapping, text "0:0,255:1" or None.

    Args:
        mask_values: None (check for 0/255 masks), "binary", "labels", a mapping
            `{stored value: label}`, or that mapping as text `"VALUE:LABEL,VALUE:LABEL"`.

    Returns:
        None, "binary", "labels" or a dict of ints.

    Raises:
        DatasetError: naming the value when it is none of these.

    Example:
        >>> kseg.data.parse_mask_values("0:0, 255:1")
        {0: 0, 255: 1}
        >>> kseg.data.parse_mask_values("binary")
        'binary'
    """
    if mask_values is None or isinstance(mask_values, Mapping):
        return _checked_mapping(mask_values)
    text = str(mask_values).strip()
    if text in ("binary", "labels"):
        return text
    pairs = [part.split(":") for part in text.split(",") if part.strip()]
    try:
        mapping = {int(stored): int(label) for stored, label in pairs}
    except ValueError:
        mapping = {}
    if not mapping:
        raise DatasetError(
            "mask values must be 'binary' (0 background, 255 foreground), 'labels' (class ids "
            "as stored, 255 ignored) or STORED:LABEL pairs such as '0:0,255:1' "
            f"({_FLAG} or mask_values=). Received: {mask_values!r}"
        )
    return _checked_mapping(mapping)


def _checked_mapping(mapping):
    if mapping is None:
        return None
    mapping = {int(stored): int(label) for stored, label in mapping.items()}
    if not mapping or min(mapping) < 0 or min(mapping.values()) < 0:
        raise DatasetError(
            f"a mask_values mapping takes non-negative stored values and labels. "
            f"Received: {mapping!r}"
        )
    return mapping


def sample_mask_paths(mask_paths: Sequence, count: int = SAMPLED_MASKS) -> list:
    """Up to `count` of `mask_paths`, spread evenly over the list, the first one included.

    Example:
        >>> kseg.data.mask_values.sample_mask_paths([f"{i}.png" for i in range(40)], 4)
        ['0.png', '13.png', '26.png', '39.png']
    """
    if len(mask_paths) <= count:
        return list(mask_paths)
    positions = np.linspace(0, len(mask_paths) - 1, count).round().astype(int)
    return [mask_paths[i] for i in positions]


def _values_by_file(mask_paths, mask_colors):
    values = {}
    for path in sample_mask_paths(mask_paths):
        try:
            values[os.fspath(path)] = set(np.unique(read_mask(path, mask_colors)).tolist())
        except DatasetError:
            continue  # an unreadable mask is reported, naming its file, where it is read
    return values


def _describe(values_by_file):
    seen = sorted(set().union(*values_by_file.values()))
    example = next(path for path, values in values_by_file.items() if 255 in values)
    return seen, example, len(values_by_file)


def check_binary_masks(mask_paths: Sequence, mask_colors=None):
    """Refuses a mask set whose sampled masks hold only 0 and 255 (255 present).

    Args:
        mask_paths: the mask files, in order.
        mask_colors: the colour table of colour-coded masks, as `kseg.data.validate.read_mask`
            takes it.

    Raises:
        DatasetError: naming a file, the values seen and the two ways to say what 255 means.

    Example:
        >>> kseg.data.mask_values.check_binary_masks([])  # nothing to check
    """
    values_by_file = _values_by_file(mask_paths, mask_colors)
    seen = set().union(*values_by_file.values()) if values_by_file else set()
    if 255 not in seen or not seen <= _AMBIGUOUS:
        return
    values, example, count = _describe(values_by_file)
    raise DatasetError(
        f"the masks hold only the values {values} ({count} sampled, e.g. {example!r}), and 255 "
        "is the ignore label: read as they are, every foreground pixel would be ignored and the "
        "model would learn background only. For binary masks (255 = foreground) pass "
        f"{_FLAG} binary (mask_values='binary' in kseg.data.load_dataset / folder_dataset) or "
        f"an explicit mapping ({_FLAG} 0:0,255:1); if 255 really marks pixels to ignore, pass "
        f"{_FLAG} labels (mask_values='labels')."
    )


def _check_binary_sample(mask_paths, mask_colors):
    """Refuses "binary" for masks that also hold class ids: there 255 is an ignored border."""
    values_by_file = _values_by_file(mask_paths, mask_colors)
    for path, values in values_by_file.items():
        other = sorted(values - _AMBIGUOUS)
        if other:
            raise DatasetError(
                f"mask_values='binary' ({_FLAG} binary) reads 0 as background and 255 as "
                f"foreground, but mask file {path!r} holds the values {sorted(values)}: with "
                f"other labels ({other}) besides, 255 is most likely an ignored border. Drop "
                f"{_FLAG} for masks whose values are class ids, or map every value "
                f"({_FLAG} 0:0,1:1,255:255)."
            )


def resolve_mask_values(
    mask_values, mask_paths: Sequence, *, label_map=None, mask_colors=None, ignore_label=255
) -> dict | None:
    """The `label_map` a mask folder is read with, after the 0/255 check when none is given.

    Args:
        mask_values: None, "binary", "labels", a mapping or its text (see
            `parse_mask_values`).
        mask_paths: the mask files, in order.
        label_map: a `{stored value: label}` mapping given separately (the older option);
            it counts as explicit and skips the check, and cannot be combined with
            `mask_values`.
        mask_colors: the colour table of colour-coded masks; their classes come from it, so
            the check is skipped.
        ignore_label: the ignore label; the 0/255 check guards against 255 ignoring the
            foreground, so it runs only when the ignore label is 255.

    Returns:
        The `{stored value: label}` mapping to apply, or None to keep the values.

    Raises:
        DatasetError: for masks holding only 0 and 255 when `mask_values` is None, for
            "binary" with masks holding other values, or for an unreadable option.

    Example:
        >>> kseg.data.mask_values.resolve_mask_values("binary", [])
        {0: 0, 255: 1}
    """
    mask_values = parse_mask_values(mask_values)
    if mask_values is not None and label_map:
        raise ValueError(
            "pass mask_values or label_map, not both: both map stored mask values to labels. "
            f"Received: mask_values={mask_values!r}, label_map={label_map!r}"
        )
    if mask_values == "labels":
        return label_map or None
    if mask_values == "binary":
        if mask_colors is None:
            _check_binary_sample(mask_paths, mask_colors)
        return dict(BINARY_MASK_VALUES)
    if mask_values is not None:
        return mask_values
    if not label_map and mask_colors is None and ignore_label == 255:
        check_binary_masks(mask_paths, mask_colors)
    return label_map or None
