"""U-Net's per-pixel loss weights: class balancing plus a border term between touching cells.

Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", equation 2: w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2)),
where d1 and d2 are the distances to the border of the nearest and the second nearest cell,
w0 = 10 and sigma ~ 5 pixels. The border term makes the network learn the thin background gaps
that separate touching cells. The weights are a data-side transform: computed once per mask and
passed to `model.fit` as the per-pixel `sample_weight` of the sparse cross-entropy.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Bounds the (pixels x border pixels) distance block held in memory at once.
_BLOCK_ELEMENTS = 4_000_000


def _check_instances(instances) -> np.ndarray:
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise ValueError(
            f"instances must be a 2-D (H, W) mask of cell ids. Received: shape={instances.shape}"
        )
    if not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(f"instances must hold integer cell ids. Received: dtype={instances.dtype}")
    if instances.size and instances.min() < 0:
        raise ValueError(
            "instances must hold 0 for background and positive cell ids. "
            f"Received: label value {int(instances.min())}"
        )
    return instances


def _cell_borders(instances):
    """Pixels of each cell with a 4-neighbour outside that cell (the image edge does not count)."""
    padded = np.pad(instances, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    differs = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return differs & (instances > 0)


def nearest_cell_distances(instances) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances from each pixel to the nearest and second nearest cell.

    A cell is a connected set of pixels sharing one positive id. The distance from a pixel to a
    cell is the distance to the cell's closest pixel (0 inside the cell), found among the cell's
    border pixels, which always contain the closest one. The search is exact and vectorised but
    costs (pixels x border pixels): fine for tiles of a few hundred pixels a side; precompute the
    weights once per dataset for larger images.

    Args:
        instances: integer `(H, W)` mask, 0 for background, one positive id per cell.

    Returns:
        `(d1, d2)`, float32 `(H, W)` arrays; `inf` where fewer than one (d1) or two (d2) cells
        exist.

    Example:
        >>> import numpy as np, kseg
        >>> cells = np.zeros((5, 9), int); cells[:, :2] = 1; cells[:, 7:] = 2
        >>> d1, d2 = kseg.data.unet_weights.nearest_cell_distances(cells)
        >>> float(d1[2, 4]), float(d2[2, 4])
        (3.0, 3.0)
    """
    instances = _check_instances(instances)
    height, width = instances.shape
    d1 = np.full(instances.shape, np.inf, np.float32)
    d2 = np.full(instances.shape, np.inf, np.float32)
    border = _cell_borders(instances)
    rows, cols = np.nonzero(border)
    ids = instances[rows, cols]
    if ids.size == 0:
        return d1, d2
    order = np.argsort(ids, kind="stable")
    rows, cols, ids = rows[order], cols[order], ids[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    border_points = np.stack([rows, cols], axis=1).astype(np.float32)

    pixels = np.indices((height, width), dtype=np.float32).reshape(2, -1).T
    block = max(1, _BLOCK_ELEMENTS // len(border_points))
    flat_d1, flat_d2 = d1.reshape(-1), d2.reshape(-1)
    for start in range(0, len(pixels), block):
        chunk = pixels[start : start + block]
        squared = ((chunk[:, None, :] - border_points[None, :, :]) ** 2).sum(-1)
        per_cell = np.minimum.reduceat(squared, starts, axis=1)
        if per_cell.shape[1] >= 2:
            two = np.partition(per_cell, 1, axis=1)[:, :2]
            flat_d1[start : start + block] = np.sqrt(two[:, 0])
            flat_d2[start : start + block] = np.sqrt(two[:, 1])
        else:
            flat_d1[start : start + block] = np.sqrt(per_cell[:, 0])
    # A pixel inside a cell is at distance 0 from it, not at the distance to its border.
    inside = instances > 0
    d1[inside] = 0.0
    return d1, d2


def unet_weight_map(instances, w0=10.0, sigma=5.0, class_weights=None) -> np.ndarray:
    """The U-Net pixel-weight map of equation 2 of Ronneberger et al. 2015.

    `w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))`. The border term is added on
    background pixels only: those are the separating gaps the paper's Fig. 3d highlights, whereas
    inside a cell d1 is zero and the term would merely favour cell pixels near a neighbour. It is
    zero when the mask holds fewer than two cells. `w_c` balances the two classes (background 0,
    cell 1): by default from this mask's own frequencies, `w_c(c) = N / (K * n_c)` over the `K`
    classes present, so each class carries the same total weight and the mean of `w_c` is 1;
    pass `class_weights=(w_background, w_cell)` to use frequencies measured over a training set.

    Args:
        instances: integer `(H, W)` mask, 0 for background, one positive id per cell.
        w0: amplitude of the border term (10 in the paper).
        sigma: its width in pixels (about 5 in the paper).
        class_weights: None, or `(w_background, w_cell)`.

    Returns:
        float32 `(H, W)` weights.

    Example:
        >>> import numpy as np, kseg
        >>> cells = np.zeros((20, 30), int); cells[5:15, 2:13] = 1; cells[5:15, 16:27] = 2
        >>> weights = kseg.data.unet_weight_map(cells)
        >>> bool(weights[10, 14] > weights[0, 0])
        True
    """
    instances = _check_instances(instances)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive. Received: sigma={sigma}")
    if not w0 >= 0:
        raise ValueError(f"w0 must be non-negative. Received: w0={w0}")
    foreground = instances > 0
    if class_weights is None:
        counts = np.array([(~foreground).sum(), foreground.sum()], np.float64)
        present = counts > 0
        balanced = np.zeros(2)
        balanced[present] = instances.size / (present.sum() * counts[present])
        class_weights = balanced
    class_weights = np.asarray(class_weights, np.float64)
    if class_weights.shape != (2,) or np.any(class_weights < 0):
        raise ValueError(
            "class_weights must be two non-negative numbers (background, cell). "
            f"Received: class_weights={class_weights.tolist()}"
        )
    weights = class_weights[foreground.astype(np.int64)]
    d1, d2 = nearest_cell_distances(instances)
    with np.errstate(invalid="ignore"):
        border = w0 * np.exp(-((d1.astype(np.float64) + d2) ** 2) / (2.0 * sigma**2))
    border = np.where(np.isfinite(d2) & ~foreground, border, 0.0)
    return (weights + border).astype(np.float32)


def with_unet_weights(image, instances, w0=10.0, sigma=5.0, class_weights=None):
    """A `tf.data` map function: `(image, instances)` to `(image, labels, weights)`.

    The triple is what `model.fit` reads as inputs, targets and per-pixel sample weights, so a
    sparse cross-entropy becomes the paper's weighted loss. `labels` are 0 (background) and 1
    (cell); `weights` come from `unet_weight_map`, run through `tf.numpy_function`.

    Args:
        image: the image tensor, passed through.
        instances: integer `(H, W)` cell-id mask tensor.
        w0: border-term amplitude.
        sigma: border-term width in pixels.
        class_weights: None or `(w_background, w_cell)`.

    Returns:
        `(image, labels, weights)`: labels int32 `(H, W)`, weights float32 `(H, W)`.

    Example:
        >>> import numpy as np, tensorflow as tf, kseg
        >>> cells = np.zeros((16, 16), np.int32); cells[2:7, 2:7] = 1; cells[9:14, 9:14] = 2
        >>> ds = tf.data.Dataset.from_tensors((tf.zeros((16, 16, 1)), cells))
        >>> image, labels, weights = next(iter(ds.map(kseg.data.with_unet_weights)))
        >>> weights.shape
        TensorShape([16, 16])
    """
    instances = tf.convert_to_tensor(instances)

    def compute(mask):
        return unet_weight_map(mask, w0=w0, sigma=sigma, class_weights=class_weights)

    weights = tf.numpy_function(compute, [instances], tf.float32, stateful=False)
    weights.set_shape(instances.shape)
    labels = tf.cast(instances > 0, tf.int32)
    return image, labels, weights
