"""LR-ASPP: the lite segmentation head of MobileNetV3."""

import math

import keras

from kseg.backbones import feature_info
from kseg.backbones.atrous import layer_strides
from kseg.layers import ConvBNReLU, ResizeToMatch
from kseg.models.backbone_input import deepest_feature_key, resolve_backbone
from kseg.models.registry import register_model


def _with_low_level_tap(encoder, low_level_feature):
    """The backbone and the key of its output `low_level_feature` names.

    A key of the backbone's outputs is used as it is. A layer name of the backbone replaces
    the tap at that layer's stride, so the backbone still has one output per stride.
    """
    if low_level_feature in encoder.output:
        return encoder, low_level_feature
    try:
        layer = encoder.get_layer(low_level_feature)
    except ValueError:
        raise ValueError(
            "`low_level_feature` must be a feature key of the backbone "
            f"({sorted(encoder.output)}) or the name of one of its layers. "
            f"Received: low_level_feature={low_level_feature!r}"
        ) from None
    stride = layer_strides(encoder)[layer.name][1]
    key = f"P{int(math.log2(stride))}"
    outputs = {**encoder.output, key: layer.output}
    retapped = keras.Model(encoder.inputs, outputs, name=encoder.name)
    retapped.feature_info = feature_info(retapped)
    return retapped, key


@register_model("lraspp")
def LRASPP(
    num_classes=21,
    backbone="mobilenet_v3_large",
    output_stride=16,
    low_level_feature="P3",
    num_filters=128,
    input_shape=(None, None, 3),
    backbone_weights=None,
    name="lraspp",
    **backbone_kwargs,
):
    """LR-ASPP (Lite Reduced Atrous Spatial Pyramid Pooling), MobileNetV3's segmentation head.

    Howard et al. 2019, "Searching for MobileNetV3", Sec. 6.4 and Fig. 10: the backbone's last
    stage is dilated (output stride 16); its features go through a 1x1 convolution with batch
    normalisation and ReLU, gated channel-wise, as in squeeze-and-excitation, by a pooled
    branch (average pooling, a 1x1 convolution, a sigmoid); the gated features are upsampled
    bilinearly to the low-level features (output stride 8) and classified by a 1x1
    convolution, and a second 1x1 classifier on the low-level features is added (the skip
    connection). The sum is upsampled bilinearly to the input size. The paper pools with a
    49x49 window of stride (16, 20) on 1024x2048 inputs; this head pools globally, as
    torchvision's `LRASPPHead` does, so it is the same at any input size.

    torchvision's `lraspp_mobilenet_v3_large` is this builder with its defaults and
    `low_level_feature="features.4.out"`: torchvision reads the output of the first stride-8
    block, where kseg's stride-8 tap is the last one (`kseg.pretrained`'s converter).

    Args:
        num_classes: number of classes (21 for PASCAL VOC).
        backbone: a name from `kseg.backbones.list_backbones()` or a model from
            `get_backbone`; the head reads its deepest feature.
        output_stride: 8, 16 (the paper's) or 32.
        low_level_feature: the skip feature: a key of the backbone's outputs ("P3", stride 8
            at output stride 16) or the name of a backbone layer, whose output then replaces
            the tap at its stride.
        num_filters: channels of the gated branch (128 in torchvision).
        input_shape: `(H, W, 3)`; H and W may be None.
        backbone_weights: None, "imagenet" or a path to backbone weights.
        name: model name.
        **backbone_kwargs: forwarded to `kseg.backbones.get_backbone` (e.g.
            `width_multiplier` for "mobilenet_v3_large").

    Returns:
        A `keras.Model` mapping `(B, H, W, 3)` RGB images in [0, 255] to float32
        `(B, H, W, num_classes)` logits. Layers: "lraspp_cbr" (a `ConvBNReLU`),
        "lraspp_pool", "lraspp_scale", "lraspp_sigmoid", "lraspp_gate",
        "lraspp_upsample", "low_classifier", "high_classifier", "logits_sum",
        "logits_upsample".

    Example:
        >>> from kseg.models.lraspp import LRASPP
        >>> model = LRASPP(num_classes=3, backbone="tiny", num_filters=16)
        >>> tuple(model(np.zeros((1, 65, 97, 3))).shape)
        (1, 65, 97, 3)
    """
    if isinstance(num_filters, bool) or not isinstance(num_filters, int) or num_filters < 1:
        raise ValueError(
            f"num_filters must be a positive integer. Received: num_filters={num_filters!r}"
        )
    if not isinstance(low_level_feature, str):
        raise TypeError(
            "`low_level_feature` must be a string (a feature key or a layer name). "
            f"Received: low_level_feature={low_level_feature!r}"
        )
    encoder = resolve_backbone(
        backbone,
        input_shape=input_shape,
        weights=backbone_weights,
        output_stride=output_stride,
        **backbone_kwargs,
    )
    encoder, low_key = _with_low_level_tap(encoder, low_level_feature)
    high_key = deepest_feature_key(encoder)
    if low_key == high_key:
        raise ValueError(
            f"`low_level_feature` must be finer than the deepest feature {high_key!r}. "
            f"Received: low_level_feature={low_level_feature!r}"
        )
    image = keras.Input(shape=input_shape, name="image")
    features = encoder(image)
    high, low = features[high_key], features[low_key]
    x = ConvBNReLU(num_filters, 1, name="lraspp_cbr")(high)
    scale = keras.layers.GlobalAveragePooling2D(keepdims=True, name="lraspp_pool")(high)
    scale = keras.layers.Conv2D(num_filters, 1, use_bias=False, name="lraspp_scale")(scale)
    scale = keras.layers.Activation("sigmoid", name="lraspp_sigmoid")(scale)
    x = keras.layers.Multiply(name="lraspp_gate")([x, scale])
    x = ResizeToMatch(name="lraspp_upsample")([x, low])
    low_logits = keras.layers.Conv2D(num_classes, 1, name="low_classifier")(low)
    high_logits = keras.layers.Conv2D(num_classes, 1, name="high_classifier")(x)
    logits = keras.layers.Add(name="logits_sum")([low_logits, high_logits])
    logits = ResizeToMatch(name="logits_upsample", dtype="float32")([logits, image])
    return keras.Model(image, logits, name=name)
