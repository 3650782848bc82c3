"""DeepLab v3: multi-grid atrous ResNet with ASPP and image pooling."""

import keras

from kseg.backbones.atrous import layer_strides
from kseg.layers.aspp import ASPP, aspp_rates
from kseg.layers.conv_block import ConvBNReLU
from kseg.models.backbone_input import backbone_of, deepest_feature_key, resolve_backbone
from kseg.models.heads import (
    check_auxiliary_loss_weight,
    logits_head,
    supervised_model,
    with_auxiliary_tap,
)
from kseg.models.registry import register_model

_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")
_POOLINGS = ("MaxPooling2D", "AveragePooling2D")


@register_model("deeplabv3")
def DeepLabV3(
    num_classes=21,
    backbone="resnet101",
    output_stride=16,
    multi_grid=(1, 2, 4),
    dilation_rates=None,
    num_filters=256,
    dropout=0.1,
    input_shape=(None, None, 3),
    backbone_weights=None,
    name="deeplabv3",
    head_conv=False,
    auxiliary_loss_weight=0.0,
    auxiliary_layer=None,
    auxiliary_filters=256,
    auxiliary_dropout=0.1,
    **backbone_kwargs,
):
    """DeepLab v3: ASPP with image pooling and batch normalisation on a multi-grid ResNet.

    Chen, Papandreou, Schroff & Adam 2017, "Rethinking Atrous Convolution for Semantic Image
    Segmentation". The backbone is dilated to `output_stride` and the three 3x3 units of its
    last block use the rates `multi_grid` (1, 2, 4) times the block's rate (Sec. 3.2,
    `kseg.backbones.get_backbone(..., multi_grid=...)`). ASPP (Sec. 3.3,
    `kseg.layers.ASPP`) has a 1x1 branch, three 3x3 atrous branches at rates 6, 12, 18 at
    output stride 16 (doubled at 8), an image-pooling branch, batch normalisation and 256
    channels, concatenated and projected by a 1x1 convolution (dropout 0.1 after it, as in
    the reference TensorFlow implementation); a 1x1 classifier gives the scores, bilinearly
    upsampled to the input size.

    The paper trains at output stride 16 and evaluates at 8 with the same weights (Table 6).
    `kseg.models.deeplab_v3.with_output_stride(model, 8)` rebuilds a trained OS16 model at
    output stride 8 (the block before the last one dilated instead of strided, all later
    rates and the ASPP rates doubled) and copies its weights; equivalently, build
    `DeepLabV3(..., output_stride=8)` with the same arguments and call
    `set_weights(os16_model.get_weights())`: the weights agree in number, order and shape.

    torchvision's `deeplabv3_resnet50`/`deeplabv3_resnet101` are this builder with
    `backbone="resnet50_v1.5"` (or 101), `output_stride=8`, `multi_grid=None`, `dropout=0.5`
    and `head_conv=True`: its DeepLabHead adds a 3x3 convolution, BN and ReLU between the ASPP
    and the classifier (`kseg.pretrained.convert_torchvision_segmentation`).

    Args:
        num_classes: number of classes (21 for PASCAL VOC).
        backbone: a name from `kseg.backbones.list_backbones()` ("resnet101" in the paper)
            or a model from `get_backbone`.
        output_stride: 16 (training in the paper) or 8 (evaluation).
        multi_grid: rate multipliers of the last block's 3x3 convolutions, or None.
            Backbones whose last stage does not split into `len(multi_grid)` groups (the
            tiny test backbone) need None. A prebuilt backbone keeps the rates it was built
            with (pass `multi_grid` to `get_backbone` instead).
        dilation_rates: ASPP rates; default (6, 12, 18) times 16 / output_stride
            (`kseg.layers.aspp.aspp_rates`).
        num_filters: channels of ASPP (256).
        dropout: dropout after the ASPP projection (torchvision: 0.5).
        input_shape: `(H, W, 3)`; H and W may be None.
        backbone_weights: None, "imagenet" or a path to backbone weights.
        name: model name.
        head_conv: add a 3x3 convolution of `num_filters` channels with BN and ReLU
            (layer "head_conv") between the ASPP and the classifier, as torchvision's
            DeepLabHead does; False (the paper's head) goes straight to the classifier.
        auxiliary_loss_weight: > 0 adds a training-only auxiliary head (3x3 conv-BN-ReLU,
            dropout, classifier) on `auxiliary_layer`, its loss weighted so in `fit`; the
            model is then a `kseg.models.heads.DeepSupervisionModel` whose inference output
            is unchanged. torchvision trains its DeepLabv3 with weight 0.5 on res4 ("aux_loss").
        auxiliary_layer: the backbone layer the auxiliary head reads; None: the stride-16 tap
            of the undilated network (res4 of a ResNet).
        auxiliary_filters: channels of the auxiliary 3x3 convolution (torchvision: a quarter
            of the layer's channels, 256 on res4).
        auxiliary_dropout: the auxiliary head's dropout (0.1).
        **backbone_kwargs: forwarded to `kseg.backbones.get_backbone`.

    Returns:
        A `keras.Model` (a `DeepSupervisionModel` with an auxiliary head) mapping
        `(B, H, W, 3)` RGB images in [0, 255] to float32 `(B, H, W, num_classes)` logits.

    Example:
        >>> import numpy as np, kseg
        >>> from kseg.models.deeplab_v3 import DeepLabV3
        >>> model = DeepLabV3(num_classes=3, backbone="tiny", multi_grid=None)
        >>> tuple(model(np.zeros((1, 65, 97, 3))).shape)
        (1, 65, 97, 3)
    """
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16. Received: output_stride={output_stride}")
    dilation_rates = aspp_rates(output_stride, dilation_rates)
    auxiliary_loss_weight = check_auxiliary_loss_weight(auxiliary_loss_weight)
    if isinstance(backbone, str) and multi_grid is not None:
        backbone_kwargs["multi_grid"] = tuple(multi_grid)
    encoder = resolve_backbone(
        backbone,
        input_shape=input_shape,
        weights=backbone_weights,
        output_stride=output_stride,
        **backbone_kwargs,
    )
    deepest = deepest_feature_key(encoder)
    if auxiliary_loss_weight > 0:
        encoder = with_auxiliary_tap(encoder, backbone, auxiliary_layer, deepest)
        deepest = "context"
    image = keras.Input(shape=input_shape, name="image")
    outputs = encoder(image)
    x = ASPP(num_filters, dilation_rates, separable=False, dropout=dropout, name="aspp")(
        outputs[deepest]
    )
    if head_conv:
        x = ConvBNReLU(num_filters, 3, name="head_conv")(x)
    logits = logits_head(x, num_classes, image, name="logits")
    return supervised_model(
        image,
        logits,
        outputs.get("auxiliary"),
        num_classes,
        weight=auxiliary_loss_weight,
        filters=auxiliary_filters,
        dropout=auxiliary_dropout,
        name=name,
    )


def _own_stride(layer_config):
    strides = layer_config["config"].get("strides", 1)
    return strides[0] if isinstance(strides, (list, tuple)) else strides


def _densify_backbone(backbone, backbone_config, output_stride):
    """Rewrites a backbone's config to compute its features at `output_stride`."""
    strides = layer_strides(backbone)
    for layer_config in backbone_config["layers"]:
        name = layer_config["config"]["name"]
        if name not in strides:
            continue
        input_stride, _ = strides[name]
        config = layer_config["config"]
        kind = layer_config["class_name"]
        subsamples = kind in _CONVOLUTIONS + _POOLINGS and _own_stride(layer_config) > 1
        if subsamples and input_stride >= output_stride:
            if input_stride != output_stride:
                raise ValueError(
                    f"layer {name!r} subsamples at stride {input_stride}, past "
                    f"output_stride={output_stride}; the backbone cannot be densified"
                )
            config["strides"] = [1, 1]
            if kind in _POOLINGS:
                config["padding"] = "same"
        kernel = config.get("kernel_size", 1)
        kernel = kernel[0] if isinstance(kernel, (list, tuple)) else kernel
        if kind in _CONVOLUTIONS and kernel > 1 and input_stride > output_stride:
            # A kernel that sampled a stride-s map now reads a stride-output_stride map:
            # spreading its taps by s / output_stride keeps the field of view.
            factor = input_stride // output_stride
            rate = config.get("dilation_rate", 1)
            rate = rate[0] if isinstance(rate, (list, tuple)) else rate
            config["dilation_rate"] = [rate * factor, rate * factor]


def with_output_stride(model, output_stride):
    """Rebuilds a DeepLab v3 model at a finer output stride with the same weights.

    DeepLabv3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image
    Segmentation", Sec. 4.1 and Table 6) trains at output stride 16 and evaluates at output
    stride 8: the last subsampling step before the features becomes a stride-1 step, every
    spatial convolution after it multiplies its atrous rate by the stride it no longer has
    (ResNet-101's block3 gets rate 2, block4's multi-grid rates (2, 4, 8) become
    (4, 8, 16)), and the ASPP rates double (6, 12, 18 -> 12, 24, 36). Kernel shapes do not
    change, so the weights carry over; the result equals building
    `DeepLabV3(..., output_stride=8)` and calling `set_weights` with the OS16 weights.

    Args:
        model: a model from `kseg.models.deeplab_v3.DeepLabV3` (built or reloaded).
        output_stride: the new output stride, a power-of-two divisor of the current one.

    Returns:
        A new `keras.Model` with the same layer names and weights.

    Example:
        >>> import kseg
        >>> from kseg.models.deeplab_v3 import DeepLabV3, with_output_stride
        >>> os16 = DeepLabV3(num_classes=3, backbone="tiny", multi_grid=None)
        >>> os8 = with_output_stride(os16, 8)
        >>> os8.get_layer("aspp").dilation_rates
        (12, 24, 36)
    """
    backbone = backbone_of(model)
    aspp_layers = [layer for layer in model.layers if isinstance(layer, ASPP)]
    if backbone is None or backbone not in model.layers or len(aspp_layers) != 1:
        raise ValueError(
            "with_output_stride expects a DeepLabV3 model: a backbone nested at its top level "
            f"and one ASPP layer. Received: model {model.name!r} with backbone "
            f"{getattr(backbone, 'name', None)!r} and {len(aspp_layers)} ASPP layers"
        )
    current = max(out for _, out in layer_strides(backbone).values())
    if (
        not isinstance(output_stride, int)
        or output_stride <= 0
        or current % output_stride
        or (current // output_stride) & (current // output_stride - 1)
    ):
        raise ValueError(
            f"output_stride must divide the model's output stride {current} by a power of "
            f"two. Received: output_stride={output_stride}"
        )
    factor = current // output_stride
    config = model.get_config()
    for layer_config in config["layers"]:
        if layer_config["config"]["name"] == backbone.name:
            _densify_backbone(backbone, layer_config["config"], output_stride)
        elif layer_config["config"]["name"] == aspp_layers[0].name:
            rates = layer_config["config"]["dilation_rates"]
            layer_config["config"]["dilation_rates"] = [rate * factor for rate in rates]
    dense = keras.Model.from_config(config)
    dense.set_weights(model.get_weights())
    return dense
