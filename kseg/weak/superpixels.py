"""Superpixels and their appearance: SLIC, the adjacency graph, histograms and edge weights.

The graph ScribbleSup (Lin et al., CVPR 2016) labels and the descriptors it weighs its edges
with, also the features of the unified framework (`kseg.weak.unified`): SLIC superpixels from
scikit-image (the optional `weak` extra, imported only when used), the pairs of superpixels that
touch, per-superpixel colour and texture histograms, and the exponential appearance similarity
of two neighbours.
"""

import numpy as np

from kseg.validation import (
    validate_non_negative_number,
    validate_positive_int,
    validate_positive_number,
)
from kseg.weak.inputs import INSTALL_HINT, validate_rgb_image

# ITU-R BT.601 luma weights for the grey image whose gradients make the texture histograms.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


def _import_slic():
    try:
        from skimage.segmentation import slic
    except ImportError as error:
        raise ImportError(
            f"ScribbleSup superpixels need scikit-image. Install it with: {INSTALL_HINT}"
        ) from error
    return slic


def slic_superpixels(image, *, n_segments=1000, compactness=10.0, sigma=0.0):
    """Partitions an RGB image into SLIC superpixels numbered 0..S-1.

    SLIC (Achanta et al., TPAMI 2012) as implemented by scikit-image's `slic` on the image scaled
    to [0, 1] (so in CIELAB, scikit-image's default for RGB), with connectivity enforced.
    ScribbleSup (Lin et al., CVPR 2016) uses about 1000 superpixels per image.

    Args:
        image: float array (H, W, 3), RGB in [0, 255].
        n_segments: approximate number of superpixels asked of SLIC.
        compactness: SLIC's balance of colour against position (larger: squarer superpixels).
        sigma: standard deviation of the Gaussian smoothing applied before SLIC (0: none).

    Returns:
        int32 array (H, W) of superpixel ids 0..S-1, every id used.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.superpixels import slic_superpixels
        >>> image = np.zeros((20, 20, 3), "float32"); image[:, 10:] = 255.0
        >>> segments = slic_superpixels(image, n_segments=4)
        >>> segments.shape
        (20, 20)
    """
    image = validate_rgb_image(image)
    validate_positive_int(n_segments, "n_segments")
    validate_positive_number(compactness, "compactness")
    validate_non_negative_number(sigma, "sigma")
    slic = _import_slic()
    segments = slic(
        image / 255.0,
        n_segments=int(n_segments),
        compactness=float(compactness),
        sigma=float(sigma),
        start_label=0,
    )
    _, dense_ids = np.unique(segments, return_inverse=True)
    return dense_ids.reshape(segments.shape).astype(np.int32)


def superpixel_adjacency(segments):
    """Lists the pairs of superpixels that touch across a horizontal or vertical pixel edge.

    Args:
        segments: integer array (H, W) of superpixel ids 0..S-1.

    Returns:
        int32 array (E, 2) of unique pairs `(i, j)` with `i < j`, sorted.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.superpixels import superpixel_adjacency
        >>> superpixel_adjacency(np.array([[0, 0, 1], [2, 2, 1]])).tolist()
        [[0, 1], [0, 2], [1, 2]]
    """
    segments = np.asarray(segments)
    if segments.ndim != 2:
        raise ValueError(f"`segments` must be (H, W). Received: segments.shape={segments.shape}")
    first = np.concatenate([segments[:, :-1].ravel(), segments[:-1, :].ravel()])
    second = np.concatenate([segments[:, 1:].ravel(), segments[1:, :].ravel()])
    different = first != second
    pairs = np.stack(
        [np.minimum(first, second)[different], np.maximum(first, second)[different]], axis=1
    )
    if pairs.size == 0:
        return np.zeros((0, 2), np.int32)
    return np.unique(pairs, axis=0).astype(np.int32)


def _normalised_histograms(segments, values, bins, num_segments):
    """Per-superpixel histogram of integer bin indices `values` (H, W), rows summing to 1."""
    counts = np.bincount(
        segments.ravel() * bins + values.ravel(), minlength=num_segments * bins
    ).reshape(num_segments, bins)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def superpixel_histograms(image, segments, *, colour_bins=25, texture_bins=10, gradient_clip=32.0):
    """Colour and texture histograms of every superpixel, ScribbleSup's appearance descriptors.

    Colour: one histogram per RGB channel with `colour_bins` equal bins over [0, 256), each
    normalised to sum 1 over the superpixel, concatenated. Texture: histograms of the horizontal and
    vertical central-difference gradients of the grey image (BT.601 luma), clipped to
    [-gradient_clip, gradient_clip] and cut into `texture_bins` equal bins, each normalised to
    sum 1, concatenated. Lin et al. (CVPR 2016) describe the same two descriptors; the bin counts
    and the clip are this implementation's defaults.

    Args:
        image: float array (H, W, 3), RGB in [0, 255].
        segments: integer array (H, W) of superpixel ids 0..S-1.
        colour_bins: bins per colour channel.
        texture_bins: bins per gradient orientation.
        gradient_clip: gradients beyond this magnitude (grey levels per pixel) fall in the end bins.

    Returns:
        `(colour, texture)`: float64 arrays (S, 3 * colour_bins) and (S, 2 * texture_bins).

    Example:
        >>> import numpy as np
        >>> from kseg.weak.superpixels import superpixel_histograms
        >>> image = np.full((4, 4, 3), 200.0)
        >>> colour, texture = superpixel_histograms(image, np.zeros((4, 4), int))
        >>> colour.shape, texture.shape, float(colour.sum())
        ((1, 75), (1, 20), 3.0)
    """
    image = validate_rgb_image(image)
    segments = np.asarray(segments)
    if segments.shape != image.shape[:2]:
        raise ValueError(
            "`segments` must match the image size. "
            f"Received: segments.shape={segments.shape}, image.shape={image.shape}"
        )
    validate_positive_int(colour_bins, "colour_bins")
    validate_positive_int(texture_bins, "texture_bins")
    validate_positive_number(gradient_clip, "gradient_clip")
    segments = segments.astype(np.int64)
    num_segments = int(segments.max()) + 1

    colour_index = np.minimum((image * colour_bins / 256.0).astype(np.int64), colour_bins - 1)
    colour = np.concatenate(
        [
            _normalised_histograms(segments, colour_index[..., c], colour_bins, num_segments)
            for c in range(3)
        ],
        axis=1,
    )

    grey = image @ LUMA_WEIGHTS
    texture_parts = []
    for axis in (1, 0):
        gradient = np.gradient(grey, axis=axis) if grey.shape[axis] > 1 else np.zeros_like(grey)
        scaled = (np.clip(gradient, -gradient_clip, gradient_clip) + gradient_clip) / (
            2 * gradient_clip
        )
        index = np.minimum((scaled * texture_bins).astype(np.int64), texture_bins - 1)
        texture_parts.append(_normalised_histograms(segments, index, texture_bins, num_segments))
    texture = np.concatenate(texture_parts, axis=1)
    return colour, texture


def superpixel_means(segments, values):
    """The mean of a per-pixel map over each superpixel.

    Args:
        segments: integer array (H, W) of superpixel ids 0..S-1, every id used.
        values: float array (H, W, C).

    Returns:
        float64 array (S, C).

    Example:
        >>> from kseg.weak.superpixels import superpixel_means
        >>> values = np.array([[[1.0], [3.0], [5.0]]])
        >>> superpixel_means(np.array([[0, 0, 1]]), values).tolist()
        [[2.0], [5.0]]
    """
    segments = np.asarray(segments).ravel()
    num_segments = int(segments.max()) + 1
    channels = np.shape(values)[-1]
    sums = np.zeros((num_segments, channels))
    np.add.at(sums, segments, np.reshape(values, (-1, channels)))
    sizes = np.bincount(segments, minlength=num_segments)[:, None]
    return sums / sizes


def appearance_edge_weights(colour, texture, edges, *, delta_colour=1.0, delta_texture=2.0):
    """Pairwise weights exp(-||hc_i - hc_j||^2 / delta_colour - ||ht_i - ht_j||^2 / delta_texture).

    The appearance similarity of ScribbleSup's pairwise term (Lin et al., CVPR 2016, section 3):
    neighbours with alike colour and texture histograms are expensive to separate. With the
    histograms of `superpixel_histograms` the squared colour distance lies in [0, 6] and the
    texture one in [0, 4]; the default bandwidths make two superpixels of entirely different
    colour about exp(-6) ~ 0.0025 as costly to cut as two identical ones.

    Args:
        colour: float array (S, Dc) of colour histograms.
        texture: float array (S, Dt) of texture histograms.
        edges: integer array (E, 2) of superpixel pairs.
        delta_colour: colour bandwidth, > 0.
        delta_texture: texture bandwidth, > 0.

    Returns:
        float64 array (E,) of weights in (0, 1].

    Example:
        >>> import numpy as np
        >>> from kseg.weak.superpixels import appearance_edge_weights
        >>> hist = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> appearance_edge_weights(hist, hist * 0, np.array([[0, 1]])).round(4).tolist()
        [0.1353]
    """
    validate_positive_number(delta_colour, "delta_colour")
    validate_positive_number(delta_texture, "delta_texture")
    colour, texture = np.asarray(colour, np.float64), np.asarray(texture, np.float64)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    colour_distance = np.sum((colour[edges[:, 0]] - colour[edges[:, 1]]) ** 2, axis=1)
    texture_distance = np.sum((texture[edges[:, 0]] - texture[edges[:, 1]]) ** 2, axis=1)
    return np.exp(-colour_distance / delta_colour - texture_distance / delta_texture)
