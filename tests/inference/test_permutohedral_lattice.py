import numpy as np
import pytest

from kseg.inference.permutohedral_lattice import PermutohedralLattice


def _exact_gaussian_filter(features, values):
    distance = ((features[:, None, :] - features[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * distance) @ values


@pytest.mark.parametrize("dimension", [2, 5])
def test_lattice_approximates_a_unit_gaussian(dimension):
    rng = np.random.default_rng(dimension)
    features = rng.uniform(0, 3, (400, dimension)).astype("float32")
    values = rng.uniform(size=(400, 1))
    lattice = PermutohedralLattice(features)
    splat = np.zeros((int(lattice.size) + 1, 1))
    np.add.at(
        splat,
        np.asarray(lattice.vertices).reshape(-1),
        (np.asarray(lattice.weights)[..., None] * values[:, None, :]).reshape(-1, 1),
    )
    blurred = np.asarray(lattice.blur(splat.astype("float32")))
    approx = (blurred[np.asarray(lattice.vertices)] * np.asarray(lattice.weights)[..., None]).sum(1)
    exact = _exact_gaussian_filter(features.astype("float64"), values)
    # The lattice filters up to a global scale; after fitting it, the shape must match.
    scale = (approx * exact).sum() / (approx * approx).sum()
    relative = np.abs(scale * approx - exact) / exact
    assert np.corrcoef(approx[:, 0], exact[:, 0])[0, 1] > 0.98
    assert np.median(relative) < 0.06
    # Barycentric weights are a partition of unity.
    np.testing.assert_allclose(np.asarray(lattice.weights).sum(1), 1.0, atol=1e-5)
