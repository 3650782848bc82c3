"""Labels from boxes (Papandreou et al., ICCV 2015): EM-Fixed's box maps, Bbox-Rect and Bbox-Seg.

- `box_label_map`: EM-Fixed's allowed-class map of a box-annotated image (box classes and
  background inside a box, background only outside), the y_true of
  `kseg.weak.EMFixedCrossEntropy`.
- `bbox_rect_labels` (Bbox-Rect): every pixel of a box takes its class, the smallest box
  winning where boxes overlap; an ordinary mask.
- `bbox_seg_labels` (Bbox-Seg): a dense-CRF segmentation inside each box, computed once per
  image and then used as an ordinary mask.

Boxes are float `[y1, x1, y2, x2]` in pixels with pixel `(i, j)` covering `[i, i+1) x [j, j+1)`;
class 0 is the background by default and 255 the ignore label.
"""

import numpy as np

from kseg.detection.boxes import image_boxes
from kseg.inference.dense_crf import DEEPLAB_CRF_DEFAULTS, dense_crf
from kseg.validation import (
    IGNORE_LABEL,
    validate_fraction,
    validate_non_negative_int,
    validate_positive_int,
)
from kseg.weak.em_loss import validate_background_class

# Bbox-Seg: the central alpha = 20% of each box's area is held to the box's class.
CENTRE_FRACTION = 0.2


def _checked_boxes(boxes, classes, height, width, num_classes, background_class):
    """Validates boxes and classes and returns the boxes clipped to the image, float64 (N, 4)."""
    for name, value in (("height", height), ("width", width), ("num_classes", num_classes)):
        validate_positive_int(value, name)
    boxes = image_boxes(boxes, height, width)
    classes = np.asarray(classes)
    if classes.shape != (boxes.shape[0],):
        raise ValueError(
            f"classes must hold one class per box, shape ({boxes.shape[0]},). "
            f"Received: classes.shape={classes.shape}"
        )
    if (
        classes.size
        and not np.issubdtype(classes.dtype, np.integer)
        and not np.all(classes == np.round(classes))
    ):
        raise ValueError(f"classes must be integers. Received: classes={classes.tolist()}")
    classes = classes.astype(np.int64)
    for index, label in enumerate(classes):
        if not 0 <= label < num_classes:
            raise ValueError(
                f"box {index} has class {label}, outside the model's classes [0, {num_classes}). "
                f"Received: classes={classes.tolist()}, num_classes={num_classes}"
            )
        if background_class is not None and label == background_class:
            raise ValueError(
                f"box {index} has the background class {label}; boxes mark foreground objects"
            )
    return np.clip(boxes, 0, [height, width, height, width]), classes


def _box_masks(boxes, height, width):
    """(N, H, W) bool: the pixels each box overlaps (pixel (i, j) covers [i, i+1) x [j, j+1))."""
    rows = np.arange(height)[None, :]
    columns = np.arange(width)[None, :]
    in_rows = (rows + 1 > boxes[:, 0:1]) & (rows < boxes[:, 2:3])
    in_columns = (columns + 1 > boxes[:, 1:2]) & (columns < boxes[:, 3:4])
    return in_rows[:, :, None] & in_columns[:, None, :]


def _checked_box_annotation(boxes, classes, height, width, num_classes, background_class):
    """`(background_class, boxes, classes)` of a box-annotated image, checked and clipped."""
    known = isinstance(num_classes, (int, np.integer))
    background_class = validate_background_class(background_class, num_classes if known else None)
    boxes, classes = _checked_boxes(boxes, classes, height, width, num_classes, background_class)
    return background_class, boxes, classes


def _smallest_covering(boxes, in_box):
    """`(H, W)` index of the smallest box covering each pixel, and `(N, H, W)` covering areas.

    Areas of boxes that do not cover a pixel are inf there; equal areas go to the earlier box.
    """
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    covering_areas = np.where(in_box, areas[:, None, None], np.inf)
    return np.argmin(covering_areas, axis=0), covering_areas


def box_label_map(
    boxes, classes, height, width, num_classes, *, background_class=0, mark_front=False
):
    """The EM-Fixed allowed-class map `(H, W, K)` of an image annotated with boxes.

    Papandreou et al. (ICCV 2015, section 3.3) let a pixel take the class of any box covering
    it or the background, and outside every box only the background. A pixel counts as
    covered when it overlaps the box (pixel (i, j) covers [i, i+1) x [j, j+1)), so a box of
    integer corners covers exactly its rows y1..y2-1 and columns x1..x2-1. Boxes reaching past
    the image are clipped to it; a box entirely outside the image, a degenerate box, a class
    outside [0, num_classes) and a box of the background class are refused with a ValueError
    naming the box. With `background_class=None` pixels outside every box allow no class
    (the loss ignores them).

    With `mark_front=True` the class of the smallest box covering a pixel gets the value 2,
    "in front" (`bbox_rect_labels`' rule), and `em_fixed_latent_labels` gives it b_fg and the
    other allowed classes b_bg. Inside a single object box this is the paper's preference of
    the object over the background; where every class is boxed (CamVid) it prefers the object
    to the region around it, where plain maps would leave the choice to the network alone.

    Args:
        boxes: float `(N, 4)` `[y1, x1, y2, x2]` in pixels.
        classes: int `(N,)` class of each box.
        height: image height H.
        width: image width W.
        num_classes: number of classes K of the model.
        background_class: index of the background class, or None.
        mark_front: mark the class of each pixel's smallest covering box with 2.

    Returns:
        uint8 numpy array `(H, W, K)`, 1 where the class is allowed (2 where it is in front).
        Batch these as y_true of `EMFixedCrossEntropy`.

    Example:
        >>> from kseg.weak.box_labels import box_label_map
        >>> allowed = box_label_map([[1, 1, 3, 4]], [2], height=4, width=5, num_classes=3)
        >>> allowed[..., 2].tolist()
        [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    """
    background_class, boxes, classes = _checked_box_annotation(
        boxes, classes, height, width, num_classes, background_class
    )
    allowed = np.zeros((height, width, num_classes), np.uint8)
    if background_class is not None:
        allowed[..., background_class] = 1
    masks = _box_masks(boxes, height, width)
    for label in np.unique(classes):
        allowed[..., label] |= np.any(masks[classes == label], axis=0).astype(np.uint8)
    if mark_front and len(classes):
        smallest, _ = _smallest_covering(boxes, masks)
        rows, columns = np.nonzero(np.any(masks, axis=0))
        allowed[rows, columns, classes[smallest[rows, columns]]] = 2
    return allowed


def bbox_rect_labels(
    boxes, classes, height, width, num_classes, *, background_class=0, ambiguity_ratio=None
):
    """Bbox-Rect pseudo-labels: every pixel of a box takes the box's class.

    The simplest box baseline of Papandreou et al. (ICCV 2015, "Bbox-Rect"): each pixel inside
    a box is a positive example of its class, and a pixel inside several boxes goes to the
    one of smallest area, so a small object keeps its pixels inside the box of the larger
    region around it (a car on a road, a sign on a building). Pixels outside every box take
    the background, or the ignore label 255 with `background_class=None` (a dataset such as
    CamVid, where every class is boxed). Boxes are clipped and checked as in `box_label_map`;
    areas are those of the clipped boxes, and equal areas go to the earlier box.

    The smallest-box rule is reliable when the winning box is much smaller than the other
    class's box (an object inside a region) and a guess when the two are of comparable size
    (two regions side by side). With `ambiguity_ratio`, a pixel whose winning box has at least
    that fraction of the area of the smallest box of another class covering it gets the ignore
    label 255 instead (an option the paper does not use).

    Args:
        boxes: float `(N, 4)` `[y1, x1, y2, x2]` in pixels.
        classes: int `(N,)` class of each box.
        height: image height H.
        width: image width W.
        num_classes: number of classes K of the model.
        background_class: index of the background class, or None.
        ambiguity_ratio: None, or an area ratio in (0, 1] from which a pixel's winning box is
            too close in size to another class's box to decide it.

    Returns:
        uint8 numpy array `(H, W)` of class ids (255 on ambiguous pixels), to train on as an
        ordinary mask.

    Example:
        >>> from kseg.weak.box_labels import bbox_rect_labels
        >>> labels = bbox_rect_labels([[0, 0, 3, 4], [1, 1, 2, 3]], [1, 2], 3, 5, num_classes=3)
        >>> labels.tolist()
        [[1, 1, 1, 1, 0], [1, 2, 2, 1, 0], [1, 1, 1, 1, 0]]
    """
    if ambiguity_ratio is not None:
        ambiguity_ratio = validate_fraction(ambiguity_ratio, "ambiguity_ratio")
        if ambiguity_ratio == 0:
            raise ValueError("ambiguity_ratio must lie in (0, 1]. Received: ambiguity_ratio=0")
    background_class, boxes, classes = _checked_box_annotation(
        boxes, classes, height, width, num_classes, background_class
    )
    outside = IGNORE_LABEL if background_class is None else background_class
    labels = np.full((height, width), outside, np.uint8)
    if not len(classes):
        return labels
    in_box = _box_masks(boxes, height, width)
    smallest, covering_areas = _smallest_covering(boxes, in_box)
    covered = np.any(in_box, axis=0)
    labels[covered] = classes[smallest[covered]]
    if ambiguity_ratio is not None:
        winner = classes[smallest]
        rival = np.min(np.where(classes[:, None, None] != winner, covering_areas, np.inf), axis=0)
        winning_area = np.min(covering_areas, axis=0)
        labels[covered & (winning_area >= ambiguity_ratio * rival)] = IGNORE_LABEL
    return labels


def bbox_seg_labels(
    image,
    boxes,
    classes,
    num_classes,
    *,
    centre_fraction=CENTRE_FRACTION,
    box_foreground_probability=0.5,
    uncertain_below=None,
    background_class=0,
    **crf_parameters,
):
    """Bbox-Seg pseudo-labels: a dense-CRF segmentation of the objects inside their boxes.

    Papandreou et al. (ICCV 2015, section 3.3, "Bbox-Seg") estimate each object's mask from its
    box with the fully-connected CRF: the central area of the box (`centre_fraction` = alpha =
    20% of its area, a box of the same centre and aspect scaled by sqrt(alpha)) is held to the
    box's class, pixels outside every box to the background, and the CRF decides the rest of
    each box. The unary here gives the box's class probability `box_foreground_probability`
    (and the background the remainder) on the rest of the box, 1 at its centre and 0 outside;
    where boxes of several classes overlap, the classes share the pixel in proportion. After
    mean-field inference (`kseg.inference.dense_crf`, DeepLab's settings unless overridden by
    `crf_parameters`) the held pixels are set again, so nothing outside the boxes is labelled
    foreground. With `uncertain_below`, box pixels whose CRF marginal for their label is below
    it get the ignore label 255 (an option the paper does not use). Boxes are clipped and
    checked as in `box_label_map`.

    Args:
        image: `(H, W, 3)` RGB, uint8 or float in 0-255.
        boxes: float `(N, 4)` `[y1, x1, y2, x2]` in pixels.
        classes: int `(N,)` foreground class of each box.
        num_classes: number of classes K.
        centre_fraction: alpha, the share of each box's area held to its class, in [0, 1].
        box_foreground_probability: unary probability of the box's class elsewhere in the box,
            in (0, 1).
        uncertain_below: None, or a marginal in (0, 1) under which box pixels become 255.
        background_class: index of the background class.
        **crf_parameters: `iterations`, `sxy_gaussian`, `compat_gaussian`, `sxy_bilateral`,
            `srgb_bilateral`, `compat_bilateral` of `kseg.inference.dense_crf`.

    Returns:
        uint8 numpy array `(H, W)`: class ids, 255 on uncertain pixels when asked.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.box_labels import bbox_seg_labels
        >>> image = np.full((24, 24, 3), 40, np.uint8)
        >>> image[6:18, 6:18] = 200
        >>> labels = bbox_seg_labels(image, [[3, 3, 21, 21]], [1], num_classes=2)
        >>> int(labels[12, 12]), int(labels[1, 1])
        (1, 0)
    """
    centre_fraction = validate_fraction(centre_fraction, "centre_fraction")
    box_foreground_probability = validate_fraction(
        box_foreground_probability, "box_foreground_probability"
    )
    if not 0.0 < box_foreground_probability < 1.0:
        raise ValueError(
            "box_foreground_probability must lie strictly between 0 and 1. "
            f"Received: box_foreground_probability={box_foreground_probability}"
        )
    if uncertain_below is not None:
        uncertain_below = validate_fraction(uncertain_below, "uncertain_below")
    background_class = validate_non_negative_int(background_class, "background_class")
    unknown = set(crf_parameters) - set(DEEPLAB_CRF_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown CRF parameters {sorted(unknown)}; "
            f"expected some of {sorted(DEEPLAB_CRF_DEFAULTS)}"
        )
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB. Received: image.shape={image.shape}")
    height, width = image.shape[:2]
    validate_background_class(background_class, num_classes)
    boxes, classes = _checked_boxes(boxes, classes, height, width, num_classes, background_class)

    in_box = _box_masks(boxes, height, width)
    scale = np.sqrt(centre_fraction)
    centres = np.stack([boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], axis=1) / 2
    half_sizes = (
        np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1) * scale / 2
    )
    centre_boxes = np.concatenate([centres - half_sizes, centres + half_sizes], axis=1)
    in_centre = (
        _box_masks(centre_boxes, height, width) if centre_fraction > 0 else np.zeros_like(in_box)
    )

    foreground = np.zeros((num_classes, height, width))
    centre_of = np.zeros((num_classes, height, width), bool)
    for label in np.unique(classes):
        of_class = classes == label
        prior = np.where(
            in_centre[of_class], 1.0, np.where(in_box[of_class], box_foreground_probability, 0.0)
        )
        foreground[label] = prior.max(axis=0)
        centre_of[label] = np.any(in_centre[of_class], axis=0)
    # A pixel is held to a class when it lies in the centre of boxes of that class only; where
    # centres of two classes overlap, the CRF chooses between them.
    held = np.where(centre_of.sum(axis=0) == 1, np.argmax(centre_of, axis=0), -1)
    held[~np.any(in_box, axis=0)] = background_class
    # Foreground classes share a pixel in proportion to their priors, the background keeps
    # what the strongest leaves.
    strongest = foreground.max(axis=0)
    probabilities = foreground * np.where(
        strongest > 0, strongest / np.maximum(foreground.sum(axis=0), 1e-12), 0.0
    )
    probabilities[background_class] = 1.0 - strongest
    q = np.asarray(
        dense_crf(
            image.astype(np.float32),
            probabilities.transpose(1, 2, 0).astype(np.float32),
            **crf_parameters,
        )
    )
    # Pixels inside a box may only take the background or a class of a box covering them.
    allowed = box_label_map(
        boxes, classes, height, width, num_classes, background_class=background_class
    )
    masked = np.where(allowed > 0, q, -1.0)
    labels = np.argmax(masked, axis=-1)
    confidence = np.take_along_axis(q, labels[..., None], axis=-1)[..., 0]
    labels = np.where(held >= 0, held, labels)
    if uncertain_below is not None:
        labels = np.where((held < 0) & (confidence < uncertain_below), IGNORE_LABEL, labels)
    return labels.astype(np.uint8)
