"""EM-Adapt (Papandreou et al., ICCV 2015): training from image-level tags with adaptive biases.

Per image, adaptive biases make each present class the argmax on at least a preset fraction of
the pixels (background `rho_bg = 40%`, each foreground class `rho_fg = 20%`, the paper's section
3.2); absent classes never win. `em_adapt_latent_labels` is that E-step, `EMAdaptCrossEntropy`
(and its per-pixel form `em_adapt_cross_entropy`, Keras's two-level form) the loss that trains
any kseg model on it with `model.compile(loss=...)` and `model.fit`. y_true is the `(B, K)`
multi-hot of each image's tags.
"""

import keras
import tensorflow as tf

from kseg.validation import IGNORE_LABEL, validate_fraction, validate_positive_int
from kseg.weak.em_loss import (
    SUPPRESSED_SCORE,
    LatentCrossEntropy,
    checked_e_step_inputs,
    class_vector,
    latent_cross_entropy,
    validate_background_class,
)

# Paper, section 3.2 (EM-Adapt): at least 20% of the image to each present foreground class
# and at least 40% to the background. The released DeepLab code applies the fractions per
# present label (its AdaptiveBiasChannel layer's fg_portion / bg_portion).
FOREGROUND_FRACTION = 0.2
BACKGROUND_FRACTION = 0.4


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
        >>> from kseg.weak.em_adapt import em_adapt_latent_labels
        >>> logits = np.random.default_rng(0).normal(size=(1, 10, 10, 3)).astype("float32")
        >>> labels = em_adapt_latent_labels(np.array([[1, 0, 1]]), logits)
        >>> int(np.sum(np.asarray(labels) == 0)) >= 40, int(np.sum(np.asarray(labels) == 1))
        (True, 0)
    """
    foreground_fraction = validate_fraction(foreground_fraction, "foreground_fraction")
    background_fraction = validate_fraction(background_fraction, "background_fraction")
    background_class = validate_background_class(background_class)
    max_iterations = validate_positive_int(max_iterations, "max_iterations")
    tags, logits = checked_e_step_inputs(
        tags, logits, background_class, method="EM-Adapt", name="tags", layout="(B, K)"
    )
    if logits.shape[-1] == 1:
        raise ValueError("EM-Adapt needs at least two classes. Received: logits with K=1")

    shape = tf.shape(logits)
    batch, num_classes = shape[0], shape[3]
    pixels = shape[1] * shape[2]
    scores = tf.reshape(logits, tf.stack([batch, pixels, num_classes]))
    present = tf.cast(tags, tf.float32) > 0.5
    fractions = class_vector(
        num_classes, background_class, foreground_fraction, background_fraction
    )
    fractions = tf.where(present, fractions[None, :], 0.0)
    fractions = fractions / tf.maximum(1.0, tf.reduce_sum(fractions, axis=1, keepdims=True))
    # Flooring keeps the targets' sum within the pixel count, so the fractions stay feasible.
    targets = tf.cast(tf.floor(fractions * tf.cast(pixels, tf.float32) + 1e-4), tf.int32)
    targets = tf.minimum(targets, pixels)
    class_ids = tf.range(num_classes)

    def biased(bias):
        return tf.where(present[:, None, :], scores + bias[:, None, :], SUPPRESSED_SCORE)

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
        >>> from kseg.weak.em_adapt import em_adapt_cross_entropy
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
    return latent_cross_entropy(labels, y_pred)


@keras.saving.register_keras_serializable(package="kseg")
class EMAdaptCrossEntropy(LatentCrossEntropy):
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
        >>> from kseg.weak.em_adapt import EMAdaptCrossEntropy
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
        self.foreground_fraction = validate_fraction(foreground_fraction, "foreground_fraction")
        self.background_fraction = validate_fraction(background_fraction, "background_fraction")
        self.max_iterations = validate_positive_int(max_iterations, "max_iterations")
