import dataclasses
import hashlib
import importlib
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import keras
import pytest
from keras.src.utils import file_utils

import kseg
from kseg.data.voc import VOC_CLASS_NAMES
from kseg.pretrained import registry

REPO = Path(__file__).resolve().parents[2]

NAMES = kseg.pretrained.list_pretrained()
SEMANTIC = kseg.pretrained.list_pretrained(task="semantic")
INSTANCE = kseg.pretrained.list_pretrained(task="instance")


def forbid_download(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"the test tried to download {url}")

    monkeypatch.setattr(file_utils, "urlretrieve", refuse)


def test_the_torchvision_entries_are_registered():
    assert SEMANTIC == [
        "fcn_resnet50",
        "fcn_resnet101",
        "deeplabv3_resnet50",
        "deeplabv3_resnet101",
        "deeplabv3_mobilenet_v3_large",
        "lraspp_mobilenet_v3_large",
    ]
    assert INSTANCE == ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"]
    assert NAMES == SEMANTIC + INSTANCE


@pytest.mark.parametrize("name", NAMES)
def test_url_file_name_ends_with_the_hash_prefix(name):
    entry = kseg.pretrained.get(name)
    assert entry.url.startswith("https://download.pytorch.org/models/")
    assert re.fullmatch(r"[0-9a-f]{8,64}", entry.hash_prefix)
    assert entry.url.endswith(f"-{entry.hash_prefix}.pth")
    assert kseg.pretrained.hash_prefix_in_name(entry.url) == entry.hash_prefix


@pytest.mark.parametrize("name", SEMANTIC)
def test_segmentation_entries_have_the_21_voc_classes(name):
    entry = kseg.pretrained.get(name)
    assert entry.num_classes == 21
    # torchvision calls class 0 "__background__"; the 20 others are VOC's, in VOC's order.
    assert entry.class_names[0] == "__background__"
    assert entry.class_names[1:] == VOC_CLASS_NAMES[1:]
    assert entry.resize == "min_side 520"
    assert entry.palette == "voc"


@pytest.mark.parametrize("name", INSTANCE)
def test_mask_rcnn_entries_have_the_91_coco_category_indices(name):
    entry = kseg.pretrained.get(name)
    assert entry.num_classes == 91
    names = entry.class_names
    used = [n for n in names[1:] if n != "N/A"]
    assert len(used) == 80 and len(set(used)) == 80  # COCO's 80 categories, ids 1-90
    assert names.count("N/A") == 10  # ids 1-90 that name no category
    # A few COCO category ids (instances_val2017.json): the index is the id.
    assert (names[1], names[18], names[44], names[90]) == ("person", "dog", "bottle", "toothbrush")
    assert entry.resize == "min 800 max 1333"


@pytest.mark.parametrize("name", NAMES)
def test_metrics_are_present_and_labelled_as_the_publishers(name):
    entry = kseg.pretrained.get(name)
    expected = (
        {"COCO-val2017-VOC-labels": {"miou", "pixel_acc"}}
        if entry.task == "semantic"
        else {"COCO-val2017": {"box_map", "mask_map"}}
    )
    assert {data: set(metrics) for data, metrics in entry.publisher_metrics.items()} == expected
    for metrics in entry.publisher_metrics.values():
        assert all(0 < value < 100 for value in metrics.values())
    assert "publisher" in entry.metrics_source
    assert "torchvision" in entry.metrics_source


@pytest.mark.parametrize("name", NAMES)
def test_published_size_matches_float32_parameters(name):
    # A float32 state dict holds 4 bytes per parameter plus small buffers and pickle framing.
    entry = kseg.pretrained.get(name)
    parameter_mib = entry.num_params * 4 / 2**20
    assert parameter_mib <= entry.published_file_size_mib <= 1.02 * parameter_mib


@pytest.mark.parametrize("name", NAMES)
def test_entries_describe_their_inputs(name):
    entry = kseg.pretrained.get(name)
    assert entry.value_range == (0.0, 1.0)
    assert entry.mean == (0.485, 0.456, 0.406) and entry.std == (0.229, 0.224, 0.225)
    assert "BSD-3-Clause" in entry.licence and "publisher" in entry.licence
    assert entry.training_data.startswith("COCO train2017")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown pretrained checkpoint 'deeplabv3_resnet18'"
    ) as raised:
        kseg.pretrained.get("deeplabv3_resnet18")
    assert all(name in str(raised.value) for name in NAMES)
    with pytest.raises(ValueError, match="deeplabv3_resnet18"):
        kseg.pretrained.load("deeplabv3_resnet18")


LOADABLE = [
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
]
NOT_LOADABLE = [name for name in NAMES if name not in LOADABLE]


def test_list_pretrained_filters():
    assert kseg.pretrained.list_pretrained(loadable=True) == LOADABLE
    assert kseg.pretrained.list_pretrained(loadable=False) == NOT_LOADABLE
    with pytest.raises(ValueError, match="task"):
        kseg.pretrained.list_pretrained(task="panoptic")


@pytest.mark.parametrize("name", [name for name in LOADABLE if not name.startswith("maskrcnn")])
def test_loadable_entries_build_the_converted_configuration(name):
    from kseg.pretrained.convert_torchvision_segmentation import TORCHVISION_SEGMENTATION_CONFIGS

    entry = kseg.pretrained.get(name)
    builder, kwargs = TORCHVISION_SEGMENTATION_CONFIGS[name]
    assert entry.status == "loadable" and entry.missing == ""
    assert entry.builder == builder and entry.builder_kwargs == {**kwargs, "num_classes": 21}
    module, function = entry.converter.split(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("name", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"])
def test_the_mask_rcnn_entries_build_their_torchvision_configuration(name):
    from kseg.pretrained.convert_torchvision_mask_rcnn import TORCHVISION_MASK_RCNN_CONFIGS

    entry = kseg.pretrained.get(name)
    builder, kwargs = TORCHVISION_MASK_RCNN_CONFIGS[name]
    assert entry.status == "loadable" and entry.missing == ""
    assert entry.builder == builder and entry.builder_kwargs == {**kwargs, "num_classes": 91}
    assert (kwargs["resize_min_side"], kwargs["resize_max_side"]) == (800, 1333)
    assert entry.resize == "min 800 max 1333"
    module, function = entry.converter.split(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("name", NOT_LOADABLE)
def test_load_says_what_is_missing_without_downloading(name, monkeypatch):
    forbid_download(monkeypatch)
    entry = kseg.pretrained.get(name)
    assert entry.status == "not_loadable" and entry.converter is None and entry.builder is None
    with pytest.raises(NotImplementedError) as raised:
        kseg.pretrained.load(name)
    assert isinstance(raised.value, kseg.pretrained.NotLoadableError)
    message = str(raised.value)
    assert name in message and entry.missing in message and "converter" in message


def test_entries_are_frozen():
    entry = kseg.pretrained.get("fcn_resnet50")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.status = "loadable"


@pytest.mark.parametrize(
    "change, complaint",
    [
        ({"status": "ready"}, "status"),
        ({"task": "panoptic"}, "task"),
        ({"hash_prefix": None}, "sha256"),
        ({"missing": ""}, "missing"),
        ({"status": "loadable", "missing": ""}, "converter"),
        ({"mean": (0.5,)}, "mean"),
    ],
)
def test_inconsistent_entries_are_refused(change, complaint):
    not_loadable = dataclasses.replace(
        kseg.pretrained.get("lraspp_mobilenet_v3_large"),
        status="not_loadable",
        builder=None,
        converter=None,
        missing="a builder",
    )
    with pytest.raises(ValueError, match=complaint):
        dataclasses.replace(not_loadable, **change)


def test_load_of_a_loadable_entry_fetches_verifies_and_converts(tmp_path, monkeypatch):
    content = b"a toy checkpoint"
    source = tmp_path / f"toy-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    source.write_bytes(content)
    calls = []
    converted = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="converted")

    def convert(entry, path):
        calls.append((entry.name, path.read_bytes()))
        return converted

    monkeypatch.setitem(sys.modules, "toy_converters", types.SimpleNamespace(convert=convert))
    toy = dataclasses.replace(
        kseg.pretrained.get("fcn_resnet50"),
        name="toy",
        url=source.as_uri(),
        hash_prefix=kseg.pretrained.hash_prefix_in_name(source.name),
        status="loadable",
        builder="unet",
        converter="toy_converters:convert",
        missing="",
    )
    monkeypatch.setitem(registry._REGISTRY, "toy", toy)
    assert kseg.pretrained.load("toy", cache_dir=tmp_path / "cache") is converted
    assert calls == [("toy", content)]
    assert (tmp_path / "cache" / "kseg" / "pretrained" / source.name).read_bytes() == content


def test_entries_match_torchvision_weights(torch_python):
    script = REPO / "tests" / "fixtures" / "torchvision_weights_meta.py"
    printed = subprocess.run(
        [torch_python, str(script), *NAMES], check=True, capture_output=True, text=True
    ).stdout
    published = json.loads(printed)
    for name in NAMES:
        entry = kseg.pretrained.get(name)
        weights = published[name]
        assert entry.url == weights["url"], name
        assert entry.publisher_metrics == weights["metrics"], name
        assert list(entry.class_names) == weights["categories"], name
        assert entry.published_file_size_mib == weights["file_size"], name
        assert entry.num_params == weights["num_params"], name
        assert weights["enum"] in entry.metrics_source, name
        if entry.task == "semantic":
            assert weights["resize_size"] == [520], name
            assert (tuple(weights["mean"]), tuple(weights["std"])) == (entry.mean, entry.std)


def test_the_docs_table_lists_every_entry_with_whether_kseg_loads_it():
    hook = REPO / "docs" / "pretrained_tables.py"
    spec = importlib.util.spec_from_file_location("pretrained_tables", hook)
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    page = tables.on_page_markdown("intro\n<!-- pretrained: registry -->\nafter")
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == NAMES
    for row in rows:
        name = row.split("`")[1]
        assert ("yes, as" in row) == (name in LOADABLE), row
    assert page.startswith("intro\n") and page.endswith("\nafter")


def _toy_fcn_entry(tmp_path):
    """A loadable entry whose file is the narrow torchvision FCN fixture, served by file:// URL."""
    import shutil

    from kseg.pretrained.convert_torchvision_segmentation import TORCHVISION_SEGMENTATION_CONFIGS

    fixture = REPO / "tests" / "fixtures" / "torchvision_fcn_small.pth"
    prefix = kseg.pretrained.sha256_of_file(fixture)[:8]
    source = tmp_path / f"toy_fcn-{prefix}.pth"
    shutil.copy(fixture, source)
    builder, kwargs = TORCHVISION_SEGMENTATION_CONFIGS["fcn_resnet50"]
    return dataclasses.replace(
        kseg.pretrained.get("fcn_resnet50"),
        name="toy_fcn",
        url=source.as_uri(),
        hash_prefix=prefix,
        builder=builder,
        builder_kwargs={**kwargs, "base_channels": 2, "num_filters": 16, "num_classes": 3},
        class_names=("background", "one", "two"),
    )


def test_load_converts_once_then_reads_the_cached_keras_weights(tmp_path, monkeypatch):
    import numpy as np

    from kseg.pretrained import convert_torchvision_segmentation as converters

    monkeypatch.setitem(registry._REGISTRY, "toy_fcn", _toy_fcn_entry(tmp_path))
    image = np.load(REPO / "tests" / "fixtures" / "torchvision_segmentation_small.npz")["image0"]
    cache = tmp_path / "cache"
    first = kseg.pretrained.load("toy_fcn", cache_dir=cache)
    converted = list((cache / "kseg" / "pretrained").glob("*.weights.h5"))
    assert [path.name for path in converted] == [
        f"toy_fcn-{registry.get('toy_fcn').hash_prefix}.{registry.CONVERSION_VERSION}.weights.h5"
    ]

    def no_conversion(entry, path):
        raise AssertionError("the second load converted again")

    monkeypatch.setattr(converters, "load_torchvision_segmentation_checkpoint", no_conversion)
    second = kseg.pretrained.load("toy_fcn", cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(second(image)), np.asarray(first(image)))

    # A damaged converted file is converted again and replaced, not trusted.
    converted[0].write_bytes(b"not an h5 file")
    monkeypatch.undo()
    monkeypatch.setitem(registry._REGISTRY, "toy_fcn", _toy_fcn_entry(tmp_path))
    third = kseg.pretrained.load("toy_fcn", cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(third(image)), np.asarray(first(image)))
    assert converted[0].read_bytes()[:4] == b"\x89HDF"
