"""Metadata shared by every kseg dataset: class count, names, ignore label and palette."""

from __future__ import annotations

import dataclasses

import numpy as np

from kseg.validation import IGNORE_LABEL, validate_num_classes


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model, a metric and a plot need to know about a segmentation dataset.

    Every kseg loader has a matching `*_info()` function returning one of these, and
    `kseg.data.load_dataset(..., with_info=True)` returns it beside the dataset. Class ids run
    from 0 to `num_classes - 1`; pixels labelled `ignore_label` count in no loss and no metric.

    Args:
        num_classes: number of real classes, or None when the loader cannot know it (a plain
            folder of masks without a declared class count).
        class_names: one name per class, in id order, or None.
        ignore_label: mask value excluded from losses and metrics.
        palette: one `(r, g, b)` colour per class, in id order, or None.

    Example:
        >>> info = kseg.data.DatasetInfo(2, ("background", "pet"), 255, ((0, 0, 0), (255, 0, 0)))
        >>> info.palette_array().shape
        (2, 3)
    """

    num_classes: int | None
    class_names: tuple[str, ...] | None = None
    ignore_label: int = IGNORE_LABEL
    palette: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self):
        if self.num_classes is not None:
            validate_num_classes(self.num_classes)
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
            if self.num_classes is not None and len(self.class_names) != self.num_classes:
                raise ValueError(
                    f"class_names must have num_classes={self.num_classes} entries. "
                    f"Received: {len(self.class_names)} names {self.class_names}"
                )
        if self.palette is not None:
            colours = tuple(tuple(int(c) for c in colour) for colour in self.palette)
            if any(len(c) != 3 or min(c) < 0 or max(c) > 255 for c in colours):
                raise ValueError(
                    "palette must hold (r, g, b) triples in [0, 255]. "
                    f"Received: palette={self.palette!r}"
                )
            if self.num_classes is not None and len(colours) != self.num_classes:
                raise ValueError(
                    f"palette must have num_classes={self.num_classes} colours. "
                    f"Received: {len(colours)} colours"
                )
            object.__setattr__(self, "palette", colours)
        if not 0 <= int(self.ignore_label) <= 65535:
            raise ValueError(
                f"ignore_label must lie in [0, 65535]. Received: ignore_label={self.ignore_label!r}"
            )

    def palette_array(self) -> np.ndarray:
        """The palette as a `(num_classes, 3)` uint8 array (raises if the dataset has none)."""
        if self.palette is None:
            raise ValueError("This DatasetInfo has no palette.")
        return np.asarray(self.palette, dtype=np.uint8)
