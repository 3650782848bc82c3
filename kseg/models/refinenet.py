"""RefineNet: multi-path refinement of a ResNet's four stages."""

import keras

from kseg.layers.refine import RefineNetBlock, ResidualConvUnit
from kseg.models.backbone_input import feature_stride, resolve_backbone
from kseg.models.heads import logits_head
from kseg.models.registry import register_model

# The backbone stages RefineNet refines, coarsest first, and the stride each must have.
_STAGES = (("P5", 32), ("P4", 16), ("P3", 8), ("P2", 4))


@register_model("refinenet")
def RefineNet(
    num_classes=21,
    backbone="resnet101",
    input_shape=(None, None, 3),
    backbone_weights=None,
    num_filters=256,
    deepest_filters=None,
    crp_blocks=2,
    final_units=2,
    dropout=0.0,
    name="refinenet",
    **backbone_kwargs,
):
    """4-cascaded RefineNet over the stride-4 to stride-32 stages of a backbone.

    Lin, Milan, Shen and Reid, "RefineNet: Multi-Path Refinement Networks for
    High-Resolution Semantic Segmentation", CVPR 2017 (Sec. 3, Fig. 2). Each of the four
    ResNet stage outputs (strides 32, 16, 8, 4) is reduced by a 3x3 convolution, to 512
    channels for RefineNet-4 and to 256 for the others (the paper's Sec. 3.2; the released
    code's `input_adapt_dims = [512 256 256 256]`, github.com/guosheng/refinenet). RefineNet-4
    refines the stride-32 path alone; RefineNet-3, -2 and -1 each fuse their stage with the
    previous block's output (`kseg.layers.RefineNetBlock`). The stride-4 result goes through
    two more residual conv units (Sec. 3.2), an optional dropout, a 1x1 classifier and
    bilinear upsampling to the input size. The last convolution of every residual branch
    starts at zero, so each residual unit starts as the identity (`kseg.layers.refine`
    explains why: the decoder has no batch normalisation).

    The model takes RGB images with values in [0, 255] (the backbone's preprocessing is
    inside) of any height and width, and returns float32 logits at the input resolution.

    Args:
        num_classes: number of classes (21 for PASCAL VOC).
        backbone: "resnet50", "resnet101", "resnet152" (the paper's), any other name from
            `kseg.backbones.list_backbones()` with `P2`..`P5` features ("tiny" for tests),
            or a model from `kseg.backbones.get_backbone` at output stride 32.
        input_shape: `(H, W, 3)`; H and W may be None.
        backbone_weights: None, "imagenet" or a path to backbone weights.
        num_filters: width of RefineNet-3, -2, -1 and of the output (256).
        deepest_filters: width of the RefineNet-4 path; default `2 * num_filters` (512).
        crp_blocks: pooling blocks per chained residual pooling: 2 in the paper; the
            released PASCAL VOC model uses 4.
        final_units: residual conv units after RefineNet-1 (2 in the paper).
        dropout: dropout rate before the classifier (none in the paper; the PyTorch port of
            the released models, DrSleep/refinenet-pytorch, uses 0.5).
        name: model name.
        **backbone_kwargs: forwarded to the backbone.

    Returns:
        A `keras.Model` mapping `(B, H, W, 3)` images to `(B, H, W, num_classes)` logits.

    Example:
        >>> import numpy as np, kseg
        >>> model = kseg.models.RefineNet(num_classes=4, backbone="tiny", num_filters=8)
        >>> model.predict(np.zeros((1, 65, 97, 3)), verbose=0).shape
        (1, 65, 97, 4)
    """
    num_filters = int(num_filters)
    deepest_filters = 2 * num_filters if deepest_filters is None else int(deepest_filters)
    if num_filters <= 0 or deepest_filters <= 0:
        raise ValueError(
            "num_filters and deepest_filters must be positive. Received: "
            f"num_filters={num_filters}, deepest_filters={deepest_filters}"
        )
    if int(final_units) < 0:
        raise ValueError(f"final_units must be non-negative. Received: final_units={final_units}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    encoder = resolve_backbone(
        backbone,
        input_shape=input_shape,
        weights=backbone_weights,
        output_stride=32,
        **backbone_kwargs,
    )
    for key, stride in _STAGES:
        try:
            actual = feature_stride(encoder, key)
        except KeyError:
            actual = None
        if actual != stride:
            raise ValueError(
                f"RefineNet needs backbone feature {key!r} at stride {stride} (an output stride "
                f"32 backbone). Received: backbone {encoder.name!r} with "
                f"{[(info['key'], info['stride']) for info in encoder.feature_info]}"
            )
    image = keras.Input(shape=input_shape, name="image")
    features = encoder(image)

    refined, refined_width = None, None
    for level, (key, _) in zip((4, 3, 2, 1), _STAGES):
        width = deepest_filters if level == 4 else num_filters
        path = keras.layers.Conv2D(
            width, 3, padding="same", use_bias=False, name=f"{key.lower()}_reduce"
        )(features[key])
        block = RefineNetBlock(
            [width] if refined is None else [width, refined_width],
            crp_blocks=crp_blocks,
            name=f"refinenet_{level}",
        )
        refined = block(path if refined is None else [path, refined])
        refined_width = block.filters
    x = refined
    for unit in range(1, int(final_units) + 1):
        x = ResidualConvUnit(refined_width, name=f"final_rcu_{unit}")(x)
    if dropout:
        x = keras.layers.Dropout(float(dropout), name="dropout")(x)
    logits = logits_head(x, num_classes, image, name="logits")
    return keras.Model(image, logits, name=name)
