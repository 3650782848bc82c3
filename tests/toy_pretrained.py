"""Stand-in published checkpoints for tests: the committed narrow torchvision FCN and Mask R-CNN."""

import dataclasses
import functools
import hashlib
import shutil
from pathlib import Path

import kseg
from kseg.pretrained import registry
from kseg.pretrained.convert_torchvision_segmentation import TORCHVISION_SEGMENTATION_CONFIGS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOY_CLASS_NAMES = ("bg", "sky", "tree")
TOY_MIN_SIDE = 32


def _served_copy(fixture, tmp_path, stem):
    """A copy of `fixture` in `tmp_path/served`, named as published files are
    (`<stem>-<first 8 hex digits of its SHA-256>.pth`), and that hash prefix."""
    prefix = hashlib.sha256(fixture.read_bytes()).hexdigest()[:8]
    served = tmp_path / "served" / f"{stem}-{prefix}.pth"
    served.parent.mkdir(exist_ok=True)
    shutil.copyfile(fixture, served)
    return served, prefix


def register_toy_checkpoint(tmp_path, monkeypatch):
    """Registers "toy": the committed narrow torchvision FCN, served from a file:// URL.

    The narrow FCN is the one of tests/fixtures/make_torchvision_segmentation_small.py (3
    classes); `kseg.pretrained.load` is pointed at a cache under `tmp_path`.

    Returns:
        `(entry, cache_dir)`.
    """
    served, prefix = _served_copy(FIXTURES / "torchvision_fcn_small.pth", tmp_path, "fcn_small")
    builder, kwargs = TORCHVISION_SEGMENTATION_CONFIGS["fcn_resnet50"]
    toy = dataclasses.replace(
        kseg.pretrained.get("fcn_resnet50"),
        name="toy",
        url=served.as_uri(),
        hash_prefix=prefix,
        builder=builder,
        builder_kwargs={**kwargs, "base_channels": 2, "num_filters": 16, "num_classes": 3},
        class_names=TOY_CLASS_NAMES,
        resize=f"min_side {TOY_MIN_SIDE}",
    )
    monkeypatch.setitem(registry._REGISTRY, "toy", toy)
    cache_dir = tmp_path / "cache"
    monkeypatch.setattr(
        kseg.pretrained, "load", functools.partial(kseg.pretrained.load, cache_dir=cache_dir)
    )
    return toy, cache_dir


def register_toy_mask_rcnn(tmp_path, monkeypatch, class_names):
    """Registers "toy_instances": the committed narrow torchvision Mask R-CNN (5 classes).

    The model of tests/fixtures/torchvision_mask_rcnn_reference.py, served from a file:// URL,
    resizing to min 160 / max 256 like that reference; `class_names` (5, background first) are
    the entry's, class k being COCO category id k as in torchvision's COCO checkpoints.
    `kseg.pretrained.load` is pointed at a cache under `tmp_path`.

    Returns:
        The registered entry.
    """
    from kseg.pretrained.convert_torchvision_mask_rcnn import TORCHVISION_MASK_RCNN_CONFIGS

    checkpoint = FIXTURES / "torchvision_mask_rcnn_small.pth"
    served, prefix = _served_copy(checkpoint, tmp_path, "maskrcnn_small")
    builder, kwargs = TORCHVISION_MASK_RCNN_CONFIGS["maskrcnn_resnet50_fpn"]
    toy = dataclasses.replace(
        kseg.pretrained.get("maskrcnn_resnet50_fpn"),
        name="toy_instances",
        url=served.as_uri(),
        hash_prefix=prefix,
        builder_kwargs={
            **kwargs,
            "num_classes": 5,
            "resize_min_side": 160,
            "resize_max_side": 256,
            "fpn_channels": 16,
            "box_fc_units": 32,
            "mask_channels": 16,
            "backbone_kwargs": {"frozen_batchnorm": True, "base_channels": 2},
        },
        class_names=tuple(class_names),
    )
    monkeypatch.setitem(registry._REGISTRY, "toy_instances", toy)
    monkeypatch.setattr(
        kseg.pretrained,
        "load",
        functools.partial(kseg.pretrained.load, cache_dir=tmp_path / "cache"),
    )
    return toy
