from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.layers.pyramid_pooling import PyramidPooling, adaptive_average_pooling_2d
from kseg.testing import run_layer_test

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "adaptive_avg_pool.npz"
SHARED_REFS = Path(__file__).resolve().parents[2] / ".." / "shared" / "refs"
BINS = (1, 2, 3, 6)


@pytest.fixture(scope="module")
def torch_vectors():
    return np.load(FIXTURE)


@pytest.fixture(scope="module")
def shared_vectors():
    path = SHARED_REFS / "adaptive_avg_pool.npz"
    if not path.exists():
        pytest.skip(f"shared reference vectors not found at {path}")
    return np.load(path)


@pytest.mark.parametrize("size", ["7x9", "13x13", "5x3", "60x61"])
@pytest.mark.parametrize("bins", BINS)
def test_pooling_equals_torch_adaptive_avg_pool2d(torch_vectors, size, bins):
    # 7x9 and 13x13 are not divisible by 2, 3 or 6; 5x3 is smaller than 6 bins.
    x = torch_vectors[f"{size}_x"]
    got = adaptive_average_pooling_2d(x, bins).numpy()
    np.testing.assert_allclose(got, torch_vectors[f"{size}_bin{bins}"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", ["13x17", "60x60", "30x45"])
@pytest.mark.parametrize("bins", BINS)
def test_pooling_equals_shared_reference_vectors(shared_vectors, size, bins):
    x = shared_vectors[f"{size}_x_nhwc"]
    got = adaptive_average_pooling_2d(x, bins).numpy()
    np.testing.assert_allclose(got, shared_vectors[f"{size}_bin{bins}_nhwc"], rtol=1e-5, atol=1e-6)


def test_shared_vectors_show_a_fixed_pool_would_be_wrong(shared_vectors):
    # The negative control: a fixed AveragePooling2D (kernel floor(L/b)) disagrees where b
    # does not divide L, so the equality above cannot come from fixed windows.
    x = shared_vectors["13x17_x_nhwc"]
    fixed = keras.layers.AveragePooling2D(pool_size=(4, 5), strides=(4, 5))(x).numpy()[:, :3, :3]
    assert not np.allclose(fixed, shared_vectors["13x17_bin3_nhwc"], atol=1e-3)
    np.testing.assert_allclose(
        adaptive_average_pooling_2d(x, 3).numpy(), shared_vectors["13x17_bin3_nhwc"], atol=1e-6
    )


def test_pooling_works_on_sizes_known_only_at_run_time(torch_vectors):
    pool = tf.function(
        lambda x: adaptive_average_pooling_2d(x, 6),
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)],
    )
    for size in ("7x9", "5x3"):
        got = pool(tf.constant(torch_vectors[f"{size}_x"])).numpy()
        np.testing.assert_allclose(got, torch_vectors[f"{size}_bin6"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", ["7x9", "13x13", "5x3"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_levels_equal_torch_pool_then_interpolate(torch_vectors, size, align_corners):
    # With each level's 1x1 convolution, BN and ReLU made the identity on positive inputs,
    # the layer's extra channels are torch's adaptive pooling followed by F.interpolate.
    x = torch_vectors[f"{size}_x"]
    shift = 10.0  # keeps every value positive so the ReLU passes it through
    layer = PyramidPooling(bins=BINS, filters=3, align_corners=align_corners)
    layer.build(x.shape)
    for level in layer.levels:
        level.conv.kernel.assign(np.eye(3, dtype="float32")[None, None])
    out = layer(x + shift, training=False).numpy()
    # BN at inference divides by sqrt(1 + epsilon) with its initial statistics.
    scale = 1.0 / np.sqrt(1.0 + layer.levels[0].bn.epsilon)
    np.testing.assert_allclose(out[..., :3], x + shift, rtol=1e-6)
    for index, bins in enumerate(BINS):
        expected = (torch_vectors[f"{size}_bin{bins}_up_ac{int(align_corners)}"] + shift) * scale
        got = out[..., 3 + 3 * index : 6 + 3 * index]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_default_filters_are_a_quarter_of_the_input_channels():
    features = keras.Input((None, None, 64))
    layer = PyramidPooling()
    out = layer(features)
    assert out.shape == (None, None, None, 128)
    assert [level.filters for level in layer.levels] == [16, 16, 16, 16]
    # Four 1x1 convolutions without bias plus BN (4 vectors each).
    assert layer.count_params() == 4 * (64 * 16 + 4 * 16)


def test_layer_contract_and_dynamic_size():
    out = run_layer_test(
        PyramidPooling, {"bins": (1, 2, 3, 6), "filters": 2}, (2, 7, 9, 8), expected_channels=16
    )
    assert out.shape == (2, 7, 9, 16)


def test_layer_contract_with_default_filters():
    run_layer_test(PyramidPooling, {"align_corners": False}, (1, 5, 3, 8), expected_channels=16)


def test_input_smaller_than_the_largest_bin_keeps_its_size():
    x = np.random.default_rng(0).normal(size=(1, 2, 3, 4)).astype("float32")
    out = PyramidPooling(filters=2)(x, training=False)
    assert out.shape == (1, 2, 3, 12)
    assert np.all(np.isfinite(out.numpy()))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bins": ()}, "bins"),
        ({"bins": 6}, "bins"),
        ({"bins": (1, 0)}, "bins"),
        ({"filters": 0}, "filters"),
        ({"filters": 2.5}, "filters"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=f"Received: {message}="):
        PyramidPooling(**kwargs)


def test_too_few_channels_for_default_filters_is_reported():
    with pytest.raises(ValueError, match="channels=2"):
        PyramidPooling()(keras.Input((None, None, 2)))


RECT_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "adaptive_avg_pool_rect.npz"


def test_non_square_output_sizes_match_torch_adaptive_avg_pool2d():
    """`(h, w)` output sizes, as PyTorch takes them, including h or w larger than the input."""
    with np.load(RECT_FIXTURE) as vectors:
        vectors = dict(vectors)
    cases = [name for name in vectors if name.startswith("pooled_")]
    assert len(cases) == 20
    for name in cases:
        size, output = name[len("pooled_") :].split("_to_")
        out_h, out_w = (int(v) for v in output.split("x"))
        got = adaptive_average_pooling_2d(vectors[f"x_{size}"], (out_h, out_w)).numpy()
        np.testing.assert_allclose(got, vectors[name], atol=1e-6, err_msg=name)


@pytest.mark.parametrize("bins", [(3,), (3, 5, 2), (0, 2), (2.5, 3), "3"])
def test_a_bad_output_size_is_named(bins):
    with pytest.raises(ValueError, match="bins"):
        adaptive_average_pooling_2d(np.ones((1, 6, 6, 1), np.float32), bins)
