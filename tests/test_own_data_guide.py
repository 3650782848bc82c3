"""docs/own-data.md: its conversion code and its --mask-values commands do what the page says."""

import re

import numpy as np
from PIL import Image
from test_docs import COMMANDS, DOCS

import kseg
from kseg.cli import build_parser

PAGE = DOCS / "own-data.md"
PYTHON_BLOCK = re.compile(r"```python\n(?P<code>.*?)```", re.DOTALL)


def _python_block(needle):
    (code,) = [m["code"] for m in PYTHON_BLOCK.finditer(PAGE.read_text()) if needle in m["code"]]
    return code


def _commands(needle):
    return [
        argv
        for location, argv, complete in COMMANDS
        if location.startswith("docs/own-data.md") and complete and needle in " ".join(argv)
    ]


def _write_pets(root, rng, count=3, size=(20, 24)):
    """A miniature Oxford-IIIT Pet release: images/*.jpg, annotations/trimaps/*.png, ._ files."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    trimaps = {}
    for index in range(count):
        name = f"Abyssinian_{index + 1}"
        trimap = rng.choice(np.array([1, 2, 3], np.uint8), size=size)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / "images" / f"{name}.jpg"
        )
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
        trimaps[name] = trimap
    (root / "annotations" / "trimaps" / "._Abyssinian_1.png").write_bytes(b"\0\5\26\7")
    return trimaps


def _pet_labels(trimap):
    return np.select([trimap == 1, trimap == 2], [1, 0], 255)


def test_trimap_conversion_code_writes_split_class_id_masks(tmp_path, monkeypatch):
    trimaps = _write_pets(tmp_path / "pets", np.random.default_rng(0), count=11)
    monkeypatch.chdir(tmp_path)
    exec(_python_block("TRIMAP_TO_LABEL"), {})
    written = sorted((tmp_path / "pets_data" / "masks").rglob("*.png"))
    assert len(written) == 11 and {p.parent.name for p in written} == {"train", "val"}
    for path in written:
        np.testing.assert_array_equal(np.asarray(Image.open(path)), _pet_labels(trimaps[path.stem]))
        assert (tmp_path / "pets_data" / "images" / path.parent.name / f"{path.stem}.jpg").is_file()
    # The documented command then reads the converted folder as it is.
    (train,) = [argv for argv in _commands("pets_data") if argv[1] == "train"]
    args = build_parser().parse_args(train[1:])
    dataset, info = kseg.data.load_split(args.data, "val", num_classes=args.num_classes)
    assert info.num_classes == 2 and len(list(dataset)) == 2


def test_documented_trimap_mapping_reads_the_release_as_is(tmp_path, monkeypatch):
    trimaps = _write_pets(tmp_path / "pets", np.random.default_rng(1))
    (tmp_path / "pets" / "annotations" / "trimaps" / "._Abyssinian_1.png").unlink()
    monkeypatch.chdir(tmp_path)
    (train,) = [argv for argv in _commands("--mask-values 1:1,2:0,3:255") if argv[1] == "train"]
    args = build_parser().parse_args(train[1:])
    dataset, _ = kseg.data.load_split(args.data, args.train_split, mask_values=args.mask_values)
    masks = [mask for _, mask in dataset.as_numpy_iterator()]
    for mask, name in zip(masks, sorted(trimaps), strict=True):
        np.testing.assert_array_equal(mask, _pet_labels(trimaps[name]))


def test_documented_binary_commands_read_0_255_masks_as_two_classes(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    for folder in ("images", "masks"):
        (tmp_path / "cells" / folder).mkdir(parents=True)
    stored = rng.choice(np.array([0, 255], np.uint8), size=(12, 12))
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
        tmp_path / "cells" / "images" / "0001.png"
    )
    Image.fromarray(stored).save(tmp_path / "cells" / "masks" / "0001.png")
    monkeypatch.chdir(tmp_path)
    commands = _commands("--mask-values binary")
    assert {argv[1] for argv in commands} == {"train", "evaluate"}
    for argv in commands:
        args = build_parser().parse_args(argv[1:])
        dataset, info = kseg.data.load_split(args.data, "val", mask_values=args.mask_values)
        assert info.class_names == ("background", "foreground")
        ((_, mask),) = list(dataset.as_numpy_iterator())
        np.testing.assert_array_equal(mask, stored // 255)

    exec(_python_block("mask >= 128"), {})
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "cells" / "masks" / "0001.png")), stored // 255
    )
