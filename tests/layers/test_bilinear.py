"""Bilinear upsampling kernels and transposed convolutions against FCN's and PyTorch's outputs."""

import json

import keras
import numpy as np
import pytest

from kseg.layers.bilinear import (
    BilinearConvTranspose2D,
    BilinearUpsamplingKernel,
    bilinear_kernel_1d,
)
from kseg.layers.offset_crop import OffsetCrop
from kseg.testing import run_layer_test

KERNELS = ["f2_k4", "f4_k8", "f8_k16", "f16_k32", "f32_k64", "odd_k3", "odd_k5"]


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_equals_fcn_upsample_filt(shared_dir, name):
    expected = np.load(shared_dir / "refs" / "fcn_upsample_filt.npz")[name]
    size = expected.shape[0]
    kernel = np.asarray(BilinearUpsamplingKernel()((size, size, 3, 3)))
    for channel in range(3):
        np.testing.assert_allclose(kernel[:, :, channel, channel], expected, atol=1e-7)
    off_diagonal = kernel.copy()
    off_diagonal[:, :, range(3), range(3)] = 0
    assert not off_diagonal.any()


@pytest.mark.parametrize("factor", [2, 4, 8, 16, 32])
def test_profile_sums_and_peaks_match_the_reference_table(shared_dir, factor):
    table = json.loads((shared_dir / "refs" / "fcn_upsample_filt.json").read_text())[
        f"factor{factor}"
    ]
    profile = bilinear_kernel_1d(table["kernel_size"])
    np.testing.assert_allclose(profile, table["1d_profile"], atol=1e-7)
    kernel_2d = np.outer(profile, profile)
    assert kernel_2d.sum() == pytest.approx(table["sum_2d"])
    assert kernel_2d.max() == pytest.approx(table["peak_2d"])
    assert kernel_2d[0, 0] == pytest.approx(table["corner_2d"])


@pytest.mark.parametrize("factor,kernel_size", [(2, 4), (8, 16), (32, 64)])
def test_layer_equals_pytorch_fcn_bilinear_deconvolution(shared_dir, factor, kernel_size):
    refs = np.load(shared_dir / "refs" / "conv_transpose2d.npz")
    layer = BilinearConvTranspose2D(factor=factor, channels=4)
    out = np.asarray(layer(refs["x_nhwc"]))
    assert layer.kernel_size == kernel_size
    np.testing.assert_allclose(
        out, refs[f"fcn_bilinear_f{factor}_k{kernel_size}_y_nhwc"], atol=1e-4
    )


def torch_style_conv_transpose(x, kernel_tf, bias, stride, padding, output_padding=0):
    """Keras's unpadded transposed convolution cropped as PyTorch's `padding` does."""
    size = kernel_tf.shape[0]
    layer = keras.layers.Conv2DTranspose(kernel_tf.shape[2], size, strides=stride, padding="valid")
    layer.build(x.shape)
    layer.set_weights([kernel_tf, bias])
    full = np.asarray(layer(x))
    height = (x.shape[1] - 1) * stride - 2 * padding + size + output_padding
    width = (x.shape[2] - 1) * stride - 2 * padding + size + output_padding
    # Rows past the unpadded output (output_padding) only receive the bias.
    full = np.pad(full, ((0, 0), (0, output_padding), (0, output_padding), (0, 0)))
    full[:, full.shape[1] - output_padding :, :, :] = bias
    full[:, :, full.shape[2] - output_padding :, :] = bias
    return full[:, padding : padding + height, padding : padding + width]


@pytest.mark.parametrize(
    "config,stride,padding,output_padding",
    [
        ("k4s2p1", 2, 1, 0),
        ("k4s2p0", 2, 0, 0),
        ("k3s2p1op1", 2, 1, 1),
        ("k3s1p1", 1, 1, 0),
        ("k16s8p4", 8, 4, 0),
    ],
)
def test_keras_transposed_convolution_cropped_equals_pytorch(
    shared_dir, config, stride, padding, output_padding
):
    refs = np.load(shared_dir / "refs" / "conv_transpose2d.npz")
    out = torch_style_conv_transpose(
        refs["x_nhwc"], refs[f"{config}_w_tf"], refs[f"{config}_b"], stride, padding, output_padding
    )
    np.testing.assert_allclose(out, refs[f"{config}_y_nhwc"], atol=1e-4)


def test_bilinear_upsampling_reproduces_a_linear_ramp_inside_the_border():
    ramp = np.arange(6, dtype="float32")[None, None, :, None] * np.ones((1, 5, 1, 1), "float32")
    out = np.asarray(BilinearConvTranspose2D(factor=2, channels=1)(ramp))[0, 5, :, 0]
    # Away from the border every output pixel mixes two neighbours with weights 1/4 and 3/4
    # that sum to 1, so a slope-1 ramp comes out with slope 1/2.
    interior = out[2:-2]
    np.testing.assert_allclose(np.diff(interior), 0.5, atol=1e-6)


def test_kernel_shape_must_be_square_with_equal_channels():
    with pytest.raises(ValueError, match="Received: shape"):
        BilinearUpsamplingKernel()((4, 4, 3, 2))


def test_bad_factor_is_named_in_the_error():
    with pytest.raises(ValueError, match="factor=0"):
        BilinearConvTranspose2D(factor=0, channels=3)


def test_bilinear_layer_contract():
    run_layer_test(
        BilinearConvTranspose2D, {"factor": 2, "channels": 3}, (2, 5, 6, 3), expected_channels=3
    )


def test_frozen_layer_keeps_its_kernel_out_of_the_trainable_weights():
    layer = BilinearConvTranspose2D(factor=4, channels=2, trainable=False)
    layer.build((None, None, None, 2))
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 1


def test_offset_crop_takes_the_window_at_the_offset():
    source = np.arange(2 * 9 * 10 * 3, dtype="float32").reshape(2, 9, 10, 3)
    reference = np.zeros((2, 4, 5, 1), "float32")
    out = np.asarray(OffsetCrop(offset=(2, 3))([source, reference]))
    np.testing.assert_array_equal(out, source[:, 2:6, 3:8])
    centred = np.asarray(OffsetCrop()([source, reference]))
    np.testing.assert_array_equal(centred, source[:, 2:6, 2:7])


def test_offset_crop_rejects_negative_offsets():
    with pytest.raises(ValueError, match="offset=-1"):
        OffsetCrop(offset=-1)


def test_offset_crop_layer_contract():
    run_layer_test(
        OffsetCrop, {"offset": [1, 2]}, [(2, 9, 11, 3), (2, 5, 6, 1)], expected_channels=3
    )
