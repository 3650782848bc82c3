"""PSPNet: pyramid pooling over a dilated ResNet, with a training-only auxiliary head.

The deep-supervision head needs the labels, so it cannot be a layer that adds its own loss;
and a second model output would change what `fit`, `predict` and export see. Instead the
builder returns a `kseg.models.heads.DeepSupervisionModel`, whose graph computes both logits
but whose `call` returns only the main ones unless training and whose `compute_loss` adds the
weighted auxiliary loss during `fit`.
"""

import keras

from kseg.layers.conv_block import ConvBNReLU
from kseg.layers.pyramid_pooling import PyramidPooling
from kseg.models.backbone_input import deepest_feature_key, resolve_backbone
from kseg.models.heads import (
    check_auxiliary_loss_weight,
    logits_head,
    supervised_model,
    with_auxiliary_tap,
)
from kseg.models.registry import register_model


@register_model("pspnet")
def PSPNet(
    num_classes=21,
    backbone="resnet101",
    input_shape=(None, None, 3),
    backbone_weights=None,
    output_stride=8,
    bins=(1, 2, 3, 6),
    num_filters=512,
    dropout=0.1,
    auxiliary_loss_weight=0.4,
    auxiliary_filters=256,
    auxiliary_layer=None,
    align_corners=True,
    name="pspnet",
    **backbone_kwargs,
):
    """PSPNet: a pyramid pooling module on a dilated ResNet, with deep supervision.

    Zhao et al. 2017, "Pyramid Scene Parsing Network". The ResNet runs at output stride 8
    (conv4 dilated by 2, conv5 by 4); the pyramid pooling module pools its last feature map
    to 1x1, 2x2, 3x3 and 6x6 bins, reduces each to C/4 channels, upsamples and concatenates
    them with it (`kseg.layers.PyramidPooling`); a 3x3 convolution to 512 channels with BN
    and ReLU, dropout 0.1 and a 1x1 classifier follow, and the logits are upsampled
    bilinearly to the input size. An auxiliary head on the res4 output (3x3 conv to 256,
    BN, ReLU, dropout, classifier) adds its loss with weight 0.4 during training only.

    The paper's ResNet has a three-convolution "deep" stem; kseg uses the keras.applications
    ResNet (7x7 stem), whose ImageNet weights load directly: the difference is 0.2% of the
    parameters. The final upsampling is `logits_head`'s half-pixel bilinear resize; the
    pyramid levels follow the public code's `align_corners=True` unless told otherwise.

    Args:
        num_classes: number of classes.
        backbone: a name from `kseg.backbones.list_backbones()` ("resnet101", "resnet50",
            "tiny", ...) or a model from `get_backbone` (then give `auxiliary_layer`).
        input_shape: `(H, W, 3)`; H and W may be None.
        backbone_weights: None, "imagenet" or a path to backbone weights.
        output_stride: 8 (the paper), 16 or 32.
        bins: pyramid pooling bin sizes.
        num_filters: channels of the 3x3 convolution after pyramid pooling.
        dropout: spatial dropout before both classifiers.
        auxiliary_loss_weight: weight of the res4 auxiliary loss; 0 builds no auxiliary
            head and returns a plain functional model.
        auxiliary_filters: channels of the auxiliary 3x3 convolution.
        auxiliary_layer: backbone layer the auxiliary head reads; default the stride-16 tap
            of the named backbone (`conv4_block23_out` for ResNet-101).
        align_corners: bilinear convention of the pyramid levels' upsampling.
        name: model name.
        **backbone_kwargs: forwarded to the backbone.

    Returns:
        A `kseg.models.heads.DeepSupervisionModel` (a plain functional `keras.Model` when
        `auxiliary_loss_weight` is 0) mapping `(B, H, W, 3)` images in [0, 255] to float32
        `(B, H, W, num_classes)` logits.

    Example:
        >>> import numpy as np, kseg
        >>> model = kseg.models.pspnet.PSPNet(num_classes=4, backbone="tiny", num_filters=8,
        ...                                   auxiliary_filters=8)
        >>> model.predict(np.zeros((1, 65, 97, 3)), verbose=0).shape
        (1, 65, 97, 4)
    """
    auxiliary_loss_weight = check_auxiliary_loss_weight(auxiliary_loss_weight)
    encoder = resolve_backbone(
        backbone,
        input_shape=input_shape,
        weights=backbone_weights,
        output_stride=output_stride,
        **backbone_kwargs,
    )
    if auxiliary_loss_weight > 0:
        encoder = with_auxiliary_tap(
            encoder, backbone, auxiliary_layer, deepest_feature_key(encoder)
        )
    else:
        deepest = encoder.output[deepest_feature_key(encoder)]
        encoder = keras.Model(encoder.input, {"context": deepest}, name=encoder.name)

    image = keras.Input(shape=input_shape, name="image")
    features = encoder(image)
    x = PyramidPooling(bins, align_corners=align_corners, name="pyramid_pooling")(
        features["context"]
    )
    x = ConvBNReLU(num_filters, 3, name="psp_conv")(x)
    x = keras.layers.SpatialDropout2D(dropout, name="psp_dropout")(x)
    logits = logits_head(x, num_classes, image, name="logits")
    return supervised_model(
        image,
        logits,
        features.get("auxiliary"),
        num_classes,
        weight=auxiliary_loss_weight,
        filters=auxiliary_filters,
        dropout=dropout,
        name=name,
    )
