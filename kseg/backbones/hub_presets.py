"""keras-hub preset backbones (ResNet, EfficientNet, MiT, ...) behind kseg's feature-tap contract.

keras-hub publishes ImageNet and segmentation-trained backbones as presets: a name such as
`"resnet_50_imagenet"` (a Kaggle or Hugging Face handle, downloaded into the keras-hub cache)
or a local directory holding `config.json` and `model.weights.h5`, the form
`Backbone.save_to_preset(directory)` writes for a fine-tuned backbone. Each
`keras_hub.models.FeaturePyramidBackbone` names its feature maps in `pyramid_outputs`. This
module rebuilds such a backbone as a kseg backbone: one flat functional model from RGB images
in [0, 255] to a dict of features keyed `"P{n}"` by the stride 2**n each feature really has
(measured, not read from keras-hub's keys: its Mix Transformer calls the stride-4 map `"P1"`),
with the preset's input normalisation as the first layer and optional atrous conversion.

Users spell these backbones `"keras_hub:<preset>"` wherever kseg takes a backbone name:
`kseg.backbones.get_backbone("keras_hub:resnet_50_imagenet", weights="imagenet")` or
`kseg.models.get_model("deeplabv3plus", backbone="keras_hub:resnet_50_imagenet",
backbone_weights="imagenet")`. keras-hub is an optional dependency (`pip install kseg[hub]`).
"""

import contextlib
import math
import os

import keras
import numpy as np

from kseg.backbones.atrous import dilate, layer_strides
from kseg.backbones.preprocessing import ImagePreprocessing

HUB_PREFIX = "keras_hub:"

# keras-hub's ImageNet presets (timm's ResNet and EfficientNet, PaddleClas's ResNet-vd) and its
# SegFormer MiT presets normalise with the ImageNet mean and standard deviation; kseg applies
# the same when a preset directory carries no image_converter.json of its own.
_DEFAULT_MODE = "torch"
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
_IMAGENET_STD = np.array([0.229, 0.224, 0.225])
# A preprocessing mode of kseg's ImagePreprocessing as the (scale, offset) a keras-hub
# ImageConverter applies to [0, 255] inputs: x * scale + offset.
_MODES_AS_SCALE_OFFSET = {
    "torch": (1.0 / (255.0 * _IMAGENET_STD), -_IMAGENET_MEAN / _IMAGENET_STD),
    "tf": (np.full(3, 1.0 / 127.5), np.full(3, -1.0)),
    "none": (np.ones(3), np.zeros(3)),
}
_PRESET_WEIGHTS = ("imagenet", "preset")
# Probe size for measuring the strides of a size-agnostic network (a multiple of 32, so every
# "same" or padded strided layer divides it exactly).
_PROBE_SIZE = 512


def is_hub_preset(name):
    """Whether a backbone name refers to a keras-hub preset (`"keras_hub:<preset>"`).

    Args:
        name: A backbone name or any other object.

    Returns:
        True for strings starting with `kseg.backbones.hub_presets.HUB_PREFIX`.

    Example:
    >>> kseg.backbones.hub_presets.is_hub_preset("keras_hub:resnet_50_imagenet")
    True
    >>> kseg.backbones.hub_presets.is_hub_preset("resnet50")
    False
    """
    return isinstance(name, str) and name.startswith(HUB_PREFIX)


def _import_keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            "kseg's 'keras_hub:' backbones need the keras-hub package: install it with "
            "`pip install kseg[hub]` (or `pip install keras-hub`)."
        ) from error
    return keras_hub


def list_hub_presets():
    """keras-hub's built-in presets whose backbones have a feature pyramid kseg can tap.

    Local preset directories work too and are not listed. Listing needs no network; building
    a listed backbone with `weights="imagenet"` downloads the preset into keras-hub's cache.

    Returns:
        A sorted list of backbone names spelled as kseg takes them, `"keras_hub:<preset>"`.

    Example:
    >>> "keras_hub:resnet_50_imagenet" in kseg.backbones.hub_presets.list_hub_presets()
    True
    """
    keras_hub = _import_keras_hub()
    presets = keras_hub.models.FeaturePyramidBackbone.presets
    return sorted(HUB_PREFIX + preset for preset in presets)


def _check_weights(preset, weights):
    if weights is None or weights in _PRESET_WEIGHTS:
        return weights
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Weights file not found for keras-hub preset {preset!r}. "
                f"Received: weights={path!r}"
            )
        return path
    raise ValueError(
        "`weights` must be None (random initialisation), 'imagenet' or 'preset' (the preset's "
        f"own weights) or a weights file path. Received: weights={weights!r}"
    )


def _is_local(preset):
    return os.path.isdir(os.path.expanduser(preset))


@contextlib.contextmanager
def _explain_failed_fetch(preset):
    """Turns a failed download of a remote preset's file into an `OSError` saying what to do."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError, ImportError):
        raise
    except Exception as error:
        if _is_local(preset):
            raise
        raise OSError(
            f"keras-hub could not fetch preset {preset!r} ({type(error).__name__}: {error}). "
            "Without network access, fetch the preset on a machine that has it (kagglehub keeps "
            "Kaggle presets under ~/.cache/kagglehub/models/), copy its directory here and pass "
            "'keras_hub:<directory>' as the backbone."
        ) from error


def _load_hub_backbone(keras_hub, preset, load_weights):
    with _explain_failed_fetch(preset):
        # A preset records a float32 policy per layer; the global policy (mixed precision)
        # applies to kseg's backbones as to the rest of the model.
        return keras_hub.models.Backbone.from_preset(
            preset, load_weights=load_weights, dtype=keras.config.dtype_policy()
        )


def _hub_scale_offset(keras_hub, preset):
    """The preset's (scale, offset) for [0, 255] inputs; None without an image_converter.json."""
    try:
        with _explain_failed_fetch(preset):
            converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except FileNotFoundError:
        return None
    scale = 1.0 if converter.scale is None else converter.scale
    offset = 0.0 if converter.offset is None else converter.offset
    return (
        np.broadcast_to(np.asarray(scale, "float64"), (3,)),
        np.broadcast_to(np.asarray(offset, "float64"), (3,)),
    )


def _matching_mode(scale, offset):
    for mode, (mode_scale, mode_offset) in _MODES_AS_SCALE_OFFSET.items():
        if np.allclose(scale, mode_scale, rtol=1e-5, atol=1e-6) and np.allclose(
            offset, mode_offset, rtol=1e-5, atol=1e-6
        ):
            return mode
    return None


def _normalisation(keras_hub, preset, preprocessing):
    """What the network expects, as a kseg mode string or a `{"scale", "offset"}` dict."""
    if preprocessing is not None:
        return preprocessing
    scale_offset = _hub_scale_offset(keras_hub, preset)
    if scale_offset is None:
        return _DEFAULT_MODE
    mode = _matching_mode(*scale_offset)
    if mode is not None:
        return mode
    return {"scale": scale_offset[0].tolist(), "offset": scale_offset[1].tolist()}


def _normalisation_layer(normalisation):
    if isinstance(normalisation, dict):
        return keras.layers.Rescaling(
            normalisation["scale"], normalisation["offset"], name="preprocessing"
        )
    return ImagePreprocessing(normalisation, name="preprocessing")


def _fit_input_shape(hub, input_shape, preset):
    """The hub backbone, rebuilt for `input_shape` when its graph has a fixed image size."""
    hub_shape = tuple(hub.inputs[0].shape[1:])
    if hub_shape[-1] not in (None, input_shape[-1]):
        raise ValueError(
            f"keras-hub preset {preset!r} takes {hub_shape[-1]}-channel images. "
            f"Received: input_shape={tuple(input_shape)}"
        )
    if hub_shape[:2] == (None, None) or tuple(input_shape[:2]) == hub_shape[:2]:
        return hub
    if None in input_shape[:2]:
        raise ValueError(
            f"keras-hub preset {preset!r} builds a {type(hub).__name__} for a fixed image size; "
            f"pass a fixed input_shape, e.g. input_shape={hub_shape}. "
            f"Received: input_shape={tuple(input_shape)}"
        )
    config = hub.get_config()
    size_argument = next((key for key in ("image_shape", "input_shape") if key in config), None)
    if size_argument is None:
        raise ValueError(
            f"keras-hub preset {preset!r} is built for images of shape {hub_shape} and its "
            f"configuration has no image size to change. Received: input_shape={input_shape}"
        )
    resized = type(hub).from_config({**config, size_argument: tuple(input_shape)})
    resized.set_weights(hub.get_weights())
    return resized


def _pyramid_model(hub):
    return keras.Model(hub.inputs[0], hub.pyramid_outputs)


def _measured_strides(network):
    """Stride of every output of `network`, from the shapes it infers for a probe image."""
    height, width, channels = network.inputs[0].shape[1:]
    probe = (height or _PROBE_SIZE, width or _PROBE_SIZE)
    spec = network.compute_output_spec(keras.KerasTensor((1, *probe, channels)))
    strides = {}
    for key, tensor in spec.items():
        ratio = max(probe[0] / tensor.shape[1], probe[1] / tensor.shape[2])
        strides[key] = 2 ** round(math.log2(ratio))
    return strides


def _is_traceable(network, strides):
    """Whether kseg's graph tracing finds the measured strides (no stride hidden in a layer)."""
    try:
        traced = layer_strides(network)
    except (TypeError, ValueError):
        return False
    return all(
        traced[network.output[key]._keras_history.operation.name][1] == stride
        for key, stride in strides.items()
    )


def _deepest_per_stride(strides):
    """`{kseg key: library key}`: keras-hub lists its pyramid from shallow to deep."""
    deepest = {stride: key for key, stride in strides.items()}
    return {f"P{int(math.log2(stride))}": deepest[stride] for stride in sorted(deepest)}


@keras.saving.register_keras_serializable(package="kseg")
class KerasHubFeatures(keras.layers.Layer):
    """A keras-hub `FeaturePyramidBackbone` as one layer returning its pyramid under kseg keys.

    For networks kseg cannot take apart layer by layer (keras-hub's MiT and EfficientNetV2
    blocks downsample inside their own layers, and some of their layers do not rebuild from
    their own configuration), the whole keras-hub backbone runs inside this layer and is
    saved by its own configuration, the one keras-hub presets use.

    Args:
        backbone: A `keras_hub.models.FeaturePyramidBackbone`, or its serialized form.
        keys: `{kseg key: keras-hub pyramid key}`, e.g. `{"P2": "P1"}` for MiT's stride-4 map.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Returns:
        A dict of feature maps keyed like `keys`.

    Example:
    >>> import keras_hub
    >>> hub = keras_hub.models.MiTBackbone(
    ...     layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 1],
    ...     layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0,
    ...     layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2], hidden_dims=[8, 16],
    ...     image_shape=(32, 32, 3))
    >>> layer = kseg.backbones.hub_presets.KerasHubFeatures(hub, {"P2": "P1", "P3": "P2"})
    >>> {key: tuple(value.shape) for key, value in layer(np.zeros((1, 32, 32, 3))).items()}
    {'P2': (1, 8, 8, 8), 'P3': (1, 4, 4, 16)}
    """

    def __init__(self, backbone, keys, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        missing = sorted(set(keys.values()) - set(getattr(backbone, "pyramid_outputs", {})))
        if missing:
            raise ValueError(
                f"`keys` name pyramid outputs {missing} that backbone {backbone.name!r} does "
                f"not have. Received: keys={keys}"
            )
        self.backbone = backbone
        self.keys = dict(keys)
        self._pyramid = _pyramid_model(backbone)

    def call(self, images):
        features = self._pyramid(images)
        return {key: features[hub_key] for key, hub_key in self.keys.items()}

    def compute_output_spec(self, images):
        spec = self._pyramid.compute_output_spec(images)
        return {key: spec[hub_key] for key, hub_key in self.keys.items()}

    def get_config(self):
        config = super().get_config()
        config.update(
            {"backbone": keras.saving.serialize_keras_object(self.backbone), "keys": self.keys}
        )
        return config


def _backbone_name(preset):
    base = os.path.basename(os.path.normpath(preset)) if _is_local(preset) else preset
    return "".join(c if c.isalnum() or c == "_" else "_" for c in base) + "_backbone"


def get_hub_backbone(
    name,
    input_shape=(None, None, 3),
    weights=None,
    output_stride=32,
    include_preprocessing=True,
    multi_grid=None,
    preprocessing=None,
):
    """Builds a keras-hub preset backbone returning a feature pyramid `{"P2": ..., "P5": ...}`.

    `name` is `"keras_hub:<preset>"` with a keras-hub preset: a built-in name
    (`kseg.backbones.hub_presets.list_hub_presets()`, e.g. ResNet, He et al. 2016, as
    `"resnet_50_imagenet"`, ResNetV2 as `"resnet_v2_50_imagenet"`, EfficientNet and
    EfficientNetV2, Tan & Le 2019 and 2021, as `"efficientnet_b0_ra_imagenet"` and
    `"efficientnet2_rw_t_ra2_imagenet"`, the Mix Transformer of SegFormer, Xie et al. 2021, as
    `"mit_b0_ade20k_512"`), a `kaggle://` or `hf://` handle, or a local preset directory
    (`config.json` and `model.weights.h5`, as `Backbone.save_to_preset` writes it, e.g. a
    fine-tuned backbone). kseg calls `keras_hub.models.Backbone.from_preset` for it; the
    backbone must be a `keras_hub.models.FeaturePyramidBackbone`.

    The model takes RGB images with values in [0, 255] and, with `include_preprocessing`,
    normalises them first the way the preset expects: with the scale and offset of the
    preset's own `image_converter.json` (keras-hub's `ImageConverter`, without its resize, so
    any image size goes through). keras-hub's presets converted from timm (its ResNet and
    EfficientNet ImageNet presets) write the ImageNet mean and standard deviation of [0, 1]
    pixels there, which is kseg's `"torch"` mode; a preset without an image converter (a
    directory written by `Backbone.save_to_preset` alone) gets `"torch"` too. The
    `preprocessing` argument ("tf", "torch", "caffe", "none") overrides the preset. The
    model's `preprocessing` attribute holds the mode applied, or a `{"scale", "offset"}` dict
    for a converter that matches no kseg mode (then applied with `keras.layers.Rescaling`).

    Outputs are keyed `"P{n}"` by the stride 2**n each feature map has, measured from the
    shapes the network infers (keras-hub's ResNet keys coincide; its MiT calls the stride-4
    map `"P1"`), keeping the deepest map per stride. Networks whose strides are all in plain
    Keras convolutions and poolings (ResNet, ResNetV2, ResNet-vd, EfficientNet) join kseg's
    graph layer by layer: with `output_stride` 16 or 8 their later strides become dilations
    (`kseg.backbones.atrous.dilate`), and `kseg.backbones.feature_info` recomputes their
    strides from a reloaded graph. Networks that downsample inside their own layers
    (EfficientNetV2's fused blocks, MiT's patch embeddings) run whole inside one
    `KerasHubFeatures` layer: output stride 32 only, and the `feature_info` attribute set
    here is the only source of their strides (a reloaded graph hides them). MiT also needs a
    fixed `input_shape`; a size other than the preset's rebuilds it with the same weights.

    Args:
        name: `"keras_hub:<preset>"`.
        input_shape: `(height, width, 3)`; None sizes keep the model size-agnostic where the
            network allows it.
        weights: None (the preset's architecture, randomly initialised), `"imagenet"` or
            `"preset"` (the preset's published weights, `from_preset(load_weights=True)`,
            downloaded into keras-hub's cache on first use), or the path of a weights file
            saved from the keras-hub backbone.
        output_stride: 32, 16 or 8.
        include_preprocessing: Whether the model normalises its [0, 255] input itself.
        multi_grid: Optional rate multipliers for the last stage (DeepLabv3).
        preprocessing: None (what the preset says) or a mode of
            `kseg.backbones.preprocessing.ImagePreprocessing`.

    Returns:
        A functional `keras.Model` mapping images to a dict of feature maps keyed `"P{n}"`,
        with `feature_info` and `preprocessing` attributes as `kseg.backbones.get_backbone`
        sets them, and `hub_preset` naming the preset.

    Raises:
        ImportError: keras-hub is not installed (`pip install kseg[hub]`).
        OSError: a preset that is not a local directory could not be fetched.

    Example:
    >>> import keras_hub
    >>> import tempfile
    >>> hub = keras_hub.models.ResNetBackbone(
    ...     input_conv_filters=[64], input_conv_kernel_sizes=[7],
    ...     stackwise_num_filters=[64, 64, 64, 64], stackwise_num_blocks=[1, 1, 1, 1],
    ...     stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block")
    >>> preset = tempfile.mkdtemp()
    >>> hub.save_to_preset(preset)
    >>> backbone = kseg.backbones.get_backbone("keras_hub:" + preset, weights="preset")
    >>> [(info["key"], info["stride"]) for info in backbone.feature_info]
    [('P2', 4), ('P3', 8), ('P4', 16), ('P5', 32)]
    """
    if not is_hub_preset(name):
        raise ValueError(f"Expected a name starting with {HUB_PREFIX!r}. Received: name={name!r}")
    preset = name[len(HUB_PREFIX) :]
    if not preset:
        raise ValueError(f"No preset after {HUB_PREFIX!r}. Received: name={name!r}")
    if output_stride not in (8, 16, 32):
        raise ValueError(
            f"`output_stride` must be one of (8, 16, 32). Received: output_stride={output_stride!r}"
        )
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: {input_shape}"
        )
    weights = _check_weights(preset, weights)
    keras_hub = _import_keras_hub()

    hub = _load_hub_backbone(keras_hub, preset, load_weights=weights in _PRESET_WEIGHTS)
    if not isinstance(hub, keras_hub.models.FeaturePyramidBackbone) or not hub.pyramid_outputs:
        raise ValueError(
            f"keras-hub preset {preset!r} builds a {type(hub).__name__}, which has no feature "
            "pyramid (`pyramid_outputs`); kseg backbones need one."
        )
    if weights not in (None, *_PRESET_WEIGHTS):
        hub.load_weights(weights)
    hub = _fit_input_shape(hub, tuple(input_shape), preset)
    normalisation = _normalisation(keras_hub, preset, preprocessing)

    pyramid = _pyramid_model(hub)
    strides = _measured_strides(pyramid)
    image = keras.Input(shape=input_shape, name="image")
    x = _normalisation_layer(normalisation)(image) if include_preprocessing else image
    if _is_traceable(pyramid, strides):
        # Calling the hub backbone's own layers again (no copies) keeps the preset's weights
        # and puts each layer into kseg's graph, where atrous conversion and stride tracing
        # reach it.
        network = keras.Model(image, pyramid._run_through_graph([x], lambda layer: layer))
        if output_stride < 32 or multi_grid is not None:
            network = dilate(network, output_stride, multi_grid)
            strides = _measured_strides(network)
        taps = _deepest_per_stride(strides)
        outputs = {key: network.output[hub_key] for key, hub_key in taps.items()}
        image = network.inputs[0]
    else:
        if output_stride < 32 or multi_grid is not None:
            raise ValueError(
                f"keras-hub preset {preset!r} ({type(hub).__name__}) downsamples inside its "
                "own layers, which kseg cannot dilate; use output_stride=32 without multi_grid. "
                f"Received: output_stride={output_stride}, multi_grid={multi_grid}"
            )
        taps = _deepest_per_stride(strides)
        outputs = KerasHubFeatures(hub, taps, name="keras_hub_features")(x)

    backbone = keras.Model(image, outputs, name=_backbone_name(preset))
    backbone.feature_info = [
        {
            "key": key,
            "stride": strides[hub_key],
            "channels": int(outputs[key].shape[-1]),
            "layer": outputs[key]._keras_history.operation.name,
        }
        for key, hub_key in taps.items()
    ]
    backbone.preprocessing = normalisation
    backbone.hub_preset = preset
    return backbone
