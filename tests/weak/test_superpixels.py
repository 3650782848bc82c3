"""Superpixels: SLIC against scikit-image reference maps, adjacency, histograms and edge weights."""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage", reason="SLIC superpixels need scikit-image (the `weak` extra)")

from kseg.weak.superpixels import (
    appearance_edge_weights,
    slic_superpixels,
    squared_histogram_distances,
    superpixel_adjacency,
    superpixel_histograms,
    superpixel_means,
)

REFS = Path(__file__).resolve().parents[2] / ".." / "shared" / "refs"


def _refs(name):
    path = REFS / name
    if not path.is_file():
        pytest.skip(f"reference file {path} is absent")
    return np.load(path)


@pytest.mark.parametrize("sigma", [0, 1])
def test_slic_matches_scikit_image_reference_maps(sigma):
    refs = _refs("superpixels.npz")
    image = refs["image_hwc_uint8"].astype(np.float32)
    segments = slic_superpixels(image, n_segments=48, compactness=10, sigma=sigma)
    np.testing.assert_array_equal(segments, refs[f"slic_n48_c10_sigma{sigma}"])


def test_superpixel_ids_are_dense_from_zero():
    image = np.random.default_rng(0).uniform(0, 255, (30, 40, 3)).astype(np.float32)
    segments = slic_superpixels(image, n_segments=20)
    assert segments.dtype == np.int32
    np.testing.assert_array_equal(np.unique(segments), np.arange(segments.max() + 1))


def test_adjacency_matches_a_pixel_by_pixel_scan():
    segments = np.random.default_rng(1).integers(0, 6, (7, 9))
    expected = set()
    for i, j in itertools.product(range(7), range(9)):
        for di, dj in ((0, 1), (1, 0)):
            if i + di < 7 and j + dj < 9:
                a, b = segments[i, j], segments[i + di, j + dj]
                if a != b:
                    expected.add((min(a, b), max(a, b)))
    assert [tuple(pair) for pair in superpixel_adjacency(segments).tolist()] == sorted(expected)


def test_histograms_are_per_channel_distributions():
    image = np.random.default_rng(2).uniform(0, 255, (12, 10, 3))
    segments = np.repeat(np.arange(4), 30).reshape(12, 10)
    colour, texture = superpixel_histograms(image, segments, colour_bins=5, texture_bins=4)
    np.testing.assert_allclose(colour.reshape(4, 3, 5).sum(axis=2), 1.0)
    np.testing.assert_allclose(texture.reshape(4, 2, 4).sum(axis=2), 1.0)
    # Red channel of superpixel 0, counted independently.
    red = image[segments == 0][:, 0]
    expected = np.histogram(red, bins=5, range=(0, 256))[0] / red.size
    np.testing.assert_allclose(colour[0, :5], expected)


def test_edge_weights_follow_the_exponential_of_histogram_distances():
    colour = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])
    texture = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    weights = appearance_edge_weights(
        colour, texture, np.array([[0, 1], [0, 2]]), delta_colour=0.5, delta_texture=4.0
    )
    np.testing.assert_allclose(weights, [math.exp(-2 / 0.5), math.exp(-2 / 4.0)])


def test_superpixel_means_match_a_loop_over_the_superpixels():
    rng = np.random.default_rng(0)
    segments = rng.integers(0, 5, (6, 7))
    segments[0, :5] = np.arange(5)
    values = rng.normal(size=(6, 7, 3))
    expected = [values[segments == s].mean(axis=0) for s in range(5)]
    np.testing.assert_allclose(superpixel_means(segments, values), expected)


def test_unbiased_histogram_distance_averages_to_the_distance_of_the_distributions():
    rng = np.random.default_rng(4)
    p, q = np.array([0.5, 0.3, 0.2, 0.0]), np.array([0.1, 0.2, 0.3, 0.4])
    sizes = np.array([12, 16, 14])
    edges = np.array([[0, 1], [0, 2]])
    plain, unbiased = [], []
    for _ in range(4000):
        rows = [rng.multinomial(n, dist) / n for n, dist in zip(sizes, (p, p, q))]
        # Two histograms per row (as colour channels are), the second one the same again.
        histograms = np.concatenate([np.array(rows), np.array(rows)], axis=1)
        unbiased.append(squared_histogram_distances(histograms, sizes, edges))
        plain.append(((histograms[edges[:, 0]] - histograms[edges[:, 1]]) ** 2).sum(axis=1))
    expected = 2 * np.array([0.0, np.sum((p - q) ** 2)])
    excess = 2 * ((1 - p @ p) / 12 + np.array([(1 - p @ p) / 16, (1 - q @ q) / 14]))
    np.testing.assert_allclose(np.mean(plain, axis=0), expected + excess, atol=0.01)
    # Unbiased where the distributions differ; where they agree, clipping the estimates of each
    # histogram at 0 leaves an upward bias, well under the plain distance's.
    mean_unbiased = np.mean(unbiased, axis=0)
    np.testing.assert_allclose(mean_unbiased[1], expected[1], atol=0.01)
    assert 0 <= mean_unbiased[0] < 0.5 * excess[0]


def test_histogram_of_a_single_pixel_keeps_its_plain_norm():
    histograms = np.array([[1.0, 0.0], [0.0, 1.0]])
    distances = squared_histogram_distances(histograms, np.array([1, 1]), np.array([[0, 1]]))
    np.testing.assert_allclose(distances, [2.0])


def test_default_bandwidths_are_the_mean_distances_over_the_edges():
    rng = np.random.default_rng(5)
    colour, texture = rng.dirichlet(np.ones(6), 5), rng.dirichlet(np.ones(4), 5)
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [0, 4]])
    colour_distance = ((colour[edges[:, 0]] - colour[edges[:, 1]]) ** 2).sum(axis=1)
    texture_distance = ((texture[edges[:, 0]] - texture[edges[:, 1]]) ** 2).sum(axis=1)
    expected = np.exp(
        -colour_distance / colour_distance.mean() - texture_distance / texture_distance.mean()
    )
    np.testing.assert_allclose(appearance_edge_weights(colour, texture, edges), expected)
    # Identical neighbours everywhere: no distance to scale by, every weight is 1.
    flat = np.ones((5, 2)) / 2
    np.testing.assert_allclose(appearance_edge_weights(flat, flat, edges), 1.0)
