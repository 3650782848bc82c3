"""Custom Keras layers used by kseg's architectures, each registered as serializable."""

from kseg.layers.aspp import ASPP
from kseg.layers.aspp_sum import ASPPSum
from kseg.layers.atrous_conv import Conv2D
from kseg.layers.atrous_depthwise_conv import DepthwiseConv2D
from kseg.layers.batch_normalization import BatchNormalization
from kseg.layers.bilinear import BilinearConvTranspose2D, BilinearUpsamplingKernel
from kseg.layers.context_module import ContextIdentity, ContextModule
from kseg.layers.conv_block import ConvBNReLU
from kseg.layers.crf import DenseCRF
from kseg.layers.crop import CenteredPadToMultiple, CropToMatch
from kseg.layers.fpn import FeaturePyramid
from kseg.layers.offset_crop import OffsetCrop
from kseg.layers.pyramid_pooling import PyramidPooling, adaptive_average_pooling_2d
from kseg.layers.refine import (
    ChainedResidualPooling,
    MultiResolutionFusion,
    RefineNetBlock,
    ResidualConvUnit,
)
from kseg.layers.resize import ResizeToMatch
from kseg.layers.roi_align import MultiLevelRoIAlign, RoIAlign, assign_levels
from kseg.layers.roi_heads import BoxHead, MaskHead
from kseg.layers.rpn_head import RegionProposalHead
from kseg.layers.scale_resize import ScaleResize
from kseg.layers.unet_input_size_check import UNetInputSizeCheck
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

__all__ = [
    "ASPP",
    "ASPPSum",
    "BatchNormalization",
    "BilinearConvTranspose2D",
    "BilinearUpsamplingKernel",
    "BoxHead",
    "CenteredPadToMultiple",
    "ChainedResidualPooling",
    "ContextIdentity",
    "ContextModule",
    "Conv2D",
    "ConvBNReLU",
    "CropToMatch",
    "DepthwiseConv2D",
    "DenseCRF",
    "FeaturePyramid",
    "MaskHead",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "MultiLevelRoIAlign",
    "MultiResolutionFusion",
    "OffsetCrop",
    "PyramidPooling",
    "RefineNetBlock",
    "RegionProposalHead",
    "ResidualConvUnit",
    "ResizeToMatch",
    "RoIAlign",
    "ScaleResize",
    "UNetInputSizeCheck",
    "adaptive_average_pooling_2d",
    "assign_levels",
]
