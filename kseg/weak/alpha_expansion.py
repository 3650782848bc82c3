"""Alpha-expansion for the Potts model on a general graph, through gco-wrapper.

Boykov, Veksler and Zabih's alpha-expansion (TPAMI 2001) minimises a sum of unary costs and
Potts pairwise costs; ScribbleSup (Lin et al., CVPR 2016) labels its superpixel graph with it.
gco-wrapper is the optional `weak` extra (`pip install 'kseg[weak]'`), imported only when used.
"""

import sys

import numpy as np

from kseg.weak.inputs import INSTALL_HINT


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
        >>> from kseg.weak.alpha_expansion import potts_alpha_expansion
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
        >>> from kseg.weak.alpha_expansion import potts_energy
        >>> unary = np.array([[0.0, 1.0], [1.0, 0.0]])
        >>> potts_energy(unary, np.array([[0, 1]]), np.array([0.5]), [0, 1])
        0.5
    """
    unary = np.asarray(unary, np.float64)
    labels = np.asarray(labels, np.int64)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    data = unary[np.arange(unary.shape[0]), labels].sum()
    cut = labels[edges[:, 0]] != labels[edges[:, 1]]
    return float(data + np.asarray(edge_weights, np.float64)[cut].sum())
