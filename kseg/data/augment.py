"""Joint image/mask augmentation and the batching pipeline that feeds `model.fit`.

Geometric operations move image and mask together (the mask always with nearest-neighbour
sampling, so no label value is ever invented); photometric ones touch the image only. Every
random operation is stateless and takes an explicit `seed` tensor of shape `(2,)`, so a
pipeline built with a fixed seed replays the same augmentations, and image and mask are
guaranteed to receive the same draw. `tf.image` does the work throughout: it handles masks
exactly (nearest resize, constant padding), which the Keras random-augmentation layers only do
for some layers and dictionary inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from kseg.validation import IGNORE_LABEL, validate_positive_int, validate_size

# DeepLab pads with the ImageNet mean so that padding becomes zero after mean subtraction.
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)


def _split_seed(seed, count):
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), count))


def resize_pair(image, mask, size):
    """Resize image (bilinear) and mask (nearest neighbour) to `size = (height, width)`.

    Args:
        image: float `(H, W, 3)`.
        mask: integer `(H, W)`.
        size: target `(height, width)`, ints or scalar tensors.

    Returns:
        `(image, mask)` of the new size; the mask keeps its dtype and label set.

    Example:
        >>> image, mask = tf.zeros((4, 4, 3)), tf.zeros((4, 4), tf.int32)
        >>> image, mask = kseg.data.resize_pair(image, mask, (8, 8))
    """
    image = tf.image.resize(image, size, method="bilinear")
    mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    return image, mask


def random_scale(image, mask, seed, scale_range: Sequence[float] = (0.5, 2.0)):
    """Rescale image and mask by one factor drawn uniformly from `scale_range`.

    The multi-scale training of DeepLab (Chen et al., TPAMI 2017) and PSPNet (Zhao et al.,
    CVPR 2017) draws a factor in [0.5, 2.0]. The image is resized bilinearly, the mask with
    nearest neighbour.

    Args:
        image: float `(H, W, 3)`.
        mask: integer `(H, W)`.
        seed: int tensor of shape `(2,)`.
        scale_range: `(min_scale, max_scale)`.

    Returns:
        `(image, mask)` of size `round(H * s), round(W * s)`.

    Example:
        >>> image, mask = tf.zeros((40, 60, 3)), tf.zeros((40, 60), tf.int32)
        >>> image, mask = kseg.data.random_scale(image, mask, seed=[1, 2], scale_range=(0.5, 0.5))
        >>> tuple(image.shape), tuple(mask.shape)
        ((20, 30, 3), (20, 30))
    """
    low, high = float(scale_range[0]), float(scale_range[1])
    if not 0 < low <= high:
        raise ValueError(
            f"scale_range must satisfy 0 < min <= max. Received: scale_range={scale_range!r}"
        )
    scale = tf.random.stateless_uniform([], seed, minval=low, maxval=high)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)
    return resize_pair(image, mask, new_hw)


def _fill_vector(image_fill, dtype):
    fill = tf.constant(image_fill, dtype=dtype)
    return tf.reshape(fill, [-1])  # a scalar becomes one value broadcast over channels


def pad_to_size(image, mask, size, image_fill=0.0, ignore_label: int = IGNORE_LABEL):
    """Pad image and mask at the bottom and right up to at least `size`.

    Padded mask pixels get `ignore_label`, so they count in no loss or metric; padded image
    pixels get `image_fill` (a scalar or one value per channel). Padding at the bottom/right
    keeps pixel coordinates, so a prediction can be cropped back to the original size.

    Args:
        image: float `(H, W, C)`.
        mask: integer `(H, W)`.
        size: `(min_height, min_width)`, ints or scalar tensors.
        image_fill: fill value(s) of the image.
        ignore_label: fill value of the mask.

    Returns:
        `(image, mask)` of size `(max(H, min_height), max(W, min_width))`.

    Example:
        >>> image, mask = tf.ones((3, 5, 3)), tf.zeros((3, 5), tf.int32)
        >>> image, mask = kseg.data.pad_to_size(image, mask, (4, 6), image_fill=0.0)
        >>> tuple(image.shape), int(mask[3, 5])
        ((4, 6, 3), 255)
    """
    shape = tf.shape(image)
    pad_h = tf.maximum(size[0] - shape[0], 0)
    pad_w = tf.maximum(size[1] - shape[1], 0)
    fill = _fill_vector(image_fill, image.dtype)
    paddings = [[0, pad_h], [0, pad_w]]
    image = tf.pad(image - fill, paddings + [[0, 0]]) + fill
    mask = tf.pad(mask, paddings, constant_values=tf.cast(ignore_label, mask.dtype))
    return image, mask


def random_crop(image, mask, seed, size):
    """Crop the same random `size = (height, width)` window from image and mask.

    The inputs must be at least `size` (pad first with `pad_to_size`).

    Args:
        image: float `(H, W, C)`.
        mask: integer `(H, W)`.
        seed: int tensor of shape `(2,)`.
        size: `(height, width)` of the crop, ints.

    Returns:
        `(image, mask)` of exactly `size`.

    Example:
        >>> image, mask = tf.zeros((300, 400, 3)), tf.zeros((300, 400), tf.int32)
        >>> image, mask = kseg.data.random_crop(image, mask, seed=[1, 2], size=(256, 256))
        >>> tuple(image.shape), tuple(mask.shape)
        ((256, 256, 3), (256, 256))
    """
    height, width = validate_size(size, "size")
    shape = tf.shape(image)
    tf.debugging.assert_greater_equal(
        shape[:2],
        tf.constant([height, width]),
        message=f"random_crop needs an input of at least {height}x{width}; pad it first",
    )
    choices = shape[:2] - tf.constant([height, width]) + 1
    fraction = tf.random.stateless_uniform([2], seed)
    offsets = tf.minimum(tf.cast(fraction * tf.cast(choices, tf.float32), tf.int32), choices - 1)
    image = tf.slice(image, [offsets[0], offsets[1], 0], [height, width, -1])
    mask = tf.slice(mask, offsets, [height, width])
    return image, mask


def random_flip_left_right(image, mask, seed, probability: float = 0.5):
    """Mirror image and mask horizontally together with the given probability.

    Example:
        >>> image, mask = tf.zeros((2, 3, 3)), tf.constant([[0, 1, 2], [0, 1, 2]])
        >>> _, flipped = kseg.data.random_flip_left_right(image, mask, seed=[1, 2], probability=1.0)
        >>> flipped.numpy().tolist()
        [[2, 1, 0], [2, 1, 0]]
    """
    flip = tf.random.stateless_uniform([], seed) < probability
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, axis=[1]), lambda: mask)
    return image, mask


def photometric_jitter(
    image,
    seed,
    brightness: float = 0.125,
    contrast: float = 0.5,
    saturation: float = 0.5,
    hue: float = 0.05,
):
    """Random brightness, contrast, saturation and hue changes of a [0, 255] RGB image.

    Strengths follow the Inception/SSD colour distortion: brightness shifts by up to
    `brightness` (as a fraction of the full range), contrast and saturation scale by a factor
    in `[1 - x, 1 + x]`, hue rotates by up to `hue` of a turn. A strength of 0 disables an
    operation. The mask is untouched, so this takes the image alone.

    Args:
        image: float `(H, W, 3)` in [0, 255].
        seed: int tensor of shape `(2,)`.
        brightness: maximum brightness shift, in [0, 1].
        contrast: contrast factor spread, in [0, 1).
        saturation: saturation factor spread, in [0, 1).
        hue: maximum hue rotation, in [0, 0.5].

    Returns:
        The jittered image, float32 in [0, 255].

    Example:
        >>> image = kseg.data.photometric_jitter(tf.fill((4, 4, 3), 128.0), seed=[1, 2])
        >>> tuple(image.shape), bool(tf.reduce_all((image >= 0) & (image <= 255)))
        ((4, 4, 3), True)
    """
    for name, value, valid, interval in (
        ("brightness", brightness, 0 <= brightness <= 1, "[0, 1]"),
        ("contrast", contrast, 0 <= contrast < 1, "[0, 1)"),
        ("saturation", saturation, 0 <= saturation < 1, "[0, 1)"),
        ("hue", hue, 0 <= hue <= 0.5, "[0, 0.5]"),
    ):
        if not valid:
            raise ValueError(f"{name} must lie in {interval}. Received: {name}={value!r}")
    seeds = _split_seed(seed, 4)
    x = tf.cast(image, tf.float32) / 255.0
    if brightness:
        x = tf.image.stateless_random_brightness(x, brightness, seeds[0])
    if contrast:
        x = tf.image.stateless_random_contrast(x, 1 - contrast, 1 + contrast, seeds[1])
    if saturation:
        x = tf.image.stateless_random_saturation(x, 1 - saturation, 1 + saturation, seeds[2])
    if hue:
        x = tf.image.stateless_random_hue(x, hue, seeds[3])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def augment_pair(
    image,
    mask,
    seed,
    crop_size,
    *,
    scale_range: Sequence[float] | None = (0.5, 2.0),
    flip: bool = True,
    jitter: bool = True,
    image_fill=IMAGENET_MEAN_RGB,
    ignore_label: int = IGNORE_LABEL,
):
    """The standard training augmentation: scale, pad, crop, flip, colour jitter.

    Args:
        image: float `(H, W, 3)` in [0, 255].
        mask: integer `(H, W)`.
        seed: int tensor of shape `(2,)`.
        crop_size: int or `(height, width)` of the output.
        scale_range: range of the random rescale, or None to skip it.
        flip: random horizontal flip.
        jitter: random photometric jitter.
        image_fill: image padding value(s).
        ignore_label: mask padding value.

    Returns:
        `(image, mask)`: float32 `(crop_h, crop_w, 3)` and int32 `(crop_h, crop_w)`.

    Example:
        >>> image, mask = tf.zeros((300, 400, 3)), tf.zeros((300, 400), tf.int32)
        >>> image, mask = kseg.data.augment_pair(image, mask, seed=[1, 2], crop_size=256)
        >>> tuple(image.shape), tuple(mask.shape)
        ((256, 256, 3), (256, 256))
    """
    crop = validate_size(crop_size, "crop_size")
    scale_seed, crop_seed, flip_seed, jitter_seed = _split_seed(seed, 4)
    image = tf.cast(image, tf.float32)
    mask = tf.cast(mask, tf.int32)
    if scale_range is not None:
        image, mask = random_scale(image, mask, scale_seed, scale_range)
    image, mask = pad_to_size(image, mask, crop, image_fill, ignore_label)
    image, mask = random_crop(image, mask, crop_seed, crop)
    if flip:
        image, mask = random_flip_left_right(image, mask, flip_seed)
    if jitter:
        image = photometric_jitter(image, jitter_seed)
    image.set_shape([crop[0], crop[1], 3])
    mask.set_shape([crop[0], crop[1]])
    return image, mask


def _pad_batch_to_multiple(images, masks, multiple, image_fill, ignore_label):
    static_hw = images.shape[1:3]
    if static_hw.is_fully_defined():
        # Python arithmetic keeps the batch shape static, which graph-mode models prefer.
        pad = [-int(d) % multiple for d in static_hw]
        if pad == [0, 0]:
            return images, masks
    else:
        hw = tf.shape(images)[1:3]
        pad = (hw + multiple - 1) // multiple * multiple - hw
    fill = _fill_vector(image_fill, images.dtype)
    paddings = [[0, 0], [0, pad[0]], [0, pad[1]]]
    images = tf.pad(images - fill, paddings + [[0, 0]]) + fill
    masks = tf.pad(masks, paddings, constant_values=ignore_label)
    return images, masks


def _check_element_spec(ds):
    """Reject image/mask ranks and channel counts the pipeline cannot handle, before tracing."""
    image_spec, mask_spec = ds.element_spec[:2]
    image_shape, mask_shape = image_spec.shape, mask_spec.shape
    if image_shape.rank is not None and (image_shape.rank != 3 or image_shape[-1] not in (3, None)):
        raise ValueError(
            "make_pipeline needs RGB images of shape (H, W, 3); convert grayscale or RGBA images "
            f"first. Received: image shape={tuple(image_shape)}"
        )
    if not (image_spec.dtype.is_floating or image_spec.dtype.is_integer):
        raise TypeError(
            "make_pipeline needs numeric images (float or integer pixel values). "
            f"Received: image dtype={image_spec.dtype.name}"
        )
    if not mask_spec.dtype.is_integer:
        # Casting a float mask to int32 truncates it: labels scaled to [0, 1] would all become 0.
        raise TypeError(
            "make_pipeline needs integer masks holding class ids. "
            f"Received: mask dtype={mask_spec.dtype.name}"
        )
    if mask_shape.rank is not None and mask_shape.rank != 2:
        raise ValueError(
            "make_pipeline needs masks of shape (H, W) (squeeze a trailing channel axis). "
            f"Received: mask shape={tuple(mask_shape)}"
        )


def _require_pixels(image, mask):
    # A zero-size image would pad to a batch of nothing but ignored pixels and train silently.
    has_pixels = tf.debugging.assert_positive(
        tf.shape(image)[:2],
        message="make_pipeline: an image has zero height or width; its (H, W) is",
    )
    with tf.control_dependencies([has_pixels]):
        return tf.identity(image), mask


def make_pipeline(
    ds: tf.data.Dataset,
    batch_size: int,
    crop_size=None,
    *,
    augment: bool = True,
    shuffle: bool | int | None = None,
    scale_range: Sequence[float] | None = (0.5, 2.0),
    flip: bool = True,
    jitter: bool = True,
    image_fill=IMAGENET_MEAN_RGB,
    ignore_label: int = IGNORE_LABEL,
    eval_size=None,
    pad_multiple: int = 32,
    seed: int | None = None,
    repeat: bool = False,
    prefetch: bool = True,
) -> tf.data.Dataset:
    """Turn an `(image, mask)` dataset into batches ready for `model.fit` / `evaluate`.

    Training (`augment=True`): shuffle, then per element random scale, pad with
    `ignore_label`, random crop to `crop_size`, flip and photometric jitter; batches have the
    static shape `(batch_size, crop_h, crop_w, ...)` (the last partial batch is dropped).

    Evaluation (`augment=False`): no random operation, and images keep their full resolution
    because a metric must see every pixel. Images are padded at the bottom/right with
    `image_fill`, masks with `ignore_label` (so padding is never scored): to exactly
    `eval_size` when given (an image larger than it is an error), otherwise to the largest
    image of each batch rounded up to a multiple of `pad_multiple`, which output-stride-32
    networks need. Predictions can be cropped back to the original size at the top-left.
    Use `batch_size=1` to avoid padding beyond the rounding.

    Args:
        ds: dataset of `(image, mask)`, image float `(H, W, 3)`, mask integer `(H, W)`.
        batch_size: batch size.
        crop_size: int or `(height, width)` of training crops; required when augmenting.
        augment: training (True) or evaluation (False) mode.
        shuffle: False/0 for none, True for a 64-element buffer, an int for that buffer
            size; None means True when augmenting. Decoded images are large, so prefer also
            shuffling file order at the source (`shuffle_files=True` in the loaders).
        scale_range: random rescale range, or None.
        flip: random horizontal flips.
        jitter: random photometric jitter.
        image_fill: image padding value(s); the ImageNet mean by default.
        ignore_label: mask padding value.
        eval_size: fixed `(height, width)` to pad evaluation images to.
        pad_multiple: evaluation batches are padded to a multiple of this (1 disables).
        seed: makes shuffling and augmentation reproducible; each epoch still differs.
        repeat: repeat the dataset indefinitely.
        prefetch: prefetch batches.

    Returns:
        A batched `tf.data.Dataset` of `(images, masks)`: float32 `(B, H, W, 3)` and int32
        `(B, H, W)`.

    Example:
        >>> train = kseg.data.make_pipeline(kseg.data.shapes_dataset("train"), 8, crop_size=128)
        >>> val = kseg.data.make_pipeline(kseg.data.shapes_dataset("val"), 8, augment=False)
    """
    validate_positive_int(batch_size, "batch_size")
    _check_element_spec(ds)
    if shuffle is None:
        shuffle = augment
    buffer = 64 if shuffle is True else int(shuffle)
    if buffer > 1:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    if augment:
        if crop_size is None:
            raise ValueError("crop_size is required when augment=True. Received: crop_size=None")
        crop = validate_size(crop_size, "crop_size")
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda pair, element_seed: augment_pair(
                *_require_pixels(pair[0], pair[1]),
                element_seed,
                crop,
                scale_range=scale_range,
                flip=flip,
                jitter=jitter,
                image_fill=image_fill,
                ignore_label=ignore_label,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=seed is not None,
        )
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        ds = ds.map(
            lambda image, mask: _require_pixels(
                tf.cast(image, tf.float32), tf.cast(mask, tf.int32)
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if eval_size is not None:
            size = validate_size(eval_size, "eval_size")

            def pad_fixed(image, mask):
                # Known sizes fail here with a clear message rather than in set_shape below.
                if any(d is not None and d > s for d, s in zip(image.shape[:2], size)):
                    raise ValueError(
                        f"An evaluation image is larger than eval_size={size}. "
                        f"Received: image shape={tuple(image.shape)}"
                    )
                tf.debugging.assert_less_equal(
                    tf.shape(image)[:2],
                    tf.constant(size),
                    message=f"An evaluation image is larger than eval_size={size}",
                )
                image, mask = pad_to_size(image, mask, size, image_fill, ignore_label)
                image.set_shape([size[0], size[1], 3])
                mask.set_shape([size[0], size[1]])
                return image, mask

            ds = ds.map(pad_fixed, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
        else:
            fill = tf.reshape(tf.constant(image_fill, tf.float32), [-1])
            if fill.shape[0] != 1:
                # padded_batch takes a scalar padding value; shift so the fill becomes zero.
                ds = ds.map(lambda image, mask: (image - fill, mask))
                ds = ds.padded_batch(batch_size, padding_values=(0.0, ignore_label))
                ds = ds.map(lambda images, masks: (images + fill, masks))
            else:
                ds = ds.padded_batch(batch_size, padding_values=(fill[0], ignore_label))
            if pad_multiple > 1:
                ds = ds.map(
                    lambda images, masks: _pad_batch_to_multiple(
                        images, masks, pad_multiple, image_fill, ignore_label
                    ),
                    num_parallel_calls=tf.data.AUTOTUNE,
                )
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds
