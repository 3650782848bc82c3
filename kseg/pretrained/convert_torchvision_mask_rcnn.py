"""torchvision's Mask R-CNN as a configuration of `kseg.models.MaskRCNN`, and its state dicts on it.

torchvision's `maskrcnn_resnet50_fpn` (v1) is kseg's `MaskRCNN` with the torchvision options of
`TORCHVISION_MASK_RCNN_CONFIGS`: the `"resnet50_v1.5"` backbone with frozen batch norm; the
input normalised (ImageNet mean and std on [0, 1] values) inside the model, resized so the
shorter side is 800 and the longer at most 1333 and padded to a multiple of 32
(`GeneralizedRCNNTransform`); torchvision's anchor grid (`AnchorGenerator`), proposals and
detections clipped to the image before padding, RoIAlign with `aligned=False` and torchvision's
level mapper, detections of a side under 1e-2 dropped, masks pasted as
`paste_masks_in_image` does. Everything else (FPN with a max-pooled P6, one-convolution RPN
head, two-layer MLP box head, four-convolution mask head, NMS settings, box coder weights and
clip) is kseg's default design, which torchvision's v1 shares.

The state dict maps by module path:

| torchvision module                          | kseg layer                                  |
|---------------------------------------------|---------------------------------------------|
| `backbone.body.*`                           | the ResNet (`convert_resnet`)               |
| `backbone.fpn.inner_blocks.{i}.0`           | `fpn` lateral i (`p{i+2}_lateral`)          |
| `backbone.fpn.layer_blocks.{i}.0`           | `fpn` output i (`p{i+2}_output`)            |
| `rpn.head.conv.0.0`                         | `rpn_head` `rpn_conv`                       |
| `rpn.head.cls_logits` / `bbox_pred`         | `rpn_objectness` / `rpn_box_deltas`         |
| `roi_heads.box_head.fc6` / `fc7`            | `box_head` `box_fc1` / `box_fc2`            |
| `roi_heads.box_predictor.cls_score`         | `box_head` `box_class_logits`               |
| `roi_heads.box_predictor.bbox_pred`         | `box_head` `box_deltas`                     |
| `roi_heads.mask_head.{i}.0`                 | `mask_head` `mask_conv{i+1}`                |
| `roi_heads.mask_predictor.conv5_mask`       | `mask_head` `mask_deconv`                   |
| `roi_heads.mask_predictor.mask_fcn_logits`  | `mask_head` `mask_logits`                   |

Three layouts change on the way: torch's box deltas are `(dx, dy, dw, dh)` per anchor or class
and kseg's `(dy, dx, dh, dw)`, so those output rows are reordered; `fc6` reads the RoI features
flattened channel-first (C, 7, 7) and kseg's box head flattens (7, 7, C), so its input columns
are reordered; linear weights are transposed and convolution kernels laid out as Keras's. The
published v1 checkpoint predates torchvision's module renaming and spells some keys the old way
(`backbone.fpn.inner_blocks.0.weight`, `rpn.head.conv.weight`, `roi_heads.mask_head.mask_fcn1.
weight`); both spellings are accepted, as torchvision's own loaders accept them.
"""

import re

import keras
import numpy as np

from kseg.models.registry import get_builder
from kseg.pretrained.configurations import build_configured
from kseg.pretrained.convert_resnet import load_torchvision_resnet_weights
from kseg.pretrained.torch_checkpoint import read_torch_checkpoint
from kseg.pretrained.torch_parameters import (
    UNUSED_PARAMETERS,
    assign_planned,
    keras_layout,
    require_complete,
    variables_outside,
)

_TORCHVISION_OPTIONS = {
    "backbone": "resnet50_v1.5",
    "backbone_kwargs": {"frozen_batchnorm": True},
    "size_divisor": 32,
    "resize_min_side": 800,
    "resize_max_side": 1333,
    "input_normalization": "torch",
    "anchor_layout": "grid",
    "clip_boxes_to": "image",
    "roi_aligned": False,
    "roi_level_epsilon": 1e-6,
    "detection_min_size": 1e-2,
    "mask_paste": "torchvision",
}

# torchvision's v2 (Li et al. 2021, "Benchmarking Detection Transfer Learning with Vision
# Transformers"): batch norm in the FPN and the mask head, a two-convolution RPN head and a
# "4conv1fc" box head with batch norm.
_V2_OPTIONS = {
    "fpn_batch_norm": True,
    "rpn_num_convs": 2,
    "box_head_convs": 4,
    "box_head_fc": 1,
    "mask_head_batch_norm": True,
}

TORCHVISION_MASK_RCNN_CONFIGS = {
    "maskrcnn_resnet50_fpn": (
        "mask_rcnn",
        {**_TORCHVISION_OPTIONS, "name": "maskrcnn_resnet50_fpn"},
    ),
    "maskrcnn_resnet50_fpn_v2": (
        "mask_rcnn",
        {**_TORCHVISION_OPTIONS, **_V2_OPTIONS, "name": "maskrcnn_resnet50_fpn_v2"},
    ),
}
"""torchvision model name -> (registered kseg builder, its keyword arguments but num_classes)."""

_BACKBONE_PREFIX = "backbone.body."
# Old (torchvision < 0.8 module layout) key spellings -> the current ones.
_RENAMES = (
    (
        re.compile(r"^backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(weight|bias)$"),
        r"backbone.fpn.\1_blocks.\2.0.\3",
    ),
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
)
_MASK_FCN = re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$")
# Per group of four: torch (dx, dy, dw, dh) rows in kseg's (dy, dx, dh, dw) order.
_DELTA_ORDER = (1, 0, 3, 2)


def build_torchvision_mask_rcnn(name, num_classes=91, **overrides):
    """Builds the kseg `MaskRCNN` that holds torchvision's Mask R-CNN `name`.

    Args:
        name: "maskrcnn_resnet50_fpn".
        num_classes: classes including the background (91: torchvision's COCO ids).
        **overrides: `MaskRCNN` arguments replacing the configuration's (e.g. smaller
            `resize_min_side` / `resize_max_side`, or `backbone_kwargs` for a narrow test model).

    Returns:
        A `kseg.models.MaskRCNN` taking `(B, H, W, 3)` RGB images in [0, 255] of any size and
        returning detections in the images' pixels.

    Example:
        >>> from kseg.pretrained.convert_torchvision_mask_rcnn import build_torchvision_mask_rcnn
        >>> model = build_torchvision_mask_rcnn(
        ...     "maskrcnn_resnet50_fpn", num_classes=3, fpn_channels=8, box_fc_units=8,
        ...     mask_channels=8, backbone_kwargs={"frozen_batchnorm": True, "base_channels": 2})
        >>> model.anchor_layout, model.size_divisor, model.resize_min_side
        ('grid', 32, 800)
    """
    return build_configured(
        TORCHVISION_MASK_RCNN_CONFIGS, name, "torchvision Mask R-CNN", num_classes, overrides
    )


def current_key(key):
    """A state-dict key in torchvision's current module layout (old spellings renamed).

    Example:
        >>> current_key("roi_heads.mask_head.mask_fcn2.bias")
        'roi_heads.mask_head.1.0.bias'
    """
    for pattern, replacement in _RENAMES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    match = _MASK_FCN.match(key)
    if match:
        return f"roi_heads.mask_head.{int(match.group(1)) - 1}.0.{match.group(2)}"
    return key


def _reorder_deltas(array):
    """Rows of box deltas (4 per anchor or class) from (dx, dy, dw, dh) to (dy, dx, dh, dw)."""
    groups = array.shape[0] // 4
    order = [4 * group + k for group in range(groups) for k in _DELTA_ORDER]
    return array[order]


def _dense(array, variable, key, reorder_rows=False, channel_first_input=None):
    """A torch Linear parameter in Keras Dense layout (`kernel` is the transposed weight)."""
    array = np.asarray(array)
    if reorder_rows:
        array = _reorder_deltas(array)
    if array.ndim == 2 and channel_first_input is not None:
        channels = channel_first_input
        rows, columns = array.shape
        side = int(round((columns / channels) ** 0.5))
        if side * side * channels != columns:
            raise ValueError(
                f"Checkpoint key {key!r} has {columns} inputs, not a square map of {channels} "
                "channels."
            )
        array = array.reshape(rows, channels, side, side).transpose(0, 2, 3, 1).reshape(rows, -1)
    if array.ndim == 2:
        array = array.T
    return keras_layout(array, variable, key)


def _conv(array, variable, key, reorder_rows=False):
    array = np.asarray(array)
    if reorder_rows:
        array = _reorder_deltas(array)
    return keras_layout(array, variable, key)


def _conv_blocks(plan, prefix, convs, norms):
    """`<prefix>.{i}.0` -> convolution i, `<prefix>.{i}.1` -> its batch norm (when it has one)."""
    for index, (conv, norm) in enumerate(zip(convs, norms)):
        plan[f"{prefix}.{index}.0"] = (conv, _conv)
        if norm is not None:
            plan[f"{prefix}.{index}.1"] = (norm, _conv)


def _head_plan(model):
    """Each torch module path -> (keras layer, convert function) for everything but the ResNet."""
    fpn, rpn, box, mask = model.feature_pyramid, model.rpn_head, model.box_head, model.mask_head
    plan = {}
    for index, (lateral, output) in enumerate(zip(fpn.laterals, fpn.smoothing)):
        plan[f"backbone.fpn.inner_blocks.{index}.0"] = (lateral, _conv)
        plan[f"backbone.fpn.layer_blocks.{index}.0"] = (output, _conv)
        if fpn.batch_norm:
            plan[f"backbone.fpn.inner_blocks.{index}.1"] = (fpn.lateral_norms[index], _conv)
            plan[f"backbone.fpn.layer_blocks.{index}.1"] = (fpn.smoothing_norms[index], _conv)
    for index, conv in enumerate(rpn.convs):
        plan[f"rpn.head.conv.{index}.0"] = (conv, _conv)
    plan["rpn.head.cls_logits"] = (rpn.objectness, _conv)
    plan["rpn.head.bbox_pred"] = (rpn.box_deltas, lambda a, v, k: _conv(a, v, k, True))
    # TwoMLPHead (v1) names its layers fc6 and fc7; FastRCNNConvFCHead (v2) is a Sequential
    # of conv blocks, a Flatten and then Linear, ReLU pairs.
    if box.convs:
        _conv_blocks(plan, "roi_heads.box_head", box.convs, box.conv_norms)
        names = [f"roi_heads.box_head.{box.num_convs + 1 + 2 * j}" for j in range(box.num_fc)]
        channels = box.conv_channels
    else:
        names = [f"roi_heads.box_head.fc{6 + j}" for j in range(box.num_fc)]
        channels = model.fpn_channels
    plan[names[0]] = (box.hidden[0], lambda a, v, k: _dense(a, v, k, channel_first_input=channels))
    for name, layer in zip(names[1:], box.hidden[1:]):
        plan[name] = (layer, _dense)
    plan["roi_heads.box_predictor.cls_score"] = (box.classifier, _dense)
    plan["roi_heads.box_predictor.bbox_pred"] = (
        box.regressor,
        lambda a, v, k: _dense(a, v, k, reorder_rows=True),
    )
    _conv_blocks(plan, "roi_heads.mask_head", mask.convs, mask.conv_norms)
    # ConvTranspose2d (in, out, kh, kw) -> Keras's (kh, kw, out, in): the same transpose.
    plan["roi_heads.mask_predictor.conv5_mask"] = (mask.upsample, _conv)
    plan["roi_heads.mask_predictor.mask_fcn_logits"] = (mask.predictor, _conv)
    return plan


def _variable(layer, parameter):
    if isinstance(layer, keras.layers.BatchNormalization):
        names = {"weight": "gamma", "bias": "beta"}
        names.update(running_mean="moving_mean", running_var="moving_variance")
    else:
        names = {"weight": "kernel", "bias": "bias"}
    attribute = names.get(parameter)
    return None if attribute is None else getattr(layer, attribute, None)


def load_torchvision_mask_rcnn_weights(model, state_dict):
    """Copies a torchvision Mask R-CNN state dict into its kseg `MaskRCNN`.

    The model comes from `build_torchvision_mask_rcnn` (or `MaskRCNN` with the same
    configuration). The check is exhaustive: every key is used exactly once and every variable
    of the model is set, otherwise a ValueError lists the unused keys and unset variables, and
    nothing is written.

    Args:
        model: the kseg `MaskRCNN`.
        state_dict: a mapping of torchvision keys (current or old spellings) to arrays, e.g.
            from `kseg.pretrained.read_torch_checkpoint`.

    Returns:
        The sorted list of consumed keys, as spelled in `state_dict`.

    Raises:
        ValueError: unused keys, unset variables or a shape mismatch.
        TypeError: a parameter holds non-floating values.

    Example:
        >>> from kseg.pretrained.convert_torchvision_mask_rcnn import (
        ...     build_torchvision_mask_rcnn, load_torchvision_mask_rcnn_weights)
        >>> model = build_torchvision_mask_rcnn(
        ...     "maskrcnn_resnet50_fpn", num_classes=3, fpn_channels=8, box_fc_units=8,
        ...     mask_channels=8, backbone_kwargs={"frozen_batchnorm": True, "base_channels": 2})
        >>> load_torchvision_mask_rcnn_weights(model, {"rpn.head.conv.bias": np.zeros(8)})
        Traceback (most recent call last):
        ...
        ValueError: ... unused keys (0): []; unset variables (41): ['maskrcnn_resnet50_fpn/...
    """
    plan = _head_plan(model)
    assignments, consumed, unused = {}, [], []
    for key, array in state_dict.items():
        if key.startswith(_BACKBONE_PREFIX):
            continue
        path, _, parameter = current_key(key).rpartition(".")
        layer, convert = plan.get(path, (None, None))
        if layer is not None and parameter in UNUSED_PARAMETERS:
            consumed.append(key)
            continue
        variable = None if layer is None else _variable(layer, parameter)
        if variable is None or id(variable) in assignments:
            unused.append(key)
            continue
        assignments[id(variable)] = (variable, convert(array, variable, key))
        consumed.append(key)
    head_variables = variables_outside(model, model.backbone)
    require_complete(f"the heads of model {model.name!r}", head_variables, assignments, unused)
    consumed += load_torchvision_resnet_weights(model.backbone, state_dict, prefix=_BACKBONE_PREFIX)
    assign_planned(assignments)
    return sorted(consumed)


def load_torchvision_mask_rcnn_checkpoint(entry, path):
    """Builds a pretrained registry entry's `MaskRCNN` and loads its torchvision checkpoint.

    Args:
        entry: a `kseg.pretrained.registry.PretrainedEntry` with `builder` and
            `builder_kwargs`.
        path: the checkpoint file.

    Returns:
        The `kseg.models.MaskRCNN` with the converted weights.
    """
    model = get_builder(entry.builder)(**entry.builder_kwargs)
    load_torchvision_mask_rcnn_weights(model, read_torch_checkpoint(path))
    return model
