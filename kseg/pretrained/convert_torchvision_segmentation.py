"""torchvision's semantic segmentation models as kseg models, and their state dicts on them.

torchvision's `fcn_resnet50/101`, `deeplabv3_resnet50/101`, `deeplabv3_mobilenet_v3_large` and
`lraspp_mobilenet_v3_large` are configurations of kseg's own builders
(`TORCHVISION_SEGMENTATION_CONFIGS`). The ResNet ones have a ResNet v1.5 backbone
(`"resnet50_v1.5"`, torchvision's layout and layer names) dilated to output stride 8, then

- DeepLabv3: `kseg.models.deeplab_v3.DeepLabV3` with ASPP rates 12, 24, 36, no multi-grid,
  dropout 0.5 after the ASPP projection and `head_conv=True` (DeepLabHead's 3x3 convolution,
  BN and ReLU before the classifier);
- FCN: `kseg.models.fcn.FCN8s` with `head="dilated"` (FCNHead: a 3x3 convolution to 512
  channels, BN, ReLU, dropout 0.1, a 1x1 classifier).

The MobileNetV3 ones have torchvision's MobileNetV3-Large (`"mobilenet_v3_large"`) with its
last stage dilated (output stride 16), then

- DeepLabv3: the same DeepLabV3 configuration at output stride 16 (torchvision keeps the
  rates 12, 24, 36) on the last convolution's 960 channels;
- LR-ASPP: `kseg.models.lraspp.LRASPP` with 128 channels, whose low-level feature is the
  output of `features.4`, the first stride-8 block, as in torchvision.

All resize the logits bilinearly to the input size, as torchvision does with
`align_corners=False`. The backbone keys (`backbone.*`) go through
`kseg.pretrained.convert_resnet.load_torchvision_resnet_weights` or
`kseg.pretrained.convert_mobilenet_v3.load_torchvision_mobilenet_v3_weights`; the DeepLabv3 and
FCN head keys follow one rule: a torch Sequential `conv, bn, relu` at `<path>.<i>`,
`<path>.<i+1>` fills the `conv` and `bn` of the matching `kseg.layers.ConvBNReLU`:

| torchvision module                  | kseg layer                           |
|-------------------------------------|--------------------------------------|
| `classifier.0.convs.{i}.0` / `.1`   | `aspp` branch i (`aspp_conv_{i}`)    |
| `classifier.0.convs.4.1` / `.2`     | `aspp` image pooling (`aspp_pooling`)|
| `classifier.0.project.0` / `.1`     | `aspp` projection                    |
| `classifier.1` / `.2` (DeepLabv3)   | `head_conv`                          |
| `classifier.0` / `.1` (FCN)         | `head_conv`                          |
| `classifier.4`                      | `logits_classifier`                  |

LR-ASPP's head (torchvision's `LRASPPHead`) maps module by module:

| torchvision module                  | kseg layer                           |
|-------------------------------------|--------------------------------------|
| `classifier.cbr.0` / `.1`           | `lraspp_cbr` (a `ConvBNReLU`)        |
| `classifier.scale.1`                | `lraspp_scale`                       |
| `classifier.low_classifier`         | `low_classifier`                     |
| `classifier.high_classifier`        | `high_classifier`                    |

The published FCN and DeepLabv3 checkpoints also hold the training-only auxiliary classifier
(`aux_classifier.*`, an FCNHead on ResNet's layer3 or MobileNetV3's `features.4`). The
configurations build no auxiliary head and skip those keys (`ignore_aux=True`); a model built
with `auxiliary_loss_weight=0.5` (torchvision's training weight; on MobileNetV3 also
`auxiliary_layer="features.4.out", auxiliary_filters=10`) receives them in its
`auxiliary_conv` (`aux_classifier.0` / `.1`) and `auxiliary_classifier` (`aux_classifier.4`),
for fine-tuning the way torchvision trained:

    >>> model = build_torchvision_segmentation(
    ...     "deeplabv3_resnet50", auxiliary_loss_weight=0.5)  # doctest: +SKIP
"""

from kseg.models.backbone_input import backbone_of
from kseg.models.registry import get_builder
from kseg.pretrained.configurations import build_configured
from kseg.pretrained.convert_mobilenet_v3 import load_torchvision_mobilenet_v3_weights
from kseg.pretrained.convert_resnet import load_torchvision_resnet_weights
from kseg.pretrained.torch_checkpoint import read_torch_checkpoint
from kseg.pretrained.torch_parameters import (
    assign_planned,
    plan_assignments,
    require_complete,
    variables_outside,
)


def _deeplabv3(depth):
    return (
        "deeplabv3",
        {
            "backbone": f"resnet{depth}_v1.5",
            "output_stride": 8,
            "multi_grid": None,
            "dilation_rates": (12, 24, 36),
            "num_filters": 256,
            "dropout": 0.5,
            "head_conv": True,
            "name": f"deeplabv3_resnet{depth}",
        },
    )


def _fcn(depth):
    return (
        "fcn8s",
        {
            "backbone": f"resnet{depth}_v1.5",
            "head": "dilated",
            "num_filters": 512,
            "dropout": 0.1,
            "name": f"fcn_resnet{depth}",
        },
    )


_MOBILENET_V3 = {"backbone": "mobilenet_v3_large", "output_stride": 16}

TORCHVISION_SEGMENTATION_CONFIGS = {
    "fcn_resnet50": _fcn(50),
    "fcn_resnet101": _fcn(101),
    "deeplabv3_resnet50": _deeplabv3(50),
    "deeplabv3_resnet101": _deeplabv3(101),
    "deeplabv3_mobilenet_v3_large": (
        "deeplabv3",
        {
            **_MOBILENET_V3,
            "multi_grid": None,
            "dilation_rates": (12, 24, 36),
            "num_filters": 256,
            "dropout": 0.5,
            "head_conv": True,
            "name": "deeplabv3_mobilenet_v3_large",
        },
    ),
    "lraspp_mobilenet_v3_large": (
        "lraspp",
        {
            **_MOBILENET_V3,
            "low_level_feature": "features.4.out",
            "num_filters": 128,
            "name": "lraspp_mobilenet_v3_large",
        },
    ),
}
"""torchvision model name -> (registered kseg builder, its keyword arguments but num_classes)."""

_BACKBONE_PREFIX = "backbone."
_AUXILIARY_PREFIX = "aux_classifier."


def build_torchvision_segmentation(name, num_classes=21, **overrides):
    """Builds the kseg model that holds torchvision's segmentation model `name`.

    Args:
        name: a key of `TORCHVISION_SEGMENTATION_CONFIGS` ("fcn_resnet50",
            "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", ...).
        num_classes: classes of the classifier (21 for torchvision's COCO-with-VOC-labels
            checkpoints).
        **overrides: builder arguments replacing the configuration's (e.g. `input_shape`,
            or `base_channels` / `width_multiplier` for narrow test copies).

    Returns:
        A `keras.Model` mapping `(B, H, W, 3)` RGB images in [0, 255] to float32
        `(B, H, W, num_classes)` logits; the ImageNet normalisation torchvision expects
        the caller to apply is inside the backbone ("torch" preprocessing).

    Example:
        >>> from kseg.pretrained.convert_torchvision_segmentation import (
        ...     build_torchvision_segmentation)
        >>> model = build_torchvision_segmentation("fcn_resnet50", num_classes=3, base_channels=2)
        >>> model.name, model.get_layer("head_conv").filters
        ('fcn_resnet50', 512)
    """
    return build_configured(
        TORCHVISION_SEGMENTATION_CONFIGS,
        name,
        "torchvision segmentation model",
        num_classes,
        overrides,
    )


def _block_pairs(model):
    """(torch conv path, torch BN path, ConvBNReLU) for each head block of `model`."""
    layer_names = {layer.name for layer in model.layers}
    if "head_conv" not in layer_names or "logits_classifier" not in layer_names:
        raise ValueError(
            f"Model {model.name!r} is not a torchvision segmentation configuration (built by "
            "build_torchvision_segmentation): it needs layers 'head_conv' and "
            "'logits_classifier' (FCN, DeepLabv3) or 'lraspp_cbr' (LR-ASPP). "
            f"Layers: {sorted(layer_names)}"
        )
    head_conv = model.get_layer("head_conv")
    if "aspp" not in layer_names:
        return [("classifier.0", "classifier.1", head_conv)]
    aspp = model.get_layer("aspp")
    if aspp.separable or not aspp.image_pooling:
        raise ValueError(
            f"Model {model.name!r} has a separable or pooling-free ASPP; torchvision's "
            "DeepLabHead has dense 3x3 branches and an image pooling branch."
        )
    pairs = [
        (f"classifier.0.convs.{index}.0", f"classifier.0.convs.{index}.1", branch)
        for index, branch in enumerate(aspp.branches)
    ]
    pooling = len(aspp.branches)
    # torchvision's image pooling is Sequential(AdaptiveAvgPool2d, conv, bn, relu).
    pairs.append(
        (f"classifier.0.convs.{pooling}.1", f"classifier.0.convs.{pooling}.2", aspp.pooling_conv)
    )
    pairs.append(("classifier.0.project.0", "classifier.0.project.1", aspp.projection))
    pairs.append(("classifier.1", "classifier.2", head_conv))
    return pairs


def _lraspp_layers(model):
    cbr = model.get_layer("lraspp_cbr")
    return {
        "classifier.cbr.0": cbr.conv,
        "classifier.cbr.1": cbr.bn,
        "classifier.scale.1": model.get_layer("lraspp_scale"),
        "classifier.low_classifier": model.get_layer("low_classifier"),
        "classifier.high_classifier": model.get_layer("high_classifier"),
    }


def _head_layers(model):
    """Maps each torchvision module path to the Keras Conv2D or BatchNormalization it fills."""
    if "lraspp_cbr" in {layer.name for layer in model.layers}:
        return _lraspp_layers(model)
    layers = {}
    for conv_path, bn_path, block in _block_pairs(model):
        layers[conv_path] = block.conv
        layers[bn_path] = block.bn
    layers["classifier.4"] = model.get_layer("logits_classifier")
    return layers


def _auxiliary_layers(model):
    """Torchvision's aux_classifier (FCNHead) onto the model's auxiliary head, if it has one."""
    names = {layer.name for layer in model.layers}
    if "auxiliary_conv" not in names:
        return {}
    block = model.get_layer("auxiliary_conv")
    return {
        "aux_classifier.0": block.conv,
        "aux_classifier.1": block.bn,
        "aux_classifier.4": model.get_layer("auxiliary_classifier"),
    }


def _backbone_loader(backbone):
    """The converter of the backbone's torchvision layout: MobileNetV3's `features` or ResNet."""
    names = {layer.name for layer in backbone.layers}
    if "features.0.0" in names:
        return load_torchvision_mobilenet_v3_weights
    return load_torchvision_resnet_weights


def load_torchvision_segmentation_weights(model, state_dict, ignore_aux=True):
    """Copies a torchvision FCN, DeepLabv3 or LR-ASPP state dict into its kseg model.

    The model comes from `build_torchvision_segmentation` (or the builders with the same
    configuration). Backbone keys go through `load_torchvision_resnet_weights` or, for a
    MobileNetV3 backbone, `load_torchvision_mobilenet_v3_weights`; head keys through the rules
    in the module docstring. The check is exhaustive: every key is used
    exactly once and every variable of the model is set, otherwise a ValueError lists the
    unused keys and unset variables. The head is checked before the backbone, and nothing is
    written unless both pass.

    Args:
        model: the kseg model.
        state_dict: a mapping of torchvision keys to arrays, e.g. from
            `kseg.pretrained.read_torch_checkpoint`.
        ignore_aux: for a model built without an auxiliary head, skip the auxiliary
            classifier (`aux_classifier.*`) the published checkpoints hold for training; with
            False those keys are reported unused. A model built with one
            (`auxiliary_loss_weight > 0`; `auxiliary_filters` a quarter of the tapped layer's
            channels, as torchvision's FCNHead) receives them.

    Returns:
        The sorted list of consumed keys (skipped auxiliary keys included).

    Raises:
        ValueError: unused keys, unset variables or a shape mismatch.
        TypeError: a parameter holds non-floating values.

    Example:
        >>> from kseg.pretrained.convert_torchvision_segmentation import (
        ...     build_torchvision_segmentation, load_torchvision_segmentation_weights)
        >>> model = build_torchvision_segmentation("fcn_resnet50", base_channels=2)
        >>> load_torchvision_segmentation_weights(model, {"classifier.4.bias": np.zeros(21)})
        Traceback (most recent call last):
        ...
        ValueError: ... unused keys (0): []; unset variables (6): ['head_conv/bn/beta', ...
    """
    head_layers = _head_layers(model)
    auxiliary_layers = _auxiliary_layers(model)
    head_layers.update(auxiliary_layers)
    backbone = backbone_of(model)
    if backbone is None:
        raise ValueError(f"Model {model.name!r} has no nested backbone for the backbone.* keys.")
    head_keys = [key for key in state_dict if not key.startswith(_BACKBONE_PREFIX)]
    skip_auxiliary = ignore_aux and not auxiliary_layers
    skipped = [key for key in head_keys if skip_auxiliary and key.startswith(_AUXILIARY_PREFIX)]
    paths = {key: key for key in head_keys if key not in skipped}
    assignments, consumed, unused = plan_assignments(state_dict, paths, head_layers)
    consumed += skipped
    head_variables = variables_outside(model, backbone)
    require_complete(f"the head of model {model.name!r}", head_variables, assignments, unused)
    consumed += _backbone_loader(backbone)(backbone, state_dict, prefix=_BACKBONE_PREFIX)
    assign_planned(assignments)
    return sorted(consumed)


def load_torchvision_segmentation_checkpoint(entry, path):
    """Builds a pretrained registry entry's model and loads its torchvision checkpoint file.

    The converter of `kseg.pretrained` registry entries for torchvision's FCN, DeepLabv3 and
    LR-ASPP models: `entry.builder` and `entry.builder_kwargs` give the model, the file at `path`
    (a torch checkpoint) its weights (`load_torchvision_segmentation_weights`, auxiliary
    classifier skipped).

    Args:
        entry: a `kseg.pretrained.registry.PretrainedEntry` with `builder` and
            `builder_kwargs`.
        path: the checkpoint file.

    Returns:
        The `keras.Model` with the converted weights.
    """
    model = get_builder(entry.builder)(**entry.builder_kwargs)
    load_torchvision_segmentation_weights(model, read_torch_checkpoint(path))
    return model
