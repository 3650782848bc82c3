import keras
import numpy as np
import pytest

from kseg.layers import ASPP, ConvBNReLU
from kseg.layers.aspp import aspp_rates
from kseg.testing import run_layer_test


def _conv_parameters(in_channels, out_channels, kernel, separable):
    if separable:
        return (
            kernel * kernel * in_channels
            + 4 * in_channels
            + in_channels * out_channels
            + 4 * out_channels
        )
    return kernel * kernel * in_channels * out_channels + 4 * out_channels


@pytest.mark.parametrize("separable", [False, True])
def test_parameter_count_follows_branch_formula(separable):
    # 1x1 branch, three 3x3 branches, image pooling branch, 1x1 projection over 5 branches;
    # each BN holds 4 vectors (gamma, beta, moving mean, moving variance).
    channels, filters = 40, 16
    layer = ASPP(filters=filters, separable=separable)
    layer.build((None, None, None, channels))
    expected = (
        _conv_parameters(channels, filters, 1, False)
        + 3 * _conv_parameters(channels, filters, 3, separable)
        + _conv_parameters(channels, filters, 1, False)
        + _conv_parameters(5 * filters, filters, 1, False)
    )
    assert layer.count_params() == expected


def test_layer_contract_and_dynamic_size():
    out = run_layer_test(
        ASPP, {"filters": 8, "separable": True}, (2, 9, 11, 4), expected_channels=8
    )
    assert out.shape == (2, 9, 11, 8)


def test_image_pooling_branch_is_constant_over_space():
    layer = ASPP(filters=4, dilation_rates=(1,), image_pooling=True, dropout=0.0)
    x = np.random.default_rng(1).normal(size=(1, 6, 5, 3)).astype("float32")
    layer(x)
    pooled = layer.pooling_conv(np.mean(x, axis=(1, 2), keepdims=True))
    # Only the pooling branch sees the global mean: with the other branches' kernels zeroed,
    # the projection input varies only through it, so the output is constant over H and W.
    for branch in layer.branches:
        branch.conv.kernel.assign(np.zeros(branch.conv.kernel.shape, "float32"))
    out = np.asarray(layer(x, training=False))
    assert np.allclose(out, out[:, :1, :1, :], atol=1e-6)
    assert pooled.shape == (1, 1, 1, 4)


def test_rates_reach_the_receptive_field_they_promise():
    # A 3x3 atrous conv with rate r sees pixels r away and nothing in between.
    block = ConvBNReLU(1, 3, dilation_rate=4, use_activation=False)
    block.build((1, 17, 17, 1))
    block.conv.kernel.assign(np.ones((3, 3, 1, 1), "float32"))
    impulse = np.zeros((1, 17, 17, 1), "float32")
    impulse[0, 8, 8, 0] = 1.0
    response = np.asarray(block(impulse, training=False))[0, :, :, 0]
    touched = np.argwhere(np.abs(response - response.min()) > 1e-6)
    assert sorted({int(r) for r, _ in touched}) == [4, 8, 12]


def test_mixed_bfloat16_output_dtype():
    keras.config.set_dtype_policy("mixed_bfloat16")
    out = ASPP(filters=8)(np.ones((1, 33, 33, 4), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert out.shape == (1, 33, 33, 8)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dilation_rates"):
        ASPP(dilation_rates=(6, 0))
    with pytest.raises(ValueError, match="filters"):
        ASPP(filters=0)


@pytest.mark.parametrize(
    ("output_stride", "expected"), [(16, (6, 12, 18)), (8, (12, 24, 36)), (32, (3, 6, 9))]
)
def test_aspp_rates_keep_the_field_of_view_in_pixels(output_stride, expected):
    rates = aspp_rates(output_stride)
    assert rates == expected
    # rate x stride is the spacing of the taps in pixels: the same at every output stride.
    assert {rate * output_stride for rate in rates} == {96, 192, 288}
    assert aspp_rates(output_stride, [6, 12, 18, 24]) == (6, 12, 18, 24)


def test_aspp_rates_refuse_other_output_strides():
    with pytest.raises(ValueError, match="output_stride=4"):
        aspp_rates(4)
