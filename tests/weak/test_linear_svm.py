"""One-vs-rest linear SVMs by dual coordinate descent, against scipy's solution of the primal."""

import numpy as np
import pytest

from kseg.weak.linear_svm import one_vs_rest_svm, svm_objective


def test_svm_matches_scipy_on_a_separable_problem():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    labels = np.repeat(np.arange(3), 5)
    features = centres[labels] + rng.normal(scale=0.4, size=(15, 2))
    C = 10.0
    W, b = one_vs_rest_svm(features, labels, 3, C=C, epochs=200)
    ours = svm_objective(features, labels, 3, W, b, C=C)

    reference = 0.0
    augmented = np.concatenate([features, np.ones((15, 1))], axis=1)
    for class_id in range(3):
        targets = np.where(labels == class_id, 1.0, -1.0)

        # Primal with slacks: v = (w, b), xi >= 0, t (v . x) >= 1 - xi.
        def objective(z):
            return 0.5 * z[:3] @ z[:3] + C * z[3:].sum()

        constraints = [
            {"type": "ineq", "fun": lambda z, t=targets: t * (augmented @ z[:3]) - 1 + z[3:]},
            {"type": "ineq", "fun": lambda z: z[3:]},
        ]
        result = scipy_optimize.minimize(
            objective,
            np.zeros(18),
            constraints=constraints,
            method="SLSQP",
            options={"maxiter": 500, "ftol": 1e-10},
        )
        assert result.success, result.message
        reference += result.fun
    assert ours <= reference + 1e-4
    assert (np.argmax(features @ W + b, axis=1) == labels).all()
