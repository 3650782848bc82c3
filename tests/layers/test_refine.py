import keras
import numpy as np
import pytest

from kseg.layers.refine import (
    ChainedResidualPooling,
    MultiResolutionFusion,
    RefineNetBlock,
    ResidualConvUnit,
)
from kseg.testing import run_layer_test

RNG = np.random.default_rng(0)


def _conv3x3(x, kernel, bias=None):
    """'same' 3x3 cross-correlation in numpy, as Conv2D computes it."""
    height, width = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = sum(
        padded[:, i : i + height, j : j + width, :] @ kernel[i, j]
        for i in range(3)
        for j in range(3)
    )
    return out if bias is None else out + bias


def _max_pool_same(x, size):
    """Stride-1 max pooling whose padding never wins (padded with -inf)."""
    half = size // 2
    height, width = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (half, half), (half, half), (0, 0)), constant_values=-np.inf)
    windows = [
        padded[:, i : i + height, j : j + width, :] for i in range(size) for j in range(size)
    ]
    return np.max(windows, axis=0)


def _relu(x):
    return np.maximum(x, 0.0)


def _rcu_params(channels):
    # conv1 3x3 with bias, conv2 3x3 without.
    return 9 * channels * channels + channels + 9 * channels * channels


def _randomise(layer):
    for weight in layer.weights:
        weight.assign(RNG.normal(scale=0.2, size=weight.shape).astype("float32"))


# --- residual conv unit ---------------------------------------------------------------------


def test_rcu_is_identity_plus_relu_conv_relu_conv_without_batchnorm():
    x = RNG.normal(size=(2, 7, 9, 4)).astype("float32")
    unit = ResidualConvUnit(4)
    unit.build(x.shape)
    _randomise(unit)
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in vars(unit).values()
    )
    assert sorted(w.path.split("/")[-1] for w in unit.weights) == ["bias", "kernel", "kernel"]
    expected = x + _conv3x3(
        _relu(_conv3x3(_relu(x), unit.conv1.kernel.numpy(), unit.conv1.bias.numpy())),
        unit.conv2.kernel.numpy(),
    )
    np.testing.assert_allclose(np.asarray(unit(x)), expected, rtol=1e-4, atol=1e-4)


def test_rcu_with_zero_second_kernel_is_the_identity():
    x = RNG.normal(size=(1, 5, 6, 3)).astype("float32")
    unit = ResidualConvUnit(3)
    unit.build(x.shape)
    _randomise(unit)
    unit.conv2.kernel.assign(np.zeros(unit.conv2.kernel.shape, "float32"))
    np.testing.assert_array_equal(np.asarray(unit(x)), x)


def test_rcu_parameter_count():
    unit = ResidualConvUnit(16)
    unit.build((None, None, None, 16))
    assert unit.count_params() == _rcu_params(16)


def test_rcu_rejects_a_width_mismatch():
    with pytest.raises(ValueError, match="16 channels"):
        ResidualConvUnit(16)(np.zeros((1, 4, 4, 8), "float32"))
    with pytest.raises(ValueError, match="filters"):
        ResidualConvUnit(0)


def test_untrained_rcu_is_the_identity():
    # The zero-initialised second convolution makes a fresh unit pass its input through,
    # whatever the first convolution's random kernel.
    x = RNG.normal(size=(2, 6, 7, 5)).astype("float32")
    unit = ResidualConvUnit(5)
    np.testing.assert_array_equal(np.asarray(unit(x)), x)
    assert np.any(unit.conv1.kernel.numpy() != 0)
    plain = ResidualConvUnit(5, residual_initializer="glorot_uniform")
    assert not np.allclose(np.asarray(plain(x)), x)


def test_rcu_layer_contract():
    # A random second kernel, so that the save/reload comparison sees the weights.
    out = run_layer_test(
        ResidualConvUnit,
        {"filters": 4, "residual_initializer": "glorot_uniform"},
        (2, 9, 11, 4),
        expected_channels=4,
    )
    assert out.shape == (2, 9, 11, 4)


# --- chained residual pooling ---------------------------------------------------------------


@pytest.mark.parametrize("num_blocks", [1, 2, 4])
def test_crp_with_zero_kernels_is_the_identity(num_blocks):
    x = RNG.normal(size=(1, 8, 7, 5)).astype("float32")
    layer = ChainedResidualPooling(5, num_blocks=num_blocks)
    layer.build(x.shape)
    for conv in layer.convs:
        conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
    np.testing.assert_array_equal(np.asarray(layer(x)), x)


def test_untrained_crp_is_the_identity():
    x = RNG.normal(size=(1, 8, 7, 5)).astype("float32")
    np.testing.assert_array_equal(np.asarray(ChainedResidualPooling(5, num_blocks=4)(x)), x)


def test_crp_sums_a_chain_of_pool_then_conv_blocks():
    x = RNG.normal(size=(2, 9, 8, 3)).astype("float32")
    layer = ChainedResidualPooling(3, num_blocks=2, pool_size=5)
    layer.build(x.shape)
    _randomise(layer)
    first = _conv3x3(_max_pool_same(x, 5), layer.convs[0].kernel.numpy())
    second = _conv3x3(_max_pool_same(first, 5), layer.convs[1].kernel.numpy())
    np.testing.assert_allclose(np.asarray(layer(x)), x + first + second, rtol=1e-4, atol=1e-4)


def test_crp_parameter_count_is_one_bias_free_conv_per_block():
    layer = ChainedResidualPooling(12, num_blocks=4)
    layer.build((None, None, None, 12))
    assert layer.count_params() == 4 * 9 * 12 * 12


def test_crp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pool_size"):
        ChainedResidualPooling(4, pool_size=4)
    with pytest.raises(ValueError, match="num_blocks"):
        ChainedResidualPooling(4, num_blocks=0)


def test_crp_layer_contract():
    out = run_layer_test(
        ChainedResidualPooling,
        {"filters": 4, "num_blocks": 2, "residual_initializer": "glorot_uniform"},
        (2, 9, 11, 4),
        expected_channels=4,
    )
    assert out.shape == (2, 9, 11, 4)


# --- multi-resolution fusion ----------------------------------------------------------------


def test_mrf_with_a_single_input_passes_it_through_unchanged():
    # Lin et al. 2017, Sec. 3.2: a single path goes through the fusion block without changes.
    x = RNG.normal(size=(1, 5, 6, 7)).astype("float32")
    layer = MultiResolutionFusion(7, num_inputs=1)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    assert layer.count_params() == 0


def test_mrf_at_equal_resolution_is_the_sum_of_the_adapted_paths():
    a = RNG.normal(size=(2, 6, 5, 4)).astype("float32")
    b = RNG.normal(size=(2, 6, 5, 8)).astype("float32")
    layer = MultiResolutionFusion(4, num_inputs=2)
    layer.build([a.shape, b.shape])
    _randomise(layer)
    expected = _conv3x3(a, layer.adapt_convs[0].kernel.numpy()) + _conv3x3(
        b, layer.adapt_convs[1].kernel.numpy()
    )
    np.testing.assert_allclose(np.asarray(layer([a, b])), expected, rtol=1e-4, atol=1e-4)


def test_mrf_takes_the_first_input_size_and_the_given_channels():
    # Sizes of a 65x97 image at strides 4, 8 and 16 (ceil division): not multiples of each other.
    fine = np.zeros((1, 17, 25, 6), "float32")
    mid = RNG.normal(size=(1, 9, 13, 10)).astype("float32")
    coarse = RNG.normal(size=(1, 5, 7, 12)).astype("float32")
    layer = MultiResolutionFusion(6, num_inputs=3)
    out = np.asarray(layer([fine, mid, coarse]))
    assert out.shape == (1, 17, 25, 6)
    assert layer.compute_output_shape(
        [(None, None, None, 6), (None, None, None, 10), (None, None, None, 12)]
    ) == (
        None,
        None,
        None,
        6,
    )
    # Each path is adapted by one bias-free 3x3 conv to the output width.
    assert layer.count_params() == 9 * 6 * (6 + 10 + 12)


def test_mrf_upsamples_a_coarse_constant_to_the_same_constant():
    # Bilinear upsampling keeps constants; a centre-tap kernel keeps the map as it is.
    fine = np.zeros((1, 8, 10, 2), "float32")
    coarse = np.full((1, 3, 4, 2), 1.5, "float32")
    layer = MultiResolutionFusion(2, num_inputs=2)
    layer.build([fine.shape, coarse.shape])
    centre = np.zeros((3, 3, 2, 2), "float32")
    centre[1, 1] = np.eye(2)
    for conv in layer.adapt_convs:
        conv.kernel.assign(centre)
    np.testing.assert_allclose(np.asarray(layer([fine, coarse])), 1.5, rtol=1e-6)


def test_mrf_rejects_a_wrong_number_of_inputs():
    layer = MultiResolutionFusion(4, num_inputs=3)
    with pytest.raises(ValueError, match="expects 3 inputs"):
        layer([np.zeros((1, 4, 4, 4), "float32")] * 2)


def test_mrf_layer_contract():
    out = run_layer_test(
        MultiResolutionFusion,
        {"filters": 4, "num_inputs": 2},
        [(2, 9, 11, 4), (2, 5, 6, 6)],
        expected_channels=4,
    )
    assert out.shape == (2, 9, 11, 4)


# --- RefineNet block ------------------------------------------------------------------------


def _block_params(path_filters, crp_blocks, adaptive_units=2, output_units=1):
    width = min(path_filters)
    fusion = 9 * width * sum(path_filters) if len(path_filters) > 1 else 0
    return (
        adaptive_units * sum(_rcu_params(c) for c in path_filters)
        + fusion
        + crp_blocks * 9 * width * width
        + output_units * _rcu_params(width)
    )


@pytest.mark.parametrize("path_filters, crp_blocks", [((16,), 2), ((8, 16), 2), ((8, 8), 4)])
def test_block_parameter_count_follows_the_paper_structure(path_filters, crp_blocks):
    block = RefineNetBlock(path_filters, crp_blocks=crp_blocks)
    block.build([(None, None, None, c) for c in path_filters])
    assert block.count_params() == _block_params(path_filters, crp_blocks)


def test_block_output_is_at_the_first_path_size_and_smallest_width():
    fine = RNG.normal(size=(1, 17, 25, 8)).astype("float32")
    coarse = RNG.normal(size=(1, 9, 13, 16)).astype("float32")
    out = RefineNetBlock((8, 16))([fine, coarse])
    assert out.shape == (1, 17, 25, 8)


def test_block_without_units_and_zero_pooling_is_relu_of_the_fusion():
    # With no RCUs and zeroed pooling convs, the block reduces to ReLU(fusion(paths)),
    # which pins down the order fusion -> ReLU -> chained pooling.
    a = RNG.normal(size=(1, 6, 5, 4)).astype("float32")
    b = RNG.normal(size=(1, 6, 5, 4)).astype("float32")
    block = RefineNetBlock((4, 4), adaptive_units=0, output_units=0)
    block.build([a.shape, b.shape])
    _randomise(block)
    for conv in block.pooling.convs:
        conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
    convs = block.fusion.adapt_convs
    expected = _relu(_conv3x3(a, convs[0].kernel.numpy()) + _conv3x3(b, convs[1].kernel.numpy()))
    np.testing.assert_allclose(np.asarray(block([a, b])), expected, rtol=1e-4, atol=1e-4)


def test_untrained_single_path_block_is_a_relu():
    # Identity units, a pass-through fusion and an identity chained pooling leave only the
    # ReLU before the pooling: the block starts as relu(x), however deep its chain.
    x = RNG.normal(size=(1, 7, 6, 4)).astype("float32")
    block = RefineNetBlock((4,), crp_blocks=4, output_units=3)
    np.testing.assert_array_equal(np.asarray(block(x)), _relu(x))


def test_untrained_refinenet_logits_keep_a_unit_scale():
    # Without batch norm, a Glorot start compounds over the cascade's residual sums; the
    # zero-initialised residual branches keep the untrained logits near the scale of the
    # fusion convolutions, as a normalised network would start.
    from kseg.models import RefineNet

    keras.utils.set_random_seed(0)
    image = RNG.uniform(0, 255, size=(1, 64, 64, 3)).astype("float32")
    model = RefineNet(num_classes=5, backbone="tiny", num_filters=16)
    zero_start = np.std(model.predict(image, verbose=0))
    plain = RefineNet(num_classes=5, backbone="tiny", num_filters=16)
    for layer in plain._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (ResidualConvUnit, ChainedResidualPooling)):
            convs = [layer.conv2] if isinstance(layer, ResidualConvUnit) else layer.convs
            for conv in convs:
                conv.kernel.assign(keras.initializers.GlorotUniform()(conv.kernel.shape))
    plain_start = np.std(plain.predict(image, verbose=0))
    assert plain_start > 3 * zero_start


def test_block_rejects_mismatched_paths():
    with pytest.raises(ValueError, match="input path 1"):
        RefineNetBlock((8, 16))(
            [np.zeros((1, 4, 4, 8), "float32"), np.zeros((1, 2, 2, 8), "float32")]
        )
    with pytest.raises(ValueError, match="path_filters"):
        RefineNetBlock(8)


def test_block_layer_contract():
    out = run_layer_test(
        RefineNetBlock,
        {"path_filters": [4, 8], "crp_blocks": 2, "residual_initializer": "glorot_uniform"},
        [(2, 9, 11, 4), (2, 5, 6, 8)],
        expected_channels=4,
    )
    assert out.shape == (2, 9, 11, 4)
