"""OffsetCrop against numpy slicing: fixed, per-axis and centred offsets, any size."""

import keras
import numpy as np
import pytest

from kseg.layers import OffsetCrop
from kseg.testing import run_layer_test


def _pair(rng, source_hw, reference_hw, channels=3):
    source = rng.normal(size=(2, *source_hw, channels)).astype("float32")
    reference = np.zeros((2, *reference_hw, 1), "float32")
    return source, reference


@pytest.mark.parametrize(
    ("offset", "top", "left"), [(0, 0, 0), (5, 5, 5), ((1, 4), 1, 4), ([3, 0], 3, 0)]
)
def test_fixed_offset_is_the_numpy_slice(offset, top, left):
    source, reference = _pair(np.random.default_rng(0), (13, 11), (7, 6))
    cropped = np.asarray(OffsetCrop(offset)([source, reference]))
    np.testing.assert_array_equal(cropped, source[:, top : top + 7, left : left + 6, :])


@pytest.mark.parametrize(("source_hw", "top", "left"), [((13, 11), 3, 2), ((8, 9), 0, 1)])
def test_no_offset_centres_the_crop_rounding_down(source_hw, top, left):
    source, reference = _pair(np.random.default_rng(1), source_hw, (7, 6))
    cropped = np.asarray(OffsetCrop()([source, reference]))
    np.testing.assert_array_equal(cropped, source[:, top : top + 7, left : left + 6, :])


def test_sizes_known_only_at_run_time():
    source_in = keras.Input((None, None, 3))
    reference_in = keras.Input((None, None, 1))
    output = OffsetCrop((2, 1))([source_in, reference_in])
    assert output.shape == (None, None, None, 3)
    model = keras.Model([source_in, reference_in], output)
    for source_hw, reference_hw in (((9, 9), (4, 5)), ((20, 17), (11, 3))):
        source, reference = _pair(np.random.default_rng(2), source_hw, reference_hw)
        expected = source[:, 2 : 2 + reference_hw[0], 1 : 1 + reference_hw[1], :]
        np.testing.assert_array_equal(np.asarray(model([source, reference])), expected)


@pytest.mark.parametrize("offset", [(2, 1), None])
def test_layer_contract(offset):
    out = run_layer_test(OffsetCrop, {"offset": offset}, [(2, 9, 11, 4), (2, 5, 6, 1)])
    assert out.shape == (2, 5, 6, 4)
    assert OffsetCrop(offset=3).get_config()["offset"] == [3, 3]


@pytest.mark.parametrize("offset", [-1, (1, 2, 3), (1.5, 0), "2"])
def test_bad_offsets_are_named(offset):
    with pytest.raises(ValueError, match="offset"):
        OffsetCrop(offset)
