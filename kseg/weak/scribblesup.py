"""ScribbleSup: scribble labels propagated over a superpixel graph by graph cuts, alternating with training.

Lin, Dai, Jia, He and Sun, "ScribbleSup: Scribble-Supervised Convolutional Networks for Semantic
Segmentation" (CVPR 2016) train a segmentation network from scribbles by alternating two steps.
With the network fixed, every image's superpixels are labelled by minimising

    E(y) = sum_i [psi_scr_i(y_i) + psi_net_i(y_i)] + sum_{i~j} psi_ij(y_i, y_j)

over a graph of adjacent superpixels; with those labels fixed, the network is trained on them. The
paper runs three rounds; in the first, before any training, the network term is left out.

What this module implements:
- superpixels: SLIC from scikit-image (the paper uses about 1000 per image: `n_segments`);
- the scribble term: a superpixel touched by a scribble of class c costs 0 for c (and for every
  other class scribbled inside it) and a hard cost for the rest; an untouched superpixel costs
  -log(1 / |A|) for every allowed class, where A is the set of classes scribbled in the image (the
  paper's choice: `restrict_to_scribbled_classes=True`) or all classes, and the hard cost otherwise;
- the network term: -log of the network's class probability averaged over the superpixel's pixels
  (clipped at 1e-5), times `network_weight`;
- the pairwise term: Potts, [y_i != y_j] * pairwise_weight * w_ij on superpixels that share a pixel
  edge, with w_ij = exp(-||hc_i - hc_j||^2 / delta_colour - ||ht_i - ht_j||^2 / delta_texture)
  from colour histograms hc (per RGB channel, each normalised to sum 1) and texture histograms ht
  (of the horizontal and vertical grey-level gradients, each normalised to sum 1), the form of the
  paper's pairwise term (there the bandwidths appear squared; here they are used as written);
- the solver: alpha-expansion from gco-wrapper (`gco.cut_general_graph`, Boykov, Veksler and
  Zabih's GCO library) on the general superpixel graph. gco works in integers: it divides all
  costs by their largest value and keeps five decimal digits of each.

The "hard" cost replacing the paper's infinity is finite, because gco needs finite integers: it is
larger than any finite unary cost plus the largest total pairwise weight at any one superpixel, so
relabelling a superpixel away from a forbidden class always lowers the energy, and alpha-expansion
(whose moves include every single-superpixel change) never ends on a forbidden class.

scikit-image and gco-wrapper are the optional `weak` extra (`pip install 'kseg[weak]'`), imported
only when used.
"""

import dataclasses
import sys

import numpy as np

INSTALL_HINT = "pip install 'kseg[weak]'"
IGNORE_LABEL = 255
# The same floor as pydensecrf's unary_from_softmax and kseg.inference.dense_crf.
MIN_PROBABILITY = 1e-5
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


def _import_gco():
    already_imported = "gco" in sys.modules
    missing_aliases = [name for name in ("int", "float", "bool") if not hasattr(np, name)]
    try:
        import gco
    except ImportError as error:
        raise ImportError(
            f"ScribbleSup's graph cut needs gco-wrapper. Install it with: {INSTALL_HINT}"
        ) from error
    # gco-wrapper restores NumPy's removed `np.int`/`np.float` aliases for its own import-time
    # type lists; take them away again so NumPy behaves for everyone else as documented.
    if not already_imported:
        for name in missing_aliases:
            np.__dict__.pop(name, None)
    return gco


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")


def _check_non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value >= 0:
        raise ValueError(f"`{name}` must be a non-negative number. Received: {name}={value!r}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def _validate_image(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"`image` must be an RGB image of shape (H, W, 3). Received: image.shape={image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"`image` must not be empty. Received: image.shape={image.shape}")
    image = image.astype(np.float64)
    if not np.isfinite(image).all():
        raise ValueError("`image` contains NaN or infinite values.")
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 255:
        raise ValueError(
            f"`image` values must be RGB in [0, 255]. Received: values from {low:g} to {high:g}"
        )
    return image


def slic_superpixels(image, *, n_segments=1000, compactness=10.0, sigma=0.0):
    """Partitions an RGB image into SLIC superpixels numbered 0..S-1.

    SLIC (Achanta et al., TPAMI 2012) as implemented by scikit-image's `slic` on the image scaled
    to [0, 1] (so in CIELAB, scikit-image's default for RGB), with connectivity enforced. ScribbleSup
    (Lin et al., CVPR 2016) uses about 1000 superpixels per image.

    Args:
        image: float array (H, W, 3), RGB in [0, 255].
        n_segments: approximate number of superpixels asked of SLIC.
        compactness: SLIC's balance of colour against position (larger: squarer superpixels).
        sigma: standard deviation of the Gaussian smoothing applied before SLIC (0: none).

    Returns:
        int32 array (H, W) of superpixel ids 0..S-1, every id used.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.scribblesup import slic_superpixels
        >>> image = np.zeros((20, 20, 3), "float32"); image[:, 10:] = 255.0
        >>> segments = slic_superpixels(image, n_segments=4)
        >>> segments.shape
        (20, 20)
    """
    image = _validate_image(image)
    _check_positive_int("n_segments", n_segments)
    _check_positive("compactness", compactness)
    _check_non_negative("sigma", sigma)
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
        >>> from kseg.weak.scribblesup import superpixel_adjacency
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
        >>> from kseg.weak.scribblesup import superpixel_histograms
        >>> image = np.full((4, 4, 3), 200.0)
        >>> colour, texture = superpixel_histograms(image, np.zeros((4, 4), int))
        >>> colour.shape, texture.shape, float(colour.sum())
        ((1, 75), (1, 20), 3.0)
    """
    image = _validate_image(image)
    segments = np.asarray(segments)
    if segments.shape != image.shape[:2]:
        raise ValueError(
            "`segments` must match the image size. "
            f"Received: segments.shape={segments.shape}, image.shape={image.shape}"
        )
    _check_positive_int("colour_bins", colour_bins)
    _check_positive_int("texture_bins", texture_bins)
    _check_positive("gradient_clip", gradient_clip)
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
        >>> from kseg.weak.scribblesup import appearance_edge_weights
        >>> hist = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> appearance_edge_weights(hist, hist * 0, np.array([[0, 1]])).round(4).tolist()
        [0.1353]
    """
    _check_positive("delta_colour", delta_colour)
    _check_positive("delta_texture", delta_texture)
    colour, texture = np.asarray(colour, np.float64), np.asarray(texture, np.float64)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    colour_distance = np.sum((colour[edges[:, 0]] - colour[edges[:, 1]]) ** 2, axis=1)
    texture_distance = np.sum((texture[edges[:, 0]] - texture[edges[:, 1]]) ** 2, axis=1)
    return np.exp(-colour_distance / delta_colour - texture_distance / delta_texture)


def potts_alpha_expansion(unary, edges, edge_weights, *, max_iterations=-1):
    """Minimises `sum_i unary[i, y_i] + sum_e edge_weights[e] * [y_a != y_b]` by alpha-expansion.

    Boykov, Veksler and Zabih's alpha-expansion (TPAMI 2001) on a general graph through
    gco-wrapper's `cut_general_graph`. For the Potts model the result is within a factor 2 of the
    optimum; on small problems it is usually the optimum itself. gco rounds every cost to five
    significant decimals of the largest one.

    Args:
        unary: float array (N, K) of finite unary costs.
        edges: integer array (E, 2) of node pairs, each pair once (in either order).
        edge_weights: non-negative float array (E,), the cost of a label change across each edge.
        max_iterations: expansion sweeps over all labels; -1 runs until no move lowers the energy.

    Returns:
        int32 array (N,) of labels.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.scribblesup import potts_alpha_expansion
        >>> unary = np.array([[0.0, 2.0], [1.0, 1.1], [2.0, 0.0]])
        >>> potts_alpha_expansion(unary, np.array([[0, 1], [1, 2]]), np.array([0.5, 0.5])).tolist()
        [0, 0, 1]
    """
    unary = np.asarray(unary, np.float64)
    if unary.ndim != 2 or unary.shape[0] < 1 or unary.shape[1] < 1:
        raise ValueError(f"`unary` must be (N, K) with N, K >= 1. Received: shape={unary.shape}")
    if not np.isfinite(unary).all():
        raise ValueError("`unary` must be finite (use a large cost instead of infinity).")
    edges = np.asarray(edges, np.int64)
    if edges.size == 0:
        edges = edges.reshape(0, 2)
    edge_weights = np.asarray(edge_weights, np.float64).reshape(-1)
    if edges.ndim != 2 or edges.shape[1] != 2 or edges.shape[0] != edge_weights.shape[0]:
        raise ValueError(
            "`edges` must be (E, 2) with one weight each. "
            f"Received: edges.shape={edges.shape}, edge_weights.shape={edge_weights.shape}"
        )
    num_nodes, num_labels = unary.shape
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        raise ValueError(
            f"`edges` must name nodes 0..{num_nodes - 1}. "
            f"Received: node ids from {edges.min()} to {edges.max()}"
        )
    if (edges[:, 0] == edges[:, 1]).any():
        raise ValueError("`edges` must not join a node to itself.")
    if not (np.isfinite(edge_weights).all() and (edge_weights >= 0).all()):
        raise ValueError("`edge_weights` must be finite and non-negative.")

    if num_labels == 1 or not edge_weights.any():
        return np.argmin(unary, axis=1).astype(np.int32)
    gco = _import_gco()
    ordered = np.sort(edges, axis=1).astype(np.int32)
    potts = 1.0 - np.eye(num_labels)
    labels = gco.cut_general_graph(
        ordered,
        edge_weights,
        unary,
        potts,
        n_iter=int(max_iterations),
        algorithm="expansion",
    )
    return np.asarray(labels, np.int32)


def potts_energy(unary, edges, edge_weights, labels):
    """The energy `potts_alpha_expansion` minimises, for given labels (float64).

    Example:
        >>> import numpy as np
        >>> from kseg.weak.scribblesup import potts_energy
        >>> potts_energy(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0, 1]]), np.array([0.5]), [0, 1])
        0.5
    """
    unary = np.asarray(unary, np.float64)
    labels = np.asarray(labels, np.int64)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    data = unary[np.arange(unary.shape[0]), labels].sum()
    cut = labels[edges[:, 0]] != labels[edges[:, 1]]
    return float(data + np.asarray(edge_weights, np.float64)[cut].sum())


def _validate_scribbles(scribbles, image_shape, num_classes):
    scribbles = np.asarray(scribbles)
    if scribbles.shape != tuple(image_shape[:2]):
        raise ValueError(
            "`scribbles` must be (H, W) like the image. "
            f"Received: scribbles.shape={scribbles.shape}, image.shape={tuple(image_shape)}"
        )
    if not np.issubdtype(scribbles.dtype, np.integer):
        raise ValueError(
            f"`scribbles` must hold integer class ids. Received: dtype={scribbles.dtype}"
        )
    values = np.unique(scribbles)
    bad = values[(values != IGNORE_LABEL) & ((values < 0) | (values >= num_classes))]
    if bad.size:
        raise ValueError(
            f"`scribbles` contain class {int(bad[0])}, outside 0..{num_classes - 1} for "
            f"num_classes={num_classes} (255 marks unlabelled pixels). "
            f"Received: scribble values {values.tolist()}"
        )
    if (values == IGNORE_LABEL).all():
        raise ValueError(
            "`scribbles` contain no scribble pixel (every value is 255): ScribbleSup needs at "
            "least one scribble per image. Leave such images out or give them another label."
        )
    return scribbles.astype(np.int64)


@dataclasses.dataclass
class _SuperpixelProblem:
    """What stays fixed for one image across ScribbleSup rounds: superpixels, graph, scribbles."""

    segments: np.ndarray  # (H, W) int32 ids
    edges: np.ndarray  # (E, 2)
    edge_weights: np.ndarray  # (E,), already times pairwise_weight
    scribble_unary: np.ndarray  # (S, K), np.inf on forbidden labels
    scribbles: np.ndarray  # (H, W) int64 with 255 off scribbles


def _build_problem(
    image,
    scribbles,
    num_classes,
    *,
    n_segments,
    compactness,
    sigma,
    pairwise_weight,
    delta_colour,
    delta_texture,
    restrict_to_scribbled_classes,
):
    image = _validate_image(image)
    scribbles = _validate_scribbles(scribbles, image.shape, num_classes)
    _check_non_negative("pairwise_weight", pairwise_weight)
    segments = slic_superpixels(image, n_segments=n_segments, compactness=compactness, sigma=sigma)
    num_segments = int(segments.max()) + 1
    edges = superpixel_adjacency(segments)
    colour, texture = superpixel_histograms(image, segments)
    weights = pairwise_weight * appearance_edge_weights(
        colour, texture, edges, delta_colour=delta_colour, delta_texture=delta_texture
    )

    on_scribble = scribbles != IGNORE_LABEL
    touched = np.zeros((num_segments, num_classes), bool)
    touched[segments[on_scribble], scribbles[on_scribble]] = True
    scribbled_classes = touched.any(axis=0)
    allowed = scribbled_classes if restrict_to_scribbled_classes else np.ones(num_classes, bool)
    unlabelled = ~touched.any(axis=1)
    scribble_unary = np.where(touched, 0.0, np.inf)
    scribble_unary[unlabelled] = np.where(allowed, -np.log(1.0 / allowed.sum()), np.inf)
    return _SuperpixelProblem(segments, edges, weights, scribble_unary, scribbles)


def _solve_problem(problem, probabilities, network_weight):
    unary = problem.scribble_unary.copy()
    if probabilities is not None:
        num_segments, num_classes = unary.shape
        sums = np.zeros((num_segments, num_classes))
        np.add.at(sums, problem.segments.ravel(), probabilities.reshape(-1, num_classes))
        sizes = np.bincount(problem.segments.ravel(), minlength=num_segments)[:, None]
        mean_probability = np.maximum(sums / sizes, MIN_PROBABILITY)
        unary = unary - network_weight * np.log(mean_probability)

    forbidden = ~np.isfinite(unary)
    incident = np.zeros(unary.shape[0])
    np.add.at(incident, problem.edges.ravel(), np.repeat(problem.edge_weights, 2))
    finite_max = unary[~forbidden].max()
    # Above this, any single superpixel on a forbidden label gains by leaving it (module docstring).
    hard_cost = max(finite_max, 0.0) + incident.max(initial=0.0) + 1.0
    unary[forbidden] = hard_cost

    superpixel_labels = potts_alpha_expansion(unary, problem.edges, problem.edge_weights)
    labels = superpixel_labels[problem.segments]
    # Scribbles are ground truth: a superpixel holding two scribbled classes still keeps both.
    on_scribble = problem.scribbles != IGNORE_LABEL
    labels[on_scribble] = problem.scribbles[on_scribble]
    return labels.astype(np.uint8)


def _validate_probabilities(probabilities, image_shape, num_classes):
    probabilities = np.asarray(probabilities, np.float64)
    expected = (*tuple(image_shape[:2]), num_classes)
    if probabilities.shape != expected:
        raise ValueError(
            f"`probabilities` must be (H, W, num_classes) = {expected}. "
            f"Received: probabilities.shape={probabilities.shape}, image.shape={tuple(image_shape)}"
        )
    if not np.isfinite(probabilities).all() or (probabilities < 0).any():
        raise ValueError("`probabilities` must be finite and non-negative (softmax outputs).")
    return probabilities


def _resolve_num_classes(num_classes, probabilities):
    if probabilities is not None:
        from_probabilities = np.shape(probabilities)[-1]
        if num_classes is not None and num_classes != from_probabilities:
            raise ValueError(
                "`num_classes` disagrees with the last axis of `probabilities`. "
                f"Received: num_classes={num_classes}, "
                f"probabilities.shape={np.shape(probabilities)}"
            )
        num_classes = from_probabilities
    if num_classes is None:
        raise ValueError("Give `num_classes` (or `probabilities`, whose last axis sets it).")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"`num_classes` must be an integer. Received: num_classes={num_classes!r}")
    if not 1 <= num_classes <= 255:
        raise ValueError(
            "`num_classes` must be in 1..255 (labels are uint8 with 255 reserved). "
            f"Received: num_classes={num_classes}"
        )
    return int(num_classes)


def propagate_scribbles(
    image,
    scribbles,
    probabilities=None,
    *,
    num_classes=None,
    n_segments=1000,
    compactness=10.0,
    sigma=0.0,
    pairwise_weight=1.0,
    network_weight=1.0,
    delta_colour=1.0,
    delta_texture=2.0,
    restrict_to_scribbled_classes=True,
):
    """Labels every pixel of an image from its scribbles, ScribbleSup's propagation step.

    Lin et al. (CVPR 2016, section 3): SLIC superpixels, a scribble unary, an optional network
    unary -log P(c | superpixel), and a colour/texture-weighted Potts term between adjacent
    superpixels, minimised by gco-wrapper's alpha-expansion (see the module docstring for every
    term). Every pixel takes its superpixel's label, except scribble pixels, which keep their own
    class.

    Args:
        image: float array (H, W, 3), RGB in [0, 255].
        scribbles: integer array (H, W): a class id on scribble pixels, 255 elsewhere. At least one
            scribble pixel is required (an image without any raises a ValueError).
        probabilities: optional float array (H, W, K) of the network's softmax output; None leaves
            the network term out (ScribbleSup's first round).
        num_classes: number of classes K; taken from `probabilities` when given.
        n_segments: approximate number of SLIC superpixels (the paper: about 1000).
        compactness: SLIC compactness.
        sigma: SLIC pre-smoothing.
        pairwise_weight: multiplier of the Potts term.
        network_weight: multiplier of the network term.
        delta_colour: colour-histogram bandwidth of the pairwise weights.
        delta_texture: texture-histogram bandwidth of the pairwise weights.
        restrict_to_scribbled_classes: the paper's rule that unscribbled superpixels take only
            classes scribbled somewhere in the image; False allows all K classes.

    Returns:
        uint8 array (H, W) with a class id at every pixel.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.scribblesup import propagate_scribbles
        >>> image = np.zeros((24, 24, 3), "float32"); image[:, 12:] = 255.0
        >>> scribbles = np.full((24, 24), 255, "uint8")
        >>> scribbles[10:14, 4] = 0; scribbles[10:14, 20] = 1
        >>> labels = propagate_scribbles(image, scribbles, num_classes=2, n_segments=16)
        >>> int(labels[:, :12].max()), int(labels[:, 12:].min())
        (0, 1)
    """
    image = _validate_image(image)
    num_classes = _resolve_num_classes(num_classes, probabilities)
    _check_non_negative("network_weight", network_weight)
    if probabilities is not None:
        probabilities = _validate_probabilities(probabilities, image.shape, num_classes)
    problem = _build_problem(
        image,
        scribbles,
        num_classes,
        n_segments=n_segments,
        compactness=compactness,
        sigma=sigma,
        pairwise_weight=pairwise_weight,
        delta_colour=delta_colour,
        delta_texture=delta_texture,
        restrict_to_scribbled_classes=restrict_to_scribbled_classes,
    )
    return _solve_problem(problem, probabilities, network_weight)


@dataclasses.dataclass
class ScribbleSupRounds:
    """The outcome of `scribblesup_rounds`.

    Attributes:
        labels: one uint8 array (N, H, W) per round, the propagated labels that round trained on.
        histories: one `keras.callbacks.History` per round.
    """

    labels: list
    histories: list


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def scribblesup_rounds(
    model,
    images,
    scribbles,
    *,
    rounds=3,
    epochs_per_round=1,
    batch_size=8,
    n_segments=1000,
    compactness=10.0,
    sigma=0.0,
    pairwise_weight=1.0,
    network_weight=1.0,
    delta_colour=1.0,
    delta_texture=2.0,
    restrict_to_scribbled_classes=True,
    verbose=0,
    **fit_kwargs,
):
    """Trains a compiled kseg model from scribbles by ScribbleSup's alternation.

    Lin et al. (CVPR 2016, section 3.2) alternate label propagation over superpixel graphs with
    network training, for three rounds in their experiments. Round 1 propagates from the scribbles
    alone; every later round adds the network term from the model as trained so far. Each round
    then calls `model.fit(images, labels, epochs=epochs_per_round, ...)` on the propagated labels,
    continuing from the current weights. Superpixels, graphs and scribble terms are computed once
    and reused.

    The data are in-memory NumPy arrays (propagation runs in NumPy on every image each round); to
    train from a `tf.data` pipeline instead, call `propagate_scribbles` per image and feed the
    labels to your own dataset.

    Args:
        model: a compiled Keras model mapping (B, H, W, 3) images to (B, H, W, K) logits, with a
            loss that takes integer labels (for instance `kseg.losses.SegmentationCrossEntropy`).
        images: float array (N, H, W, 3), RGB in [0, 255].
        scribbles: integer array (N, H, W): class ids on scribble pixels, 255 elsewhere. Every image
            needs at least one scribble pixel; otherwise a ValueError names the image.
        rounds: number of propagate-then-train rounds (the paper: 3).
        epochs_per_round: epochs of `model.fit` per round.
        batch_size: batch size for `model.fit` and `model.predict`.
        n_segments: as in `propagate_scribbles`.
        compactness: as in `propagate_scribbles`.
        sigma: as in `propagate_scribbles`.
        pairwise_weight: as in `propagate_scribbles`.
        network_weight: as in `propagate_scribbles`.
        delta_colour: as in `propagate_scribbles`.
        delta_texture: as in `propagate_scribbles`.
        restrict_to_scribbled_classes: as in `propagate_scribbles`.
        verbose: Keras verbosity for `fit`.
        **fit_kwargs: passed on to every `model.fit` call (e.g. `callbacks`, `validation_data`).

    Returns:
        A `ScribbleSupRounds` with each round's labels and `History`.

    Example:
        >>> import keras, numpy as np, kseg.testing
        >>> from kseg.losses import SegmentationCrossEntropy
        >>> from kseg.weak.scribblesup import scribblesup_rounds
        >>> model = kseg.testing.build_small_model("fcn8s", num_classes=2)
        >>> model.compile("adam", SegmentationCrossEntropy())
        >>> images = np.zeros((2, 32, 32, 3), "float32"); images[:, :, 16:] = 255.0
        >>> scribbles = np.full((2, 32, 32), 255, "uint8")
        >>> scribbles[:, 8:24, 4] = 0; scribbles[:, 8:24, 28] = 1
        >>> result = scribblesup_rounds(model, images, scribbles, rounds=2, n_segments=16)
        >>> len(result.histories)
        2
    """
    _check_positive_int("rounds", rounds)
    _check_positive_int("epochs_per_round", epochs_per_round)
    _check_positive_int("batch_size", batch_size)
    _check_non_negative("network_weight", network_weight)
    images = np.asarray(images)
    scribbles = np.asarray(scribbles)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` must be (N, H, W, 3). Received: images.shape={images.shape}")
    if scribbles.shape != images.shape[:3]:
        raise ValueError(
            "`scribbles` must be (N, H, W) like `images`. "
            f"Received: scribbles.shape={scribbles.shape}, images.shape={images.shape}"
        )
    num_classes = _resolve_num_classes(int(model.output_shape[-1]), None)

    problems = []
    for index, (image, scribble) in enumerate(zip(images, scribbles)):
        try:
            problems.append(
                _build_problem(
                    image,
                    scribble,
                    num_classes,
                    n_segments=n_segments,
                    compactness=compactness,
                    sigma=sigma,
                    pairwise_weight=pairwise_weight,
                    delta_colour=delta_colour,
                    delta_texture=delta_texture,
                    restrict_to_scribbled_classes=restrict_to_scribbled_classes,
                )
            )
        except ValueError as error:
            raise ValueError(f"Image {index}: {error}") from error

    images = images.astype(np.float32)
    all_labels, histories = [], []
    for round_index in range(rounds):
        if round_index == 0:
            probabilities = [None] * len(problems)
        else:
            logits = np.asarray(model.predict(images, batch_size=batch_size, verbose=0))
            if logits.shape != (*images.shape[:3], num_classes):
                raise ValueError(
                    "The model's output must be (N, H, W, num_classes) logits at the image size. "
                    f"Received: output shape {logits.shape}, images.shape={images.shape}"
                )
            probabilities = _softmax(logits.astype(np.float64))
        labels = np.stack(
            [
                _solve_problem(problem, probability, network_weight)
                for problem, probability in zip(problems, probabilities)
            ]
        )
        history = model.fit(
            images,
            labels,
            epochs=epochs_per_round,
            batch_size=batch_size,
            verbose=verbose,
            **fit_kwargs,
        )
        all_labels.append(labels)
        histories.append(history)
    return ScribbleSupRounds(labels=all_labels, histories=histories)
