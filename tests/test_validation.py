import re

import numpy as np
import pytest

from kseg import validation


def test_ignore_label_is_the_voc_convention():
    assert validation.IGNORE_LABEL == 255


@pytest.mark.parametrize(
    "checker, good, expected",
    [
        (validation.validate_ignore_label, np.uint8(255), 255),
        (validation.validate_ignore_label, None, None),
        (validation.validate_num_classes, np.int64(21), 21),
        (validation.validate_positive_int, 1, 1),
        (validation.validate_non_negative_int, 0, 0),
        (validation.validate_positive_number, 1e-6, 1e-6),
        (validation.validate_non_negative_number, 0.0, 0.0),
        (validation.validate_finite_number, -3, -3.0),
        (validation.validate_fraction, 1, 1.0),
    ],
)
def test_accepted_values_come_back_normalised(checker, good, expected):
    result = checker(good, "arg") if checker.__defaults__ is None else checker(good)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "checker, bad",
    [
        (validation.validate_ignore_label, 2.5),
        (validation.validate_ignore_label, True),
        (validation.validate_num_classes, 0),
        (validation.validate_num_classes, 3.0),
        (validation.validate_positive_int, True),
        (validation.validate_positive_int, -1),
        (validation.validate_non_negative_int, -1),
        (validation.validate_non_negative_int, 1.5),
        (validation.validate_positive_number, 0),
        (validation.validate_positive_number, float("nan")),
        (validation.validate_positive_number, "1"),
        (validation.validate_non_negative_number, -0.5),
        (validation.validate_non_negative_number, False),
        (validation.validate_finite_number, float("inf")),
        (validation.validate_fraction, 1.5),
        (validation.validate_fraction, -0.1),
    ],
)
def test_each_error_names_the_argument_and_the_value(checker, bad):
    with pytest.raises(ValueError, match=re.escape("`my_arg` must")) as error:
        checker(bad, "my_arg")
    assert f"Received: my_arg={bad!r}" in str(error.value)


def test_choice_names_the_choices():
    assert validation.validate_choice("sum", "reduction", ("sum", "none")) == "sum"
    with pytest.raises(ValueError, match=re.escape("`reduction` must be one of ('sum', 'none')")):
        validation.validate_choice("median", "reduction", ["sum", "none"])


@pytest.mark.parametrize(
    "value, expected",
    [(5, (5, 5)), ((3, 4), (3, 4)), (np.int64(2), (2, 2)), ([256.0, 128], (256, 128))],
)
def test_size_gives_a_pair_of_ints(value, expected):
    size = validation.validate_size(value, "crop_size")
    assert size == expected and all(type(side) is int for side in size)


@pytest.mark.parametrize("value", [0, (3, 0), (3, 4, 5), (2.5, 3), True, "big", None])
def test_size_errors_name_the_argument(value):
    with pytest.raises(ValueError, match=re.escape(f"Received: crop_size={value!r}")):
        validation.validate_size(value, "crop_size")


def test_default_names():
    with pytest.raises(ValueError, match=re.escape("Received: num_classes=0")):
        validation.validate_num_classes(0)
    with pytest.raises(ValueError, match=re.escape("Received: ignore_label='x'")):
        validation.validate_ignore_label("x")
