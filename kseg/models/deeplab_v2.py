"""DeepLab v2: atrous ResNet-101 with ASPP-L and a multi-scale input pyramid."""

import keras

from kseg.layers.aspp import aspp_rates
from kseg.layers.aspp_sum import ASPPSum
from kseg.layers.resize import ResizeToMatch
from kseg.layers.scale_resize import ScaleResize
from kseg.models.backbone_input import deepest_feature_key, resolve_backbone
from kseg.models.registry import register_model


def _check_scales(input_scales):
    scales = tuple(float(scale) for scale in input_scales)
    if 1.0 not in scales or any(scale <= 0 for scale in scales) or len(set(scales)) != len(scales):
        raise ValueError(
            "input_scales must be distinct positive factors including 1.0, the scale whose "
            f"score map the others are resized to. Received: input_scales={input_scales!r}"
        )
    return scales


def _scale_name(scale):
    return f"scale_{round(scale * 100)}"


@register_model("deeplabv2")
def DeepLabV2(
    num_classes=21,
    backbone="resnet101",
    output_stride=8,
    dilation_rates=(6, 12, 18, 24),
    input_scales=(1.0, 0.75, 0.5),
    input_shape=(None, None, 3),
    backbone_weights=None,
    name="deeplabv2",
    **backbone_kwargs,
):
    """DeepLab v2: ASPP-L on an atrous ResNet, run on an image pyramid and fused by max.

    Chen, Papandreou, Kokkinos, Murphy & Yuille 2017, "DeepLab: Semantic Image Segmentation
    with Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs" (TPAMI). The
    backbone is dilated to output stride 8 (Sec. 3.1); ASPP-L (Sec. 3.1, Fig. 4) puts four
    3x3 atrous classifiers with rates 6, 12, 18 and 24 on its deepest feature, each
    predicting class scores, and sums them (`kseg.layers.aspp_sum.ASPPSum`). Multi-scale
    inputs (Sec. 3.3, 4.2 "MSC"): the same network, with shared weights, runs on the image
    resized by each of `input_scales` (1, 0.75, 0.5); the score maps are resized bilinearly
    to the scale-1 score map and fused by taking their element-wise maximum. The paper also
    supervises each scale's own scores during training; this model has the single fused
    output, which the loss sees (every scale still receives gradient through the max). The
    fused stride-8 scores are bilinearly upsampled to the input size. All resizes follow
    run-time shapes, so any input size works.

    The per-scale network is a nested model named "single_scale" (backbone + "aspp_sum");
    `model.get_layer("single_scale")` gives the single-scale DeepLab v2 with the same
    weights. With `input_scales=(1.0,)` the model is the single-scale network alone.

    Args:
        num_classes: number of classes (21 for PASCAL VOC).
        backbone: a name from `kseg.backbones.list_backbones()` ("resnet101" in the paper)
            or a model from `get_backbone`.
        output_stride: 8 (the paper's) or 16.
        dilation_rates: atrous rates of the ASPP branches; (6, 12, 18, 24) is ASPP-L, given
            for output stride 8 and used as given (`kseg.layers.aspp.aspp_rates`).
        input_scales: image scales of the pyramid; must include 1.0.
        input_shape: `(H, W, 3)`; H and W may be None.
        backbone_weights: None, "imagenet" or a path to backbone weights.
        name: model name.
        **backbone_kwargs: forwarded to `kseg.backbones.get_backbone`.

    Returns:
        A `keras.Model` mapping `(B, H, W, 3)` RGB images in [0, 255] to float32
        `(B, H, W, num_classes)` logits.

    Example:
        >>> import numpy as np, kseg
        >>> from kseg.models.deeplab_v2 import DeepLabV2
        >>> model = DeepLabV2(num_classes=3, backbone="tiny")
        >>> tuple(model(np.zeros((1, 65, 97, 3))).shape)
        (1, 65, 97, 3)
    """
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16. Received: output_stride={output_stride}")
    scales = _check_scales(input_scales)
    encoder = resolve_backbone(
        backbone,
        input_shape=input_shape,
        weights=backbone_weights,
        output_stride=output_stride,
        **backbone_kwargs,
    )
    scaled_image = keras.Input(shape=input_shape, name="scaled_image")
    rates = aspp_rates(output_stride, dilation_rates)
    scores = ASPPSum(num_classes, rates, name="aspp_sum")(
        encoder(scaled_image)[deepest_feature_key(encoder)]
    )
    single_scale = keras.Model(scaled_image, scores, name="single_scale")

    image = keras.Input(shape=input_shape, name="image")
    reference = single_scale(image)
    pyramid = [reference]
    for scale in scales:
        if scale == 1.0:
            continue
        resized = ScaleResize(scale, name=f"{_scale_name(scale)}_image")(image)
        pyramid.append(
            ResizeToMatch(name=f"{_scale_name(scale)}_scores")([single_scale(resized), reference])
        )
    fused = keras.layers.Maximum(name="scale_max")(pyramid) if len(pyramid) > 1 else reference
    logits = ResizeToMatch(name="logits_upsample", dtype="float32")([fused, image])
    return keras.Model(image, logits, name=name)
