"""Custom Keras layers used by kseg's architectures, each registered as serializable."""

from kseg.layers.aspp import ASPP
from kseg.layers.conv_block import ConvBNReLU
from kseg.layers.resize import ResizeToMatch

__all__ = ["ASPP", "ConvBNReLU", "ResizeToMatch"]
