"""Shared constants and argument checkers.

Every checker takes the value first and the argument's name second, returns the value in its
normalised form, and raises a `ValueError` of the form "`name` must be ... Received: name=value",
so an error always names the argument and what was passed.
"""

import numbers

import numpy as np

IGNORE_LABEL = 255
"""The mask value that counts in no loss and no metric (the PASCAL VOC convention)."""


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def validate_ignore_label(value, name="ignore_label"):
    """Returns an ignore label as a Python int, or None for no ignore label.

    Args:
        value: an integer (not a bool) or None.
        name: the argument's name, for the error message.

    Returns:
        `int(value)`, or None.

    Example:
        >>> kseg.validation.validate_ignore_label(np.uint8(255))
        255
    """
    if value is not None and not _is_int(value):
        raise ValueError(f"`{name}` must be an integer or None. Received: {name}={value!r}")
    return None if value is None else int(value)


def validate_positive_int(value, name):
    """Returns a positive integer (not a bool) as a Python int.

    Args:
        value: the value to check.
        name: the argument's name, for the error message.

    Returns:
        `int(value)`.

    Example:
        >>> kseg.validation.validate_positive_int(np.int64(3), "iterations")
        3
    """
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def validate_num_classes(value, name="num_classes"):
    """Returns a class count, a positive integer, as a Python int.

    Args:
        value: the value to check.
        name: the argument's name, for the error message.

    Returns:
        `int(value)`.

    Example:
        >>> kseg.validation.validate_num_classes(21)
        21
    """
    return validate_positive_int(value, name)


def validate_non_negative_int(value, name):
    """Returns an integer >= 0 (not a bool) as a Python int.

    Args:
        value: the value to check.
        name: the argument's name, for the error message.

    Returns:
        `int(value)`.

    Example:
        >>> kseg.validation.validate_non_negative_int(0, "iterations")
        0
    """
    if not _is_int(value) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0. Received: {name}={value!r}")
    return int(value)


def validate_positive_number(value, name):
    """Returns a real number > 0 (not a bool), unchanged.

    Args:
        value: the value to check.
        name: the argument's name, for the error message.

    Returns:
        `value`.

    Example:
        >>> kseg.validation.validate_positive_number(0.5, "sigma")
        0.5
    """
    if not _is_real(value) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
    return value


def validate_non_negative_number(value, name):
    """Returns a real number >= 0 (not a bool), unchanged.

    Args:
        value: the value to check.
        name: the argument's name, for the error message.

    Returns:
        `value`.

    Example:
        >>> kseg.validation.validate_non_negative_number(0, "weight")
        0
    """
    if not _is_real(value) or not value >= 0:
        raise ValueError(f"`{name}` must be a non-negative number. Received: {name}={value!r}")
    return value


def validate_finite_number(value, name):
    """Returns a finite real number (not a bool) as a Python float.

    Args:
        value: the value to check.
        name: the argument's name, for the error message.

    Returns:
        `float(value)`.

    Example:
        >>> kseg.validation.validate_finite_number(-2, "offset")
        -2.0
    """
    if not _is_real(value) or not np.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    return float(value)


def validate_fraction(value, name):
    """Returns a number in `[0, 1]` (not a bool) as a Python float.

    Args:
        value: the value to check.
        name: the argument's name, for the error message.

    Returns:
        `float(value)`.

    Example:
        >>> kseg.validation.validate_fraction(0.25, "fg_fraction")
        0.25
    """
    if not _is_real(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")
    return float(value)
