"""Instance-segmentation examples as dicts, and their batching into Mask R-CNN inputs.

Every instance source in kseg (COCO files, the built-in shapes data) yields the same example
layout: a dict with "image" uint8 `(H, W, 3)`, "boxes" float32 `(N, 4)` as `[y1, x1, y2, x2]`
in pixels (max exclusive, i.e. continuous coordinates where pixel (i, j) covers
[i, i + 1) x [j, j + 1)), "classes" int32 `(N,)` in 1..K (0 is the background) and "masks"
uint8 `(N, H, W)` full-image binary masks. `pad_instance_batch` turns a dataset of such
examples into the padded tensors the detection code expects (see kseg.detection).
"""

from __future__ import annotations

import tensorflow as tf

from kseg.data.shapes import shapes_instance_dataset
from kseg.detection.boxes import boxes_from_masks
from kseg.validation import validate_positive_int


def instances_from_label_map(instance_mask, classes, image=None) -> dict:
    """Split an instance label map into per-instance masks, boxes and classes.

    Instance i (1-based) is the set of pixels equal to i; 0 is the background. Instances with
    no visible pixel are dropped together with their class.

    Args:
        instance_mask: integer `(H, W)` label map, values in 0..N.
        classes: integer `(N,)`, the class (>= 1) of instance i + 1.
        image: optional `(H, W, 3)` image, put in the result as uint8 under "image".

    Returns:
        A dict with "boxes" float32 `(N', 4)`, "classes" int32 `(N',)`, "masks" uint8
        `(N', H, W)` (and "image" when given), N' <= N.

    Raises:
        tf.errors.InvalidArgumentError: a label above N or a class below 1, naming the values.

    Example:
        >>> label_map = tf.constant([[0, 1], [2, 2]])
        >>> example = kseg.data.instances.instances_from_label_map(label_map, [3, 1])
        >>> example["boxes"].numpy().tolist()
        [[0.0, 1.0, 1.0, 2.0], [1.0, 0.0, 2.0, 2.0]]
    """
    instance_mask = tf.cast(instance_mask, tf.int32)
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    count = tf.shape(classes)[0]
    checks = [
        tf.debugging.Assert(
            tf.reduce_all((instance_mask >= 0) & (instance_mask <= count)),
            [
                "instance_mask holds values outside 0..N where N = len(classes) =",
                count,
                "; offending values:",
                tf.unique(
                    tf.boolean_mask(instance_mask, (instance_mask < 0) | (instance_mask > count))
                )[0],
            ],
            summarize=10,
        ),
        tf.debugging.Assert(
            tf.reduce_all(classes >= 1),
            ["instance classes must be >= 1 (0 is the background); received classes:", classes],
            summarize=20,
        ),
    ]
    with tf.control_dependencies(checks):
        ids = tf.range(1, count + 1, dtype=tf.int32)
        masks = tf.equal(instance_mask[None], ids[:, None, None])
    present = tf.reduce_any(masks, axis=[1, 2])
    masks = tf.boolean_mask(masks, present)
    example = {
        "boxes": boxes_from_masks(masks),
        "classes": tf.boolean_mask(classes, present),
        "masks": tf.cast(masks, tf.uint8),
    }
    if image is not None:
        example["image"] = tf.cast(image, tf.uint8)
    return example


def shapes_instance_examples(
    split: str = "train",
    num_samples: int = 1000,
    image_size=128,
    seed: int = 0,
    **kwargs,
) -> tf.data.Dataset:
    """The built-in shapes data as instance-segmentation example dicts.

    Wraps `kseg.data.shapes_instance_dataset` (same images for the same arguments) and
    converts each sample with `instances_from_label_map`, so the boxes are the extents of the
    visible pixels of each shape.

    Args:
        split: split name.
        num_samples: number of samples.
        image_size: int or `(height, width)`.
        seed: global seed.
        **kwargs: further arguments of `shapes_instance_dataset` (`cache`, `max_objects`,
            `size_range`, `background_contrast`).

    Returns:
        A `tf.data.Dataset` of dicts "image" uint8 `(H, W, 3)`, "boxes" float32 `(N, 4)`,
        "classes" int32 `(N,)` in 1..4 (see `kseg.data.shapes_info()`), "masks" uint8
        `(N, H, W)`.

    Example:
        >>> ds = kseg.data.instances.shapes_instance_examples("val", num_samples=8, image_size=64)
        >>> batches = kseg.data.instances.pad_instance_batch(ds, 4)
    """
    ds = shapes_instance_dataset(split, num_samples, image_size, seed, **kwargs)

    def to_example(image, targets):
        return instances_from_label_map(targets["instance_mask"], targets["classes"], image)

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)


def _check_example(example, num_classes):
    classes = tf.cast(example["classes"], tf.int32)
    image_hw = tf.shape(example["image"])[:2]
    masks_shape = tf.shape(example["masks"])
    count = tf.shape(classes)[0]
    invalid = classes < 1
    valid_range = "1..K"
    if num_classes is not None:
        invalid = invalid | (classes >= num_classes)
        valid_range = f"1..{num_classes - 1} (num_classes={num_classes} counts the background)"
    checks = [
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(invalid)),
            [
                f"instance class ids must lie in {valid_range}; offending values:",
                tf.unique(tf.boolean_mask(classes, invalid))[0],
            ],
            summarize=10,
        ),
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(masks_shape[1:], image_hw))
            & tf.equal(masks_shape[0], count)
            & tf.equal(tf.shape(example["boxes"])[0], count),
            [
                "instance example shapes disagree: image (H, W) =",
                image_hw,
                "masks (N, H, W) =",
                masks_shape,
                "boxes (N, 4) =",
                tf.shape(example["boxes"]),
                "classes (N,) =",
                tf.shape(classes),
            ],
        ),
    ]
    with tf.control_dependencies(checks):
        return classes, image_hw


def pad_instance_batch(
    dataset: tf.data.Dataset,
    batch_size: int,
    *,
    pad_to_multiple: int = 64,
    max_instances: int | None = None,
    num_classes: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batch instance examples into padded Mask R-CNN inputs.

    Images are padded with zeros at the bottom and right to the largest size in the batch,
    rounded up to a multiple of `pad_to_multiple` (64 makes every FPN level P2..P6 an exact
    grid); the instance axis is padded to the largest N in the batch (at least 1), or cut
    to `max_instances` (keeping the first instances) so that every batch has the same shape.
    Boxes stay in pixels of the unpadded image, which bottom/right padding leaves unchanged.

    Args:
        dataset: a dataset of example dicts ("image", "boxes", "classes", "masks"; other keys
            are ignored), e.g. from `kseg.data.coco_instance_dataset` or
            `shapes_instance_examples`.
        batch_size: images per batch.
        pad_to_multiple: padded height and width are multiples of this.
        max_instances: fixed instance axis length M; None pads to the batch's largest N.
        num_classes: class count including the background; when given, class ids outside
            1..num_classes - 1 raise an error naming them (ids below 1 always do).
        drop_remainder: drop a last, smaller batch (gives a static batch size).

    Returns:
        A `tf.data.Dataset` of `(images, targets)`: images float32 `(B, Hp, Wp, 3)` in
        [0, 255]; targets a dict with "gt_boxes" float32 `(B, M, 4)` (zeros on padding rows),
        "gt_classes" int32 `(B, M)` (-1 on padding rows), "gt_masks" uint8 `(B, M, Hp, Wp)`
        (zeros on padding rows and padded pixels) and "image_shape" int32 `(B, 2)`, each
        image's original (height, width).

    Example:
        >>> ds = kseg.data.shapes_instance_examples("train", num_samples=16, image_size=96)
        >>> images, targets = next(iter(kseg.data.instances.pad_instance_batch(ds, 4)))
        >>> images.shape, targets["gt_masks"].shape[2:]
        (TensorShape([4, 128, 128, 3]), TensorShape([128, 128]))
    """
    validate_positive_int(batch_size, "batch_size")
    multiple = validate_positive_int(pad_to_multiple, "pad_to_multiple")
    if max_instances is not None:
        validate_positive_int(max_instances, "max_instances")
    if num_classes is not None and int(num_classes) < 2:
        raise ValueError(
            f"num_classes must count the background and at least one class (>= 2). "
            f"Received: num_classes={num_classes!r}"
        )

    def prepare(example):
        classes, image_hw = _check_example(example, num_classes)
        boxes = tf.cast(example["boxes"], tf.float32)
        masks = tf.cast(example["masks"], tf.uint8)
        if max_instances is not None:
            classes, boxes, masks = (
                classes[:max_instances],
                boxes[:max_instances],
                masks[:max_instances],
            )
        return tf.cast(example["image"], tf.uint8), boxes, classes, masks, image_hw

    rows = None if max_instances is None else int(max_instances)
    batched = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).padded_batch(
        int(batch_size),
        padded_shapes=([None, None, 3], [rows, 4], [rows], [rows, None, None], [2]),
        padding_values=(
            tf.constant(0, tf.uint8),
            tf.constant(0.0, tf.float32),
            tf.constant(-1, tf.int32),
            tf.constant(0, tf.uint8),
            tf.constant(0, tf.int32),
        ),
        drop_remainder=drop_remainder,
    )

    def finish(images, boxes, classes, masks, image_shape):
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        pad_h = (-height) % multiple
        pad_w = (-width) % multiple
        images = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        # Downstream reductions over the instance axis need at least one (padding) row.
        extra = tf.maximum(1 - tf.shape(classes)[1], 0)
        boxes = tf.pad(boxes, [[0, 0], [0, extra], [0, 0]])
        classes = tf.pad(classes, [[0, 0], [0, extra]], constant_values=-1)
        masks = tf.pad(masks, [[0, 0], [0, extra], [0, pad_h], [0, pad_w]])
        targets = {
            "gt_boxes": boxes,
            "gt_classes": classes,
            "gt_masks": masks,
            "image_shape": image_shape,
        }
        return tf.cast(images, tf.float32), targets

    return batched.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
