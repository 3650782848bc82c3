"""Box and image-level EM training of segmentation networks (Papandreou et al., ICCV 2015).

Papandreou, Chen, Murphy and Yuille, "Weakly- and Semi-Supervised Learning of a Deep
Convolutional Network for Semantic Image Segmentation", ICCV 2015, train DeepLab by
expectation-maximisation: the E-step turns the network's current scores plus class biases
into a latent segmentation (an argmax), the M-step is the ordinary pixel cross-entropy on it.
Here both steps run inside a Keras loss, so any kseg model trains with `model.compile(loss=...)`
and `model.fit` (each loss also comes as a per-pixel function, Keras's two-level form):

- `EMAdaptCrossEntropy` (image-level tags, y_true `(B, K)` multi-hot): per image, adaptive
  biases make each present class the argmax on at least a preset fraction of the pixels
  (background `rho_bg = 40%`, each foreground class `rho_fg = 20%`, the paper's section 3.2);
  absent classes never win.
- `EMFixedCrossEntropy` (y_true `(B, H, W, K)` allowed-class maps): fixed biases `b_fg` for
  foreground and `b_bg` for background classes allowed at a pixel, every other class
  suppressed. `box_label_map` builds the map from boxes (box classes and background inside a
  box, background only outside), `tag_label_map` from image tags (the paper's EM-Fixed with
  image labels), and a full mask is its one-hot map, which is how `mixed_supervision_dataset`
  mixes a few fully-labelled images with many weak ones in one `fit`.
- `bbox_rect_labels` (Bbox-Rect): every pixel of a box takes its class, the smallest box
  winning where boxes overlap; an ordinary mask.
- `bbox_seg_labels` (Bbox-Seg): a dense-CRF segmentation inside each box, computed once per
  image and then used as an ordinary mask.

Label conventions are those of `kseg.weak`: class 0 is the background, 255 the ignore label,
boxes float `[y1, x1, y2, x2]` in pixels with pixel `(i, j)` covering `[i, i+1) x [j, j+1)`.
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

from kseg.inference.dense_crf import DEEPLAB_CRF_DEFAULTS, dense_crf
from kseg.losses import SegmentationCrossEntropy, segmentation_cross_entropy

IGNORE_LABEL = 255

# Paper, section 3.2 (EM-Adapt): at least 20% of the image to each present foreground class
# and at least 40% to the background. The released DeepLab code applies the fractions per
# present label (its AdaptiveBiasChannel layer's fg_portion / bg_portion).
FOREGROUND_FRACTION = 0.2
BACKGROUND_FRACTION = 0.4
# EM-Fixed adds b_fg to foreground and b_bg to background scores; the paper asks b_fg > b_bg
# > 0. With every other class suppressed only b_fg - b_bg acts; 5 and 3 give foreground a
# lead of 2 in log-probability where a box or tag allows it.
FOREGROUND_BIAS = 5.0
BACKGROUND_BIAS = 3.0
# Bbox-Seg: the central alpha = 20% of each box's area is held to the box's class.
CENTRE_FRACTION = 0.2

# A finite stand-in for -inf: keeps differences and midpoints of suppressed scores finite.
_SUPPRESSED = -1e30


def _check_fraction(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ValueError(f"{name} must be a number in [0, 1]. Received: {name}={value!r}")
    return float(value)


def _check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number. Received: {name}={value!r}")
    return float(value)


def _check_class_index(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0. Received: {name}={value!r}")
    return int(value)


def _check_class_count(y_true, logits, what):
    """Raises when the label encoding and the logits disagree on the number of classes K."""
    labelled, predicted = y_true.shape[-1], logits.shape[-1]
    if labelled is not None and predicted is not None and labelled != predicted:
        raise ValueError(
            f"{what} cover {labelled} classes (indices up to {labelled - 1}) but the model "
            f"predicts {predicted}: a tag or box names a class the model lacks. "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(logits.shape)}"
        )
    if predicted is not None and predicted > IGNORE_LABEL:
        raise ValueError(
            f"at most {IGNORE_LABEL} classes fit beside the ignore label {IGNORE_LABEL}. "
            f"Received: y_pred.shape={tuple(logits.shape)}"
        )


def _check_background(background_class, num_classes):
    if background_class is not None and num_classes is not None and background_class >= num_classes:
        raise ValueError(
            f"background_class={background_class} is not one of the model's {num_classes} classes"
        )


def _checked_e_step_inputs(
    labels, logits, background_class, *, method, name, layout, description=None
):
    """`(labels, logits)` as tensors, float32 logits without gradient, after checking shapes."""
    description = description or name
    logits = tf.stop_gradient(tf.cast(tf.convert_to_tensor(logits), tf.float32))
    labels = tf.convert_to_tensor(labels)
    if logits.shape.rank != 4 or labels.shape.rank != len(layout.split(",")):
        raise ValueError(
            f"{method} takes {description} {layout} and logits (B, H, W, K). "
            f"Received: {name}.shape={tuple(labels.shape)}, logits.shape={tuple(logits.shape)}"
        )
    _check_class_count(labels, logits, f"the {description}")
    _check_background(background_class, logits.shape[-1])
    return labels, logits


def _class_vector(num_classes, background_class, foreground_value, background_value):
    """(K,) float32: `background_value` at the background class, `foreground_value` elsewhere."""
    is_background = tf.equal(
        tf.range(num_classes), -1 if background_class is None else background_class
    )
    return tf.where(is_background, background_value, foreground_value)


def em_adapt_latent_labels(
    tags,
    logits,
    *,
    foreground_fraction=FOREGROUND_FRACTION,
    background_fraction=BACKGROUND_FRACTION,
    background_class=0,
    max_iterations=10,
):
    """EM-Adapt's E-step: the latent segmentation of each image from its tags and logits.

    Papandreou et al. (ICCV 2015, section 3.2, "EM-Adapt") add to the scores of each class l
    present in the image a bias b_l >= 0 chosen so that l is the argmax on at least a fraction
    rho_l of the pixels (`background_fraction` for the background class, `foreground_fraction`
    for each present foreground class); classes absent from the tags never win. When the
    fractions of an image's present classes add up to more than 1 they are scaled to sum to 1.

    The biases are found for all images and classes at once. With the other biases fixed, the
    smallest b_l giving class l n_l = floor(rho_l * H * W) pixels is read off the sorted
    margins m_i = max_{j != l}(s_ij + b_j) - s_il (one `tf.sort` over the pixels of a
    (B, K, H*W) tensor): b_l is placed halfway between the n_l-th and (n_l+1)-th smallest
    margins, so exactly n_l pixels pass when the margins are distinct. That update is
    monotone in the other biases, so repeating it from b = 0 (Jacobi sweeps, all classes in
    parallel) increases the biases towards the least ones meeting every fraction; the sweeps
    stop when every image meets them, or after `max_iterations`. On convergence a boosted
    class covers exactly n_l pixels and every present class at least n_l. The released
    DeepLab layer (AdaptiveBiasChannel) makes the same update one class after another, for a
    fixed number of sweeps.

    Each sweep costs one sort of B*K*H*W values (about 0.2 s for 8 images of 96x128 and 12
    classes on two CPU cores). With a few present classes the counts reach their targets to
    the pixel in 10-50 sweeps; tight fractions (summing to 1, as after scaling) approach them
    geometrically. Cut short at the default 10 sweeps, the classes we measured (random
    logits, 48x64, 12 classes) still lacked at most 1.5% (3 or 4 present classes) to 5%
    (9 present) of their targets.

    Args:
        tags: `(B, K)` multi-hot of the classes present in each image (background included
            when present). An image with no tag gets the ignore label everywhere.
        logits: `(B, H, W, K)` network scores; the result does not depend on per-pixel shifts,
            so logits and log-probabilities give the same labels.
        foreground_fraction: rho_fg in [0, 1].
        background_fraction: rho_bg in [0, 1].
        background_class: index of the background class, or None to treat every class as
            foreground.
        max_iterations: upper bound on the bias sweeps, an int >= 1.

    Returns:
        int32 `(B, H, W)` latent labels: a present class, or 255 for images without tags.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.em import em_adapt_latent_labels
        >>> logits = np.random.default_rng(0).normal(size=(1, 10, 10, 3)).astype("float32")
        >>> labels = em_adapt_latent_labels(np.array([[1, 0, 1]]), logits)
        >>> int(np.sum(np.asarray(labels) == 0)) >= 40, int(np.sum(np.asarray(labels) == 1))
        (True, 0)
    """
    foreground_fraction = _check_fraction("foreground_fraction", foreground_fraction)
    background_fraction = _check_fraction("background_fraction", background_fraction)
    background_class = _check_class_index("background_class", background_class, allow_none=True)
    if (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, (int, np.integer))
        or max_iterations < 1
    ):
        raise ValueError(
            f"max_iterations must be an int >= 1. Received: max_iterations={max_iterations!r}"
        )
    tags, logits = _checked_e_step_inputs(
        tags, logits, background_class, method="EM-Adapt", name="tags", layout="(B, K)"
    )
    if logits.shape[-1] == 1:
        raise ValueError("EM-Adapt needs at least two classes. Received: logits with K=1")

    shape = tf.shape(logits)
    batch, num_classes = shape[0], shape[3]
    pixels = shape[1] * shape[2]
    scores = tf.reshape(logits, tf.stack([batch, pixels, num_classes]))
    present = tf.cast(tags, tf.float32) > 0.5
    fractions = _class_vector(
        num_classes, background_class, foreground_fraction, background_fraction
    )
    fractions = tf.where(present, fractions[None, :], 0.0)
    fractions = fractions / tf.maximum(1.0, tf.reduce_sum(fractions, axis=1, keepdims=True))
    # Flooring keeps the targets' sum within the pixel count, so the fractions stay feasible.
    targets = tf.cast(tf.floor(fractions * tf.cast(pixels, tf.float32) + 1e-4), tf.int32)
    targets = tf.minimum(targets, pixels)
    class_ids = tf.range(num_classes)

    def biased(bias):
        return tf.where(present[:, None, :], scores + bias[:, None, :], _SUPPRESSED)

    def counts(bias):
        winners = tf.one_hot(tf.argmax(biased(bias), axis=-1, output_type=tf.int32), num_classes)
        return tf.cast(tf.reduce_sum(winners, axis=1), tf.int32)

    def satisfied(bias):
        met = tf.logical_or(tf.logical_not(present), counts(bias) >= targets)
        return tf.reduce_all(met, axis=1)

    def update(bias, done):
        top = tf.math.top_k(biased(bias), k=2)
        best_is_self = tf.equal(top.indices[..., :1], class_ids)
        best_other = tf.where(best_is_self, top.values[..., 1:2], top.values[..., :1])
        margins = tf.transpose(best_other - scores, [0, 2, 1])
        ordered = tf.sort(margins, axis=-1)
        below = tf.gather(ordered, tf.clip_by_value(targets - 1, 0, pixels - 1), batch_dims=2)
        above = tf.gather(ordered, tf.clip_by_value(targets, 0, pixels - 1), batch_dims=2)
        needed = tf.where(targets >= pixels, below + 1.0, 0.5 * (below + above))
        new = tf.where(tf.logical_and(present, targets > 0), tf.maximum(needed, 0.0), 0.0)
        return tf.where(done[:, None], bias, new)

    def body(step, bias, done):
        bias = update(bias, done)
        return step + 1, bias, satisfied(bias)

    bias = tf.zeros(tf.stack([batch, num_classes]), tf.float32)
    _, bias, _ = tf.while_loop(
        lambda step, bias, done: tf.logical_and(
            step < max_iterations, tf.logical_not(tf.reduce_all(done))
        ),
        body,
        (tf.constant(0), bias, satisfied(bias)),
    )
    labels = tf.argmax(biased(bias), axis=-1, output_type=tf.int32)
    labels = tf.where(tf.reduce_any(present, axis=1)[:, None], labels, IGNORE_LABEL)
    return tf.reshape(labels, shape[:3])


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
        >>> from kseg.weak.em import em_fixed_latent_labels
        >>> allowed = np.array([[[[1, 1, 0], [1, 0, 0], [0, 0, 0]]]])
        >>> logits = np.array([[[[1.0, 0.0, 9.0]] * 3]], "float32")
        >>> np.asarray(em_fixed_latent_labels(allowed, logits)).tolist()
        [[[1, 0, 255]]]
    """
    foreground_bias = _check_real("foreground_bias", foreground_bias)
    background_bias = _check_real("background_bias", background_bias)
    background_class = _check_class_index("background_class", background_class, allow_none=True)
    allowed, logits = _checked_e_step_inputs(
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
    bias = _class_vector(tf.shape(logits)[-1], background_class, foreground_bias, background_bias)
    # Where a class is marked in front, it is the foreground and every other allowed class the
    # background of that pixel, whatever the class.
    bias = tf.where(
        tf.reduce_any(in_front, axis=-1, keepdims=True),
        tf.where(in_front, foreground_bias, background_bias),
        bias,
    )
    labels = tf.argmax(tf.where(allowed, logits + bias, _SUPPRESSED), axis=-1, output_type=tf.int32)
    return tf.where(tf.reduce_any(allowed, axis=-1), labels, IGNORE_LABEL)


@keras.saving.register_keras_serializable(package="kseg")
def em_adapt_cross_entropy(
    y_true,
    y_pred,
    foreground_fraction=FOREGROUND_FRACTION,
    background_fraction=BACKGROUND_FRACTION,
    background_class=0,
    max_iterations=10,
):
    """Per-pixel EM-Adapt loss: cross-entropy of the logits on `em_adapt_latent_labels`.

    The function form of `EMAdaptCrossEntropy` (Papandreou et al., ICCV 2015, section 3.2).
    Pixels of images without tags get 0 and are left out of the Keras mask, so
    `model.compile(loss=em_adapt_cross_entropy)` averages over the tagged images' pixels.

    Args:
        y_true: `(B, K)` multi-hot tags.
        y_pred: `(B, H, W, K)` logits.
        foreground_fraction: rho_fg.
        background_fraction: rho_bg.
        background_class: index of the background class, or None.
        max_iterations: bound on the bias sweeps of the E-step.

    Returns:
        float32 `(B, H, W)` per-pixel losses.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.em import em_adapt_cross_entropy
        >>> logits = np.zeros((1, 4, 4, 3), "float32")
        >>> losses = em_adapt_cross_entropy(np.array([[1, 1, 0]], "float32"), logits)
        >>> round(float(losses[0, 0, 0]), 4)  # -log(1/3)
        1.0986
    """
    labels = em_adapt_latent_labels(
        y_true,
        y_pred,
        foreground_fraction=foreground_fraction,
        background_fraction=background_fraction,
        background_class=background_class,
        max_iterations=max_iterations,
    )
    return segmentation_cross_entropy(labels, y_pred, ignore_label=IGNORE_LABEL, check_labels=False)


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
        >>> from kseg.weak.em import em_fixed_cross_entropy
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
    return segmentation_cross_entropy(labels, y_pred, ignore_label=IGNORE_LABEL, check_labels=False)


class _LatentCrossEntropy(keras.losses.Loss):
    """Cross-entropy of the logits on latent labels computed from y_true and the logits.

    A subclass names its E-step function (`_latent_function`) and the attributes passed to it
    as keywords (`_latent_options`); those attributes are also its config.
    """

    _latent_function = None
    _latent_options = ()

    def __init__(self, reduction, name, dtype, background_class):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.background_class = _check_class_index(
            "background_class", background_class, allow_none=True
        )
        # The M-step is kseg's pixel cross-entropy, averaged over the pixels that got a label.
        self._cross_entropy = SegmentationCrossEntropy(
            ignore_label=IGNORE_LABEL, check_labels=False, reduction=reduction
        )

    def latent_labels(self, y_true, y_pred):
        """The E-step's latent segmentation `(B, H, W)` for labels y_true and logits y_pred."""
        options = {name: getattr(self, name) for name in self._latent_options}
        return type(self)._latent_function(y_true, y_pred, **options)

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in self._latent_options})
        config["dtype"] = self.dtype
        return config

    def call(self, y_true, y_pred):
        return segmentation_cross_entropy(
            self.latent_labels(y_true, y_pred),
            y_pred,
            ignore_label=IGNORE_LABEL,
            check_labels=False,
        )

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            labels = self.latent_labels(y_true, y_pred)
            return self._cross_entropy(labels, y_pred, sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="kseg")
class EMAdaptCrossEntropy(_LatentCrossEntropy):
    """EM-Adapt loss for image-level tags: adaptive-bias E-step, cross-entropy M-step.

    Papandreou et al., "Weakly- and Semi-Supervised Learning of a Deep Convolutional Network
    for Semantic Image Segmentation", ICCV 2015, section 3.2. Each call computes, without
    gradient, the latent segmentation of `em_adapt_latent_labels` (present classes only, each
    present foreground class the argmax on at least `foreground_fraction` of the image and the
    background on at least `background_fraction`) and returns the softmax cross-entropy of the
    logits on it, averaged over the pixels of images that have tags. Training on it runs the
    paper's EM with one E-step per mini-batch, as its released code does.

    Args:
        foreground_fraction: rho_fg (paper: 0.2).
        background_fraction: rho_bg (paper: 0.4).
        background_class: index of the background class, or None.
        max_iterations: bound on the bias sweeps of the E-step.
        reduction: as `kseg.losses.SegmentationCrossEntropy` ("sum_over_batch_size" is the
            mean over labelled pixels).
        name: loss name.
        dtype: Keras loss dtype; the computation is float32.

    Returns:
        A `keras.losses.Loss` taking y_true `(B, K)` multi-hot tags and y_pred `(B, H, W, K)`
        logits.

    Example:
        >>> import kseg
        >>> from kseg.weak.em import EMAdaptCrossEntropy
        >>> model = kseg.testing.build_small_model("fcn8s")
        >>> model.compile(optimizer="adam", loss=EMAdaptCrossEntropy())
    """

    _latent_function = staticmethod(em_adapt_latent_labels)
    _latent_options = (
        "foreground_fraction",
        "background_fraction",
        "background_class",
        "max_iterations",
    )

    def __init__(
        self,
        foreground_fraction=FOREGROUND_FRACTION,
        background_fraction=BACKGROUND_FRACTION,
        background_class=0,
        max_iterations=10,
        reduction="sum_over_batch_size",
        name="em_adapt_cross_entropy",
        dtype=None,
    ):
        super().__init__(reduction, name, dtype, background_class)
        self.foreground_fraction = _check_fraction("foreground_fraction", foreground_fraction)
        self.background_fraction = _check_fraction("background_fraction", background_fraction)
        if (
            isinstance(max_iterations, bool)
            or not isinstance(max_iterations, (int, np.integer))
            or max_iterations < 1
        ):
            raise ValueError(
                f"max_iterations must be an int >= 1. Received: max_iterations={max_iterations!r}"
            )
        self.max_iterations = int(max_iterations)


@keras.saving.register_keras_serializable(package="kseg")
class EMFixedCrossEntropy(_LatentCrossEntropy):
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
        >>> from kseg.weak.em import EMFixedCrossEntropy
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
        self.foreground_bias = _check_real("foreground_bias", foreground_bias)
        self.background_bias = _check_real("background_bias", background_bias)


def _checked_boxes(boxes, classes, height, width, num_classes, background_class):
    """Validates boxes and classes and returns the boxes clipped to the image, float64 (N, 4)."""
    for name, value in (("height", height), ("width", width), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
    boxes = np.asarray(boxes, np.float64)
    classes = np.asarray(classes)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"boxes must be (N, 4) [y1, x1, y2, x2]. Received: boxes.shape={boxes.shape}"
        )
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
    for index, (box, label) in enumerate(zip(boxes, classes)):
        if not 0 <= label < num_classes:
            raise ValueError(
                f"box {index} has class {label}, outside the model's classes [0, {num_classes}). "
                f"Received: classes={classes.tolist()}, num_classes={num_classes}"
            )
        if background_class is not None and label == background_class:
            raise ValueError(
                f"box {index} has the background class {label}; boxes mark foreground objects"
            )
        if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(
                f"box {index} is not a box with y1 < y2 and x1 < x2. Received: box={box.tolist()}"
            )
        if box[2] <= 0 or box[3] <= 0 or box[0] >= height or box[1] >= width:
            raise ValueError(
                f"box {index} lies entirely outside the {height}x{width} image. "
                f"Received: box={box.tolist()}"
            )
    clipped = (
        np.stack(
            [
                np.clip(boxes[:, 0], 0, height),
                np.clip(boxes[:, 1], 0, width),
                np.clip(boxes[:, 2], 0, height),
                np.clip(boxes[:, 3], 0, width),
            ],
            axis=1,
        )
        if boxes.shape[0]
        else boxes
    )
    return clipped, classes


def _box_masks(boxes, height, width):
    """(N, H, W) bool: the pixels each box overlaps (pixel (i, j) covers [i, i+1) x [j, j+1))."""
    rows = np.arange(height)[None, :]
    columns = np.arange(width)[None, :]
    in_rows = (rows + 1 > boxes[:, 0:1]) & (rows < boxes[:, 2:3])
    in_columns = (columns + 1 > boxes[:, 1:2]) & (columns < boxes[:, 3:4])
    return in_rows[:, :, None] & in_columns[:, None, :]


def _checked_box_annotation(boxes, classes, height, width, num_classes, background_class):
    """`(background_class, boxes, classes)` of a box-annotated image, checked and clipped."""
    background_class = _check_class_index("background_class", background_class, allow_none=True)
    if background_class is not None and isinstance(num_classes, (int, np.integer)):
        _check_background(background_class, int(num_classes))
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
        >>> from kseg.weak.em import box_label_map
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
        >>> from kseg.weak.em import tag_label_map
        >>> tag_label_map([1, 0, 1], 2, 2)[0, 0].tolist()
        [1, 0, 1]
    """
    tags = np.asarray(tags)
    if tags.ndim != 1:
        raise ValueError(f"tags must be a (K,) multi-hot vector. Received: tags.shape={tags.shape}")
    present = (tags > 0.5).astype(np.uint8)
    return np.broadcast_to(present, (height, width, tags.shape[0])).copy()


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
        >>> from kseg.weak.em import bbox_rect_labels
        >>> labels = bbox_rect_labels([[0, 0, 3, 4], [1, 1, 2, 3]], [1, 2], 3, 5, num_classes=3)
        >>> labels.tolist()
        [[1, 1, 1, 1, 0], [1, 2, 2, 1, 0], [1, 1, 1, 1, 0]]
    """
    if ambiguity_ratio is not None:
        ambiguity_ratio = _check_fraction("ambiguity_ratio", ambiguity_ratio)
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
        >>> from kseg.weak.em import bbox_seg_labels
        >>> image = np.full((24, 24, 3), 40, np.uint8)
        >>> image[6:18, 6:18] = 200
        >>> labels = bbox_seg_labels(image, [[3, 3, 21, 21]], [1], num_classes=2)
        >>> int(labels[12, 12]), int(labels[1, 1])
        (1, 0)
    """
    centre_fraction = _check_fraction("centre_fraction", centre_fraction)
    box_foreground_probability = _check_fraction(
        "box_foreground_probability", box_foreground_probability
    )
    if not 0.0 < box_foreground_probability < 1.0:
        raise ValueError(
            "box_foreground_probability must lie strictly between 0 and 1. "
            f"Received: box_foreground_probability={box_foreground_probability}"
        )
    if uncertain_below is not None:
        uncertain_below = _check_fraction("uncertain_below", uncertain_below)
    background_class = _check_class_index("background_class", background_class)
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
    _check_background(background_class, num_classes)
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
        >>> from kseg.weak.em import box_label_map, mixed_supervision_dataset
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
        strong_fraction = _check_fraction("strong_fraction", strong_fraction)
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
