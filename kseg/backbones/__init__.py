"""Feature-pyramid backbones: keras.applications and kseg networks behind one contract.

`get_backbone(name, ...)` returns a functional model mapping RGB images in [0, 255] to a dict
of feature maps keyed `"P{n}"` (stride 2**n), with optional atrous conversion to output
stride 16 or 8; `list_backbones()` names what it accepts.
"""

from kseg.backbones import (
    aligned_xception,
    atrous,
    mobilenet_v3,
    preprocessing,
    resnet,
    taps,
    tiny,
    vgg16,
)
from kseg.backbones.bundled import (
    WeightsDownloadError,
    bundled_imagenet_weights,
    bundled_weights_path,
    explain_failed_download,
)
from kseg.backbones.registry import feature_info, get_backbone, list_backbones
from kseg.backbones.surgery import convolutionalize

__all__ = [
    "WeightsDownloadError",
    "aligned_xception",
    "atrous",
    "bundled_imagenet_weights",
    "bundled_weights_path",
    "convolutionalize",
    "explain_failed_download",
    "feature_info",
    "get_backbone",
    "list_backbones",
    "mobilenet_v3",
    "preprocessing",
    "resnet",
    "taps",
    "tiny",
    "vgg16",
]
