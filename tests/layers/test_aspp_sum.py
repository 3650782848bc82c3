import numpy as np
import pytest

from kseg.layers.aspp_sum import ASPPSum
from kseg.testing import run_layer_test


def test_layer_contract_and_dynamic_size():
    out = run_layer_test(ASPPSum, {"num_classes": 5, "dilation_rates": (1, 2)}, (2, 9, 11, 4))
    assert out.shape == (2, 9, 11, 5)


def test_parameter_count_is_one_3x3_classifier_per_rate():
    # ASPP-L on ResNet-101's 2048 channels for 21 classes: 4 x (3*3*2048*21 + 21).
    layer = ASPPSum(num_classes=21)
    layer.build((None, None, None, 2048))
    assert layer.count_params() == 4 * (3 * 3 * 2048 * 21 + 21) == 1_548_372


def test_impulse_response_lies_on_each_rates_3x3_lattice():
    # An atrous 3x3 kernel with rate r reads the input at offsets {-r, 0, r}^2 only (Chen et
    # al. 2017, Eq. 1), so a single lit pixel reaches exactly those positions of each branch.
    rates, size, centre = (2, 5), 21, 10
    layer = ASPPSum(num_classes=1, dilation_rates=rates)
    impulse = np.zeros((1, size, size, 1), "float32")
    impulse[0, centre, centre, 0] = 1.0
    layer(impulse)
    for branch in layer.branches:
        branch.kernel.assign(np.ones((3, 3, 1, 1), "float32"))
        branch.bias.assign(np.zeros((1,), "float32"))
    response = np.asarray(layer(impulse))[0, :, :, 0]

    expected = np.zeros((size, size), "float32")
    for rate in rates:
        for dy in (-rate, 0, rate):
            for dx in (-rate, 0, rate):
                expected[centre + dy, centre + dx] += 1.0
    np.testing.assert_allclose(response, expected, atol=1e-6)


def test_output_is_the_sum_of_the_branches():
    layer = ASPPSum(num_classes=3, dilation_rates=(1, 3, 4))
    x = np.random.default_rng(0).normal(size=(2, 12, 10, 6)).astype("float32")
    summed = np.asarray(layer(x))
    branches = sum(np.asarray(branch(x)) for branch in layer.branches)
    np.testing.assert_allclose(summed, branches, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 3, "dilation_rates": ()}, "dilation_rates"),
        ({"num_classes": 3, "dilation_rates": (6, 0)}, "dilation_rates"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ASPPSum(**kwargs)
