"""Small tools about networks rather than parts of them."""

from kseg.utils.arguments import parse_model_args, parse_scales
from kseg.utils.padding import pad_bottom_right_to_multiple
from kseg.utils.receptive_field import receptive_field

__all__ = [
    "pad_bottom_right_to_multiple",
    "parse_model_args",
    "parse_scales",
    "receptive_field",
]
