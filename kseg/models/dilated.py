"""Dilated convolution networks: the VGG16 front-end and the context module of Yu & Koltun."""

import keras

from kseg.backbones.preprocessing import ImagePreprocessing
from kseg.backbones.vgg16 import (
    VGG16_FC_WIDTH,
    atrous_front_end,
    check_classifier_width,
    is_vgg16,
    load_vgg16_classifier,
)
from kseg.layers.context_module import CONTEXT_MULTIPLIERS, ContextModule
from kseg.layers.fast_equivalents import conv2d
from kseg.layers.resize import ResizeToMatch
from kseg.models.backbone_input import deepest_feature_key, feature_stride, resolve_backbone
from kseg.models.registry import register_model

_OUTPUT_STRIDE = 8


@register_model("dilatednet")
def DilatedNet(
    num_classes=21,
    backbone="vgg16",
    context_module="basic",
    input_shape=(None, None, 3),
    backbone_weights=None,
    num_filters=VGG16_FC_WIDTH,
    dropout=0.5,
    name="dilatednet",
    **backbone_kwargs,
):
    """Dilated-convolution segmentation net: front-end plus context module.

    Yu & Koltun 2016, "Multi-scale Context Aggregation by Dilated Convolutions" (ICLR).
    The front-end is VGG16 with pool4 and pool5 removed, conv5_1..3 dilated by 2 and fc6
    a 7x7 convolution dilated by 4 (4096 channels), then fc7 (1x1, 4096) and a 1x1 class
    layer, with ReLU and dropout after fc6 and fc7; it predicts at stride 8. The context
    module (`ContextModule`, basic or large) refines the class scores, and bilinear
    upsampling by 8 gives logits of the input's size. The paper convolves "valid" and pads
    the image by 186 reflected pixels; here every layer pads "same" with zeros and the
    three poolings round up, so any input size gives `ceil(H / 8)` scores and logits of
    the input's size without a margin. The front-end's field is 380 pixels (Yu's training
    script crops `8 * n + 372` pixels for `n` scores, 372 being that field less one
    stride), and the basic context module adds 66 positions of 8 pixels.

    With `backbone="vgg16"` and ImageNet weights the 13 convolutions and, through
    `kseg.backbones.surgery.convolutionalize`, the classifier's fc1/fc2 become the
    front-end's convolutions and fc6/fc7 (dilation changes no kernel shape). Another
    backbone name (e.g. "tiny" for tests) is built by `kseg.backbones.get_backbone` at
    output stride 8 (later stages dilated) and its deepest feature feeds fc6.

    Args:
        num_classes: number of classes `C` (21 for PASCAL VOC).
        backbone: "vgg16" (the paper's), another name from
            `kseg.backbones.list_backbones()`, or a model from `get_backbone` with
            output stride 8.
        context_module: "basic", "large" or None (front-end only).
        input_shape: `(H, W, 3)`; H and W may be None.
        backbone_weights: None, "imagenet" or a weights path. For "vgg16" these are the
            weights of `keras.applications.VGG16(include_top=True)`, and `num_filters`
            must be 4096.
        num_filters: channels of fc6 and fc7 (4096).
        dropout: dropout rate after fc6 and fc7 (0.5).
        name: model name.
        **backbone_kwargs: forwarded to `kseg.backbones.get_backbone`.

    Returns:
        A `keras.Model` mapping `(B, H, W, 3)` RGB images in [0, 255] to float32
        `(B, H, W, num_classes)` logits.

    Example:
        >>> import numpy as np, kseg
        >>> model = kseg.models.DilatedNet(num_classes=3, backbone="tiny", num_filters=8)
        >>> tuple(model(np.zeros((1, 65, 97, 3))).shape)
        (1, 65, 97, 3)
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive integer. Received: num_classes={num_classes!r}"
        )
    if context_module is not None and context_module not in CONTEXT_MULTIPLIERS:
        raise ValueError(
            f"context_module must be 'basic', 'large' or None. "
            f"Received: context_module={context_module!r}"
        )
    vgg16 = is_vgg16(backbone)
    if vgg16:
        check_classifier_width(num_filters, backbone_weights)
    if vgg16 and backbone_kwargs:
        raise ValueError(
            f"the VGG16 front-end takes no backbone options. Received: {sorted(backbone_kwargs)}"
        )

    image = keras.Input(shape=input_shape, name="image")
    if vgg16:
        normalised = ImagePreprocessing("caffe", name="preprocessing")(image)
        features, _ = atrous_front_end(normalised)
    else:
        encoder = resolve_backbone(
            backbone,
            input_shape=input_shape,
            weights=backbone_weights,
            output_stride=_OUTPUT_STRIDE,
            **backbone_kwargs,
        )
        key = deepest_feature_key(encoder)
        if feature_stride(encoder, key) != _OUTPUT_STRIDE:
            raise ValueError(
                f"DilatedNet needs a backbone at output stride 8. Received: backbone "
                f"{encoder.name!r} whose deepest feature {key!r} has stride "
                f"{feature_stride(encoder, key)}"
            )
        features = encoder(image)[key]

    x = conv2d(num_filters, 7, dilation_rate=4, padding="same", activation="relu", name="fc6")(
        features
    )
    x = keras.layers.Dropout(dropout, name="drop6")(x)
    x = keras.layers.Conv2D(num_filters, 1, activation="relu", name="fc7")(x)
    x = keras.layers.Dropout(dropout, name="drop7")(x)
    # Yu's reference initialises the class layer from N(0, 0.001^2).
    x = keras.layers.Conv2D(
        num_classes,
        1,
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
        name="final",
    )(x)
    if context_module is not None:
        x = ContextModule(num_classes, context_module, name="context")(x)
    logits = ResizeToMatch(name="upsample", dtype="float32")([x, image])
    model = keras.Model(image, logits, name=name)
    if vgg16 and backbone_weights is not None:
        fc6, fc7 = model.get_layer("fc6"), model.get_layer("fc7")
        load_vgg16_classifier(model, fc6, fc7, backbone_weights)
    return model
