import numpy as np
import pytest

from kseg.layers.unet_input_size_check import UNetInputSizeCheck


def test_input_size_check_passes_images_through_and_reloads():
    check = UNetInputSizeCheck(smallest=44, step=4)
    assert UNetInputSizeCheck.from_config(check.get_config()).get_config() == check.get_config()
    image = np.random.default_rng(5).uniform(0, 255, (2, 48, 52, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(check(image)), image)
    with pytest.raises(ValueError, match="step=0"):
        UNetInputSizeCheck(smallest=44, step=0)
