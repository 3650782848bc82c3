"""Custom Keras layers used by kseg's architectures, each registered as serializable."""

from kseg.layers.aspp import ASPP
from kseg.layers.conv_block import ConvBNReLU
from kseg.layers.resize import ResizeToMatch
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

__all__ = [
    "ASPP",
    "ConvBNReLU",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "ResizeToMatch",
]
