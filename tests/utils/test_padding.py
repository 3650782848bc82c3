import numpy as np
import pytest
import tensorflow as tf

from kseg.utils import pad_bottom_right_to_multiple


@pytest.mark.parametrize(
    "height, width, multiple", [(100, 130, 64), (1, 1, 8), (17, 31, 16), (5, 12, 3)]
)
def test_pads_only_the_bottom_and_right_with_zeros_like_numpy_pad(height, width, multiple):
    images = np.random.default_rng(0).normal(size=(2, height, width, 3)).astype("float32")
    padded = pad_bottom_right_to_multiple(images, multiple).numpy()
    pad_h = -height % multiple
    pad_w = -width % multiple
    expected = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    np.testing.assert_array_equal(padded, expected)
    assert padded.shape[1] % multiple == 0 and padded.shape[2] % multiple == 0


def test_sizes_already_a_multiple_are_untouched():
    images = np.random.default_rng(1).normal(size=(1, 32, 48, 2)).astype("float32")
    np.testing.assert_array_equal(pad_bottom_right_to_multiple(images, 16).numpy(), images)


def test_sizes_are_read_at_run_time():
    pad = tf.function(
        lambda x: pad_bottom_right_to_multiple(x, 8),
        input_signature=[tf.TensorSpec((None, None, None, 1), tf.float32)],
    )
    assert pad(tf.zeros((1, 9, 17, 1))).shape == (1, 16, 24, 1)
    assert pad(tf.zeros((2, 8, 8, 1))).shape == (2, 8, 8, 1)
