"""keras-unet-collection (PyPI 0.1.13) as the peer for the paper-width U-Net.

Its `unet_2d` without a backbone is the padded U-Net of Ronneberger et al.:
two 3x3 convs per level, 64..1024 filters, max pooling, transposed-conv
upsampling (its 3x3 kernel is followed by a ReLU, the paper's is 2x2 without),
concatenated skips, no BN. Runs under Keras 2 (TF_USE_LEGACY_KERAS=1) in the
segmentation_models venv; installed with `--no-deps` because only tensorflow
is needed.
"""

import importlib.metadata

import tensorflow as tf
from keras_unet_collection import models


def _unet(height, width, num_classes):
    return models.unet_2d(
        (height, width, 3),
        [64, 128, 256, 512, 1024],
        n_labels=num_classes,
        stack_num_down=2,
        stack_num_up=2,
        activation="ReLU",
        output_activation=None,
        batch_norm=False,
        pool="max",
        unpool=False,
        backbone=None,
    ), "keras_unet_collection.models.unet_2d(filter_num=[64..1024], unpool=False, batch_norm=False)"


CASES = {"unet": _unet}


def build(case, height, width, num_classes):
    model, description = CASES[case](height, width, num_classes)
    return {
        "model": model,
        "keras": tf.keras,
        "label_shape": (height, width),
        "description": description,
        "library": "keras_unet_collection",
        "versions": {
            "keras-unet-collection": importlib.metadata.version("keras-unet-collection"),
            "tf-keras": importlib.metadata.version("tf-keras"),
        },
    }
