"""ScribbleSup: SLIC against scikit-image reference maps, alpha-expansion against exhaustive search,
propagation on synthetic images, a training round, and bad input."""

import itertools
import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

pytest.importorskip("skimage", reason="ScribbleSup needs scikit-image (the `weak` extra)")
pytest.importorskip("gco", reason="ScribbleSup needs gco-wrapper (the `weak` extra)")

import kseg.testing
from kseg.losses import SegmentationCrossEntropy
from kseg.weak.scribblesup import (
    appearance_edge_weights,
    potts_alpha_expansion,
    potts_energy,
    propagate_scribbles,
    scribblesup_rounds,
    slic_superpixels,
    superpixel_adjacency,
    superpixel_histograms,
)

REFS = Path(__file__).resolve().parents[2] / ".." / "shared" / "refs"


def _refs(name):
    path = REFS / name
    if not path.is_file():
        pytest.skip(f"reference file {path} is absent")
    return np.load(path)


def _all_energies(unary, edges, weights):
    """Energy of every labelling (rows of the returned labellings), by enumeration."""
    num_nodes, num_labels = unary.shape
    labellings = np.array(list(itertools.product(range(num_labels), repeat=num_nodes)))
    data = unary[np.arange(num_nodes), labellings].sum(axis=1)
    cut = labellings[:, edges[:, 0]] != labellings[:, edges[:, 1]]
    return labellings, data + (cut * weights).sum(axis=1)


def _random_problem(seed, num_nodes, num_labels):
    rng = np.random.default_rng(seed)
    pairs = np.array(list(itertools.combinations(range(num_nodes), 2)))
    edges = pairs[rng.random(len(pairs)) < 0.6]
    if len(edges) == 0:
        edges = pairs[:1]
    weights = rng.uniform(0.0, 1.5, len(edges))
    unary = rng.uniform(0.0, 3.0, (num_nodes, num_labels))
    return unary, edges, weights


# SLIC


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


# Graph


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


# Graph cut


def test_gco_reference_case_reaches_the_brute_force_optimum():
    refs = _refs("graphcut.npz")
    unary, edges, weights = refs["gco_unary_NL"], refs["gco_edges"], refs["gco_edge_w"]
    np.testing.assert_array_equal(refs["gco_V"], 1 - np.eye(3))
    labels = potts_alpha_expansion(unary, edges, weights)
    labellings, energies = _all_energies(unary, edges, weights)
    assert potts_energy(unary, edges, weights, labels) == pytest.approx(energies.min(), abs=1e-3)
    assert energies.min() == pytest.approx(11.3857, abs=1e-4)
    assert energies.min() == pytest.approx(float(refs["gco_bruteforce_min"]), abs=1e-9)
    np.testing.assert_array_equal(labels, labellings[np.argmin(energies)])


def test_gco_grid_reference_case_on_a_general_graph():
    refs = _refs("graphcut.npz")
    unary = refs["gco_grid_unary_HWL"]
    height, width, num_labels = unary.shape
    pairwise = refs["gco_grid_pairwise"]
    np.testing.assert_allclose(pairwise, 0.8 * (1 - np.eye(num_labels)))
    ids = np.arange(height * width).reshape(height, width)
    edges = np.concatenate(
        [
            np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], axis=1),
            np.stack([ids[:-1].ravel(), ids[1:].ravel()], axis=1),
        ]
    )
    weights = np.full(len(edges), 0.8)
    flat_unary = unary.reshape(-1, num_labels)
    labels = potts_alpha_expansion(flat_unary, edges, weights)
    reference_energy = potts_energy(flat_unary, edges, weights, refs["gco_grid_labels"].ravel())
    assert potts_energy(flat_unary, edges, weights, labels) <= reference_energy + 1e-3
    accuracy = np.mean(labels.reshape(height, width) == refs["gco_grid_gt"])
    assert accuracy >= 0.99


@pytest.mark.parametrize("seed", range(20))
def test_two_label_cut_is_the_exhaustive_optimum(seed):
    unary, edges, weights = _random_problem(seed, num_nodes=6, num_labels=2)
    labels = potts_alpha_expansion(unary, edges, weights)
    _, energies = _all_energies(unary, edges, weights)
    assert potts_energy(unary, edges, weights, labels) == pytest.approx(energies.min(), abs=1e-3)


def test_three_label_expansion_against_exhaustive_search():
    """5 nodes x 3 labels: alpha-expansion's guarantees, and the optimum in nearly every case."""
    optimal = 0
    num_problems = 100
    for seed in range(num_problems):
        unary, edges, weights = _random_problem(seed, num_nodes=5, num_labels=3)
        labels = potts_alpha_expansion(unary, edges, weights)
        energy = potts_energy(unary, edges, weights, labels)
        _, energies = _all_energies(unary, edges, weights)
        assert energy <= 2 * energies.min() + 1e-3  # Boykov et al.'s Potts bound
        # No expansion move (any subset of nodes switching to one label) improves the result.
        for alpha in range(3):
            for subset in itertools.product([False, True], repeat=5):
                moved = np.where(subset, alpha, labels)
                assert potts_energy(unary, edges, weights, moved) >= energy - 1e-3
        optimal += energy <= energies.min() + 1e-3
    # 98 of these 100 seeded problems reach the optimum; the rest stop at an expansion minimum.
    assert optimal >= 95


def test_graph_without_edges_takes_the_cheapest_label():
    unary = np.array([[2.0, 1.0, 3.0], [0.0, 5.0, 1.0]])
    labels = potts_alpha_expansion(unary, np.zeros((0, 2), int), np.zeros(0))
    np.testing.assert_array_equal(labels, [1, 0])


# Propagation


def _disc_image(height=40, width=48):
    """A flat orange disc on a flat blue background, and its mask."""
    rows, cols = np.mgrid[:height, :width]
    disc = (rows - 20) ** 2 + (cols - 26) ** 2 <= 12**2
    image = np.where(disc[..., None], [230.0, 120.0, 30.0], [30.0, 60.0, 200.0])
    return image.astype(np.float32), disc.astype(np.uint8)


def test_two_flat_regions_with_one_scribble_each_are_labelled_fully():
    image, mask = _disc_image()
    scribbles = np.full(mask.shape, 255, np.uint8)
    scribbles[18:23, 26] = 1  # a short stroke at the disc's centre
    scribbles[2, 2:8] = 0  # a short stroke in a background corner
    labels = propagate_scribbles(image, scribbles, num_classes=2, n_segments=60)
    assert labels.dtype == np.uint8 and labels.shape == mask.shape
    np.testing.assert_array_equal(labels, mask)


def test_scribble_pixels_keep_their_class():
    image = np.random.default_rng(3).uniform(0, 255, (32, 36, 3)).astype(np.float32)
    scribbles = np.full((32, 36), 255, np.uint8)
    scribbles[5, 3:30] = 0
    scribbles[6, 3:30] = 2  # right beside class 0, so superpixels hold two classes
    scribbles[20:30, 10] = 1
    labels = propagate_scribbles(image, scribbles, num_classes=3, n_segments=30)
    on_scribble = scribbles != 255
    np.testing.assert_array_equal(labels[on_scribble], scribbles[on_scribble])
    assert set(np.unique(labels)) <= {0, 1, 2}


def _three_stripes():
    image = np.zeros((24, 36, 3), np.float32)
    image[:, 12:24] = [0.0, 200.0, 0.0]
    image[:, 24:] = [0.0, 0.0, 220.0]
    scribbles = np.full((24, 36), 255, np.uint8)
    scribbles[10:14, 5] = 0
    scribbles[10:14, 17] = 1
    probabilities = np.full((24, 36, 3), 0.05, np.float32)
    probabilities[:, :12, 0] = probabilities[:, 12:24, 1] = probabilities[:, 24:, 2] = 0.9
    return image, scribbles, probabilities


def test_network_term_labels_an_unscribbled_region_when_all_classes_are_allowed():
    image, scribbles, probabilities = _three_stripes()
    labels = propagate_scribbles(
        image,
        scribbles,
        probabilities,
        n_segments=27,
        network_weight=5.0,
        restrict_to_scribbled_classes=False,
    )
    np.testing.assert_array_equal(labels[:, :12], 0)
    np.testing.assert_array_equal(labels[:, 12:24], 1)
    np.testing.assert_array_equal(labels[:, 24:], 2)


def test_paper_rule_keeps_unscribbled_classes_out():
    image, scribbles, probabilities = _three_stripes()
    labels = propagate_scribbles(image, scribbles, probabilities, n_segments=27, network_weight=5.0)
    assert set(np.unique(labels)) <= {0, 1}


# Training rounds


def test_scribblesup_rounds_train_a_kseg_model():
    keras.utils.set_random_seed(0)
    model = kseg.testing.build_small_model("fcn8s", num_classes=2)
    model.compile(keras.optimizers.Adam(1e-3), SegmentationCrossEntropy(), run_eagerly=True)
    image, mask = _disc_image(32, 32)
    images = np.stack([image, image[:, ::-1]])
    scribbles = np.full((2, 32, 32), 255, np.uint8)
    scribbles[:, 18:23, 16] = 1
    scribbles[:, 2, 2:8] = 0
    result = scribblesup_rounds(
        model, images, scribbles, rounds=2, epochs_per_round=1, batch_size=2, n_segments=40
    )
    assert len(result.labels) == len(result.histories) == 2
    for labels, history in zip(result.labels, result.histories):
        assert labels.shape == (2, 32, 32) and labels.dtype == np.uint8
        assert np.isfinite(history.history["loss"]).all()
    np.testing.assert_array_equal(result.labels[0][scribbles != 255], scribbles[scribbles != 255])
    # Round 1 propagates from scribbles alone, which on flat regions recovers the disc (up to a
    # corner pixel that SLIC merges into a disc superpixel at this size).
    assert np.mean(result.labels[0] == np.stack([mask, mask[:, ::-1]])) >= 0.99


# Bad input


def test_image_without_scribbles_is_an_error():
    image, _ = _disc_image()
    with pytest.raises(ValueError, match="no scribble pixel"):
        propagate_scribbles(image, np.full((40, 48), 255, np.uint8), num_classes=2)


def test_rounds_name_the_image_without_scribbles():
    model = kseg.testing.build_small_model("fcn8s", num_classes=2)
    images = np.zeros((2, 16, 16, 3), np.float32)
    scribbles = np.full((2, 16, 16), 255, np.uint8)
    scribbles[0, 4, 4] = 1
    with pytest.raises(ValueError, match="Image 1: .*no scribble pixel"):
        scribblesup_rounds(model, images, scribbles, n_segments=4)


def test_scribble_class_outside_the_model_is_named():
    image, _ = _disc_image()
    scribbles = np.full((40, 48), 255, np.uint8)
    scribbles[3, 3] = 5
    with pytest.raises(ValueError, match="class 5, outside 0..2"):
        propagate_scribbles(image, scribbles, num_classes=3)


def test_shape_mismatch_names_both_shapes():
    image, _ = _disc_image()
    with pytest.raises(ValueError, match=r"scribbles.shape=\(40, 40\).*image.shape=\(40, 48, 3\)"):
        propagate_scribbles(image, np.zeros((40, 40), np.uint8), num_classes=2)
    with pytest.raises(ValueError, match=r"probabilities.shape=\(40, 48, 2\)"):
        propagate_scribbles(
            image, np.zeros((40, 48), np.uint8), np.ones((40, 48, 2)), num_classes=3
        )
    with pytest.raises(ValueError, match=r"probabilities.shape=\(40, 47, 2\)"):
        propagate_scribbles(image, np.zeros((40, 48), np.uint8), np.ones((40, 47, 2)))


def test_image_outside_the_rgb_range_is_an_error():
    with pytest.raises(ValueError, match="RGB in \\[0, 255\\]"):
        propagate_scribbles(np.full((8, 8, 3), 300.0), np.zeros((8, 8), np.uint8), num_classes=1)


def test_missing_graph_cut_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gco", None)
    unary = np.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ImportError, match=r"kseg\[weak\]"):
        potts_alpha_expansion(unary, np.array([[0, 1]]), np.array([0.5]))
