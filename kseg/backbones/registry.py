"""Backbones by name: keras.applications and kseg networks behind one feature-pyramid contract."""

import dataclasses
import functools
import math
import os
from collections.abc import Callable

import keras

from kseg.backbones.aligned_xception import AlignedXception65
from kseg.backbones.atrous import dilate, layer_strides
from kseg.backbones.bundled import bundled_imagenet_weights, explain_failed_download
from kseg.backbones.hub_presets import get_hub_backbone, is_hub_preset
from kseg.backbones.mobilenet_v3 import MobileNetV3Large
from kseg.backbones.preprocessing import ImagePreprocessing
from kseg.backbones.rebuild import with_fast_layers
from kseg.backbones.resnet import ResNet
from kseg.backbones.taps import TAPS
from kseg.backbones.tiny import TinyBackbone

_OUTPUT_STRIDES = (8, 16, 32)
# Arguments get_backbone sets itself; passing them through **app_kwargs would conflict.
_RESERVED_KWARGS = ("include_top", "input_tensor", "input_shape", "weights", "pooling", "classes")


@dataclasses.dataclass(frozen=True)
class _BackboneSpec:
    build: Callable[..., keras.Model]
    preprocessing: str
    native_output_stride: bool = False
    imagenet: bool = True


def _application(constructor):
    def build(input_tensor, input_shape, weights, **kwargs):
        return constructor(
            include_top=False,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            **kwargs,
        )

    return build


def _tiny(input_tensor, input_shape, weights, **kwargs):
    model = TinyBackbone(input_tensor=input_tensor, input_shape=input_shape, **kwargs)
    if weights is not None:
        model.load_weights(weights)
    return model


_APPLICATIONS = keras.applications
_BACKBONES = {
    "vgg16": _BackboneSpec(_application(_APPLICATIONS.VGG16), "caffe"),
    "resnet50": _BackboneSpec(_application(_APPLICATIONS.ResNet50), "caffe"),
    "resnet101": _BackboneSpec(_application(_APPLICATIONS.ResNet101), "caffe"),
    "resnet152": _BackboneSpec(_application(_APPLICATIONS.ResNet152), "caffe"),
    "resnet50v2": _BackboneSpec(_application(_APPLICATIONS.ResNet50V2), "tf"),
    "resnet101v2": _BackboneSpec(_application(_APPLICATIONS.ResNet101V2), "tf"),
    "resnet152v2": _BackboneSpec(_application(_APPLICATIONS.ResNet152V2), "tf"),
    "xception": _BackboneSpec(_application(_APPLICATIONS.Xception), "tf"),
    "mobilenet": _BackboneSpec(_application(_APPLICATIONS.MobileNet), "tf"),
    "mobilenetv2": _BackboneSpec(_application(_APPLICATIONS.MobileNetV2), "tf"),
    # EfficientNet rescales and normalises inside the network.
    **{
        f"efficientnetb{variant}": _BackboneSpec(
            _application(getattr(_APPLICATIONS, f"EfficientNetB{variant}")), "none"
        )
        for variant in range(8)
    },
    # DeepLab feeds its Xception inputs scaled to [-1, 1].
    "xception65": _BackboneSpec(AlignedXception65, "tf", native_output_stride=True, imagenet=False),
    "tiny": _BackboneSpec(_tiny, "tf", imagenet=False),
    # torchvision's layout ("v1.5"), for its converted checkpoints; "torch" inputs.
    **{
        f"resnet{depth}_v1.5": _BackboneSpec(
            functools.partial(ResNet, depth=depth),
            "torch",
            native_output_stride=True,
            imagenet=False,
        )
        for depth in (50, 101, 152)
    },
    # torchvision's layout, for its converted checkpoints; "torch" inputs.
    "mobilenet_v3_large": _BackboneSpec(
        MobileNetV3Large, "torch", native_output_stride=True, imagenet=False
    ),
}


def list_backbones():
    """Names accepted by `kseg.backbones.get_backbone`.

    Returns:
        A sorted list of lower-case backbone names.

    Example:
    >>> "resnet50" in kseg.backbones.list_backbones()
    True
    """
    return sorted(_BACKBONES)


def _check_weights(name, spec, weights):
    if weights is None:
        return None
    if weights == "imagenet":
        if not spec.imagenet:
            raise ValueError(
                f"No ImageNet weights exist for backbone {name!r}; use weights=None or a "
                "weights file path. Received: weights='imagenet'"
            )
        return weights
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Weights file not found for backbone {name!r}. Received: weights={path!r}"
            )
        return path
    raise ValueError(
        f"`weights` must be None, 'imagenet' or a file path. Received: weights={weights!r}"
    )


def _resolve_imagenet(name, weights, input_shape, app_kwargs):
    """The bundled file for `weights="imagenet"` when it is the one keras would download."""
    if weights != "imagenet":
        return weights
    bundled = bundled_imagenet_weights(name, input_shape, **app_kwargs)
    return weights if bundled is None else os.fspath(bundled)


def _select_taps(network, name):
    """Keeps, for each stride, the deepest tap at that stride in `network`."""
    strides = layer_strides(network)
    by_stride = {}
    # TAPS lists each backbone's taps from shallow to deep, so deeper taps overwrite.
    for layer_name in TAPS[name].values():
        by_stride[strides[layer_name][1]] = layer_name
    return {stride: by_stride[stride] for stride in sorted(by_stride)}


def get_backbone(
    name,
    input_shape=(None, None, 3),
    weights=None,
    output_stride=32,
    include_preprocessing=True,
    multi_grid=None,
    **app_kwargs,
):
    """Builds a named backbone returning a feature pyramid `{"P1": ..., "P5": ...}`.

    The keras.applications networks (VGG16, Simonyan & Zisserman 2015; ResNet and ResNetV2,
    He et al. 2016; Xception, Chollet 2017; MobileNet, Howard et al. 2017; MobileNetV2,
    Sandler et al. 2018; EfficientNet, Tan & Le 2019), built without their classifier, plus
    the Modified Aligned Xception-65 of DeepLabv3+ (`"xception65"`) and a tiny test network
    (`"tiny"`). Output `"P{n}"` is the deepest feature map at stride 2**n (see
    `kseg.backbones.taps`). With `output_stride` 16 or 8 the stages past that stride are
    dilated instead of strided (`kseg.backbones.atrous`; Chen et al., 2017), the weights keep
    their names and shapes, and only the deepest feature per stride remains: a ResNet50 at
    output stride 16 returns `P1`..`P4`, its `P4` being the `conv5_block3_out` feature.

    The input is an RGB float image with values in [0, 255]; with `include_preprocessing` the
    first layer applies the network's own normalisation
    (`kseg.backbones.preprocessing.ImagePreprocessing`). The model carries two attributes:
    `feature_info`, a list of `{"key", "stride", "channels", "layer"}` dicts in stride order,
    and `preprocessing`, the normalisation mode the network expects (applied inside the model
    only when `include_preprocessing` is True). Attributes do not survive saving:
    `kseg.backbones.feature_info` recomputes the first from a reloaded model's graph.

    Args:
        name: Backbone name, one of `kseg.backbones.list_backbones()`, or a keras-hub preset
            spelled `"keras_hub:<preset>"` (`kseg.backbones.hub_presets.get_hub_backbone`).
        input_shape: `(height, width, 3)`; None sizes keep the model size-agnostic.
        weights: None (random initialisation), `"imagenet"` or the path of a weights file for
            the underlying network. `"imagenet"` loads the file kseg ships when it is the one
            keras.applications would fetch (MobileNetV2 alpha 0.35, see
            `kseg.backbones.bundled_imagenet_weights`), else keras.applications downloads it
            into its cache; a failed download raises `kseg.backbones.WeightsDownloadError`
            naming the file and where to put a copy.
        output_stride: 32, 16 or 8.
        include_preprocessing: Whether the model normalises its [0, 255] input itself.
        multi_grid: Optional rate multipliers for the last stage (DeepLabv3, e.g. `(1, 2, 4)`).
        **app_kwargs: Forwarded to the network constructor, e.g. `alpha` for MobileNets.

    Returns:
        A functional `keras.Model` mapping images to a dict of feature maps keyed `"P{n}"`.

    Example:
    >>> backbone = kseg.backbones.get_backbone("tiny", output_stride=16)
    >>> [(info["key"], info["stride"]) for info in backbone.feature_info]
    [('P1', 2), ('P2', 4), ('P3', 8), ('P4', 16)]
    """
    if is_hub_preset(name):
        return get_hub_backbone(
            name,
            input_shape=input_shape,
            weights=weights,
            output_stride=output_stride,
            include_preprocessing=include_preprocessing,
            multi_grid=multi_grid,
            **app_kwargs,
        )
    key = name.lower() if isinstance(name, str) else name
    if key not in _BACKBONES:
        raise ValueError(
            f"Unknown backbone. Expected one of {list_backbones()}. Received: name={name!r}"
        )
    spec = _BACKBONES[key]
    if output_stride not in _OUTPUT_STRIDES:
        raise ValueError(
            f"`output_stride` must be one of {_OUTPUT_STRIDES}. "
            f"Received: output_stride={output_stride!r}"
        )
    reserved = sorted(set(app_kwargs) & set(_RESERVED_KWARGS))
    if reserved:
        raise ValueError(
            f"get_backbone sets {reserved} itself; remove them. Received: app_kwargs={app_kwargs}"
        )
    weights = _resolve_imagenet(key, _check_weights(key, spec, weights), input_shape, app_kwargs)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if include_preprocessing:
        x = ImagePreprocessing(spec.preprocessing, name="preprocessing")(inputs)
    if spec.native_output_stride:
        network = spec.build(
            x,
            input_shape,
            weights,
            output_stride=output_stride,
            multi_grid=(1, 1, 1) if multi_grid is None else multi_grid,
            **app_kwargs,
        )
    else:
        with explain_failed_download():
            network = spec.build(x, input_shape, weights, **app_kwargs)
        if output_stride < 32 or multi_grid is not None:
            network = dilate(network, output_stride, multi_grid)
        network = with_fast_layers(network)

    taps = _select_taps(network, key)
    outputs = {
        f"P{int(math.log2(stride))}": network.get_layer(layer_name).output
        for stride, layer_name in taps.items()
    }
    backbone = keras.Model(network.inputs[0], outputs, name=f"{key}_backbone")
    backbone.feature_info = feature_info(backbone)
    backbone.preprocessing = spec.preprocessing
    return backbone


def feature_info(backbone):
    """What each output of a backbone is: `{"key", "stride", "channels", "layer"}` per feature.

    `get_backbone` stores the result as the model's `feature_info` attribute. A Python
    attribute does not survive saving, so for a backbone without it (one reloaded from a
    `.keras` file, alone or inside a segmentation model) the same list is recomputed from
    the graph: each output's key, the layer that produces it, its channels, and its stride
    traced through the model's convolutions and poolings (`kseg.backbones.atrous.layer_strides`),
    which also holds for dilated backbones. `kseg.models.backbone_of` puts it back on the
    backbones it finds.

    Args:
        backbone: A functional model with a dict of feature outputs, from `get_backbone`
            or reloaded.

    Returns:
        A list of dicts in stride order (the model's own attribute when it has one).

    Example:
    >>> backbone = kseg.backbones.get_backbone("tiny", output_stride=8)
    >>> reloaded = keras.Model.from_config(backbone.get_config())
    >>> kseg.backbones.feature_info(reloaded) == backbone.feature_info
    True
    """
    stored = getattr(backbone, "feature_info", None)
    if stored is not None:
        return stored
    if not isinstance(backbone.output, dict):
        raise ValueError(
            "a backbone outputs a dict of features, as kseg.backbones.get_backbone returns. "
            f"Received: model {backbone.name!r} with outputs {backbone.output}"
        )
    strides = layer_strides(backbone)
    infos = []
    for key, tensor in backbone.output.items():
        layer = tensor._keras_history.operation.name
        infos.append(
            {
                "key": key,
                "stride": strides[layer][1],
                "channels": int(tensor.shape[-1]),
                "layer": layer,
            }
        )
    return sorted(infos, key=lambda info: info["stride"])
