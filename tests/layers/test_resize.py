import keras
import numpy as np
import pytest

from kseg.layers import ResizeToMatch
from kseg.testing import run_layer_test


@pytest.mark.parametrize("name", ["up_11x16", "up_x2_10x14", "down_3x4", "up_x8_40x56"])
def test_bilinear_matches_pytorch_half_pixel_interpolation(shared_dir, name):
    refs = np.load(shared_dir / "refs" / "interpolate_bilinear.npz")
    source = refs["x_nhwc"]
    expected = refs[f"{name}_ac0_nhwc"]
    reference = np.zeros(expected.shape[:3] + (1,), "float32")
    out = ResizeToMatch()([source, reference])
    np.testing.assert_allclose(np.asarray(out), expected, atol=2e-5)


def test_nearest_keeps_only_source_values():
    labels = np.random.default_rng(0).integers(0, 5, size=(1, 7, 9, 1)).astype("float32")
    out = np.asarray(ResizeToMatch("nearest")([labels, np.zeros((1, 29, 31, 1), "float32")]))
    assert out.shape == (1, 29, 31, 1)
    assert set(np.unique(out)) <= set(np.unique(labels))


def test_layer_contract():
    run_layer_test(ResizeToMatch, {}, [(2, 5, 6, 3), (2, 13, 17, 1)], expected_channels=3)


def test_float32_output_under_mixed_policy():
    keras.config.set_dtype_policy("mixed_bfloat16")
    out = ResizeToMatch(dtype="float32")([np.ones((1, 4, 4, 2), "float32"), np.ones((1, 8, 8, 1))])
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_rejects_unknown_interpolation():
    with pytest.raises(ValueError, match="interpolation"):
        ResizeToMatch("bicubic-ish")
