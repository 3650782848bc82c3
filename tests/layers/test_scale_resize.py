import keras
import numpy as np
import pytest

from kseg.layers.scale_resize import ScaleResize
from kseg.testing import run_layer_test


def test_layer_contract_and_dynamic_size():
    out = run_layer_test(ScaleResize, {"scale": 0.5}, (2, 9, 12, 3), expected_channels=3)
    assert out.shape == (2, 4, 6, 3)


@pytest.mark.parametrize("scale, size", [(0.75, (48, 72)), (0.5, (32, 48)), (1.5, (97, 145))])
def test_sides_are_floored_products_of_the_run_time_size(scale, size):
    image = keras.Input((None, None, 3))
    model = keras.Model(image, ScaleResize(scale)(image))
    assert model.output.shape == (None, None, None, 3)
    assert tuple(model(np.zeros((1, 65, 97, 3), "float32")).shape) == (1, *size, 3)


def test_halving_a_ramp_samples_between_pixel_pairs():
    # Half-pixel-centred bilinear resizing puts output pixel i at input coordinate
    # (i + 0.5) * 2 - 0.5 = 2i + 0.5, so a ramp f(x) = x becomes 2i + 0.5.
    ramp = np.tile(np.arange(16, dtype="float32"), (8, 1))[None, :, :, None]
    halved = np.asarray(ScaleResize(0.5)(ramp))[0, :, :, 0]
    np.testing.assert_allclose(halved, np.tile(2 * np.arange(8) + 0.5, (4, 1)), atol=1e-5)


def test_tiny_inputs_keep_one_pixel():
    assert tuple(ScaleResize(0.25)(np.zeros((1, 2, 3, 1), "float32")).shape) == (1, 1, 1, 1)


@pytest.mark.parametrize("kwargs", [{"scale": 0}, {"scale": -0.5}, {"scale": True}])
def test_bad_scale_is_named(kwargs):
    with pytest.raises(ValueError, match="scale"):
        ScaleResize(**kwargs)


def test_bad_interpolation_is_named():
    with pytest.raises(ValueError, match="interpolation"):
        ScaleResize(0.5, interpolation="bicubic")
