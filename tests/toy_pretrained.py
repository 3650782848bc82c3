"""A stand-in published checkpoint for tests: the committed narrow torchvision FCN as "toy"."""

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


def register_toy_checkpoint(tmp_path, monkeypatch):
    """Registers "toy": the committed narrow torchvision FCN, served from a file:// URL.

    The narrow FCN is the one of tests/fixtures/make_torchvision_segmentation_small.py (3
    classes); `kseg.pretrained.load` is pointed at a cache under `tmp_path`.

    Returns:
        `(entry, cache_dir)`.
    """
    fixture = FIXTURES / "torchvision_fcn_small.pth"
    digest = hashlib.sha256(fixture.read_bytes()).hexdigest()
    served = tmp_path / "served" / f"fcn_small-{digest[:8]}.pth"
    served.parent.mkdir()
    shutil.copyfile(fixture, served)
    builder, kwargs = TORCHVISION_SEGMENTATION_CONFIGS["fcn_resnet50"]
    toy = dataclasses.replace(
        kseg.pretrained.get("fcn_resnet50"),
        name="toy",
        url=served.as_uri(),
        hash_prefix=digest[:8],
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
