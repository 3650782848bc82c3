"""EM-Fixed (Papandreou et al., ICCV 2015): training from per-pixel allowed classes, fixed biases.

The E-step adds fixed biases `b_fg` to the foreground and `b_bg` to the background classes
allowed at a pixel and suppresses every other class. The allowed-class map `(H, W, K)` comes
from boxes (`kseg.weak.box_labels.box_label_map`: box classes and background inside a box,
background only outside), from image tags (`tag_label_map`, the paper's EM-Fixed with image
labels), or from a full mask as its one-hot map, which is how `mixed_supervision_dataset` mixes
a few fully-labelled images with many weak ones in one `fit` (the paper's semi-supervised
setting). `em_fixed_latent_labels` is the E-step, `EMFixedCrossEntropy` (and its per-pixel form
`em_fixed_cross_entropy`) the loss.
"""

import keras
import numpy as np
import tensorflow as tf

from kseg.validation import IGNORE_LABEL, validate_finite_number, validate_fraction
from kseg.weak.em_loss import (
    SUPPRESSED_SCORE,
    LatentCrossEntropy,
    checked_e_step_inputs,
    class_vector,
    latent_cross_entropy,
    validate_background_class,
)

# EM-Fixed adds b_fg to foreground and b_bg to background scores; the paper asks b_fg > b_bg
# > 0. With every other class suppressed only b_fg - b_bg acts; 5 and 3 give foreground a
# lead of 2 in log-probability where a box or tag allows it.
FOREGROUND_BIAS = 5.0
BACKGROUND_BIAS = 3.0


def em_fixed_latent_labels(
    allowed,
    logits,
    *,
    foreground_bias=FOREGROUND_BIAS,
    background_bias=BACKGROUND_BIAS,
    background_class=0,
):
    """EM-Fixed's E-step: argmax of biased scores over the classes allowed at each pixel.

    Papandreou et al. (ICCV 2015, sections 3.2-3.3, "EM-Fixed") add a fixed bias b_fg to the
    foreground classes known to be there and b_bg to the background (b_fg > b_bg) before the
    argmax. Here the allowed classes come per pixel (`box_label_map`, `tag_label_map`, or the
    one-hot map of a full mask) and every other class is suppressed, so only b_fg - b_bg acts
    where background and foreground compete, a pixel with one allowed class takes that class,
    and a pixel with none gets the ignore label. A map may also mark one class of a pixel as
    in front with the value 2 (`box_label_map(..., mark_front=True)`): that class then takes
    b_fg and the pixel's other allowed classes b_bg, which carries the paper's object-over-
    background preference to datasets without a background class.

    Args:
        allowed: `(B, H, W, K)` 0/1 map of the classes allowed at each pixel (2 marks a class
            in front).
        logits: `(B, H, W, K)` network scores.
        foreground_bias: b_fg.
        background_bias: b_bg.
        background_class: index of the background class, or None (all foreground).

    Returns:
        int32 `(B, H, W)` latent labels, 255 where no class is allowed.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.em_fixed import em_fixed_latent_labels
        >>> allowed = np.array([[[[1, 1, 0], [1, 0, 0], [0, 0, 0]]]])
        >>> logits = np.array([[[[1.0, 0.0, 9.0]] * 3]], "float32")
        >>> np.asarray(em_fixed_latent_labels(allowed, logits)).tolist()
        [[[1, 0, 255]]]
    """
    foreground_bias = validate_finite_number(foreground_bias, "foreground_bias")
    background_bias = validate_finite_number(background_bias, "background_bias")
    background_class = validate_background_class(background_class)
    allowed, logits = checked_e_step_inputs(
        allowed,
        logits,
        background_class,
        method="EM-Fixed",
        name="allowed",
        layout="(B, H, W, K)",
        description="allowed-class maps",
    )
    values = tf.cast(allowed, tf.float32)
    allowed = values > 0.5
    in_front = values > 1.5
    bias = class_vector(tf.shape(logits)[-1], background_class, foreground_bias, background_bias)
    # Where a class is marked in front, it is the foreground and every other allowed class the
    # background of that pixel, whatever the class.
    bias = tf.where(
        tf.reduce_any(in_front, axis=-1, keepdims=True),
        tf.where(in_front, foreground_bias, background_bias),
        bias,
    )
    labels = tf.argmax(
        tf.where(allowed, logits + bias, SUPPRESSED_SCORE), axis=-1, output_type=tf.int32
    )
    return tf.where(tf.reduce_any(allowed, axis=-1), labels, IGNORE_LABEL)


@keras.saving.register_keras_serializable(package="kseg")
def em_fixed_cross_entropy(
    y_true,
    y_pred,
    foreground_bias=FOREGROUND_BIAS,
    background_bias=BACKGROUND_BIAS,
    background_class=0,
):
    """Per-pixel EM-Fixed loss: cross-entropy of the logits on `em_fixed_latent_labels`.

    The function form of `EMFixedCrossEntropy` (Papandreou et al., ICCV 2015, sections
    3.2-3.4). Pixels allowing no class get 0 and are left out of the Keras mask.

    Args:
        y_true: `(B, H, W, K)` 0/1 allowed-class maps.
        y_pred: `(B, H, W, K)` logits.
        foreground_bias: b_fg.
        background_bias: b_bg.
        background_class: index of the background class, or None.

    Returns:
        float32 `(B, H, W)` per-pixel losses.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.em_fixed import em_fixed_cross_entropy
        >>> allowed = np.ones((1, 2, 2, 3), np.uint8)
        >>> losses = em_fixed_cross_entropy(allowed, np.zeros((1, 2, 2, 3), "float32"))
        >>> round(float(losses[0, 0, 0]), 4)
        1.0986
    """
    labels = em_fixed_latent_labels(
        y_true,
        y_pred,
        foreground_bias=foreground_bias,
        background_bias=background_bias,
        background_class=background_class,
    )
    return latent_cross_entropy(labels, y_pred)


@keras.saving.register_keras_serializable(package="kseg")
class EMFixedCrossEntropy(LatentCrossEntropy):
    """EM-Fixed loss for per-pixel allowed classes (boxes, tags, or full masks mixed in).

    Papandreou et al., ICCV 2015, sections 3.2-3.4. Each call computes, without gradient, the
    latent segmentation of `em_fixed_latent_labels`: at each pixel the argmax, over the
    classes y_true allows there, of the logits plus b_fg (foreground) or b_bg (background).
    It returns the softmax cross-entropy of the logits on it, averaged over pixels with at
    least one allowed class. Boxes (`box_label_map`) allow the boxes' classes and the
    background inside boxes and the background alone outside them; tags (`tag_label_map`)
    allow the present classes everywhere; a full mask, one-hot encoded, allows exactly its
    class, so the loss is then plain cross-entropy. That is how strong and weak images share
    a batch (`mixed_supervision_dataset`).

    Args:
        foreground_bias: b_fg, added to allowed foreground classes.
        background_bias: b_bg, added to the background class (only b_fg - b_bg matters).
        background_class: index of the background class, or None.
        reduction: as `kseg.losses.SegmentationCrossEntropy`.
        name: loss name.
        dtype: Keras loss dtype; the computation is float32.

    Returns:
        A `keras.losses.Loss` taking y_true `(B, H, W, K)` 0/1 allowed-class maps and y_pred
        `(B, H, W, K)` logits.

    Example:
        >>> import kseg
        >>> from kseg.weak.em_fixed import EMFixedCrossEntropy
        >>> model = kseg.testing.build_small_model("fcn8s")
        >>> model.compile(optimizer="adam", loss=EMFixedCrossEntropy())
    """

    _latent_function = staticmethod(em_fixed_latent_labels)
    _latent_options = ("foreground_bias", "background_bias", "background_class")

    def __init__(
        self,
        foreground_bias=FOREGROUND_BIAS,
        background_bias=BACKGROUND_BIAS,
        background_class=0,
        reduction="sum_over_batch_size",
        name="em_fixed_cross_entropy",
        dtype=None,
    ):
        super().__init__(reduction, name, dtype, background_class)
        self.foreground_bias = validate_finite_number(foreground_bias, "foreground_bias")
        self.background_bias = validate_finite_number(background_bias, "background_bias")


def tag_label_map(tags, height, width):
    """The EM-Fixed allowed-class map `(H, W, K)` of an image annotated with tags only.

    The paper's EM-Fixed with image-level labels (Papandreou et al., ICCV 2015, section 3.2,
    used in its semi-supervised experiments) lets every pixel take any present class.

    Args:
        tags: `(K,)` multi-hot of the classes present.
        height: image height H.
        width: image width W.

    Returns:
        uint8 numpy array `(H, W, K)`: the tags at every pixel.

    Example:
        >>> from kseg.weak.em_fixed import tag_label_map
        >>> tag_label_map([1, 0, 1], 2, 2)[0, 0].tolist()
        [1, 0, 1]
    """
    tags = np.asarray(tags)
    if tags.ndim != 1:
        raise ValueError(f"tags must be a (K,) multi-hot vector. Received: tags.shape={tags.shape}")
    present = (tags > 0.5).astype(np.uint8)
    return np.broadcast_to(present, (height, width, tags.shape[0])).copy()


def mixed_supervision_dataset(strong, weak, num_classes, *, strong_fraction=None, seed=None):
    """One dataset of a few fully-labelled images and many weakly-labelled ones, for EM-Fixed.

    The semi-supervised setting of Papandreou et al. (ICCV 2015, section 3.4): strong images
    keep their masks, weak ones get EM-Fixed's latent labels, in the same training run. Both
    become allowed-class maps: a mask is one-hot encoded (exactly its class is allowed, so
    `EMFixedCrossEntropy` reduces to the plain cross-entropy there, and ignore-label pixels
    allow nothing and are skipped), weak maps pass through. The loss thus dispatches per
    pixel with no flag. With `strong_fraction=None` the strong images come first, then the
    weak ones (shuffle afterwards); with a fraction, elements are drawn from the repeated
    strong set with that probability and from the weak set otherwise, and the dataset ends
    with the weak set.

    Args:
        strong: `tf.data.Dataset` of `(image, mask)`, mask integer `(H, W)` or `(H, W, 1)`
            with class ids and 255 for ignored pixels.
        weak: `tf.data.Dataset` of `(image, allowed)`, allowed `(H, W, K)` from
            `box_label_map` or `tag_label_map`.
        num_classes: number of classes K.
        strong_fraction: None, or the probability in (0, 1) that an element is a strong image.
        seed: seed of the sampling when `strong_fraction` is set.

    Returns:
        Unbatched `tf.data.Dataset` of `(image, allowed)` with allowed uint8 `(H, W, K)`;
        batch it (with a fixed image size) and train with `EMFixedCrossEntropy`.

    Example:
        >>> import numpy as np, tensorflow as tf
        >>> from kseg.weak.box_labels import box_label_map
        >>> from kseg.weak.em_fixed import mixed_supervision_dataset
        >>> images = np.zeros((2, 8, 8, 3), np.float32)
        >>> strong = tf.data.Dataset.from_tensor_slices((images, np.zeros((2, 8, 8), np.uint8)))
        >>> allowed = np.stack([box_label_map([[1, 1, 5, 5]], [1], 8, 8, 3)] * 2)
        >>> weak = tf.data.Dataset.from_tensor_slices((images, allowed))
        >>> mixed = mixed_supervision_dataset(strong, weak, num_classes=3)
        >>> len(list(mixed))
        4
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or not 1 <= num_classes < IGNORE_LABEL
    ):
        raise ValueError(
            f"num_classes must be an int in [1, {IGNORE_LABEL}). "
            f"Received: num_classes={num_classes!r}"
        )
    if strong_fraction is not None:
        strong_fraction = validate_fraction(strong_fraction, "strong_fraction")
        if not 0.0 < strong_fraction < 1.0:
            raise ValueError(
                f"strong_fraction must lie in (0, 1). Received: strong_fraction={strong_fraction}"
            )
    for name, dataset in (("strong", strong), ("weak", weak)):
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError(
                f"{name} must yield (image, labels) pairs. Received: element_spec={spec}"
            )
    allowed_spec = weak.element_spec[1]
    if allowed_spec.shape.rank != 3 or allowed_spec.shape[-1] not in (None, num_classes):
        raise ValueError(
            f"weak labels must be allowed-class maps (H, W, {num_classes}). "
            f"Received: shape={allowed_spec.shape}"
        )

    def encode_mask(image, mask):
        mask = tf.cast(mask, tf.int32)
        if mask.shape.rank == 3:
            mask = tf.squeeze(mask, axis=-1)
        bad = tf.logical_and(mask != IGNORE_LABEL, tf.logical_or(mask < 0, mask >= num_classes))
        check = tf.debugging.assert_equal(
            tf.reduce_any(bad),
            False,
            message=(
                f"a strong mask has a label outside [0, {num_classes}) that is not {IGNORE_LABEL}"
            ),
        )
        with tf.control_dependencies([check]):
            # tf.one_hot gives an all-zero row for 255: the ignored pixel allows no class.
            return image, tf.one_hot(mask, num_classes, dtype=tf.uint8)

    def pass_weak(image, allowed):
        return image, tf.cast(allowed, tf.uint8)

    strong = strong.map(encode_mask)
    weak = weak.map(pass_weak)
    if strong_fraction is None:
        return strong.concatenate(weak)
    return tf.data.Dataset.sample_from_datasets(
        [strong.repeat(), weak],
        weights=[strong_fraction, 1.0 - strong_fraction],
        seed=seed,
        stop_on_empty_dataset=True,
    )
