"""keras-hub's DeepLabV3 (PyPI `keras-hub` 0.32.0, Keras 3) as the DeepLab v3 peer.

Built offline from configs, no preset: a ResNet-50 `ResNetBackbone` (7x7 stem,
bottleneck blocks 3/4/6/3) and a `DeepLabV3Backbone` with ASPP (rates 6, 12,
18, image pooling) on P5 and no low-level decoder feature, which is the v3
form (with `low_level_feature_key` it would be v3+). keras-hub's ResNet has no
dilation, so ASPP runs at output stride 32 rather than kseg's 16 (the paper's
training setting) and there is no multi-grid; its head upsamples 256 channels
to the input size before the 1x1 classifier. Runs in its own venv
(tensorflow-cpu 2.21, keras 3.15.1, keras-hub).
"""

import importlib.metadata

import keras
import keras_hub


def _deeplabv3(height, width, num_classes):
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block",
        use_pre_activation=False,
        image_shape=(height, width, 3),
    )
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        spatial_pyramid_pooling_key="P5",
        upsampling_size=1,
        dilation_rates=[6, 12, 18],
        image_shape=(height, width, 3),
    )
    model = keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=backbone, num_classes=num_classes, activation=None, preprocessor=None
    )
    return model, "keras_hub DeepLabV3ImageSegmenter(ResNetBackbone(ResNet-50 config), ASPP on P5)"


CASES = {"deeplabv3": _deeplabv3}


def build(case, height, width, num_classes):
    model, description = CASES[case](height, width, num_classes)
    return {
        "model": model,
        "keras": keras,
        "label_shape": (height, width),
        "description": description,
        "library": "keras_hub",
        "versions": {"keras-hub": importlib.metadata.version("keras-hub")},
    }
