"""Published checkpoints: a registry, verified downloads, reading and converting their weights.

- `list_pretrained`, `get`, `load`: the registry of published checkpoints (torchvision's
  segmentation and Mask R-CNN weights so far), each with its source, hash, licence, classes,
  input normalisation, resize policy and the publisher's metrics. Every entry loads as a kseg
  model: FCN and DeepLabv3 on ResNet-50/101, DeepLabv3 and LR-ASPP on MobileNetV3-Large, and
  Mask R-CNN ResNet-50-FPN v1 and v2 (`load_torchvision_mask_rcnn_weights`); an entry added
  without a converter says what is missing instead of loading.
- `segment`, `draw`: a published semantic model on a photo, resized the way its publisher
  evaluated it, labels at the photo's size, and those labels drawn with the entry's classes.
- `fetch_checkpoint`: download into the Keras cache, verified against its SHA-256 (or the hash
  prefix a publisher gives), with nothing half-written left behind.
- `read_torch_checkpoint`: PyTorch state dicts (`.pth`, `.pt`, zip and legacy formats) into
  numpy arrays without torch, unpickled with an allow-list: a checkpoint that asks for anything
  else raises `UnsafeCheckpointError` instead of running code.
- `load_torchvision_resnet_weights`, `load_torchvision_mobilenet_v3_weights`,
  `build_torchvision_segmentation`, `load_torchvision_segmentation_weights`: torchvision's
  ResNet, MobileNetV3, FCN, DeepLabv3 and LR-ASPP weights onto kseg's `resnet*_v1.5` and
  `mobilenet_v3_large` backbones and its FCN, DeepLabV3 and LRASPP builders configured as
  torchvision's, every key used once and every weight set once.
"""

from kseg.pretrained.convert_mobilenet_v3 import load_torchvision_mobilenet_v3_weights
from kseg.pretrained.convert_resnet import load_torchvision_resnet_weights
from kseg.pretrained.convert_torchvision_mask_rcnn import (
    build_torchvision_mask_rcnn,
    load_torchvision_mask_rcnn_weights,
)
from kseg.pretrained.convert_torchvision_segmentation import (
    build_torchvision_segmentation,
    load_torchvision_segmentation_weights,
)
from kseg.pretrained.download import (
    CheckpointDownloadError,
    ChecksumMismatchError,
    atomic_path,
    cached_conversion_path,
    checkpoint_cache_path,
    fetch_checkpoint,
    hash_prefix_in_name,
    sha256_of_file,
)
from kseg.pretrained.registry import (
    NotLoadableError,
    PretrainedEntry,
    get,
    list_pretrained,
    load,
)
from kseg.pretrained.segment import draw, read_photo, segment
from kseg.pretrained.torch_checkpoint import UnsafeCheckpointError, read_torch_checkpoint

__all__ = ["read_torch_checkpoint", "UnsafeCheckpointError", "segment", "draw", "read_photo"]
__all__ += [
    "fetch_checkpoint",
    "checkpoint_cache_path",
    "cached_conversion_path",
    "atomic_path",
    "hash_prefix_in_name",
    "sha256_of_file",
    "ChecksumMismatchError",
    "CheckpointDownloadError",
    "list_pretrained",
    "get",
    "load",
    "PretrainedEntry",
    "NotLoadableError",
    "load_torchvision_resnet_weights",
    "load_torchvision_mobilenet_v3_weights",
    "build_torchvision_segmentation",
    "load_torchvision_segmentation_weights",
    "build_torchvision_mask_rcnn",
    "load_torchvision_mask_rcnn_weights",
]
