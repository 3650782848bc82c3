"""Turning the `backbone=` argument of a builder into a tapped backbone model."""

import keras

from kseg.backbones import get_backbone


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
        A `keras.Model` with dict outputs and a `feature_info` attribute.

    Example:
        >>> import kseg
        >>> from kseg.models.backbone_input import resolve_backbone
        >>> bb = resolve_backbone("tiny", input_shape=(None, None, 3), weights=None, output_stride=16)
        >>> sorted(bb.output)[-1]
        'P4'
    """
    if isinstance(backbone, keras.Model):
        if backbone_kwargs or weights is not None:
            raise ValueError(
                "backbone options and weights apply to a backbone given by name, not to a "
                f"prebuilt model. Received: {sorted(backbone_kwargs) + (['weights'] if weights else [])}"
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
    for info in backbone.feature_info:
        if info["key"] == key:
            return info["stride"]
    raise KeyError(f"backbone {backbone.name!r} has no feature {key!r}")


def deepest_feature_key(backbone):
    """The key of the backbone's coarsest feature map, from `feature_info`."""
    return max(backbone.feature_info, key=lambda info: info["stride"])["key"]
