"""The backbone of a model: from a builder's `backbone=` argument, and back from a built model."""

import keras

from kseg.backbones import feature_info, get_backbone


def resolve_backbone(backbone, *, input_shape, weights, output_stride, **backbone_kwargs):
    """Returns a backbone model (dict of "P{n}" features) from a name or a model.

    Args:
        backbone: a name known to `kseg.backbones.list_backbones()`, or a model
            already returned by `kseg.backbones.get_backbone`.
        input_shape: the image shape `(H, W, 3)`; H and W may be None.
        weights: None, "imagenet" or a weights path for a named backbone.
        output_stride: 8, 16 or 32.
        **backbone_kwargs: options forwarded to the application (e.g. `alpha`).

    Returns:
        A `keras.Model` with dict outputs and a `feature_info` attribute (recomputed by
        `kseg.backbones.feature_info` for a reloaded model).

    Example:
        >>> import kseg
        >>> from kseg.models.backbone_input import resolve_backbone
        >>> bb = resolve_backbone(
        ...     "tiny", input_shape=(None, None, 3), weights=None, output_stride=16
        ... )
        >>> sorted(bb.output)[-1]
        'P4'
    """
    if isinstance(backbone, keras.Model):
        if backbone_kwargs or weights is not None:
            given = sorted(backbone_kwargs) + (["weights"] if weights else [])
            raise ValueError(
                "backbone options and weights apply to a backbone given by name, not to a "
                f"prebuilt model. Received: {given}"
            )
        if not isinstance(backbone.output, dict):
            raise TypeError(
                "a prebuilt backbone must output a dict of 'P{n}' features, as "
                f"kseg.backbones.get_backbone returns. Received outputs: {backbone.output}"
            )
        return backbone
    return get_backbone(
        backbone,
        input_shape=input_shape,
        weights=weights,
        output_stride=output_stride,
        **backbone_kwargs,
    )


def feature_stride(backbone, key):
    """The stride of feature `key`, read from the backbone's `feature_info`."""
    for info in feature_info(backbone):
        if info["key"] == key:
            return info["stride"]
    raise KeyError(f"backbone {backbone.name!r} has no feature {key!r}")


def deepest_feature_key(backbone):
    """The key of the backbone's coarsest feature map, from `feature_info`."""
    return max(feature_info(backbone), key=lambda info: info["stride"])["key"]


def _nested_models(model):
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]


def backbone_of(model):
    """The backbone of a kseg model: the nested model whose output is a dict of features.

    Builders nest the backbone from `kseg.backbones.get_backbone` as one functional layer
    (DeepLab v2 one level further down, inside its "single_scale" network). The search goes
    level by level through nested models and returns the shallowest one with dict outputs,
    the largest if a level holds several; other nested models (DilatedNet's context module,
    DeepLab v2's per-scale network) are not backbones. Models that build their encoder
    inline (SegNet, FCN-AlexNet, the VGG16 forms of DilatedNet and DeepLab v1, U-Net without
    a backbone) have none. The backbone found carries `feature_info` again, recomputed from
    its graph when the model was reloaded (`kseg.backbones.feature_info`).

    Args:
        model: A built or reloaded `keras.Model`.

    Returns:
        The backbone model, or None.

    Example:
        >>> model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny")
        >>> backbone = kseg.models.backbone_of(model)
        >>> backbone.name, [info["stride"] for info in backbone.feature_info]
        ('tiny_backbone', [2, 4, 8, 16])
    """
    level = _nested_models(model)
    while level:
        backbones = [layer for layer in level if isinstance(layer.output, dict)]
        if backbones:
            backbone = max(backbones, key=lambda layer: layer.count_params())
            if getattr(backbone, "feature_info", None) is None:
                backbone.feature_info = feature_info(backbone)
            return backbone
        level = [nested for layer in level for nested in _nested_models(layer)]
    return None
