"""How the deployment benchmark scores an exported model's outputs against the Keras model's."""

import numpy as np
import pytest
from benchmark_scripts import load_benchmark

deployment = load_benchmark("deployment_speed")


def _logits():
    # Four pixels, two classes: pixel 0 is a near-tie (margin 0.01 of the largest logit 10).
    return np.array([[[5.0, 5.1], [10.0, 0.0], [0.0, 8.0], [3.0, -3.0]]], "float32")


def test_identical_outputs_agree_everywhere():
    expected = _logits()
    result = deployment.agreement(expected.argmax(-1), expected.copy(), expected)
    assert result["label_agreement"] == 1.0
    assert result["label_agreement_clear_pixels"] == 1.0
    assert result["max_abs_logit_difference_relative"] == 0.0
    assert result["clear_pixel_share"] == 0.75


def test_a_swapped_near_tie_counts_against_all_pixels_but_not_the_clear_ones():
    expected = _logits()
    logits = expected.copy()
    logits[0, 0] = [5.1, 5.0]
    result = deployment.agreement(logits.argmax(-1), logits, expected)
    assert result["label_agreement"] == 0.75
    assert result["label_agreement_clear_pixels"] == 1.0
    assert result["max_abs_logit_difference_relative"] == pytest.approx(0.1 / 10)


def test_a_swapped_clear_pixel_counts_against_both():
    expected = _logits()
    logits = expected.copy()
    logits[0, 3] = [-3.0, 3.0]
    result = deployment.agreement(logits.argmax(-1), logits, expected)
    assert result["label_agreement"] == 0.75
    assert result["label_agreement_clear_pixels"] == pytest.approx(2 / 3)
    assert result["max_abs_logit_difference_relative"] == pytest.approx(6 / 10)
