"""Fully convolutional networks (FCN-32s, FCN-16s, FCN-8s): one builder, three entry points."""

import keras

from kseg.backbones.preprocessing import ImagePreprocessing
from kseg.backbones.vgg16 import (
    VGG16_FC6_TAPS,
    VGG16_FC_WIDTH,
    ceil_mode_pooling,
    check_classifier_width,
    is_vgg16,
    load_vgg16_classifier,
)
from kseg.layers.bilinear import BilinearConvTranspose2D
from kseg.layers.conv_block import ConvBNReLU
from kseg.layers.crop import CenteredPadToMultiple, CropToMatch
from kseg.layers.offset_crop import OffsetCrop
from kseg.models.backbone_input import deepest_feature_key, resolve_backbone
from kseg.models.heads import (
    check_auxiliary_loss_weight,
    logits_head,
    supervised_model,
    with_auxiliary_tap,
)
from kseg.models.registry import register_model

# Caffe crop offsets of the reference VGG16 FCNs (skip crops and the final crop at the image).
# Keras's conv1_1 pads 1 px itself, so the image sits one pixel further in than behind
# Caffe's pad-100 conv1_1: the final offsets are the paper's 19 / 27 / 31 plus one.
_VGG16_OFFSETS = {"pool4": 5, "pool3": 9, 32: 20, 16: 28, 8: 32}
_FC6_KERNEL = VGG16_FC6_TAPS
_PAPER_INPUT_PADDING = 100
_FC6_PADDINGS = ("valid", "same")
_PREDICTION_STRIDES = (32, 16, 8)
_HEADS = ("skips", "dilated")
# The skips in the order the net fuses them: (stride, feature, Caffe name of the score).
_SKIPS = ((16, "P4", "pool4"), (8, "P3", "pool3"))


def _stride32_side(encoder, padded_side):
    shape = (1, padded_side, padded_side, encoder.input.shape[-1])
    return encoder.compute_output_spec(keras.KerasTensor(shape))["P5"].shape[1]


def _least_input_padding(encoder, input_padding):
    """The least padding, from `input_padding` up, that gives a 1x1 image a P5 map fc6 fits in."""
    if _stride32_side(encoder, 1 + 2 * input_padding) >= _FC6_KERNEL:
        return input_padding
    low, high = input_padding, input_padding + 32 * _FC6_KERNEL
    if _stride32_side(encoder, 1 + 2 * high) < _FC6_KERNEL:
        raise ValueError(
            f"backbone {encoder.name!r} gives no {_FC6_KERNEL}x{_FC6_KERNEL} stride-32 map for "
            f"fc6 even with input_padding={high}. Received: input_padding={input_padding}"
        )
    while high - low > 1:
        middle = (low + high) // 2
        if _stride32_side(encoder, 1 + 2 * middle) >= _FC6_KERNEL:
            high = middle
        else:
            low = middle
    return high


def _checked_input_padding(input_padding, same):
    if same and input_padding not in (None, 0):
        raise ValueError(
            "fc6_padding='same' runs the body on the unpadded image, so input_padding must be "
            f"None or 0. Received: input_padding={input_padding}"
        )
    if input_padding is None:
        input_padding = 0 if same else _PAPER_INPUT_PADDING
    if input_padding < 0:
        raise ValueError(f"input_padding must be >= 0. Received: input_padding={input_padding}")
    return input_padding


def _encoder(backbone, input_shape, backbone_weights, load_classifier, **backbone_kwargs):
    """The stride-32 body and the normalisation the model applies before it (None: inside)."""
    named = isinstance(backbone, str)
    # A named backbone is built without its normalisation, which the model applies before
    # the input padding; a prebuilt one normalises its input itself.
    encoder = resolve_backbone(
        backbone,
        input_shape=(None, None, input_shape[-1]),
        weights=None if load_classifier else backbone_weights,
        output_stride=32,
        **({"include_preprocessing": False} if named else {}),
        **backbone_kwargs,
    )
    preprocessing = encoder.preprocessing if named else None
    strides = {info["key"]: info["stride"] for info in encoder.feature_info}
    if any(strides.get(key) != value for key, value in (("P3", 8), ("P4", 16), ("P5", 32))):
        raise ValueError(f"FCN needs features P3, P4, P5 at strides 8, 16, 32. Received: {strides}")
    if is_vgg16(backbone):
        encoder = ceil_mode_pooling(encoder)
    return encoder, preprocessing


def _score(x, num_classes, name):
    # Zero scores let the skips start from the coarser net's prediction, as in the paper.
    return keras.layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=name)(x)


def FCN(
    num_classes=21,
    prediction_stride=8,
    backbone="vgg16",
    input_shape=(None, None, 3),
    backbone_weights=None,
    num_filters=VGG16_FC_WIDTH,
    input_padding=None,
    fc6_padding="valid",
    dropout=0.5,
    name=None,
    head="skips",
    auxiliary_loss_weight=0.0,
    auxiliary_layer=None,
    auxiliary_filters=256,
    **backbone_kwargs,
):
    """A fully convolutional network of Long, Shelhamer & Darrell 2015, at any of its strides.

    "Fully Convolutional Networks for Semantic Segmentation": the classifier's fc6/fc7 become
    7x7/1x1 convolutions, a zero-initialised 1x1 layer scores the classes at stride 32, and
    for FCN-16s and FCN-8s (section 4.2) x2 transposed convolutions (bilinear-initialised,
    learned) fuse the pool4 and then the pool3 scores by cropping and summing; a frozen
    bilinear transposed convolution upsamples the finest scores by `prediction_stride` and a
    crop returns logits of the input's size. `kseg.models.FCN32s`, `FCN16s` and `FCN8s` are
    this builder at strides 32, 16 and 8.

    With `fc6_padding="valid"` the image is zero-padded (100 px, in the backbone's
    normalised space, as Caffe pads conv1_1), VGG16 pools in Caffe's ceil mode and every
    crop uses Caffe's offsets. With "same", crops start at half the upsampling factor, which
    centres every upsampled cell on the pixels it came from: with "same" convolutions and
    ceil-mode pooling, stride-s cell i covers pixels [s*i, s*i + s - 1], and a valid x`f`
    transposed convolution with a `2f`-wide bilinear kernel puts coarse cell i at
    f*i + f - 1/2, the finer cell's centre lying f/2 earlier. The upsampled map is then the
    larger one, so it is cropped to the skip rather than the reverse.

    `head="dilated"` builds the FCN torchvision publishes (`fcn_resnet50`/`fcn_resnet101`:
    `backbone="resnet50_v1.5"`, `num_filters=512`, `dropout=0.1`, `prediction_stride=8`)
    instead: no fc6/fc7 and no skips, the backbone dilated to `prediction_stride`, then a
    3x3 convolution with BN and ReLU ("head_conv"), dropout ("head_dropout"), a 1x1
    classifier ("logits_classifier") and bilinear resizing to the input ("logits_upsample").

    Args:
        num_classes: number of classes (21 for PASCAL VOC).
        prediction_stride: stride of the finest scores before the final upsampling: 32
            (FCN-32s, no skip), 16 (FCN-16s, pool4) or 8 (FCN-8s, pool4 and pool3).
        backbone: "vgg16" (the paper's) or another name from
            `kseg.backbones.list_backbones()` with stride-8/16/32 features
            (e.g. "tiny" for tests), or a model from `get_backbone`.
        input_shape: `(H, W, 3)`; H and W may be None.
        backbone_weights: None, "imagenet" or a weights path. For "vgg16" these
            are weights of the whole `keras.applications.VGG16(include_top=True)`
            classifier, whose fc1/fc2 become fc6/fc7 through
            `kseg.backbones.surgery.convolutionalize`.
        num_filters: width of fc6 (7x7) and fc7 (1x1), 4096 in the paper; with
            `head="dilated"` the width of the 3x3 convolution (torchvision: 512, a quarter
            of ResNet's 2048 channels).
        input_padding: zero pixels added around the normalised image; None
            means the paper's 100 with `fc6_padding="valid"` and 0 with
            "same". Any input size from 1x1 up works: a backbone other
            than VGG16 whose stride-32 map would otherwise be smaller than
            fc6's 7x7 kernel for a 1x1 image gets the least padding that
            avoids it (e.g. 111 for "mobilenetv2"); VGG16, whose crop offsets
            depend on the padding, refuses less than 96.
        fc6_padding: "valid" (the paper's form) or "same". "valid" pads the
            image by `input_padding` and runs fc6 as a valid 7x7 convolution,
            keeping the paper's exact receptive-field geometry and Caffe's
            crop offsets for every input size, at a price on small images:
            at 128x128 the padded VGG16 FCN-8s costs about 5x the
            multiply-adds of the unpadded one (1.7x at 512x512). "same" runs
            the body on the unpadded image and fc6 as a 'same'-padded 7x7
            convolution (the form of keras-segmentation's `fcn_8_vgg`):
            much less work on small images, but fc6 and the convolutions
            near the border see zeros instead of padded context, so border
            predictions differ from the paper's net. Skip and image crops
            then start at half the upsampling factor (1 for the x2 steps),
            which centres every upsampled cell on the pixels it came from;
            backbones other than VGG16 first get a centred pad to a multiple
            of 32, removed again at the end. Any input size from 1x1 up
            works, the parameter count and the weight loading are the same.
        dropout: dropout after fc6 and fc7 (0.5); with `head="dilated"`, before the
            classifier (torchvision: 0.1).
        name: model name; None gives "fcn8s", "fcn16s" or "fcn32s" ("fcn_dilated8", ...
            with `head="dilated"`).
        head: "skips" (the paper's fc6/fc7 with skip fusion) or "dilated" (torchvision's
            head on a dilated backbone; `input_padding` and `fc6_padding` do not apply).
        auxiliary_loss_weight: with `head="dilated"`, > 0 adds torchvision's training-only
            auxiliary head on `auxiliary_layer` (default res4), its loss weighted so in `fit`
            (torchvision: 0.5); the model is then a `kseg.models.heads.DeepSupervisionModel`.
        auxiliary_layer: the backbone layer the auxiliary head reads; None: the stride-16 tap
            of the undilated network.
        auxiliary_filters: channels of the auxiliary 3x3 convolution (torchvision: 256).
        **backbone_kwargs: forwarded to `kseg.backbones.get_backbone`.

    Returns:
        A `keras.Model` mapping `(B, H, W, 3)` RGB images in [0, 255] to
        float32 `(B, H, W, num_classes)` logits.

    Example:
        >>> model = kseg.models.fcn.FCN(3, prediction_stride=16, backbone="tiny", num_filters=8)
        >>> model.name, tuple(model(np.zeros((1, 65, 97, 3))).shape)
        ('fcn16s', (1, 65, 97, 3))
    """
    if prediction_stride not in _PREDICTION_STRIDES:
        raise ValueError(
            f"prediction_stride must be one of {_PREDICTION_STRIDES}. "
            f"Received: prediction_stride={prediction_stride!r}"
        )
    if head not in _HEADS:
        raise ValueError(f"head must be one of {_HEADS}. Received: head={head!r}")
    if head == "dilated":
        if input_padding is not None:
            raise ValueError(
                "input_padding applies to head='skips' only. "
                f"Received: input_padding={input_padding}"
            )
        return _dilated_fcn(
            num_classes,
            prediction_stride,
            backbone,
            input_shape,
            backbone_weights,
            num_filters,
            dropout,
            name or f"fcn_dilated{prediction_stride}",
            backbone_kwargs,
            (
                check_auxiliary_loss_weight(auxiliary_loss_weight),
                auxiliary_layer,
                auxiliary_filters,
            ),
        )
    if auxiliary_loss_weight:
        raise ValueError(
            "An auxiliary head applies to head='dilated' only. "
            f"Received: auxiliary_loss_weight={auxiliary_loss_weight}"
        )
    if fc6_padding not in _FC6_PADDINGS:
        raise ValueError(
            f"fc6_padding must be one of {_FC6_PADDINGS}. Received: fc6_padding={fc6_padding!r}"
        )
    same = fc6_padding == "same"
    input_padding = _checked_input_padding(input_padding, same)
    vgg16 = is_vgg16(backbone)
    load_classifier = vgg16 and backbone_weights is not None
    if load_classifier:
        check_classifier_width(num_filters, backbone_weights)
    encoder, preprocessing = _encoder(
        backbone, input_shape, backbone_weights, load_classifier, **backbone_kwargs
    )
    if not same:
        # Too little padding leaves fc6 a stride-32 map smaller than its 7x7 kernel.
        least_padding = _least_input_padding(encoder, input_padding)
        if vgg16 and least_padding > input_padding:
            # VGG16's crop offsets are tied to the padding, so it is not raised behind the caller.
            raise ValueError(
                f"FCN on VGG16 needs input_padding >= {least_padding} (the paper's 100) so that "
                f"every input size reaches fc6. Received: input_padding={input_padding}"
            )
        # Other backbones crop centred, so extra padding keeps the output aligned.
        input_padding = least_padding
    offsets = _VGG16_OFFSETS if vgg16 else dict.fromkeys(["pool4", "pool3", 32, 16, 8])

    image = keras.Input(shape=input_shape, name="image")
    x = image
    if preprocessing is not None:
        x = ImagePreprocessing(preprocessing, name="preprocessing")(image)
    if not same:
        # The paper pads 100 px so that the 7x7 fc6 sees enough context on inputs of any size.
        x = keras.layers.ZeroPadding2D(input_padding, name="input_padding")(x)
    elif not vgg16:
        # Other backbones round odd sizes their own way; a multiple of 32 gives every
        # stride exact cells, and the centred padding is cropped off at the end.
        x = CenteredPadToMultiple(32, name="pad_to_stride")(x)
    body_input = x
    features = encoder(body_input)
    fc6 = keras.layers.Conv2D(
        num_filters, _FC6_KERNEL, padding=fc6_padding, activation="relu", name="fc6"
    )
    fc7 = keras.layers.Conv2D(num_filters, 1, activation="relu", name="fc7")
    x = keras.layers.Dropout(dropout, name="drop6")(fc6(features["P5"]))
    x = keras.layers.Dropout(dropout, name="drop7")(fc7(x))
    if load_classifier:
        load_vgg16_classifier(encoder, fc6, fc7, backbone_weights)
    scores = _score(x, num_classes, "score_fr")
    for skip, key, label in _SKIPS:
        if prediction_stride > skip:
            break
        upscore = f"upscore_{'2' if skip == 16 else 'pool4'}"
        upsampled = BilinearConvTranspose2D(2, num_classes, name=upscore)(scores)
        skip_scores = _score(features[key], num_classes, f"score_{label}")
        if same:
            upsampled = OffsetCrop(1, name=f"{upscore}c")([upsampled, skip_scores])
        else:
            skip_scores = OffsetCrop(offsets[label], name=f"score_{label}c")(
                [skip_scores, upsampled]
            )
        scores = keras.layers.Add(name=f"fuse_{label}")([upsampled, skip_scores])
    # The final upsampling stays bilinear interpolation: the paper fixes it.
    scores = BilinearConvTranspose2D(
        prediction_stride, num_classes, trainable=False, name=f"upscore{prediction_stride}"
    )(scores)
    final_offset = prediction_stride // 2 if same else offsets[prediction_stride]
    if same and not vgg16:
        scores = OffsetCrop(final_offset, name="score_padded")([scores, body_input])
        logits = CropToMatch(dtype="float32", name="score")([scores, image])
    else:
        logits = OffsetCrop(final_offset, dtype="float32", name="score")([scores, image])
    return keras.Model(image, logits, name=name or f"fcn{prediction_stride}s")


def _dilated_fcn(
    num_classes,
    output_stride,
    backbone,
    input_shape,
    backbone_weights,
    num_filters,
    dropout,
    name,
    backbone_kwargs,
    auxiliary,
):
    """The FCN torchvision publishes: dilated backbone, 3x3 conv-BN-ReLU, dropout, classifier.

    `auxiliary` is `(loss weight, layer, filters)` of an optional training-only auxiliary head
    (torchvision's aux_classifier: weight 0.5 on res4).
    """
    encoder = resolve_backbone(
        backbone,
        input_shape=input_shape,
        weights=backbone_weights,
        output_stride=output_stride,
        **backbone_kwargs,
    )
    weight, auxiliary_layer, auxiliary_filters = auxiliary
    deepest = deepest_feature_key(encoder)
    if weight > 0:
        encoder = with_auxiliary_tap(encoder, backbone, auxiliary_layer, deepest)
        deepest = "context"
    image = keras.Input(shape=input_shape, name="image")
    outputs = encoder(image)
    x = ConvBNReLU(num_filters, 3, name="head_conv")(outputs[deepest])
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = logits_head(x, num_classes, image, name="logits")
    return supervised_model(
        image,
        logits,
        outputs.get("auxiliary"),
        num_classes,
        weight=weight,
        filters=auxiliary_filters,
        dropout=dropout,
        name=name,
    )


_ENTRY_DOC = """
    Args:
        num_classes: number of classes (21 for PASCAL VOC).
        backbone: "vgg16" (the paper's), another backbone name or a model from
            `get_backbone` (see `kseg.models.fcn.FCN`).
        name: model name.
        **options: the other arguments of `kseg.models.fcn.FCN`: `input_shape`,
            `backbone_weights`, `num_filters`, `input_padding`, `fc6_padding`,
            `dropout`, `head` and backbone options.

    Returns:
        A `keras.Model` mapping `(B, H, W, 3)` RGB images in [0, 255] to
        float32 `(B, H, W, num_classes)` logits.
"""


@register_model("fcn32s")
def FCN32s(num_classes=21, backbone="vgg16", name="fcn32s", **options):
    """FCN-32s: VGG16 with convolutional fc6/fc7, scores upsampled x32 in one step.

    Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic
    Segmentation". The image is zero-padded by 100 px (in the backbone's
    normalised space, as Caffe pads conv1_1), VGG16 pools in Caffe's ceil
    mode, fc6/fc7 are 7x7/1x1 convolutions, a zero-initialised 1x1 score
    layer gives stride-32 class scores, and a frozen bilinear 64x64
    transposed convolution upsamples them; a crop at Caffe's offset returns
    logits of the input's size for any input size.
    {args}

    Example:
        >>> import numpy as np, kseg
        >>> model = kseg.models.FCN32s(num_classes=3, backbone="tiny", num_filters=16)
        >>> tuple(model(np.zeros((1, 65, 97, 3))).shape)
        (1, 65, 97, 3)
    """
    return FCN(num_classes, 32, backbone=backbone, name=name, **options)


@register_model("fcn16s")
def FCN16s(num_classes=21, backbone="vgg16", name="fcn16s", **options):
    """FCN-16s: FCN-32s scores upsampled x2 and summed with pool4 scores, then x16.

    Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic
    Segmentation", section 4.2. The x2 transposed convolution starts as
    bilinear interpolation and learns; pool4's zero-initialised scores are
    cropped (offset 5) to it and added; a frozen bilinear x16 transposed
    convolution and the final crop give logits of the input's size.
    {args}

    Example:
        >>> same = kseg.models.FCN16s(3, backbone="tiny", num_filters=8, fc6_padding="same")
        >>> valid = kseg.models.FCN16s(3, backbone="tiny", num_filters=8)
        >>> same.count_params() == valid.count_params()
        True
    """
    return FCN(num_classes, 16, backbone=backbone, name=name, **options)


@register_model("fcn8s")
def FCN8s(num_classes=21, backbone="vgg16", name="fcn8s", **options):
    """FCN-8s: FCN-16s with a further x2 step fused with pool3 scores, then x8.

    Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic
    Segmentation", section 4.2: the paper's best net (62.7 mean IU on VOC2011
    val). Skip fusion is an element-wise sum after cropping pool4 scores at
    offset 5 and pool3 scores at offset 9; intermediate x2 transposed
    convolutions are bilinear-initialised and learned, the final x8 one is
    frozen bilinear interpolation, and the final crop (offset 32 here, Caffe's
    31 plus Keras's 1 px conv1_1 padding) gives logits of the input's size.
    {args}

    Example:
        >>> model = kseg.models.FCN8s(num_classes=3, backbone="tiny", num_filters=16)
        >>> [layer.name for layer in model.layers if layer.name.startswith("fuse")]
        ['fuse_pool4', 'fuse_pool3']
    """
    return FCN(num_classes, 8, backbone=backbone, name=name, **options)


for _builder in (FCN32s, FCN16s, FCN8s):
    _builder.__doc__ = _builder.__doc__.replace("{args}", _ENTRY_DOC.strip("\n"))
