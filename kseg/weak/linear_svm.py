"""Linear one-vs-rest SVMs by dual coordinate descent (Hsieh et al., ICML 2008) and their objective.

Step (b) of the unified framework of Xu et al. (CVPR 2015, `kseg.weak.unified`): with the
superpixel labels fixed, the class models are the one-vs-rest linear SVMs of the max-margin
objective.
"""

import numpy as np

from kseg.validation import validate_positive_int, validate_positive_number


def one_vs_rest_svm(features, labels, num_classes, *, C=1.0, epochs=20, seed=0, weights=None):
    """Linear one-vs-rest SVMs with L2 regularisation and hinge loss, by dual coordinate descent.

    For each class c, minimises 1/2 ||v_c||^2 + C sum_p max(0, 1 - t_pc v_c . [x_p, 1]) with
    t_pc = +1 for the samples labelled c (or flagged positive in a (N, K) target) and -1 for the
    rest; the bias is the last entry of v_c. The dual coordinate descent of Hsieh et al.
    (ICML 2008) updates one sample's dual variable at a time, all classes at once, and converges
    to the optimum; `epochs` passes over the samples in random order.

    Args:
        features: float array (N, D).
        labels: int array (N,) of classes in 0..num_classes-1, or a bool array (N, K) of targets
            (True: positive for that class).
        num_classes: K.
        C: hinge weight, > 0.
        epochs: passes over the data.
        seed: seed of the visiting order.
        weights: optional multipliers of C, float array (N,) per sample or (N, K) per sample and
            class, > 0.

    Returns:
        `(W, b)`: float64 arrays (D, K) and (K,); scores are `features @ W + b`.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.linear_svm import one_vs_rest_svm
        >>> W, b = one_vs_rest_svm(np.array([[-1.0], [1.0]]), np.array([0, 1]), 2, C=10.0)
        >>> np.argmax(np.array([[-2.0], [2.0]]) @ W + b, axis=1).tolist()
        [0, 1]
    """
    validate_positive_number(C, "C")
    validate_positive_int(epochs, "epochs")
    features = np.asarray(features, np.float64)
    if features.ndim != 2:
        raise ValueError(f"`features` must be (N, D). Received: features.shape={features.shape}")
    labels = np.asarray(labels)
    if labels.ndim == 2:
        positive = labels.astype(bool)
    else:
        positive = labels[:, None] == np.arange(num_classes)[None, :]
    if positive.shape != (features.shape[0], num_classes):
        raise ValueError(
            "`labels` must be (N,) classes or (N, num_classes) targets. "
            f"Received: labels.shape={labels.shape}, features.shape={features.shape}"
        )
    targets = np.where(positive, 1.0, -1.0)
    upper = C * np.broadcast_to(
        np.ones(1)
        if weights is None
        else np.asarray(weights, np.float64).reshape(len(features), -1),
        targets.shape,
    )
    augmented = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    squared_norms = np.einsum("nd,nd->n", augmented, augmented)
    dual = np.zeros_like(targets)
    primal = np.zeros((augmented.shape[1], num_classes))
    order_source = np.random.default_rng(seed)
    for _ in range(int(epochs)):
        for sample in order_source.permutation(len(augmented)):
            if squared_norms[sample] == 0:
                continue
            row, target = augmented[sample], targets[sample]
            gradient = target * (row @ primal) - 1.0
            updated = np.clip(dual[sample] - gradient / squared_norms[sample], 0.0, upper[sample])
            primal += np.outer(row, (updated - dual[sample]) * target)
            dual[sample] = updated
    return primal[:-1], primal[-1]


def svm_objective(features, labels, num_classes, W, b, *, C=1.0):
    """The objective `one_vs_rest_svm` minimises, summed over classes (bias regularised too).

    Args:
        features: float array (N, D).
        labels: int array (N,) of classes, or a bool array (N, K) of targets.
        num_classes: K.
        W: float array (D, K) of weights.
        b: float array (K,) of biases.
        C: hinge weight.

    Returns:
        The objective, a float.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.linear_svm import svm_objective
        >>> svm_objective(np.array([[1.0]]), np.array([0]), 1, np.array([[1.0]]), np.array([0.0]))
        0.5
    """
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    positive = (
        labels.astype(bool) if labels.ndim == 2 else labels[:, None] == np.arange(num_classes)
    )
    targets = np.where(positive, 1.0, -1.0)
    margins = targets * (features @ W + b)
    return float(0.5 * (np.sum(W**2) + np.sum(b**2)) + C * np.maximum(0.0, 1.0 - margins).sum())
