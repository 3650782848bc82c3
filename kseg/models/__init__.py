"""Segmentation model builders, each returning a plain functional `keras.Model`."""

from kseg.models import heads
from kseg.models.backbone_input import backbone_of
from kseg.models.deeplab_v1 import DeepLabV1
from kseg.models.deeplab_v2 import DeepLabV2
from kseg.models.deeplab_v3 import DeepLabV3
from kseg.models.deeplab_v3_plus import DeepLabV3Plus
from kseg.models.dilated import DilatedNet
from kseg.models.fcn import FCN, FCN8s, FCN16s, FCN32s
from kseg.models.fcn_alexnet import FCNAlexNet
from kseg.models.heads import DeepSupervisionModel
from kseg.models.lraspp import LRASPP
from kseg.models.mask_rcnn import MaskRCNN
from kseg.models.pspnet import PSPNet
from kseg.models.refinenet import RefineNet
from kseg.models.registry import get_builder, get_model, get_task, list_models, register_model
from kseg.models.segnet import SegNet, SegNetBasic
from kseg.models.unet import UNet

__all__ = [
    "DeepLabV1",
    "DeepLabV2",
    "DeepLabV3",
    "DeepLabV3Plus",
    "DeepSupervisionModel",
    "DilatedNet",
    "FCN",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "FCNAlexNet",
    "LRASPP",
    "MaskRCNN",
    "PSPNet",
    "RefineNet",
    "SegNet",
    "SegNetBasic",
    "UNet",
    "backbone_of",
    "get_builder",
    "get_model",
    "heads",
    "get_task",
    "list_models",
    "register_model",
]
