from pathlib import Path

import numpy as np
import pytest

from kseg.inference.dense_crf import dense_crf, mean_field_logits

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dense_crf_camvid.npz"
# pydensecrf's README settings, used for the shared reference vectors.
README_SETTINGS = {
    "sxy_gaussian": 3,
    "compat_gaussian": 3,
    "sxy_bilateral": 80,
    "srgb_bilateral": 13,
    "compat_bilateral": 10,
}


@pytest.fixture
def shared_crf(shared_dir):
    path = shared_dir / "refs" / "densecrf_pydensecrf2.npz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return np.load(path)


def test_every_iteration_matches_pydensecrf(shared_crf):
    image = shared_crf["image_hwc_uint8"].astype("float32")
    unary = shared_crf["unary_lhw"].transpose(1, 2, 0)
    for iterations in range(6):
        # Eagerly: one tf.function trace per iteration count would dominate the test's time.
        logits = mean_field_logits(image, unary, iterations=iterations, **README_SETTINGS)
        q = np.exp(logits) / np.sum(np.exp(logits), axis=-1, keepdims=True)
        expected = shared_crf["q_iters_lhw"][iterations].transpose(1, 2, 0)
        # Same appearance lattice as pydensecrf; the smoothness kernel is exact here where
        # pydensecrf approximates it with a 2-D lattice (0.025 apart on their own, see below).
        np.testing.assert_allclose(q, expected, atol=0.025)
    np.testing.assert_array_equal(q.argmax(-1), shared_crf["labels_hw"])


def test_smoothness_kernel_alone_matches_exact_mean_field(shared_crf):
    q = dense_crf(
        shared_crf["image_hwc_uint8"],
        shared_crf["prob_lhw"].transpose(1, 2, 0),
        iterations=5,
        **{**README_SETTINGS, "compat_bilateral": 0},
    )
    exact = shared_crf["gauss_only_q_exact_iters_lhw"][5].transpose(1, 2, 0)
    # Truncating the kernel at 3 sigma is the only approximation left.
    np.testing.assert_allclose(np.asarray(q), exact, atol=5e-3)
    lattice = shared_crf["gauss_only_q_iters_lhw"][5].transpose(1, 2, 0)
    np.testing.assert_allclose(np.asarray(q), lattice, atol=0.03)


def test_labels_agree_with_exact_mean_field(shared_crf):
    q = dense_crf(
        shared_crf["image_hwc_uint8"],
        shared_crf["prob_lhw"].transpose(1, 2, 0),
        iterations=5,
        **README_SETTINGS,
    )
    exact = shared_crf["q_exact_iters_lhw"][5].transpose(1, 2, 0)
    np.testing.assert_allclose(np.asarray(q), exact, atol=0.01)
    assert np.mean(np.asarray(q).argmax(-1) == exact.argmax(-1)) >= 0.99


@pytest.mark.parametrize("setting", ["deeplab", "readme"])
def test_camvid_labels_agree_with_pydensecrf_and_exact(setting):
    fixture = np.load(FIXTURE)
    parameters = dict(zip(fixture["settings_order"], fixture[f"{setting}_settings"].tolist()))
    logits = fixture["scores_uint8"].astype("float32") / 8.0
    q = dense_crf(
        fixture["image_uint8"],
        logits,
        from_logits=True,
        iterations=int(fixture["iterations"]),
        **parameters,
    )
    labels = np.asarray(q).argmax(-1)
    assert np.mean(labels == fixture[f"{setting}_labels_pydensecrf"]) >= 0.995
    assert np.mean(labels == fixture[f"{setting}_labels_exact"]) >= 0.95
    # The CRF must actually move labels towards the annotation, as in DeepLab.
    valid = fixture["labels_true"] < 11
    before = np.mean((logits.argmax(-1) == fixture["labels_true"])[valid])
    after = np.mean((labels == fixture["labels_true"])[valid])
    assert after > before + 0.1


def test_zero_weights_leave_the_unary_softmax():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    logits = rng.normal(size=(9, 11, 4)).astype("float32")
    q = dense_crf(
        image, logits, from_logits=True, iterations=2, compat_gaussian=0, compat_bilateral=0
    )
    softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(q), softmax, atol=1e-6)


def test_logits_and_probabilities_give_the_same_result():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    logits = rng.normal(size=(10, 12, 3)).astype("float32")
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    from_logits = dense_crf(image, logits, from_logits=True, iterations=3)
    from_probabilities = dense_crf(image, probabilities, iterations=3)
    np.testing.assert_allclose(np.asarray(from_logits), np.asarray(from_probabilities), atol=1e-5)


def test_batch_equals_images_one_by_one():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2, 8, 9, 3), dtype=np.uint8)
    logits = rng.normal(size=(2, 8, 9, 3)).astype("float32")
    batch = np.asarray(dense_crf(images, logits, from_logits=True, iterations=3))
    for index in range(2):
        single = dense_crf(images[index], logits[index], from_logits=True, iterations=3)
        np.testing.assert_allclose(batch[index], np.asarray(single), atol=1e-6)


def test_two_colour_regions_take_their_majority_label():
    # Left half dark, right half bright; unaries prefer label 0 on the left and label 1 on
    # the right with a few contrary pixels, which the appearance kernel must overrule.
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, 8:] = 200
    truth = np.zeros((16, 16), np.int64)
    truth[:, 8:] = 1
    noisy = truth.copy()
    noisy[3, 2] = noisy[12, 5] = 1
    noisy[4, 12] = noisy[10, 9] = 0
    probabilities = np.where(np.eye(2)[noisy] > 0, 0.6, 0.4).astype("float32")
    q = dense_crf(image, probabilities, iterations=5, sxy_bilateral=20, srgb_bilateral=10)
    np.testing.assert_array_equal(np.asarray(q).argmax(-1), truth)


def test_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="share batch, height and width"):
        dense_crf(np.zeros((8, 8, 3), np.uint8), np.ones((8, 9, 2), "float32") / 2)


def test_rejects_non_rgb_images():
    with pytest.raises(ValueError, match="RGB"):
        dense_crf(np.zeros((8, 8, 1), np.uint8), np.ones((8, 8, 2), "float32") / 2)


@pytest.mark.parametrize(
    "argument, value",
    [("iterations", -1), ("iterations", 2.5), ("sxy_bilateral", 0), ("compat_gaussian", -1.0)],
)
def test_rejects_bad_parameters(argument, value):
    with pytest.raises(ValueError, match=f"Received: {argument}="):
        dense_crf(
            np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 2), "float32") / 2, **{argument: value}
        )


def test_a_sweep_over_settings_traces_one_graph(caplog):
    """DeepLab cross-validates w1, theta_alpha, theta_beta: each setting must not retrace."""
    from kseg.inference.dense_crf import _dense_crf_graph

    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (12, 14, 3), dtype=np.uint8)
    probabilities = rng.dirichlet(np.ones(3), (12, 14)).astype(np.float32)
    dense_crf(image, probabilities, iterations=2)
    traces = _dense_crf_graph.experimental_get_tracing_count()
    settings = [
        {"compat_bilateral": w, "sxy_bilateral": theta_alpha, "srgb_bilateral": theta_beta}
        for w in (3, 5)
        for theta_alpha in (30, 60)
        for theta_beta in (3, 7)
    ]
    with caplog.at_level("WARNING"):
        results = [
            dense_crf(image, probabilities, iterations=1 + i % 3, **s)
            for i, s in enumerate(settings + [{"sxy_gaussian": 2.5}, {"sxy_gaussian": 0.5}])
        ]
    assert _dense_crf_graph.experimental_get_tracing_count() == traces
    assert "retracing" not in caplog.text
    # The settings still matter: the sweep gives different marginals.
    assert len({np.asarray(q).round(5).tobytes() for q in results}) == len(results)
