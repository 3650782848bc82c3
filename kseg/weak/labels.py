"""Weak labels (scribbles, image-level tags, boxes) derived from full segmentation masks.

Weakly-supervised methods are evaluated by training on labels that are cheaper than full masks
and measuring against the full masks. This module derives those cheap labels from an existing
dense mask so that every weak method can be run on any fully-labelled dataset, in the forms
fixed for `kseg.weak`:

- scribbles: uint8 `(H, W)`, the class id on scribble pixels and the ignore label elsewhere
  (the strokes imitate the user scribbles of ScribbleSup, Lin et al., CVPR 2016);
- tags: float32 `(K,)` multi-hot of the classes present, optionally with float32 `(K,)` area
  fractions over labelled pixels (the size information of Pathak et al., ICCV 2015);
- boxes: float32 `(N, 4)` `[y1, x1, y2, x2]` in pixels, where pixel `(i, j)` covers
  `[i, i + 1) x [j, j + 1)` (so `y2 - y1` is the height in rows), and int32 classes `(N,)`.

The generators take and return numpy arrays; `weak_label_dataset` applies one of them to every
`(image, mask)` element of a `tf.data.Dataset`. scikit-image is imported only when scribbles
or connected components are needed (`pip install 'kseg[weak]'`).
"""

import numpy as np
import tensorflow as tf

from kseg.detection.boxes import numpy_boxes_from_masks
from kseg.validation import (
    IGNORE_LABEL,
    validate_fraction,
    validate_ignore_label,
    validate_positive_int,
)

_INSTALL_HINT = "pip install 'kseg[weak]'"
_KINDS = ("scribbles", "tags", "boxes")


def _skimage():
    try:
        import skimage.measure
        import skimage.morphology
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"kseg.weak needs scikit-image for scribbles and boxes; install it with {_INSTALL_HINT}"
        ) from error
    return skimage


def _as_mask(mask, arg_name="mask"):
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(
            f"`{arg_name}` must have shape (H, W) or (H, W, 1). Received: "
            f"{arg_name}.shape={mask.shape}"
        )
    if mask.dtype.kind == "f":
        if not np.all(np.isfinite(mask)) or np.any(mask != np.round(mask)):
            raise ValueError(f"`{arg_name}` must hold integer labels; it has non-integer values.")
        mask = mask.astype(np.int64)
    elif mask.dtype.kind not in "iub":
        raise ValueError(
            f"`{arg_name}` must hold integer labels. Received: {arg_name}.dtype={mask.dtype}"
        )
    return mask.astype(np.int64)


def _labelled(mask, ignore_label):
    return np.ones(mask.shape, bool) if ignore_label is None else mask != ignore_label


def _check_labels(mask, ignore_label, upper, what):
    """Raises if a labelled pixel carries a negative class or one not below `upper`."""
    values = np.unique(mask[_labelled(mask, ignore_label)])
    bad = values[(values < 0) | (values >= upper)]
    if bad.size:
        raise ValueError(
            f"`mask` holds label value(s) {bad.tolist()} outside [0, {upper}) ({what}) and "
            f"different from the ignore label {ignore_label}."
        )


def _stroke(region, width, skimage):
    """A skeleton-like stroke of thickness about `width` lying inside boolean `region`."""
    from scipy import ndimage

    disk = skimage.morphology.disk
    # Eroding first keeps the stroke away from the region's boundary, as a person scribbling
    # inside an object would; thin regions that vanish under erosion use their own skeleton.
    eroded = ndimage.binary_erosion(region, structure=disk(width))
    core = eroded if eroded.any() else region
    skeleton = skimage.morphology.skeletonize(core)
    if not skeleton.any():
        distance = _distance_to_outside(region)
        skeleton = np.zeros_like(region)
        skeleton[np.unravel_index(np.argmax(distance), region.shape)] = True
    radius = (width - 1) // 2
    stroke = ndimage.binary_dilation(skeleton, structure=disk(radius)) if radius else skeleton
    return stroke & region


def _distance_to_outside(region):
    from scipy import ndimage

    # Padding makes the image border count as outside.
    return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def scribbles_from_mask(mask, *, fraction=1.0, width=3, ignore_label=IGNORE_LABEL, seed=None):
    """Draws a thin skeleton-like scribble inside a fraction of the connected regions of a mask.

    ScribbleSup (Lin et al., "ScribbleSup: Scribble-Supervised Convolutional Networks for
    Semantic Segmentation", CVPR 2016) trains from a few free-hand strokes per object and per
    background region. Lacking human strokes, each connected region (4-connectivity) of each
    class, background included, is eroded by a disk of radius `width`, skeletonised, and the
    skeleton is thickened to about `width` pixels and clipped to the region, so every scribble
    pixel lies inside its region and carries its class. A region too thin to survive erosion
    is skeletonised directly, and a region whose skeleton is empty gets its innermost pixel, so
    every chosen region receives a non-empty scribble. `round(fraction * R)` of the image's R
    regions are chosen uniformly at random; the others get no scribble.

    Args:
        mask: integer array `(H, W)` (or `(H, W, 1)`) of class ids, with `ignore_label` on
            unlabelled pixels; class ids must lie in `[0, 255)`.
        fraction: share of regions that receive a scribble, in `[0, 1]`.
        width: stroke thickness in pixels, a positive integer.
        ignore_label: value of unlabelled pixels in `mask` (never scribbled) and of the
            non-scribble pixels of the result (255 unless it is None, then 255).
        seed: seed of the region choice; the same seed gives the same scribbles.

    Returns:
        uint8 `(H, W)`: the class id on scribble pixels and `ignore_label` (255 when None)
        elsewhere.

    Example:
        >>> import numpy as np, kseg.weak.labels
        >>> mask = np.zeros((32, 32), np.int32); mask[8:24, 8:24] = 1
        >>> scribbles = kseg.weak.labels.scribbles_from_mask(mask, seed=0)
        >>> sorted(np.unique(scribbles).tolist())
        [0, 1, 255]
    """
    mask = _as_mask(mask)
    ignore_label = validate_ignore_label(ignore_label)
    fill = IGNORE_LABEL if ignore_label is None else ignore_label
    if not 0 <= fill <= 255:
        raise ValueError(f"`ignore_label` must fit uint8. Received: ignore_label={ignore_label}")
    validate_fraction(fraction, "fraction")
    validate_positive_int(width, "width")
    _check_labels(mask, ignore_label, 255, "scribbles are uint8 with 255 reserved")
    skimage = _skimage()
    from scipy import ndimage

    labelled = _labelled(mask, ignore_label)
    regions = []
    for class_id in np.unique(mask[labelled]):
        components = skimage.measure.label(labelled & (mask == class_id), connectivity=1)
        for index, extent in enumerate(ndimage.find_objects(components), start=1):
            regions.append((int(class_id), components, index, extent))
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(regions))[: round(float(fraction) * len(regions))]

    scribbles = np.full(mask.shape, fill, np.uint8)
    margin = int(width) + 2
    for region_index in np.sort(chosen):
        class_id, components, index, extent = regions[region_index]
        # Working in a margin around the region's box gives the same stroke as the whole
        # image (erosion treats the outside as background either way) at a fraction of the cost.
        window = tuple(
            slice(max(part.start - margin, 0), min(part.stop + margin, size))
            for part, size in zip(extent, mask.shape)
        )
        stroke = _stroke(components[window] == index, int(width), skimage)
        scribbles[window][stroke] = class_id
    return scribbles


def tags_from_mask(mask, num_classes, *, ignore_label=IGNORE_LABEL, with_sizes=False):
    """The image-level tags of a mask: which classes it contains, optionally with their areas.

    Image-level tags are the weak labels of the Constrained CNN (Pathak et al., "Constrained
    Convolutional Neural Networks for Weakly Supervised Segmentation", ICCV 2015), which can
    also use each class's size. The background (class 0) is tagged like any other class when
    it is present. Pixels with `ignore_label` count for nothing; a mask with no labelled pixel
    gets all-zero tags and all-zero sizes.

    Args:
        mask: integer array `(H, W)` (or `(H, W, 1)`) of class ids.
        num_classes: number of classes K; a labelled pixel outside `[0, K)` is an error
            naming the value.
        ignore_label: value of unlabelled pixels, or None.
        with_sizes: also return each class's share of the labelled pixels.

    Returns:
        float32 `(K,)` multi-hot tags, or `(tags, sizes)` with float32 `(K,)` area fractions
        summing to 1 over labelled pixels when `with_sizes` is True.

    Example:
        >>> import numpy as np, kseg.weak.labels
        >>> mask = np.array([[0, 0, 2, 255]])
        >>> tags, sizes = kseg.weak.labels.tags_from_mask(mask, 3, with_sizes=True)
        >>> tags.tolist(), [round(float(s), 3) for s in sizes]
        ([1.0, 0.0, 1.0], [0.667, 0.0, 0.333])
    """
    mask = _as_mask(mask)
    ignore_label = validate_ignore_label(ignore_label)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"`num_classes` must be an integer. Received: num_classes={num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"`num_classes` must be positive. Received: num_classes={num_classes}")
    _check_labels(mask, ignore_label, int(num_classes), f"num_classes={num_classes}")
    counts = np.bincount(mask[_labelled(mask, ignore_label)], minlength=int(num_classes))
    tags = (counts > 0).astype(np.float32)
    if not with_sizes:
        return tags
    total = counts.sum()
    sizes = (counts / total if total else np.zeros_like(counts, float)).astype(np.float32)
    return tags, sizes


def boxes_from_mask(mask, *, instance_mask=None, ignore_label=IGNORE_LABEL, background=0):
    """Bounding boxes and classes of the instances (or connected regions) of a mask.

    Box supervision as in BoxSup and the Bbox-Seg of Papandreou et al. (ICCV 2015): one tight
    box per object. With `instance_mask`, every instance id > 0 is one object whose class is
    the most frequent class of `mask` under it (ignored and background pixels left out); an
    instance with no such pixel is skipped. Without it, each 4-connected region of each
    non-background class is one object. Boxes are sorted by instance id, or by class and then
    by the regions' raster order.

    Args:
        mask: integer array `(H, W)` (or `(H, W, 1)`) of class ids.
        instance_mask: optional integer array of the same shape, 0 where there is no instance.
        ignore_label: value of unlabelled pixels, or None; they belong to no box.
        background: class that gets no box, or None to box every class.

    Returns:
        `(boxes, classes)`: float32 `(N, 4)` `[y1, x1, y2, x2]` with exclusive `y2, x2`
        (pixel `(i, j)` covers `[i, i + 1) x [j, j + 1)`) and int32 `(N,)`.

    Example:
        >>> import numpy as np, kseg.weak.labels
        >>> mask = np.zeros((8, 8), np.int32); mask[2:5, 1:7] = 3
        >>> boxes, classes = kseg.weak.labels.boxes_from_mask(mask)
        >>> boxes.tolist(), classes.tolist()
        ([[2.0, 1.0, 5.0, 7.0]], [3])
    """
    mask = _as_mask(mask)
    ignore_label = validate_ignore_label(ignore_label)
    objects = _labelled(mask, ignore_label)
    if background is not None:
        objects &= mask != background
    regions, classes = [], []
    if instance_mask is not None:
        instance_mask = _as_mask(instance_mask, "instance_mask")
        if instance_mask.shape != mask.shape:
            raise ValueError(
                "`instance_mask` and `mask` must have the same shape. Received: "
                f"instance_mask.shape={instance_mask.shape}, mask.shape={mask.shape}"
            )
        for instance_id in np.unique(instance_mask[instance_mask > 0]):
            region = (instance_mask == instance_id) & objects
            if not region.any():
                continue
            values, counts = np.unique(mask[region], return_counts=True)
            regions.append(region)
            classes.append(values[np.argmax(counts)])
    else:
        skimage = _skimage()
        for class_id in np.unique(mask[objects]):
            components = skimage.measure.label(objects & (mask == class_id), connectivity=1)
            for index in range(1, components.max() + 1):
                regions.append(components == index)
                classes.append(class_id)
    boxes = numpy_boxes_from_masks(np.asarray(regions, bool).reshape(-1, *mask.shape))
    return boxes, np.asarray(classes, np.int32).reshape(-1)


def weak_label_dataset(dataset, kind, *, num_classes=None, seed=None, **options):
    """Maps a dataset of `(image, mask)` to `(image, weak label)` with one of the generators.

    The generator runs in `tf.numpy_function`, element by element and in order
    (`deterministic=True`), so the weak labels of a fixed dataset are reproducible. For
    scribbles, element i uses the seed `(seed, i)` (no seed: fresh random choices).

    Args:
        dataset: a `tf.data.Dataset` of unbatched `(image, mask)` pairs, mask `(H, W)` or
            `(H, W, 1)` integer.
        kind: "scribbles" (uint8 `(H, W)`), "tags" (float32 `(K,)`, or float32 `(2K,)` tags
            followed by area fractions with `with_sizes=True`, the layout
            `kseg.weak.constrained.ConstrainedCrossEntropy` reads), or "boxes" (a pair of
            float32 `(N, 4)` boxes and int32 `(N,)` classes; batch with `padded_batch`).
        num_classes: number of classes, required for "tags".
        seed: seed for "scribbles".
        **options: further keyword arguments of the generator (e.g. `fraction`, `width`,
            `ignore_label`, `with_sizes`, `background`).

    Returns:
        A `tf.data.Dataset` of `(image, weak label)`.

    Example:
        >>> import kseg, kseg.weak.labels
        >>> ds = kseg.data.shapes_dataset("train", num_samples=4, image_size=64)
        >>> tagged = kseg.weak.labels.weak_label_dataset(ds, "tags", num_classes=5)
        >>> tuple(next(iter(tagged))[1].shape)
        (5,)
    """
    if kind not in _KINDS:
        raise ValueError(f"`kind` must be one of {_KINDS}. Received: kind={kind!r}")
    if kind == "tags" and num_classes is None:
        raise ValueError("`num_classes` is required for kind='tags'.")
    if kind != "tags" and num_classes is not None:
        raise ValueError(f"`num_classes` applies only to kind='tags'. Received: kind={kind!r}")
    if kind != "scribbles" and seed is not None:
        raise ValueError(f"`seed` applies only to kind='scribbles'. Received: kind={kind!r}")
    # Calling the generator once on an empty mask catches a misspelt option before training.
    probe = {"scribbles": scribbles_from_mask, "tags": tags_from_mask, "boxes": boxes_from_mask}
    probe_args = (np.zeros((1, 1), np.int32),) + ((num_classes,) if kind == "tags" else ())
    probe[kind](*probe_args, **options)

    def make(index, mask):
        if kind == "scribbles":
            element_seed = None if seed is None else [int(seed), int(index)]
            return scribbles_from_mask(mask, seed=element_seed, **options)
        if kind == "tags":
            result = tags_from_mask(mask, num_classes, **options)
            return np.concatenate(result) if isinstance(result, tuple) else result
        return boxes_from_mask(mask, **options)

    def to_weak(index, element):
        image, mask = element
        if kind == "boxes":
            boxes, classes = tf.numpy_function(
                make, [index, mask], (tf.float32, tf.int32), stateful=False
            )
            boxes.set_shape([None, 4])
            classes.set_shape([None])
            return image, (boxes, classes)
        if kind == "scribbles":
            weak = tf.numpy_function(make, [index, mask], tf.uint8, stateful=seed is None)
            weak.set_shape(mask.shape[:2])
        else:
            weak = tf.numpy_function(make, [index, mask], tf.float32, stateful=False)
            width = num_classes * (2 if options.get("with_sizes") else 1)
            weak.set_shape([width])
        return image, weak

    return dataset.enumerate().map(to_weak, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
