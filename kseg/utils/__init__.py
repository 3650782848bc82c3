"""Small tools about networks rather than parts of them."""

from kseg.utils.padding import pad_to_multiple
from kseg.utils.receptive_field import receptive_field

__all__ = ["pad_to_multiple", "receptive_field"]
