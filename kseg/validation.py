"""Shared constants and argument checkers.

Every checker takes the value first and the argument's name second, returns the value in its
normalised form, and raises a `ValueError` of the form "`name` must be ... Received: name=value",
so an error always names the argument and what was passed. Bools are not numbers here.

Example:
    >>> kseg.validation.validate_positive_int(np.int64(3), "iterations")
    3
    >>> kseg.validation.validate_fraction(2, "ratio")
    Traceback (most recent call last):
    ...
    ValueError: `ratio` must be a number in [0, 1]. Received: ratio=2
"""

import numbers

import numpy as np

IGNORE_LABEL = 255
"""The mask value that counts in no loss and no metric (the PASCAL VOC convention)."""


def _require(condition, value, name, requirement):
    if not condition:
        raise ValueError(f"`{name}` must be {requirement}. Received: {name}={value!r}")


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_ignore_label(value, name="ignore_label"):
    """Returns an integer ignore label as an `int`, or None (no ignore label)."""
    _require(value is None or _is_int(value), value, name, "an integer or None")
    return None if value is None else int(value)


def validate_positive_int(value, name):
    """Returns an integer >= 1 as an `int`."""
    _require(_is_int(value) and value >= 1, value, name, "a positive integer")
    return int(value)


def validate_num_classes(value, name="num_classes"):
    """Returns a class count, an integer >= 1, as an `int`."""
    return validate_positive_int(value, name)


def validate_non_negative_int(value, name):
    """Returns an integer >= 0 as an `int`."""
    _require(_is_int(value) and value >= 0, value, name, "an integer >= 0")
    return int(value)


def validate_positive_number(value, name):
    """Returns a real number > 0 unchanged (NaN is refused)."""
    _require(_is_real(value) and value > 0, value, name, "a positive number")
    return value


def validate_non_negative_number(value, name):
    """Returns a real number >= 0 unchanged (NaN is refused)."""
    _require(_is_real(value) and value >= 0, value, name, "a non-negative number")
    return value


def validate_finite_number(value, name):
    """Returns a finite real number as a `float`."""
    _require(_is_real(value) and np.isfinite(value), value, name, "a finite number")
    return float(value)


def validate_fraction(value, name):
    """Returns a real number in `[0, 1]` as a `float`."""
    _require(_is_real(value) and 0 <= value <= 1, value, name, "a number in [0, 1]")
    return float(value)


def validate_choice(value, name, choices):
    """Returns `value` if it is one of `choices`."""
    _require(value in choices, value, name, f"one of {tuple(choices)}")
    return value


def validate_size(value, name):
    """Returns a positive integer, or a pair of them, as a `(height, width)` tuple of ints.

    Integral floats such as `256.0` count as integers.
    """
    pair = (value, value) if _is_real(value) else tuple(np.ravel(np.asarray(value, dtype=object)))
    _require(
        len(pair) == 2
        and all(_is_real(side) and float(side).is_integer() and side >= 1 for side in pair),
        value,
        name,
        "a positive integer or a (height, width) pair of them",
    )
    return int(pair[0]), int(pair[1])
