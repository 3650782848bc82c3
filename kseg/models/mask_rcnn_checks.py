"""Argument checks of `kseg.models.MaskRCNN`: images, training targets and configuration."""

import tensorflow as tf

from kseg.backbones.preprocessing import PREPROCESSING_MODES
from kseg.detection.postprocess import PASTE_METHODS

ANCHOR_LAYOUTS = ("centred", "grid")
CLIP_TARGETS = ("padded", "image")


def _static_shape(value):
    return tf.TensorShape(
        value.shape if hasattr(value, "shape") else tf.convert_to_tensor(value).shape
    )


def check_images(images):
    """Raises a ValueError naming the shape of images that are not a (B, H, W, 3) batch."""
    shape = _static_shape(images)
    if shape.rank is not None and (shape.rank != 4 or shape[-1] not in (None, 3)):
        raise ValueError(
            "MaskRCNN takes a batch of RGB images (batch, height, width, 3). "
            f"Received: images.shape={tuple(shape)}"
        )


def check_targets(images, targets):
    """Raises a ValueError naming missing target keys or target shapes that disagree."""
    missing = [key for key in ("gt_boxes", "gt_classes", "gt_masks") if key not in targets]
    if missing:
        raise ValueError(
            f"MaskRCNN targets need 'gt_boxes', 'gt_classes' and 'gt_masks'; {missing} missing. "
            f"Received: keys {sorted(targets)}"
        )
    image = _static_shape(images)
    boxes, classes, masks = (
        _static_shape(targets[key]) for key in ("gt_boxes", "gt_classes", "gt_masks")
    )

    def agree(*dims):
        return len({d for d in dims if d is not None}) <= 1

    # Only static sizes can be compared here; pad_instance_batch checks streamed examples.
    fits = (
        boxes.is_compatible_with([None, None, 4])
        and classes.is_compatible_with([None, None])
        and masks.is_compatible_with([None, None, None, None])
    )
    if fits and boxes.rank and classes.rank and masks.rank:
        fits = (
            agree(image[0], boxes[0], classes[0], masks[0])
            and agree(boxes[1], classes[1], masks[1])
            and agree(image[1], masks[2])
            and agree(image[2], masks[3])
        )
    if not fits:
        raise ValueError(
            "MaskRCNN targets must be gt_boxes (B, M, 4), gt_classes (B, M) and gt_masks "
            "(B, M, H, W), with B, H and W those of the images (B, H, W, 3). Received: "
            f"images.shape={tuple(image)}, gt_boxes.shape={tuple(boxes)}, "
            f"gt_classes.shape={tuple(classes)}, gt_masks.shape={tuple(masks)}"
        )


def check_options(
    size_divisor,
    resize_min_side,
    resize_max_side,
    input_normalization,
    anchor_layout,
    clip_boxes_to,
    mask_paste,
):
    """Raises a ValueError naming the first option outside its accepted values."""
    if isinstance(size_divisor, bool) or not isinstance(size_divisor, int) or size_divisor < 1:
        raise ValueError(
            f"size_divisor must be a positive integer. Received: size_divisor={size_divisor!r}"
        )
    if (resize_min_side is None) != (resize_max_side is None):
        raise ValueError(
            "resize_min_side and resize_max_side go together (both None: no resize). "
            f"Received: resize_min_side={resize_min_side!r}, resize_max_side={resize_max_side!r}"
        )
    if resize_min_side is not None and not 0 < resize_min_side <= resize_max_side:
        raise ValueError(
            "resize_min_side must be positive and at most resize_max_side. "
            f"Received: resize_min_side={resize_min_side!r}, resize_max_side={resize_max_side!r}"
        )
    choices = (
        ("input_normalization", input_normalization, (None, *PREPROCESSING_MODES)),
        ("anchor_layout", anchor_layout, ANCHOR_LAYOUTS),
        ("clip_boxes_to", clip_boxes_to, CLIP_TARGETS),
        ("mask_paste", mask_paste, PASTE_METHODS),
    )
    for name, value, accepted in choices:
        if value not in accepted:
            raise ValueError(f"{name} must be one of {accepted}. Received: {name}={value!r}")
