"""torchvision ResNet state dicts onto `kseg.backbones.resnet.ResNet` layers, by name.

`kseg.backbones.resnet.ResNet` names its layers after torchvision's module paths, so the
conversion is one rule: the key `<prefix><module path>.<parameter>` goes to the Keras layer
named `<module path>`, and the parameter to that layer's variable:

- convolutions: `weight` (out, in, kh, kw) -> `kernel` (kh, kw, in, out); `bias` -> `bias`;
- BatchNorm (and FrozenBatchNorm2d): `weight` -> `gamma`, `bias` -> `beta`,
  `running_mean` -> `moving_mean`, `running_var` -> `moving_variance`;
  `num_batches_tracked` holds no value the Keras layer uses and is consumed without a copy.

The check is exhaustive: every key under the prefix is used exactly once and every variable
of the backbone is set exactly once, otherwise nothing is written and a ValueError lists the
unused keys and the unset variables.
"""

from kseg.pretrained.torch_parameters import apply_assignments, plan_assignments, weighted_layers

_CLASSIFIER = "fc."


def load_torchvision_resnet_weights(backbone, state_dict, prefix="backbone.", ignore_fc=False):
    """Copies a torchvision ResNet state dict into a kseg ResNet backbone.

    The backbone is a `kseg.backbones.resnet.ResNet` (or a model built from it, such as the
    one `kseg.backbones.get_backbone` returns) of the checkpoint's depth and variant. Keys are
    matched by torchvision's module paths (see the module docstring); only keys starting
    with `prefix` are read, so one checkpoint of a whole segmentation model can feed its
    backbone here and its head elsewhere: `"backbone."` for torchvision's FCN and DeepLabv3,
    `"backbone.body."` for Mask R-CNN's, `""` for an ImageNet classifier. Arrays are cast to
    the variables' dtypes. All values are checked before any is written.

    Args:
        backbone: A Keras model holding the ResNet's layers (nested models are searched).
        state_dict: A mapping of keys to arrays, e.g. from
            `kseg.pretrained.read_torch_checkpoint`.
        prefix: The key prefix of the ResNet's parameters.
        ignore_fc: Skip the classifier (`<prefix>fc.weight`, `<prefix>fc.bias`) of an
            ImageNet checkpoint instead of reporting it unused.

    Returns:
        The sorted list of state-dict keys that were consumed.

    Raises:
        ValueError: A key under `prefix` matches no variable, a variable receives no key, or
            a shape disagrees.
        TypeError: A parameter holds non-floating values.

    Example:
    >>> from kseg.backbones.resnet import ResNet
    >>> from kseg.pretrained.convert_resnet import load_torchvision_resnet_weights
    >>> backbone = ResNet(base_channels=2)
    >>> state = {"conv1.weight": np.zeros((2, 3, 7, 7), "float32"), "fc.bias": np.zeros(9)}
    >>> load_torchvision_resnet_weights(backbone, state, prefix="")
    Traceback (most recent call last):
    ...
    ValueError: ... unused keys (1): ['fc.bias']; unset variables (264): ['bn1/beta', ...
    """
    if not isinstance(prefix, str):
        raise TypeError(f"`prefix` must be a string. Received: prefix={prefix!r}")
    layers = weighted_layers(backbone)
    paths = {key: key[len(prefix) :] for key in state_dict if key.startswith(prefix)}
    skipped = [key for key, local in paths.items() if ignore_fc and local.startswith(_CLASSIFIER)]
    for key in skipped:
        del paths[key]
    assignments, consumed, unused = plan_assignments(state_dict, paths, layers)
    consumed += skipped
    apply_assignments(backbone, layers, assignments, unused, prefix)
    return sorted(consumed)
