"""Fully-connected CRF post-processing: mean-field inference with Gaussian edge potentials."""

import tensorflow as tf

from kseg.inference.permutohedral_lattice import PermutohedralLattice
from kseg.validation import (
    validate_non_negative_int,
    validate_non_negative_number,
    validate_positive_number,
)

# The CRF settings distributed with DeepLab v2's ResNet-101 PASCAL VOC model (bi_w=4,
# bi_xy_std=67, bi_rgb_std=3, pos_w=3, pos_xy_std=1, 10 mean-field iterations; the values that
# re-implementations such as deeplab-pytorch carry over). DeepLab v1 (Chen et al.,
# ICLR 2015, section 4.1) fixes w2=3, theta_gamma=3 and cross-validates w1 in [5, 10],
# theta_alpha in [50, 100], theta_beta in [3, 10], also with 10 iterations.
DEEPLAB_CRF_DEFAULTS = {
    "iterations": 10,
    "sxy_gaussian": 1.0,
    "compat_gaussian": 3.0,
    "sxy_bilateral": 67.0,
    "srgb_bilateral": 3.0,
    "compat_bilateral": 4.0,
}

# pydensecrf's unary_from_softmax clips probabilities here before taking the log.
MIN_PROBABILITY = 1e-5


def crf_parameters(
    iterations, sxy_gaussian, compat_gaussian, sxy_bilateral, srgb_bilateral, compat_bilateral
):
    """Checks the dense CRF's parameters and returns them as a dict of an int and floats.

    `dense_crf` and the `DenseCRF` layer both take their parameters through here, so they
    accept and refuse the same values.

    Args:
        iterations: number of mean-field updates, an int >= 0.
        sxy_gaussian: positional standard deviation of the smoothness kernel, in pixels, > 0.
        compat_gaussian: Potts weight of the smoothness kernel, >= 0.
        sxy_bilateral: positional standard deviation of the appearance kernel, in pixels, > 0.
        srgb_bilateral: colour standard deviation of the appearance kernel, in 0-255 units, > 0.
        compat_bilateral: Potts weight of the appearance kernel, >= 0.

    Returns:
        dict with the six names as keys, ready for `mean_field_logits(**parameters)`.

    Raises:
        ValueError: naming the first parameter out of its range and its value.

    Example:
        >>> from kseg.inference.dense_crf import crf_parameters
        >>> parameters = crf_parameters(5, 1, 3, 67, 3, 4)
        >>> parameters["iterations"], parameters["sxy_bilateral"]
        (5, 67.0)
    """
    return {
        "iterations": validate_non_negative_int(iterations, "iterations"),
        "sxy_gaussian": float(validate_positive_number(sxy_gaussian, "sxy_gaussian")),
        "compat_gaussian": float(validate_non_negative_number(compat_gaussian, "compat_gaussian")),
        "sxy_bilateral": float(validate_positive_number(sxy_bilateral, "sxy_bilateral")),
        "srgb_bilateral": float(validate_positive_number(srgb_bilateral, "srgb_bilateral")),
        "compat_bilateral": float(
            validate_non_negative_number(compat_bilateral, "compat_bilateral")
        ),
    }


def _smoothness_filter(height, width, sxy, compat):
    """Returns q -> compat * D K D q for the Gaussian kernel over pixel positions, exactly.

    The kernel exp(-|p_i - p_j|^2 / 2 sxy^2) is separable and local on the pixel grid, so
    two depthwise 1-D convolutions truncated at 3 sxy apply it exactly (up to 0.3% of its
    mass) and several times faster than a 2-D lattice, which for DeepLab's sxy = 1 would
    hold more vertices than pixels. `sxy` may be a tensor: the taps are built at run time.
    """
    sxy = tf.cast(sxy, tf.float32)
    radius = tf.maximum(1.0, tf.math.ceil(3.0 * sxy))
    offsets = tf.range(-radius, radius + 1.0)
    taps = tf.exp(-0.5 * tf.square(offsets / sxy))

    def convolve(images):
        channels = tf.shape(images)[-1]
        vertical = tf.tile(tf.reshape(taps, (-1, 1, 1, 1)), tf.stack([1, 1, channels, 1]))
        horizontal = tf.tile(tf.reshape(taps, (1, -1, 1, 1)), tf.stack([1, 1, channels, 1]))
        images = tf.nn.depthwise_conv2d(images, vertical, [1, 1, 1, 1], "SAME")
        return tf.nn.depthwise_conv2d(images, horizontal, [1, 1, 1, 1], "SAME")

    norm = tf.math.rsqrt(convolve(tf.ones(tf.stack([1, height, width, 1]))) + 1e-20)

    def apply(q):
        images = tf.reshape(q, tf.stack([1, height, width, -1]))
        return tf.reshape(compat * norm * convolve(norm * images), tf.shape(q))

    return apply


def mean_field_logits(
    image,
    unary,
    *,
    iterations,
    sxy_gaussian,
    compat_gaussian,
    sxy_bilateral,
    srgb_bilateral,
    compat_bilateral,
):
    """Runs mean-field inference of the dense CRF on one image and returns its final logits.

    Implements Krahenbuhl & Koltun, "Efficient Inference in Fully Connected CRFs with
    Gaussian Edge Potentials" (NIPS 2011) with Potts compatibility and symmetric kernel
    normalisation as pydensecrf does: Q_0 = softmax(-U) and, per iteration,
    Q = softmax(-U + w1 D_a K_a D_a Q + w2 D_s K_s D_s Q), where K_a is the appearance
    kernel exp(-|p_i-p_j|^2 / 2 theta_alpha^2 - |I_i-I_j|^2 / 2 theta_beta^2), K_s the
    smoothness kernel exp(-|p_i-p_j|^2 / 2 theta_gamma^2) and D = diag(K 1)^(-1/2). The
    appearance kernel is applied with the permutohedral lattice over (x, y, r, g, b) as in
    pydensecrf; the smoothness kernel, local on the pixel grid, exactly by separable
    convolution (pydensecrf uses a 2-D lattice there too).

    Args:
        image: float32 tensor (H, W, 3), colours in 0-255.
        unary: float32 tensor (H, W, L), the unary energies -log P.
        iterations: number of mean-field updates.
        sxy_gaussian: theta_gamma, in pixels.
        compat_gaussian: w2.
        sxy_bilateral: theta_alpha, in pixels.
        srgb_bilateral: theta_beta, in colour units.
        compat_bilateral: w1.

    Returns:
        float32 tensor (H, W, L) whose softmax over L is the mean-field marginal Q.

    Example:
        >>> import numpy as np
        >>> from kseg.inference.dense_crf import mean_field_logits
        >>> image = np.zeros((8, 8, 3), np.float32)
        >>> unary = np.ones((8, 8, 2), np.float32)
        >>> logits = mean_field_logits(
        ...     image, unary, iterations=2, sxy_gaussian=1, compat_gaussian=3,
        ...     sxy_bilateral=67, srgb_bilateral=3, compat_bilateral=4)
        >>> logits.shape
        TensorShape([8, 8, 2])
    """
    image = tf.cast(image, tf.float32)
    unary = tf.cast(unary, tf.float32)
    shape = tf.shape(unary)
    height, width, labels = shape[0], shape[1], shape[2]
    flat_logits = -tf.reshape(unary, (-1, labels))

    rows, columns = tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )
    # pydensecrf's feature order (x = column, y = row, then r, g, b): the lattice vertices
    # depend on it, so keeping it keeps the approximation identical.
    positions = tf.reshape(tf.stack([columns, rows], axis=-1), (-1, 2))
    colours = tf.reshape(image, (-1, 3))
    appearance = PermutohedralLattice(
        tf.concat([positions / sxy_bilateral, colours / srgb_bilateral], axis=1)
    ).normalised_filter(compat_bilateral)
    smoothness = _smoothness_filter(height, width, sxy_gaussian, compat_gaussian)
    unary_logits = flat_logits

    def update(step, logits):
        q = tf.nn.softmax(logits, axis=-1)
        return step + 1, tf.add_n([unary_logits, appearance(q), smoothness(q)])

    # A while loop, not a Python one, so that `iterations` may be a tensor.
    _, flat_logits = tf.while_loop(
        lambda step, _: step < iterations, update, (tf.constant(0), flat_logits)
    )
    return tf.reshape(flat_logits, shape)


def dense_crf(
    image,
    scores,
    *,
    from_logits=False,
    iterations=DEEPLAB_CRF_DEFAULTS["iterations"],
    sxy_gaussian=DEEPLAB_CRF_DEFAULTS["sxy_gaussian"],
    compat_gaussian=DEEPLAB_CRF_DEFAULTS["compat_gaussian"],
    sxy_bilateral=DEEPLAB_CRF_DEFAULTS["sxy_bilateral"],
    srgb_bilateral=DEEPLAB_CRF_DEFAULTS["srgb_bilateral"],
    compat_bilateral=DEEPLAB_CRF_DEFAULTS["compat_bilateral"],
):
    """Refines per-pixel class probabilities with a fully-connected CRF (DeepLab's post-processing).

    The CRF of Krahenbuhl & Koltun (NIPS 2011) links every pair of pixels through an
    appearance kernel (nearby pixels of similar colour, weight w1 = `compat_bilateral`,
    widths theta_alpha = `sxy_bilateral`, theta_beta = `srgb_bilateral`) and a smoothness
    kernel (nearby pixels, w2 = `compat_gaussian`, theta_gamma = `sxy_gaussian`) with Potts
    compatibility; unaries are -log P. DeepLab v1/v2 (Chen et al., 2015/2018) run it on the
    upsampled network output. Inference is mean field; the appearance kernel is applied by the
    permutohedral lattice (Adams et al., 2010), pydensecrf's algorithm, as sparse splat/slice
    products in TensorFlow, and the smoothness kernel exactly by a separable convolution.
    The defaults are DeepLab v2's released ResNet-101 VOC
    settings (w1=4, theta_alpha=67, theta_beta=3, w2=3, theta_gamma=1, 10 iterations).

    Args:
        image: uint8 (or 0-255 float) array/tensor (H, W, 3) or a batch (B, H, W, 3), RGB.
        scores: class probabilities (H, W, L) or (B, H, W, L) summing to one over L, or
            logits when `from_logits=True`. Same height and width as `image`.
        from_logits: whether `scores` are logits (unary = -log_softmax) rather than
            probabilities (unary = -log(max(P, 1e-5)), as pydensecrf's unary_from_softmax).
        iterations: number of mean-field updates.
        sxy_gaussian: theta_gamma in pixels.
        compat_gaussian: w2.
        sxy_bilateral: theta_alpha in pixels.
        srgb_bilateral: theta_beta in colour units (0-255).
        compat_bilateral: w1.

    Returns:
        float32 tf.Tensor of the same shape as `scores`: the mean-field marginals Q.
        `argmax(-1)` gives the refined labels.

    Example:
        >>> import numpy as np, kseg
        >>> image = np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)
        >>> probabilities = np.full((32, 40, 3), 1 / 3, np.float32)
        >>> q = kseg.inference.dense_crf(image, probabilities, iterations=5)
        >>> q.shape
        TensorShape([32, 40, 3])
    """
    parameters = crf_parameters(
        iterations, sxy_gaussian, compat_gaussian, sxy_bilateral, srgb_bilateral, compat_bilateral
    )
    image = tf.convert_to_tensor(image)
    scores = tf.convert_to_tensor(scores)
    if image.shape.rank not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(
            f"image must be (H, W, 3) or (B, H, W, 3) RGB. Received: image.shape={image.shape}"
        )
    if scores.shape.rank != image.shape.rank:
        raise ValueError(
            "scores must have the rank of image ((H, W, L) with (H, W, 3)). "
            f"Received: image.shape={image.shape}, scores.shape={scores.shape}"
        )
    if image.shape[:-1] != scores.shape[:-1]:
        raise ValueError(
            "image and scores must share batch, height and width. "
            f"Received: image.shape={image.shape}, scores.shape={scores.shape}"
        )
    if image.dtype != tf.uint8 and not image.dtype.is_floating:
        raise ValueError(f"image must be uint8 or float in 0-255. Received: dtype={image.dtype}")
    single = image.shape.rank == 3
    images = image[None] if single else image
    scores = scores[None] if single else scores
    q = _dense_crf_batch(
        tf.cast(images, tf.float32),
        unary_from_scores(scores, from_logits=from_logits),
        **parameters,
    )
    return q[0] if single else q


def unary_from_scores(scores, *, from_logits):
    """Returns the CRF unary energies -log P for probabilities or logits (..., L).

    Args:
        scores: probabilities summing to one over the last axis, or logits.
        from_logits: whether `scores` are logits.

    Returns:
        float32 tensor of the same shape.

    Example:
        >>> from kseg.inference.dense_crf import unary_from_scores
        >>> unary = unary_from_scores([[0.5, 0.5]], from_logits=False)
    """
    scores = tf.cast(scores, tf.float32)
    if from_logits:
        return -tf.nn.log_softmax(scores, axis=-1)
    return -tf.math.log(tf.clip_by_value(scores, MIN_PROBABILITY, 1.0))


_SCALAR = tf.TensorSpec((), tf.float32)


@tf.function(
    input_signature=[
        tf.TensorSpec((None, None, None, 3), tf.float32),
        tf.TensorSpec((None, None, None, None), tf.float32),
        tf.TensorSpec((), tf.int32),
        *[_SCALAR] * 5,
    ]
)
def _dense_crf_graph(
    images,
    unary,
    iterations,
    sxy_gaussian,
    compat_gaussian,
    sxy_bilateral,
    srgb_bilateral,
    compat_bilateral,
):
    # Every parameter is an input of the one graph, so a sweep over CRF settings (DeepLab
    # cross-validates them) traces once instead of once per setting.
    def refine(pair):
        logits = mean_field_logits(
            pair[0],
            pair[1],
            iterations=iterations,
            sxy_gaussian=sxy_gaussian,
            compat_gaussian=compat_gaussian,
            sxy_bilateral=sxy_bilateral,
            srgb_bilateral=srgb_bilateral,
            compat_bilateral=compat_bilateral,
        )
        return tf.nn.softmax(logits)

    return tf.map_fn(refine, (images, unary), fn_output_signature=tf.float32)


def _dense_crf_batch(images, unary, **parameters):
    return _dense_crf_graph(
        images,
        unary,
        tf.constant(parameters.pop("iterations"), tf.int32),
        **{name: tf.constant(value, tf.float32) for name, value in parameters.items()},
    )
