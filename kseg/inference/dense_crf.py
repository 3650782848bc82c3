"""Fully-connected CRF post-processing: mean-field inference with Gaussian edge potentials."""

import math

import numpy as np
import tensorflow as tf

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


def _simplex_ids(corner, rank, total):
    """Numbers the simplices of the points in order of first appearance.

    A point's simplex is fixed by its vertex 0 (`corner`, the first d coordinates of the
    nearest remainder-0 point) and the rank of its first d coordinates (the last is implied).
    Each coordinate is folded into the running id by one more tf.unique, so the combined
    int64 value stays below N times a coordinate's range however wide the features span.

    Args:
        corner: int32 (N, d).
        rank: int32 (N, d), values in [0, total).
        total: d + 1.

    Returns:
        int32 (N,) simplex id per point and int32 (S,) the first point of each simplex.
    """
    points = tf.shape(corner)[0]
    rank = tf.cast(rank, tf.int64)
    digits = tf.shape(rank, out_type=tf.int64)[1]
    # The rank order as one base-(d+1) number below (d+1)^d.
    order = tf.reduce_sum(rank * total ** tf.range(digits), axis=1)
    parts = [(order, tf.constant(total, tf.int64) ** digits)]
    for column in tf.unstack(tf.cast(corner, tf.int64), axis=1):
        low = tf.reduce_min(column)
        parts.append((column - low, tf.reduce_max(column) - low + 1))
    ids = tf.zeros([points], tf.int64)
    for values, radix in parts:
        distinct, ids = tf.unique(ids * radix + values, out_idx=tf.int64)
    ids = tf.cast(ids, tf.int32)
    first_point = tf.math.unsorted_segment_min(
        tf.range(points, dtype=tf.int32), ids, tf.shape(distinct)[0]
    )
    return ids, first_point


def _lookup_vertex_ids(codes, queries):
    """The position of each query in the distinct non-negative int64 `codes`, or len(codes).

    A hash table built for this call only (an anonymous resource, so nothing is shared
    between images or calls); several times faster than tf.unique over codes and queries.
    """
    size = tf.shape(codes)[0]
    table = tf.raw_ops.AnonymousMutableDenseHashTable(
        empty_key=tf.constant(-1, tf.int64),
        deleted_key=tf.constant(-2, tf.int64),
        value_dtype=tf.int32,
        value_shape=[],
    )
    insert = tf.raw_ops.LookupTableInsertV2(
        table_handle=table, keys=codes, values=tf.range(size, dtype=tf.int32)
    )
    with tf.control_dependencies([insert]):
        return tf.raw_ops.LookupTableFindV2(table_handle=table, keys=queries, default_value=size)


def _stencil_matrix(forward, backward):
    """The sparse (M+1, M+1) matrix of v -> v + (v[forward] + v[backward]) / 2.

    Row m holds 1 at column m and 1/2 at its two neighbours, in row order; a row whose
    neighbour is the zero row M adds nothing, so it needs no special case.
    """
    rows = tf.range(tf.shape(forward, out_type=tf.int64)[0], dtype=tf.int64)
    columns = tf.stack([rows, tf.cast(forward, tf.int64), tf.cast(backward, tf.int64)], axis=1)
    indices = tf.stack([tf.repeat(rows, 3), tf.reshape(columns, (-1,))], axis=1)
    values = tf.tile(tf.constant([1.0, 0.5, 0.5]), tf.shape(rows, out_type=tf.int32))
    size = tf.shape(rows, out_type=tf.int64)[0]
    return tf.sparse.SparseTensor(indices, values, tf.stack([size, size]))


class _PermutohedralLattice:
    """The permutohedral lattice of Adams et al. (2010) over N points with d features.

    Each point is embedded in the hyperplane of R^(d+1) whose coordinates sum to zero, and its
    d+1 enclosing simplex vertices receive its value with barycentric weights (splat).
    Blurring the occupied vertices with [1/2, 1, 1/2] along the d+1 lattice directions and
    reading them back (slice) approximates a Gaussian of unit standard deviation in feature
    space in O(N d) instead of O(N^2). The embedding, rounding, rank sort and vertex keys
    follow Krahenbuhl's densecrf code, so the vertices and weights are those of pydensecrf;
    its vertex hash table becomes `tf.unique`.

    Attributes:
        vertices: int32 (N, d+1), the lattice vertex of each point's simplex corners.
        weights: float32 (N, d+1), their barycentric weights.
        size: number M of distinct vertices.
        blur_steps: d+1 sparse (M+1, M+1) float32 matrices, one per lattice direction, each
            with the [1/2, 1, 1/2] stencil over a vertex and its two neighbours along that
            direction; column M stands for a vertex no point touches (a zero row).
    """

    def __init__(self, features):
        features = tf.stop_gradient(tf.convert_to_tensor(features, tf.float32))
        d = features.shape[-1]
        if d is None:
            raise ValueError("the number of lattice features must be known when tracing")
        self.dimension = d
        total = d + 1

        # Scales making the lattice blur match a unit-variance Gaussian, and the projection
        # onto the hyperplane (E in Adams et al.), folded into one (d, d+1) matrix.
        inv_std = math.sqrt(2.0 / 3.0) * total
        scale = np.array([inv_std / math.sqrt((i + 1) * (i + 2)) for i in range(d)])
        elevate = np.zeros((d, total))
        for j in range(total):
            for i in range(d):
                if j == 0 or i >= j:
                    elevate[i, j] = scale[i]
                if i == j - 1:
                    elevate[i, j] = -j * scale[i]
        elevated = tf.matmul(features, tf.constant(elevate, tf.float32))

        # Nearest point of the zero-coloured sublattice, (d+1) * Z^(d+1), rounding ties down.
        down = tf.floor(elevated / total) * total
        up = tf.math.ceil(elevated / total) * total
        nearest = tf.where(up - elevated < elevated - down, up, down)
        residual = elevated - nearest
        coordinate_sum = tf.cast(tf.reduce_sum(nearest, axis=1, keepdims=True) / total, tf.int32)

        # rank[i] = position of residual[i] in decreasing order, ties to the lower index, then
        # shifted by the coordinate sum; the shift wraps round and moves the nearest point.
        descending = tf.argsort(residual, axis=1, direction="DESCENDING", stable=True)
        offsets = total * tf.range(tf.shape(residual)[0], dtype=tf.int32)[:, None]
        inverse = tf.math.invert_permutation(tf.reshape(descending + offsets, (-1,)))
        rank = tf.reshape(inverse, (-1, total)) - offsets + coordinate_sum
        nearest = tf.cast(nearest, tf.int32)
        below = rank < 0
        above = rank > d
        rank = tf.where(below, rank + total, tf.where(above, rank - total, rank))
        nearest = tf.where(below, nearest + total, tf.where(above, nearest - total, nearest))

        # Barycentric weights: with u[p] the scaled residual of the coordinate of rank d - p,
        # they are u[0] + 1 - u[d] and u[p] - u[p-1] (Adams et al., section 3.1).
        value = (elevated - tf.cast(nearest, tf.float32)) / total
        ranked = tf.math.floormod(tf.range(total, dtype=tf.int32)[None, :] - coordinate_sum, total)
        by_rank = tf.gather(value, tf.gather(descending, ranked, batch_dims=1), batch_dims=1)
        u = tf.reverse(by_rank, axis=[1])
        self.weights = tf.concat([u[:, :1] + 1.0 - u[:, d:], u[:, 1:] - u[:, :-1]], axis=1)

        # Points in one simplex share its d+1 vertices, and in an image most simplices hold
        # many points: the vertices are found once per simplex, from its first point.
        simplex, first_point = _simplex_ids(nearest[:, :d], rank[:, :d], total)
        nearest = tf.gather(nearest, first_point)
        rank = tf.gather(rank, first_point)

        # Vertex r of the enclosing simplex: nearest + r, minus d+1 where rank > d - r; the last
        # coordinate is implied by the zero sum, so keys keep the first d. One (S, d+1) tensor
        # per coordinate keeps every operation elementwise.
        remainder = tf.range(total, dtype=tf.int32)[None, :]
        keys = [
            nearest[:, i : i + 1]
            + remainder
            - total * tf.cast(rank[:, i : i + 1] > d - remainder, tf.int32)
            for i in range(d)
        ]

        # Mixed-radix int64 codes with room for the blur neighbours (+-(d+1) per coordinate);
        # the code is linear in the key, so a neighbour's code is the code plus a constant.
        lows = [tf.reduce_min(key) - total for key in keys]
        radices = [
            tf.cast(tf.reduce_max(key) - low + total + 1, tf.int64) for key, low in zip(keys, lows)
        ]
        strides = [tf.constant(1, tf.int64)]
        for radix in radices[:-1]:
            strides.append(strides[-1] * radix)
        check = tf.debugging.assert_less(
            tf.reduce_prod(tf.cast(tf.stack(radices), tf.float64)),
            tf.constant(2.0**62, tf.float64),
            message="dense CRF lattice keys overflow int64: features span too wide a range",
        )
        with tf.control_dependencies([check]):
            code = tf.add_n(
                [
                    tf.cast(key - low, tf.int64) * stride
                    for key, low, stride in zip(keys, lows, strides)
                ]
            )

        # Vertex ids in order of first use by the pixels (tf.unique's order over simplices in
        # order of their first pixel) keep vertices of neighbouring pixels close in memory for
        # the splat, blur and slice.
        codes, vertices = tf.unique(tf.reshape(code, (-1,)), out_idx=tf.int32)
        self.size = tf.shape(codes)[0]
        self.vertices = tf.gather(tf.reshape(vertices, (-1, total)), simplex)

        # Neighbour look-up in a hash table from code to vertex id: a neighbour that exists
        # gets its vertex's id (< M), a missing one M. Only the +step neighbours are looked
        # up: B = n1(A) exactly when A = n2(B).
        shifts = []
        for j in range(total):
            step = -np.ones(d, np.int64)
            if j < d:
                step[j] = d
            shifts.append(tf.add_n([int(step[i]) * strides[i] for i in range(d)]))
        found = _lookup_vertex_ids(codes, tf.concat([codes + shift for shift in shifts], 0))
        ids = tf.range(self.size, dtype=tf.int32)
        # Row M of the lattice values is a zero row standing for absent neighbours; it is its
        # own neighbour, so blurring keeps it zero.
        absent = self.size[None]
        self.blur_steps = []
        for forward in tf.split(found, total):
            exists = forward < self.size
            backward = tf.tensor_scatter_nd_update(
                tf.fill(self.size[None] + 1, self.size),
                tf.boolean_mask(forward, exists)[:, None],
                tf.boolean_mask(ids, exists),
            )
            forward = tf.concat([tf.where(exists, forward, self.size), absent], axis=0)
            self.blur_steps.append(_stencil_matrix(forward, backward))

    def blur(self, values):
        """Blurs (M+1, C) lattice values, last row zero, by [1/2, 1, 1/2] along every direction.

        One sparse-dense product per direction: a single pass over the values where gathering
        both neighbours and adding them took five.
        """
        for step in self.blur_steps:
            values = tf.sparse.sparse_dense_matmul(step, values)
        return values

    def filter_ones(self):
        """Filters a constant 1 over the points: the kernel's row sums K 1, shape (N,)."""
        splat = tf.math.unsorted_segment_sum(
            tf.reshape(self.weights, (-1,)), tf.reshape(self.vertices, (-1,)), self.size + 1
        )
        blurred = self.blur(splat[:, None])[:, 0]
        # densecrf's constant 1 / (1 + 2^-d) is left out: symmetric normalisation cancels it.
        return tf.reduce_sum(tf.gather(blurred, self.vertices) * self.weights, axis=1)

    def normalised_filter(self, compat):
        """Returns a function q -> compat * D K D q with D = diag(K 1)^(-1/2), q of shape (N, C).

        D and the Potts weight fold into the values of the sparse splat and slice matrices
        (K = S^T B S), so each call is two sparse-dense products and the blur.
        """
        norm = tf.math.rsqrt(self.filter_ones() + 1e-20)
        points = tf.shape(self.vertices)[0]
        per_point = self.dimension + 1
        indices = tf.stack(
            [
                tf.repeat(tf.range(points, dtype=tf.int64), per_point),
                tf.cast(tf.reshape(self.vertices, (-1,)), tf.int64),
            ],
            axis=1,
        )
        shape = tf.cast(tf.stack([points, self.size + 1]), tf.int64)
        splat = tf.sparse.SparseTensor(
            indices, tf.reshape(self.weights * norm[:, None], (-1,)), shape
        )
        slice_ = tf.sparse.SparseTensor(
            indices, tf.reshape(self.weights * (compat * norm)[:, None], (-1,)), shape
        )

        def apply(q):
            lattice = tf.sparse.sparse_dense_matmul(splat, q, adjoint_a=True)
            return tf.sparse.sparse_dense_matmul(slice_, self.blur(lattice))

        return apply


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
    appearance = _PermutohedralLattice(
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
