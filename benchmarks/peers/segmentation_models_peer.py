"""segmentation_models (qubvel, PyPI `segmentation-models` 1.0.1) as a peer.

Runs under Keras 2: the parent starts it with TF_USE_LEGACY_KERAS=1 and
SM_FRAMEWORK=tf.keras in a venv holding tensorflow-cpu, tf-keras and
segmentation-models. Encoders get random weights (`encoder_weights=None`) and
the head no activation, so the loss sees logits as kseg's does.
"""

import importlib.metadata

import segmentation_models as sm
import tensorflow as tf


def _unet_vgg16(height, width, num_classes):
    # Upsampling blocks without BN are the nearest to kseg's: two 3x3 ReLU convs after the concat.
    return sm.Unet(
        "vgg16",
        input_shape=(height, width, 3),
        classes=num_classes,
        activation=None,
        encoder_weights=None,
        decoder_block_type="upsampling",
        decoder_filters=(256, 128, 64, 32, 16),
        decoder_use_batchnorm=False,
    ), "sm.Unet('vgg16', decoder_use_batchnorm=False, decoder_block_type='upsampling')"


def _pspnet(height, width, num_classes):
    return sm.PSPNet(
        "resnet50",
        input_shape=(height, width, 3),
        classes=num_classes,
        activation=None,
        encoder_weights=None,
    ), "sm.PSPNet('resnet50', downsample_factor=8)"


CASES = {"unet_vgg16": _unet_vgg16, "pspnet": _pspnet}


def build(case, height, width, num_classes):
    model, description = CASES[case](height, width, num_classes)
    return {
        "model": model,
        "keras": tf.keras,
        "label_shape": (height, width),
        "description": description,
        "library": "segmentation_models",
        "versions": {
            "segmentation-models": importlib.metadata.version("segmentation-models"),
            "tf-keras": importlib.metadata.version("tf-keras"),
        },
    }
