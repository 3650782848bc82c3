"""DeepLabV3+: an atrous backbone with ASPP and a light decoder (Chen et al. 2018)."""

import keras

from kseg.layers import ASPP, ConvBNReLU, ResizeToMatch
from kseg.layers.aspp import aspp_rates
from kseg.models.backbone_input import deepest_feature_key, feature_stride, resolve_backbone
from kseg.models.heads import logits_head
from kseg.models.registry import register_model


@register_model("deeplabv3plus")
def DeepLabV3Plus(
    num_classes=21,
    backbone="xception65",
    input_shape=(None, None, 3),
    backbone_weights=None,
    output_stride=16,
    dilation_rates=None,
    num_filters=256,
    low_level_filters=48,
    separable=True,
    dropout=0.1,
    name="deeplabv3plus",
    **backbone_kwargs,
):
    """DeepLabV3+: atrous spatial pyramid pooling with a light decoder.

    Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for
    Semantic Image Segmentation". The backbone runs at output stride 16 (or 8)
    with atrous convolution; ASPP (a 1x1 branch, three 3x3 atrous branches at
    rates 6/12/18, doubled at stride 8, and image pooling) encodes context; the
    decoder reduces the stride-4 features to 48 channels, concatenates them
    with the x4-upsampled ASPP output, applies two 3x3 convolutions and
    upsamples bilinearly to the input size. With `separable=True` (the paper's
    setting) ASPP and decoder convolutions are depthwise-separable.

    The model takes RGB images with values in [0, 255] (the backbone's own
    preprocessing is inside) of any height and width, and returns float32
    logits at the input resolution.

    Args:
        num_classes: number of classes (21 for PASCAL VOC).
        backbone: a name from `kseg.backbones.list_backbones()` ("xception65",
            "resnet50", "mobilenetv2", ...) or a model from `get_backbone`.
        input_shape: `(H, W, 3)`; H and W may be None.
        backbone_weights: None, "imagenet" or a path to backbone weights.
        output_stride: 16 (the paper's training setting), 8 (denser, slower) or
            32 (no atrous backbone: the paper's fastest evaluation setting).
        dilation_rates: ASPP atrous rates; default (6, 12, 18) scaled by
            16 / output_stride (`kseg.layers.aspp.aspp_rates`).
        num_filters: channels of ASPP and decoder (256).
        low_level_filters: channels of the reduced stride-4 features (48).
        separable: depthwise-separable ASPP and decoder convolutions.
        dropout: dropout after the ASPP projection.
        name: model name.
        **backbone_kwargs: forwarded to the backbone (e.g. `alpha=0.35`).

    Returns:
        A `keras.Model` mapping `(B, H, W, 3)` images to `(B, H, W, num_classes)` logits.

    Example:
        >>> import kseg
        >>> model = kseg.models.DeepLabV3Plus(num_classes=4, backbone="tiny")
        >>> model.predict(np.zeros((1, 65, 97, 3)), verbose=0).shape
        (1, 65, 97, 4)
    """
    rates = aspp_rates(output_stride, dilation_rates)
    encoder = resolve_backbone(
        backbone,
        input_shape=input_shape,
        weights=backbone_weights,
        output_stride=output_stride,
        **backbone_kwargs,
    )
    if feature_stride(encoder, "P2") != 4:
        raise ValueError("DeepLabV3+ needs the backbone's stride-4 feature 'P2'")
    image = keras.Input(shape=input_shape, name="image")
    features = encoder(image)

    x = ASPP(num_filters, rates, separable=separable, dropout=dropout, name="aspp")(
        features[deepest_feature_key(encoder)]
    )
    low_level = ConvBNReLU(low_level_filters, 1, name="decoder_low_level")(features["P2"])
    x = ResizeToMatch(name="decoder_upsample")([x, low_level])
    x = keras.layers.Concatenate(name="decoder_concat")([x, low_level])
    x = ConvBNReLU(num_filters, 3, separable=separable, name="decoder_conv_1")(x)
    x = ConvBNReLU(num_filters, 3, separable=separable, name="decoder_conv_2")(x)
    logits = logits_head(x, num_classes, image, name="logits")
    return keras.Model(image, logits, name=name)
