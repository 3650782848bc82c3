"""Per-pixel classification from a patch around each pixel (the pre-FCN baseline)."""

import numpy as np
import tensorflow as tf


def _patch_size(classifier):
    shape = tuple(classifier.input_shape[1:])
    if len(shape) != 3 or None in shape[:2]:
        raise ValueError(
            "the classifier must take patches of a fixed (height, width, channels) size. "
            f"Received: classifier.input_shape={classifier.input_shape}"
        )
    return shape[0], shape[1]


def patch_scores(classifier, images, pixels=None, batch_size=256):
    """Scores each pixel with a classifier applied to the patch centred on it.

    The "traditional" approach FCN replaces (Long, Shelhamer & Darrell 2015,
    "Fully Convolutional Networks for Semantic Segmentation", section 3.1; also
    Ciresan et al. 2012 for membranes): a classifier with a `ph x pw` input
    labels pixel `(y, x)` from the patch whose top-left corner is
    `(y - ph // 2, x - pw // 2)`, the image being zero-padded so border pixels
    have full patches. Patches are gathered for `batch_size` pixels at a time
    and classified in one batched call, so memory grows with `batch_size`, not
    with the number of pixels; every overlapping patch is still computed anew,
    which is the redundancy a fully convolutional network removes.

    Args:
        classifier: a `keras.Model` mapping `(N, ph, pw, C)` patches to
            `(N, K)` scores.
        images: `(B, H, W, C)` array or tensor.
        pixels: optional `(P, 2)` integer `(y, x)` coordinates; only these
            pixels are scored (in every image of the batch).
        batch_size: patches classified per call (bounds memory).

    Returns:
        float32 numpy array `(B, H, W, K)`, or `(B, P, K)` when `pixels` is
        given.

    Example:
        >>> import keras, numpy as np, kseg.inference.patch_classifier
        >>> classifier = keras.Sequential([keras.Input((5, 5, 3)), keras.layers.Flatten(),
        ...                                keras.layers.Dense(4)])
        >>> kseg.inference.patch_classifier.patch_scores(classifier, np.zeros((1, 8, 9, 3))).shape
        (1, 8, 9, 4)
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive integer. Received: batch_size={batch_size!r}"
        )
    patch_height, patch_width = _patch_size(classifier)
    images = tf.convert_to_tensor(images, dtype=classifier.inputs[0].dtype)
    if images.shape.rank != 4:
        raise ValueError(f"images must be (B, H, W, C). Received: shape={tuple(images.shape)}")
    batch, height, width = (int(v) for v in images.shape[:3])
    dense = pixels is None
    if dense:
        grid_y, grid_x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        pixels = np.stack([grid_y.ravel(), grid_x.ravel()], axis=1)
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.shape[1] != 2 or not np.issubdtype(pixels.dtype, np.integer):
        raise ValueError(
            f"pixels must be (P, 2) integers. Received: shape={pixels.shape}, dtype={pixels.dtype}"
        )
    if pixels.size and (
        pixels.min() < 0 or pixels[:, 0].max() >= height or pixels[:, 1].max() >= width
    ):
        raise ValueError(
            f"pixels must lie inside the {height}x{width} image. "
            f"Received: {pixels.min(0)}..{pixels.max(0)}"
        )

    top, left = patch_height // 2, patch_width // 2
    padded = tf.pad(
        images,
        [[0, 0], [top, patch_height - 1 - top], [left, patch_width - 1 - left], [0, 0]],
    )
    row_offsets = tf.range(patch_height)
    column_offsets = tf.range(patch_width)

    padded_width = width + patch_width - 1

    @tf.function(reduce_retracing=True)
    def score_chunk(image, coordinates):
        # In padded coordinates, pixel (y, x)'s patch starts at (y, x) itself; one gather on the
        # flattened image builds the patches without a (rows x full width) intermediate.
        rows = coordinates[:, 0, None, None] + row_offsets[None, :, None]
        columns = coordinates[:, 1, None, None] + column_offsets[None, None, :]
        flat = tf.reshape(image, [-1, tf.shape(image)[-1]])
        patches = tf.gather(flat, rows * padded_width + columns)
        return tf.cast(classifier(patches, training=False), tf.float32)

    results = []
    for index in range(batch):
        chunks = []
        for start in range(0, len(pixels), batch_size):
            chunk = pixels[start : start + batch_size]
            count = len(chunk)
            if count < batch_size:
                # A constant chunk shape keeps one traced graph.
                chunk = np.concatenate([chunk, np.zeros((batch_size - count, 2), chunk.dtype)])
            scores = score_chunk(padded[index], tf.constant(chunk, tf.int32))
            chunks.append(scores.numpy()[:count])
        results.append(np.concatenate(chunks, axis=0))
    scores = np.stack(results)
    if dense:
        scores = scores.reshape(batch, height, width, -1)
    return scores


def patch_labels(classifier, images, batch_size=256):
    """Labels each pixel with the arg-max class of its centred patch.

    See `patch_scores` for the patch geometry.

    Args:
        classifier: a `keras.Model` mapping `(N, ph, pw, C)` patches to `(N, K)`.
        images: `(B, H, W, C)` array or tensor.
        batch_size: patches classified per call.

    Returns:
        int64 numpy array `(B, H, W)` of class indices.

    Example:
        >>> import keras, numpy as np, kseg.inference.patch_classifier
        >>> classifier = keras.Sequential([keras.Input((3, 3, 1)), keras.layers.Flatten(),
        ...                                keras.layers.Dense(2)])
        >>> kseg.inference.patch_classifier.patch_labels(classifier, np.zeros((2, 4, 4, 1))).shape
        (2, 4, 4)
    """
    return np.argmax(patch_scores(classifier, images, batch_size=batch_size), axis=-1)
