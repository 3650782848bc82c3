"""Constrained assignment of Xu et al. (CVPR 2015): hinge costs and the repair of minimum counts."""

import itertools

import numpy as np
import pytest

from kseg.weak.unified_assignment import constrained_assignment, hinge_assignment_costs


def _full_hinge(scores, label):
    """One-vs-rest hinge loss of one superpixel labelled `label`, straight from the definition."""
    targets = np.where(np.arange(len(scores)) == label, 1.0, -1.0)
    return np.maximum(0.0, 1.0 - targets * scores).sum()


def test_assignment_costs_differ_like_the_full_hinge_loss():
    rng = np.random.default_rng(0)
    scores = rng.normal(scale=2.0, size=(20, 4))
    costs = hinge_assignment_costs(scores)
    full = np.array([[_full_hinge(row, c) for c in range(4)] for row in scores])
    np.testing.assert_allclose(costs - costs[:, :1], full - full[:, :1], atol=1e-12)


def test_single_requirement_repair_matches_exhaustive_search():
    rng = np.random.default_rng(1)
    allowed = np.zeros((8, 3), bool)
    allowed[:, [0, 2]] = True
    requirement = (np.arange(1, 7), 2, 4)
    for _ in range(20):
        scores = rng.normal(size=(8, 3))
        costs = hinge_assignment_costs(scores)
        best = min(
            sum(costs[p, c] for p, c in enumerate(labelling))
            for labelling in itertools.product([0, 2], repeat=8)
            if sum(labelling[p] == 2 for p in requirement[0]) >= 4
        )
        labels = constrained_assignment(scores, allowed, [requirement])
        assert costs[np.arange(8), labels].sum() == pytest.approx(best)
