"""Small tools about networks rather than parts of them."""

from kseg.utils.receptive_field import receptive_field

__all__ = ["receptive_field"]
