"""Reading builder arguments and inference scales from text, as command lines give them."""

import ast


def parse_model_args(pairs):
    """Parses `NAME=VALUE` strings into builder keyword arguments.

    Each VALUE is read as a Python literal (`64`, `0.5`, `(1, 2)`, `None`) and kept as a string
    when it is not one, so `backbone=resnet50` needs no quotes.

    Args:
        pairs: the `NAME=VALUE` strings, or None.

    Returns:
        A dict from each NAME to its parsed VALUE.

    Raises:
        ValueError: when a string has no `=`.

    Example:
        >>> kseg.utils.parse_model_args(["num_filters=32", "backbone=resnet50"])
        {'num_filters': 32, 'backbone': 'resnet50'}
    """
    kwargs = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--model-arg takes NAME=VALUE. Received: {pair!r}")
        name, value = pair.split("=", 1)
        try:
            kwargs[name.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[name.strip()] = value
    return kwargs


def parse_scales(text):
    """Parses a comma-separated list of positive image scales, e.g. "0.75,1,1.25".

    Args:
        text: the scales, separated by commas.

    Returns:
        A tuple of floats.

    Raises:
        ValueError: when a part is not a number or a scale is not positive.

    Example:
        >>> kseg.utils.parse_scales("0.75,1,1.25")
        (0.75, 1.0, 1.25)
    """
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        scales = ()
    if not scales or any(scale <= 0 for scale in scales):
        raise ValueError(f"expected positive numbers like 0.5,1,1.5, got {text!r}")
    return scales
