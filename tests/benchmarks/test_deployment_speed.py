"""How the deployment benchmark scores an exported model's outputs against the Keras model's."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_module():
    # The module imports its sibling `results_io` as the scripts do, from benchmarks/ on the path.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            "deployment_speed", BENCHMARKS / "deployment_speed.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


deployment = _load_module()


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
