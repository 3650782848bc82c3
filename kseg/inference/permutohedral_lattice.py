"""The permutohedral lattice of Adams et al. (2010): fast Gaussian filtering in feature space.

The dense CRF (`kseg.inference.dense_crf`) applies its appearance kernel through it.
"""

import math

import numpy as np
import tensorflow as tf


def _simplex_ids(corner, rank, total):
    """Numbers the simplices of the points in order of first appearance.

    A point's simplex is fixed by its vertex 0 (`corner`, the first d coordinates of the
    nearest remainder-0 point) and the rank of its first d coordinates (the last is implied).
    Corners become mixed-radix int64 codes numbered by tf.unique; a second tf.unique over
    corner id and rank order (below N (d+1)^d, so it cannot overflow) numbers the simplices.

    Args:
        corner: int32 (N, d).
        rank: int32 (N, d), values in [0, total).
        total: d + 1.

    Returns:
        int32 (N,) simplex id per point and int32 (S,) the first point of each simplex.
    """
    points = tf.shape(corner)[0]
    corner = tf.cast(corner, tf.int64)
    low = tf.reduce_min(corner, axis=0)
    radices = tf.reduce_max(corner, axis=0) - low + 1
    strides = tf.math.cumprod(radices, exclusive=True)
    # The vertex codes made later span wider ranges than the corners and stop the call when
    # they overflow; this check only names the problem at its first appearance.
    check = tf.debugging.assert_less(
        tf.reduce_prod(tf.cast(radices, tf.float64)),
        tf.constant(2.0**62, tf.float64),
        message="dense CRF lattice keys overflow int64: features span too wide a range",
    )
    with tf.control_dependencies([check]):
        corner_code = tf.reduce_sum((corner - low) * strides, axis=1)
    corner_id = tf.unique(corner_code, out_idx=tf.int64)[1]
    rank = tf.cast(rank, tf.int64)
    digits = tf.shape(rank, out_type=tf.int64)[1]
    # The rank order as one base-(d+1) number below (d+1)^d.
    order = tf.reduce_sum(rank * total ** tf.range(digits), axis=1)
    simplices, ids = tf.unique(corner_id * total**digits + order, out_idx=tf.int32)
    first_point = tf.math.unsorted_segment_min(
        tf.range(points, dtype=tf.int32), ids, tf.shape(simplices)[0]
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


class PermutohedralLattice:
    """The permutohedral lattice of Adams et al. (2010) over N points with d features.

    Each point is embedded in the hyperplane of R^(d+1) whose coordinates sum to zero, and its
    d+1 enclosing simplex vertices receive its value with barycentric weights (splat).
    Blurring the occupied vertices with [1/2, 1, 1/2] along the d+1 lattice directions and
    reading them back (slice) approximates a Gaussian of unit standard deviation in feature
    space in O(N d) instead of O(N^2). The embedding, rounding, rank sort and vertex keys
    follow Krahenbuhl's densecrf code, so the vertices and weights are those of pydensecrf;
    its vertex hash table becomes `tf.unique` over the simplices' vertex codes.

    Attributes:
        vertices: int32 (N, d+1), the lattice vertex of each point's simplex corners.
        weights: float32 (N, d+1), their barycentric weights.
        size: number M of distinct vertices.
        blur_steps: d+1 sparse (M+1, M+1) float32 matrices, one per lattice direction, each
            with the [1/2, 1, 1/2] stencil over a vertex and its two neighbours along that
            direction; column M stands for a vertex no point touches (a zero row).

    Args:
        features: float (N, d) point features, already divided by the kernel's standard
            deviations; d must be known when tracing.

    Example:
        >>> from kseg.inference.permutohedral_lattice import PermutohedralLattice
        >>> lattice = PermutohedralLattice(np.random.default_rng(0).uniform(0, 3, (50, 2)))
        >>> lattice.vertices.shape, lattice.weights.shape
        (TensorShape([50, 3]), TensorShape([50, 3]))
        >>> filtered = lattice.filter_ones()  # row sums of the approximate Gaussian kernel
        >>> bool(tf.reduce_all(filtered > 0))
        True
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
