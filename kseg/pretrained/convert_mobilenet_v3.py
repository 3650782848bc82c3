"""torchvision MobileNetV3-Large state dicts onto `kseg.backbones.mobilenet_v3` layers, by name.

`kseg.backbones.mobilenet_v3.MobileNetV3Large` names its layers after the module paths of
torchvision's `MobileNetV3.features` (`features.{i}.block.{j}.0`, ...), so the conversion is
the rule of `kseg.pretrained.torch_parameters` (convolution and BatchNorm parameters by
name, `num_batches_tracked` consumed without a copy) plus one layout: torch keeps a depthwise
kernel as `(channels, 1, kh, kw)`, Keras's `DepthwiseConv2D` as `(kh, kw, channels, 1)`.

Where the `features` Sequential sits depends on the checkpoint: an ImageNet classifier keeps
it under `features.`, torchvision's segmentation models use it as their backbone
(`backbone.{i}...`). The check is exhaustive: every key under the prefix is used exactly
once and every variable of the backbone is set exactly once, otherwise nothing is written
and a ValueError lists the unused keys and the unset variables.
"""

import keras
import numpy as np

from kseg.pretrained.torch_parameters import (
    apply_assignments,
    keras_layout,
    plan_assignments,
    weighted_layers,
)

_LAYER_PREFIX = "features."
_DEPTHWISE_PARAMETERS = {"weight": "kernel", "bias": "bias"}


def _plan_depthwise(state_dict, paths, layers, assignments):
    """Adds the depthwise kernels of `paths` to `assignments`; returns (consumed, unused)."""
    consumed, unused = [], []
    for key, local in paths.items():
        path, _, parameter = local.rpartition(".")
        attribute = _DEPTHWISE_PARAMETERS.get(parameter)
        variable = None if attribute is None else getattr(layers[path], attribute, None)
        if variable is None or id(variable) in assignments:
            unused.append(key)
            continue
        array = np.asarray(state_dict[key])
        if array.ndim == 4:
            # (channels, 1, kh, kw) read as (out, in, kh, kw) with in and out swapped.
            array = array.swapaxes(0, 1)
        assignments[id(variable)] = (variable, keras_layout(array, variable, key))
        consumed.append(key)
    return consumed, unused


def load_torchvision_mobilenet_v3_weights(backbone, state_dict, prefix="backbone."):
    """Copies a torchvision MobileNetV3-Large `features` state dict into a kseg backbone.

    The backbone is a `kseg.backbones.mobilenet_v3.MobileNetV3Large` (or a model built from
    it, such as `kseg.backbones.get_backbone("mobilenet_v3_large")`) of the checkpoint's
    width. The key `<prefix><i>.<path>.<parameter>` fills the layer `features.<i>.<path>`;
    keys not starting with `prefix` are not read, so a whole segmentation checkpoint can feed
    its backbone here and its head elsewhere. Arrays are cast to the variables' dtypes; all
    values are checked before any is written.

    Args:
        backbone: A Keras model holding the MobileNetV3 layers (nested models are searched).
        state_dict: A mapping of keys to arrays, e.g. from
            `kseg.pretrained.read_torch_checkpoint`.
        prefix: What stands for `features.` in the keys: `"backbone."` for torchvision's
            `deeplabv3_mobilenet_v3_large` and `lraspp_mobilenet_v3_large`, `"features."`
            for an ImageNet classifier (whose `classifier.*` keys are then not read).

    Returns:
        The sorted list of state-dict keys that were consumed.

    Raises:
        ValueError: A key under `prefix` matches no variable, a variable receives no key, or
            a shape disagrees.
        TypeError: A parameter holds non-floating values.

    Example:
    >>> from kseg.backbones.mobilenet_v3 import MobileNetV3Large
    >>> from kseg.pretrained.convert_mobilenet_v3 import load_torchvision_mobilenet_v3_weights
    >>> backbone = MobileNetV3Large(width_multiplier=0.25)
    >>> depthwise = np.zeros((8, 1, 3, 3), "float32")
    >>> state = {"backbone.1.block.0.0.weight": depthwise, "backbone.1.block.9.weight": depthwise}
    >>> load_torchvision_mobilenet_v3_weights(backbone, state)
    Traceback (most recent call last):
    ...
    ValueError: ... unused keys (1): ['backbone.1.block.9.weight']; unset variables (261): ...
    """
    if not isinstance(prefix, str) or not prefix:
        raise TypeError(f"`prefix` must be a non-empty string. Received: prefix={prefix!r}")
    layers = weighted_layers(backbone)
    paths = {
        key: _LAYER_PREFIX + key[len(prefix) :] for key in state_dict if key.startswith(prefix)
    }
    depthwise = {
        key: local
        for key, local in paths.items()
        if isinstance(layers.get(local.rpartition(".")[0]), keras.layers.DepthwiseConv2D)
    }
    dense = {key: local for key, local in paths.items() if key not in depthwise}
    assignments, consumed, unused = plan_assignments(state_dict, dense, layers)
    more_consumed, more_unused = _plan_depthwise(state_dict, depthwise, layers, assignments)
    consumed += more_consumed
    unused += more_unused
    apply_assignments(backbone, layers, assignments, unused, prefix)
    return sorted(consumed)
