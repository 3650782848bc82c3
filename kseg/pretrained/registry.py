"""The catalogue of published checkpoints: where each comes from and what its weights expect.

An entry is data (a frozen `PretrainedEntry`): the publisher's architecture, the kseg builder
and arguments the weights are to be converted onto, the file (URL, SHA-256 or the prefix the
publisher gives, size), its licence and training data, what the weights expect (class names,
input value range and normalisation, resize policy) and the publisher's own metrics, kept
apart from anything kseg measures. `status` says whether kseg can load it yet.

The first entries are torchvision's semantic segmentation and Mask R-CNN weights, with the
values of torchvision 0.29.1's `Weights` enums (`url`, `meta["categories"]`,
`meta["_metrics"]`, `meta["_file_size"]`, `meta["num_params"]`) and of their transforms. All
of them load: the semantic ones through `kseg.pretrained.convert_torchvision_segmentation` (FCN
and DeepLabv3 on ResNet-50/101, DeepLabv3 and LR-ASPP on MobileNetV3-Large), Mask R-CNN v1 and
v2 through `kseg.pretrained.convert_torchvision_mask_rcnn`. An entry without a converter would
say what is missing, while `PretrainedEntry.fetch` downloads and verifies its raw file.
"""

import dataclasses

STATUSES = ("loadable", "not_loadable")
"""`PretrainedEntry.status` values: kseg can build the model and load the weights, or not yet."""

TASKS = ("semantic", "instance")
"""`PretrainedEntry.task` values."""


class NotLoadableError(NotImplementedError):
    """The entry exists, but kseg cannot load its weights yet; the message says what is missing."""


@dataclasses.dataclass(frozen=True)
class PretrainedEntry:
    """One published checkpoint and everything needed to use its weights the way they were trained.

    Attributes:
        name: the registry name (the publisher's model name).
        task: "semantic" or "instance".
        source_architecture: the publisher's builder call the weights belong to.
        builder: the kseg builder (`kseg.models.list_models()`) the converter targets, or
            None while kseg has no builder with the publisher's layer layout.
        builder_kwargs: arguments of `builder`.
        url: where the publisher serves the file.
        sha256: the file's full SHA-256, when known.
        hash_prefix: the leading hex digits of the file's SHA-256 the publisher gives (in the
            file name, by torch.hub's convention), when the full hash is not published.
        file_size_bytes: exact file size, when known.
        published_file_size_mib: the publisher's rounded size in MiB (2**20 bytes).
        num_params: the publisher's parameter count of the model.
        licence: the weights' terms, as the publisher states them.
        training_data: what the weights were trained on.
        class_names: the publisher's class names, index i naming output channel i
            (torchvision keeps "N/A" for unused COCO category ids).
        palette: the kseg palette name to draw the classes with (`kseg.cli.arguments.palette`).
        value_range: range the image values are scaled to before normalisation.
        mean: per-channel (RGB) mean subtracted after scaling to `value_range`.
        std: per-channel (RGB) standard deviation divided by after subtracting `mean`.
        resize: resize policy: "min_side N" scales the shorter side to N pixels keeping the
            aspect ratio; "min N max M" scales the shorter side to N unless the longer side
            would then exceed M, in which case the longer side becomes M.
        preprocessing: the publisher's preprocessing in words (interpolation, where it runs).
        publisher_metrics: `{evaluation data: {metric: value}}` exactly as the publisher
            reports them; kseg has not measured these.
        metrics_source: where `publisher_metrics` come from.
        status: "loadable" or "not_loadable".
        converter: dotted path `module:function` of the converter, or None.
        missing: what kseg lacks before it can load the weights ("" when loadable).

    Example:
        >>> entry = kseg.pretrained.get("deeplabv3_resnet50")
        >>> entry.hash_prefix, len(entry.class_names), entry.resize
        ('cd0a2569', 21, 'min_side 520')
        >>> entry.publisher_metrics
        {'COCO-val2017-VOC-labels': {'miou': 66.4, 'pixel_acc': 92.4}}
        >>> entry.status, entry.builder
        ('loadable', 'deeplabv3')
    """

    name: str
    task: str
    source_architecture: str
    builder: str | None
    builder_kwargs: dict
    url: str
    sha256: str | None
    hash_prefix: str | None
    file_size_bytes: int | None
    published_file_size_mib: float | None
    num_params: int | None
    licence: str
    training_data: str
    class_names: tuple
    palette: str
    value_range: tuple
    mean: tuple
    std: tuple
    resize: str
    preprocessing: str
    publisher_metrics: dict
    metrics_source: str
    status: str = "not_loadable"
    converter: str | None = None
    missing: str = ""

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}. Received: task={self.task!r}")
        if self.status not in STATUSES:
            raise ValueError(
                f"`status` must be one of {STATUSES}. Received: status={self.status!r}"
            )
        if self.sha256 is None and self.hash_prefix is None:
            raise ValueError(f"entry {self.name!r} needs `sha256` or `hash_prefix`")
        if self.status == "loadable" and (self.converter is None or self.builder is None):
            raise ValueError(f"loadable entry {self.name!r} needs a `builder` and a `converter`")
        if self.status == "not_loadable" and not self.missing:
            raise ValueError(f"entry {self.name!r} is not loadable: `missing` must say why")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"entry {self.name!r}: `mean` and `std` need 3 values (RGB)")

    @property
    def num_classes(self):
        """Number of output classes (background and unused ids included)."""
        return len(self.class_names)

    def fetch(self, cache_dir=None):
        """Downloads (once) and verifies the entry's published file; returns its local path.

        See `kseg.pretrained.fetch_checkpoint`; the file is kept in the Keras cache under
        `kseg/pretrained`. This works whether or not kseg can load the weights yet, so the
        raw state dict can be read with `kseg.pretrained.read_torch_checkpoint`.

        Args:
            cache_dir: cache folder instead of the Keras one.

        Returns:
            The `pathlib.Path` of the verified file.

        Example:
            >>> entry = kseg.pretrained.get("lraspp_mobilenet_v3_large")
            >>> kseg.pretrained.checkpoint_cache_path(entry.url).name  # where fetch() keeps it
            'lraspp_mobilenet_v3_large-d234d4ea.pth'
        """
        from kseg.pretrained.download import fetch_checkpoint

        return fetch_checkpoint(
            self.url, sha256=self.sha256, hash_prefix=self.hash_prefix, cache_dir=cache_dir
        )


_VOC_NAMES = (
    "__background__ aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog "
    "horse motorbike person pottedplant sheep sofa train tvmonitor"
).split()

# torchvision's _COCO_CATEGORIES: index = COCO category id, "N/A" for the 10 unused ids of 1-90.
_COCO_NAMES = (
    "__background__|person|bicycle|car|motorcycle|airplane|bus|train|truck|boat|traffic light|"
    "fire hydrant|N/A|stop sign|parking meter|bench|bird|cat|dog|horse|sheep|cow|elephant|bear|"
    "zebra|giraffe|N/A|backpack|umbrella|N/A|N/A|handbag|tie|suitcase|frisbee|skis|snowboard|"
    "sports ball|kite|baseball bat|baseball glove|skateboard|surfboard|tennis racket|bottle|N/A|"
    "wine glass|cup|fork|knife|spoon|bowl|banana|apple|sandwich|orange|broccoli|carrot|hot dog|"
    "pizza|donut|cake|chair|couch|potted plant|bed|N/A|dining table|N/A|N/A|toilet|N/A|tv|"
    "laptop|mouse|remote|keyboard|cell phone|microwave|oven|toaster|sink|refrigerator|N/A|book|"
    "clock|vase|scissors|teddy bear|hair drier|toothbrush"
).split("|")

_TORCHVISION = "torchvision 0.29.1"
_TORCHVISION_LICENCE = (
    "no licence stated for the weights; torchvision's code is BSD-3-Clause, and its README says "
    "pre-trained models may carry terms derived from their training data (here COCO), which "
    "users must check for their use: see the publisher"
)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

_COCO_VOC_DATA = (
    "COCO train2017, only images with the 20 PASCAL VOC categories, labelled with those 20 "
    "classes plus background (torchvision's references/segmentation recipe)"
)
_SEGMENTATION_PREPROCESSING = (
    "torchvision's SemanticSegmentation preset: shorter side resized to 520 (bilinear, "
    "antialiased), RGB scaled to [0, 1], then normalised with ImageNet mean and std"
)
_NEEDS_CONVERTER = "and a converter from torchvision's state-dict keys onto it"
_RESNET_V15 = "a ResNet-50 v1.5 backbone (stride on the 3x3 convolution)"
_RESNET_V15_DILATED = (
    "a ResNet v1.5 backbone (stride on the 3x3 convolution) with torchvision's dilated last two "
    "stages (output stride 8)"
)
_MOBILENET_V3_DILATED = (
    "a MobileNetV3-Large backbone in torchvision's layout with its dilated last stage"
)


def _torchvision_entry(name, enum, url, metrics_key, metrics, missing, **fields):
    """An entry for a torchvision checkpoint: the fields every such entry shares, plus `fields`."""
    return PretrainedEntry(
        name=name,
        builder=None,
        builder_kwargs={},
        url=url,
        sha256=None,
        hash_prefix=url.rsplit("-", 1)[1].split(".")[0],
        file_size_bytes=None,
        licence=_TORCHVISION_LICENCE,
        value_range=(0.0, 1.0),
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        publisher_metrics={metrics_key: metrics},
        metrics_source=f"{_TORCHVISION}, {enum}.meta['_metrics'] (the publisher's figures)",
        missing=f"{missing}, {_NEEDS_CONVERTER}",
        **fields,
    )


def _segmentation(name, enum, architecture, url, metrics, size_mib, num_params, missing):
    return _torchvision_entry(
        name,
        enum,
        url,
        "COCO-val2017-VOC-labels",
        metrics,
        missing,
        task="semantic",
        source_architecture=f"torchvision.models.segmentation.{architecture}",
        published_file_size_mib=size_mib,
        num_params=num_params,
        training_data=_COCO_VOC_DATA,
        class_names=tuple(_VOC_NAMES),
        palette="voc",
        resize="min_side 520",
        preprocessing=_SEGMENTATION_PREPROCESSING,
    )


def _mask_rcnn(name, enum, architecture, url, metrics, size_mib, num_params, missing, recipe):
    return _torchvision_entry(
        name,
        enum,
        url,
        "COCO-val2017",
        metrics,
        missing,
        task="instance",
        source_architecture=f"torchvision.models.detection.{architecture}",
        published_file_size_mib=size_mib,
        num_params=num_params,
        training_data=f"COCO train2017 instances, 80 categories under COCO ids 1-90 ({recipe})",
        class_names=tuple(_COCO_NAMES),
        palette="voc",
        resize="min 800 max 1333",
        preprocessing=(
            "torchvision's ObjectDetection preset only scales RGB to [0, 1]; the model itself "
            "(GeneralizedRCNNTransform) normalises with ImageNet mean and std, resizes (bilinear) "
            "so the shorter side is 800 and the longer at most 1333, and pads to a multiple of 32"
        ),
    )


_MASK_RCNN_V1_MISSING = (
    "a Mask R-CNN in torchvision's layout (kseg.models.MaskRCNN is kseg's own design): "
    f"{_RESNET_V15} with frozen batch norm, an FPN with a max-pooled "
    "extra level, a one-convolution RPN head, a two-layer MLP box head and a four-convolution "
    "mask head"
)
_MASK_RCNN_V2_MISSING = (
    "a Mask R-CNN in torchvision's v2 layout (kseg.models.MaskRCNN is kseg's own design): "
    f"{_RESNET_V15} and an FPN with batch norm, a two-convolution RPN "
    "head, a box head of four convolutions with batch norm and one fully connected layer, and a "
    "mask head of four convolutions with batch norm"
)

_ENTRIES = (
    _segmentation(
        "fcn_resnet50",
        "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
        "fcn_resnet50(num_classes=21, aux_loss=True)",
        "https://download.pytorch.org/models/fcn_resnet50_coco-1167a1af.pth",
        {"miou": 60.5, "pixel_acc": 91.4},
        135.009,
        35322218,
        f"{_RESNET_V15_DILATED}, torchvision's FCNHead and auxiliary FCNHead",
    ),
    _segmentation(
        "fcn_resnet101",
        "FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1",
        "fcn_resnet101(num_classes=21, aux_loss=True)",
        "https://download.pytorch.org/models/fcn_resnet101_coco-7ecb50ca.pth",
        {"miou": 63.7, "pixel_acc": 91.9},
        207.711,
        54314346,
        f"{_RESNET_V15_DILATED}, torchvision's FCNHead and auxiliary FCNHead",
    ),
    _segmentation(
        "deeplabv3_resnet50",
        "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
        "deeplabv3_resnet50(num_classes=21, aux_loss=True)",
        "https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth",
        {"miou": 66.4, "pixel_acc": 92.4},
        160.515,
        42004074,
        f"{_RESNET_V15_DILATED}, torchvision's DeepLabHead (ASPP rates 12, 24, 36 with image "
        "pooling) and auxiliary FCNHead",
    ),
    _segmentation(
        "deeplabv3_resnet101",
        "DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1",
        "deeplabv3_resnet101(num_classes=21, aux_loss=True)",
        "https://download.pytorch.org/models/deeplabv3_resnet101_coco-586e9e4e.pth",
        {"miou": 67.4, "pixel_acc": 92.4},
        233.217,
        60996202,
        f"{_RESNET_V15_DILATED}, torchvision's DeepLabHead (ASPP rates 12, 24, 36 with image "
        "pooling) and auxiliary FCNHead",
    ),
    _segmentation(
        "deeplabv3_mobilenet_v3_large",
        "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
        "deeplabv3_mobilenet_v3_large(num_classes=21, aux_loss=True)",
        "https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-fc3c493d.pth",
        {"miou": 60.3, "pixel_acc": 91.2},
        42.301,
        11029328,
        f"{_MOBILENET_V3_DILATED}, torchvision's DeepLabHead and auxiliary FCNHead",
    ),
    _segmentation(
        "lraspp_mobilenet_v3_large",
        "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
        "lraspp_mobilenet_v3_large(num_classes=21)",
        "https://download.pytorch.org/models/lraspp_mobilenet_v3_large-d234d4ea.pth",
        {"miou": 57.9, "pixel_acc": 91.2},
        12.49,
        3221538,
        f"{_MOBILENET_V3_DILATED}, torchvision's LR-ASPP head",
    ),
    _mask_rcnn(
        "maskrcnn_resnet50_fpn",
        "MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
        "maskrcnn_resnet50_fpn(num_classes=91)",
        "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
        {"box_map": 37.9, "mask_map": 34.6},
        169.84,
        44401393,
        _MASK_RCNN_V1_MISSING,
        "torchvision's references/detection Mask R-CNN recipe",
    ),
    _mask_rcnn(
        "maskrcnn_resnet50_fpn_v2",
        "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
        "maskrcnn_resnet50_fpn_v2(num_classes=91)",
        "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
        {"box_map": 47.4, "mask_map": 41.8},
        177.219,
        46359409,
        _MASK_RCNN_V2_MISSING,
        "torchvision's enhanced recipe, pytorch/vision pull request 5773",
    ),
)

# Each converter module: (module, its configs dict `{entry name: (builder, kwargs)}`, its
# `load_*_checkpoint(entry, path)` function). An entry named in a configs dict is loadable.
_CONVERTER_MODULES = (
    (
        "kseg.pretrained.convert_torchvision_segmentation",
        "TORCHVISION_SEGMENTATION_CONFIGS",
        "load_torchvision_segmentation_checkpoint",
    ),
    (
        "kseg.pretrained.convert_torchvision_mask_rcnn",
        "TORCHVISION_MASK_RCNN_CONFIGS",
        "load_torchvision_mask_rcnn_checkpoint",
    ),
)


def _with_converter(entry):
    """The entry made loadable when kseg has a configuration and converter for it."""
    import importlib

    for module_name, configs_name, function_name in _CONVERTER_MODULES:
        configs = getattr(importlib.import_module(module_name), configs_name)
        if entry.name in configs:
            builder, builder_kwargs = configs[entry.name]
            return dataclasses.replace(
                entry,
                builder=builder,
                builder_kwargs={**builder_kwargs, "num_classes": entry.num_classes},
                converter=f"{module_name}:{function_name}",
                status="loadable",
                missing="",
            )
    return entry


_REGISTRY = {entry.name: _with_converter(entry) for entry in _ENTRIES}


def list_pretrained(task=None, *, loadable=None):
    """Names of the registered checkpoints, in registration order.

    Args:
        task: keep only "semantic" or "instance" entries; None for all.
        loadable: True for only those kseg can load now, False for only those it cannot yet,
            None for all.

    Returns:
        A list of names for `get` and `load`.

    Example:
        >>> kseg.pretrained.list_pretrained(task="instance")
        ['maskrcnn_resnet50_fpn', 'maskrcnn_resnet50_fpn_v2']
        >>> kseg.pretrained.list_pretrained(loadable=True)[:2]
        ['fcn_resnet50', 'fcn_resnet101']
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS} or None. Received: task={task!r}")
    return [
        entry.name
        for entry in _REGISTRY.values()
        if (task is None or entry.task == task)
        and (loadable is None or (entry.status == "loadable") == loadable)
    ]


def get(name):
    """The `PretrainedEntry` registered as `name`.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.

    Example:
        >>> entry = kseg.pretrained.get("lraspp_mobilenet_v3_large")
        >>> entry.url
        'https://download.pytorch.org/models/lraspp_mobilenet_v3_large-d234d4ea.pth'
        >>> entry.class_names[:3]
        ('__background__', 'aeroplane', 'bicycle')
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown pretrained checkpoint {name!r}; known: {', '.join(_REGISTRY)}")
    return entry


# Bumped whenever a converter's output changes, so stale converted weights are not reused.
CONVERSION_VERSION = "kseg1"


def load(name, *, cache_dir=None):
    """Builds the kseg model of checkpoint `name` with the published weights converted onto it.

    The file is fetched and verified (`PretrainedEntry.fetch`), then the entry's converter
    builds the model and sets its weights. The converted weights are kept beside the checkpoint
    (`cached_conversion_path`, written whole or not at all), so a second load builds the model
    and reads them instead of converting again. Entries kseg cannot load yet raise
    `NotLoadableError` before anything is downloaded, saying what is missing.

    Args:
        name: a name of `list_pretrained()`.
        cache_dir: cache folder instead of the Keras one.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an unknown name.
        NotLoadableError: kseg has no builder or converter for the entry yet.

    Example:
        >>> kseg.pretrained.load("deeplabv3_resnet05")
        Traceback (most recent call last):
        ...
        ValueError: unknown pretrained checkpoint 'deeplabv3_resnet05'; known: fcn_resnet50, ...
    """
    entry = get(name)
    if entry.status != "loadable":
        raise NotLoadableError(
            f"kseg cannot load {name!r} yet: it needs {entry.missing}. The published file can "
            f"still be downloaded and verified with kseg.pretrained.get({name!r}).fetch() and "
            "read with kseg.pretrained.read_torch_checkpoint"
        )
    import importlib

    from kseg.models.registry import get_builder
    from kseg.pretrained.download import atomic_path, cached_conversion_path

    checkpoint = entry.fetch(cache_dir=cache_dir)
    converted = cached_conversion_path(checkpoint, version=CONVERSION_VERSION)
    if converted.exists():
        model = get_builder(entry.builder)(**entry.builder_kwargs)
        try:
            model.load_weights(converted)
            return model
        except (OSError, ValueError):
            # An unreadable or mismatched file is converted again below and replaced.
            converted.unlink(missing_ok=True)
    module_name, function_name = entry.converter.split(":")
    converter = getattr(importlib.import_module(module_name), function_name)
    model = converter(entry, checkpoint)
    with atomic_path(converted) as temporary:
        model.save_weights(temporary)
    return model
