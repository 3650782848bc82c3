"""The context module: Yu & Koltun 2016's structure, fields and identity initialisation."""

import itertools

import numpy as np
import pytest

from kseg.layers.context_module import ContextIdentity, ContextModule
from kseg.utils.receptive_field import receptive_field

# Table 1 of Yu & Koltun 2016: layer, dilation, receptive field after it, width in units of C.
TABLE_1 = [
    ("ctx_conv1_1", 1, 3, 2),
    ("ctx_conv1_2", 1, 5, 2),
    ("ctx_conv2_1", 2, 9, 4),
    ("ctx_conv3_1", 4, 17, 8),
    ("ctx_conv4_1", 8, 33, 16),
    ("ctx_conv5_1", 16, 65, 32),
    ("ctx_fc1", 1, 67, 32),
    ("ctx_final", 1, 67, 1),
]


def context_parameters(c, multipliers):
    """Seven 3x3 layers of the given widths (in units of C), then a 1x1 layer back to C."""
    widths = [c] + [m * c for m in multipliers]
    convs = sum(9 * cin * cout + cout for cin, cout in itertools.pairwise(widths))
    return convs + widths[-1] * c + c


@pytest.mark.parametrize("variant", ["basic", "large"])
def test_context_module_fields_and_widths_follow_table_1(variant):
    context = ContextModule(6, variant)
    for name, dilation, field, multiplier in TABLE_1:
        layer = context.get_layer(name)
        assert layer.dilation_rate == (dilation, dilation)
        assert receptive_field(context, output=name) == field
        expected_width = 6 * (1 if variant == "basic" and name != "ctx_final" else multiplier)
        assert layer.filters == expected_width
    assert receptive_field(context) == 67
    # Every layer but the last is truncated by ReLU (the paper's table: "Truncation: Yes").
    activations = [context.get_layer(name).activation.__name__ for name, *_ in TABLE_1]
    assert activations == ["relu"] * 7 + ["linear"]


@pytest.mark.parametrize("c", [8, 21])
def test_context_parameter_counts_follow_the_architecture(c):
    assert ContextModule(c, "basic").count_params() == 7 * (9 * c * c + c) + c * c + c
    assert ContextModule(c, "basic").count_params() == context_parameters(c, [1] * 7)
    assert ContextModule(c, "large").count_params() == context_parameters(
        c, [2, 2, 4, 8, 16, 32, 32]
    )


def test_identity_kernel_matches_the_papers_formula_entry_by_entry():
    c, c_in, c_out = 3, 6, 12
    kernel = np.asarray(ContextIdentity(c)((3, 3, c_in, c_out)))
    for t_y, t_x, a, b in itertools.product(range(3), range(3), range(c_in), range(c_out)):
        at_centre = (t_y, t_x) == (1, 1)
        same_group = (a * c) // c_in == (b * c) // c_out
        assert kernel[t_y, t_x, a, b] == (c / c_out if at_centre and same_group else 0.0)
    noisy = np.asarray(ContextIdentity(c, stddev=0.01, seed=0)((3, 3, c_in, c_out)))
    off_identity = kernel == 0
    np.testing.assert_array_equal(noisy[~off_identity], kernel[~off_identity])
    assert 0.005 < noisy[off_identity].std() < 0.015


def test_untrained_basic_context_module_passes_its_input_through():
    context = ContextModule(4, "basic")
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 5, (2, 23, 17, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(context(scores)), scores, rtol=1e-6, atol=1e-6)
    # The first layer truncates: signed scores come out as relu(scores), as in the paper.
    signed = rng.normal(0, 3, (1, 11, 13, 4)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(context(signed)), np.maximum(signed, 0), rtol=1e-6, atol=1e-6
    )


def test_large_context_module_is_an_identity_up_to_its_tie_breaking_noise():
    context = ContextModule(3, "large")
    scores = np.random.default_rng(1).uniform(0, 1, (1, 20, 20, 3)).astype("float32")
    noisy = np.asarray(context(scores))
    assert 0 < np.abs(noisy - scores).max() < 0.2
    # Without the noise, widening by C / c_out and merging back is exactly the identity.
    for layer in context.layers[1:]:
        exact = ContextIdentity(3)(tuple(layer.kernel.shape))
        layer.set_weights([np.asarray(exact), np.zeros(layer.bias.shape)])
    np.testing.assert_allclose(np.asarray(context(scores)), scores, rtol=1e-5, atol=1e-6)


def test_identity_needs_base_channels_dividing_the_kernel_channels():
    with pytest.raises(ValueError, match="base_channels=3 must divide"):
        ContextIdentity(3)((3, 3, 4, 6))
