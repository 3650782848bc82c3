"""kseg's side of the peer throughput comparison (runs in kseg's own venv, Keras 3).

Each case builds the kseg model that the matching peer module builds its
counterpart of; `benchmarks/peer_throughput.py` says why each pair was chosen.
Random weights only (no downloads).
"""

import importlib

import keras

import kseg


def _unet(height, width, num_classes):
    # The paper's widths (64..1024), padded so the output keeps the input size, as the peer's is.
    return kseg.models.UNet(
        num_classes=num_classes, input_shape=(height, width, 3), padding="same"
    ), "kseg.models.UNet(padding='same', num_filters=64, depth=4)"


def _unet_vgg16(height, width, num_classes):
    # num_filters * stride gives decoder widths 256, 128, 64, 32, 16: segmentation_models' default.
    return kseg.models.UNet(
        num_classes=num_classes,
        backbone="vgg16",
        input_shape=(height, width, 3),
        num_filters=16,
        backbone_weights=None,
    ), "kseg.models.UNet(backbone='vgg16', num_filters=16)"


def _fcn8s(height, width, num_classes):
    return (
        kseg.models.FCN8s(
            num_classes=num_classes, input_shape=(height, width, 3), backbone_weights=None
        ),
        "kseg.models.FCN8s(backbone='vgg16', num_filters=4096, input_padding=100)",
    )


def _fcn8s_same(height, width, num_classes):
    # keras-segmentation's fcn_8_vgg layout: no input padding, fc6 a 'same'-padded 7x7 conv.
    return kseg.models.FCN8s(
        num_classes=num_classes,
        input_shape=(height, width, 3),
        backbone_weights=None,
        fc6_padding="same",
    ), "kseg.models.FCN8s(backbone='vgg16', num_filters=4096, fc6_padding='same')"


def _optional_builder(module, name):
    """A builder from a kseg module that may not exist yet (models still being written)."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise SystemExit(f"kseg has no {module}.{name} yet: {error}") from None


def _pspnet(height, width, num_classes):
    builder = _optional_builder("kseg.models.pspnet", "PSPNet")
    return builder(
        num_classes=num_classes,
        backbone="resnet50",
        input_shape=(height, width, 3),
        backbone_weights=None,
    ), "kseg.models.pspnet.PSPNet(backbone='resnet50')"


def _pspnet_473(height, width, num_classes):
    # Without the training-only auxiliary head, as keras-segmentation's pspnet_50 has none.
    builder = _optional_builder("kseg.models.pspnet", "PSPNet")
    return builder(
        num_classes=num_classes,
        backbone="resnet50",
        input_shape=(height, width, 3),
        backbone_weights=None,
        auxiliary_loss_weight=0,
    ), "kseg.models.pspnet.PSPNet(backbone='resnet50', auxiliary_loss_weight=0)"


def _deeplabv3(height, width, num_classes):
    builder = _optional_builder("kseg.models.deeplab_v3", "DeepLabV3")
    return builder(
        num_classes=num_classes,
        backbone="resnet50",
        input_shape=(height, width, 3),
        backbone_weights=None,
    ), "kseg.models.deeplab_v3.DeepLabV3(backbone='resnet50')"


CASES = {
    "unet": _unet,
    "unet_vgg16": _unet_vgg16,
    "fcn8s": _fcn8s,
    "fcn8s_same": _fcn8s_same,
    "pspnet": _pspnet,
    "pspnet_473": _pspnet_473,
    "deeplabv3": _deeplabv3,
}


def build(case, height, width, num_classes):
    model, description = CASES[case](height, width, num_classes)
    return {
        "model": model,
        "keras": keras,
        "label_shape": (height, width),
        "description": description,
        "library": "kseg",
        "versions": {"kseg": getattr(kseg, "__version__", "editable")},
    }
