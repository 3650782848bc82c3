"""Binary 0/255 mask folders: refused unless told what 255 means, then read as told."""

import numpy as np
import pytest
from PIL import Image

import kseg.data
from kseg.data import DatasetError, folder_dataset, load_dataset, parse_mask_values
from kseg.data.mask_values import SAMPLED_MASKS, resolve_mask_values, sample_mask_paths


def write_folder(root, rng, masks, size=(6, 8)):
    """Images plus the given (H, W) masks as grayscale PNGs named 00.png, 01.png..."""
    for index, mask in enumerate(masks):
        image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"{index:02d}.png")
        Image.fromarray(np.asarray(mask, np.uint8)).save(root / "masks" / f"{index:02d}.png")
    return root / "images", root / "masks"


def binary_masks(rng, count, size=(6, 8)):
    return [rng.choice(np.array([0, 255], np.uint8), size=size) for _ in range(count)]


def read_masks(dataset):
    return [mask for _, mask in dataset.as_numpy_iterator()]


def test_zero_255_folder_is_refused_naming_file_values_and_fix(tmp_path, rng):
    images, masks = write_folder(tmp_path, rng, binary_masks(rng, 3))
    with pytest.raises(DatasetError) as raised:
        folder_dataset(images, masks)
    message = str(raised.value)
    assert str(masks / "00.png") in message and "[0, 255]" in message
    assert "--mask-values binary" in message and "mask_values='binary'" in message
    assert "--mask-values labels" in message and "\n" not in message
    with pytest.raises(DatasetError, match="--mask-values binary"):
        load_dataset(f"{images},{masks}", num_classes=2)


@pytest.mark.parametrize("mask_values", ["binary", {0: 0, 255: 1}, "0:0,255:1"])
def test_binary_masks_read_as_background_and_foreground(tmp_path, rng, mask_values):
    stored = binary_masks(rng, 3)
    images, masks = write_folder(tmp_path, rng, stored)
    got = read_masks(folder_dataset(images, masks, mask_values=mask_values, num_classes=2))
    for mask, raw in zip(got, stored, strict=True):
        np.testing.assert_array_equal(mask, raw // 255)


def test_binary_folder_declares_two_named_classes(tmp_path, rng):
    images, masks = write_folder(tmp_path, rng, binary_masks(rng, 2))
    dataset, info = load_dataset((images, masks), with_info=True, mask_values="binary")
    assert info.num_classes == 2 and info.class_names == ("background", "foreground")
    assert {int(v) for mask in read_masks(dataset) for v in np.unique(mask)} == {0, 1}


def test_labels_keeps_255_as_the_ignore_label(tmp_path, rng):
    stored = binary_masks(rng, 2)
    images, masks = write_folder(tmp_path, rng, stored)
    got = read_masks(folder_dataset(images, masks, mask_values="labels", num_classes=2))
    for mask, raw in zip(got, stored, strict=True):
        np.testing.assert_array_equal(mask, raw)


def test_class_ids_with_an_ignored_border_pass_as_stored(tmp_path, rng):
    stored = [rng.choice(np.array([0, 1, 255], np.uint8), size=(6, 8)) for _ in range(2)]
    # One mask of background and border only: the folder as a whole still holds class 1.
    stored.append(np.where(rng.random((6, 8)) < 0.5, 0, 255).astype(np.uint8))
    images, masks = write_folder(tmp_path, rng, stored)
    got = read_masks(folder_dataset(images, masks, num_classes=2))
    for mask, raw in zip(got, stored, strict=True):
        np.testing.assert_array_equal(mask, raw)


def test_binary_is_refused_for_masks_whose_255_is_a_border(tmp_path, rng):
    stored = [rng.choice(np.array([0, 1, 255], np.uint8), size=(6, 8)) for _ in range(2)]
    images, masks = write_folder(tmp_path, rng, stored)
    with pytest.raises(DatasetError) as raised:
        folder_dataset(images, masks, mask_values="binary")
    message = str(raised.value)
    assert str(masks / "00.png") in message and "[0, 1, 255]" in message


def test_trimap_mapping_makes_the_border_ignored(tmp_path, rng):
    # Oxford-IIIT Pet trimaps: 1 pet, 2 background, 3 border.
    stored = [rng.choice(np.array([1, 2, 3], np.uint8), size=(6, 8)) for _ in range(2)]
    images, masks = write_folder(tmp_path, rng, stored)
    got = read_masks(folder_dataset(images, masks, mask_values="1:1,2:0,3:255", num_classes=2))
    for mask, raw in zip(got, stored, strict=True):
        expected = np.select([raw == 1, raw == 2], [1, 0], 255)
        np.testing.assert_array_equal(mask, expected)


def test_grey_rgb_masks_are_checked_too(tmp_path, rng):
    images, masks = write_folder(tmp_path, rng, binary_masks(rng, 2))
    for path in masks.iterdir():
        Image.open(path).convert("RGB").save(path)
    with pytest.raises(DatasetError, match=r"\[0, 255\]"):
        folder_dataset(images, masks)


def test_mask_values_only_for_folders_and_not_with_label_map(tmp_path, rng):
    with pytest.raises(DatasetError, match="image/mask folders"):
        load_dataset("shapes", num_samples=2, image_size=32, mask_values="binary")
    images, masks = write_folder(tmp_path, rng, binary_masks(rng, 1))
    with pytest.raises(ValueError, match="not both"):
        folder_dataset(images, masks, mask_values="binary", label_map={255: 1})


@pytest.mark.parametrize("text", ["", "binery", "0:0,255", "a:1", "0:-1"])
def test_unreadable_mask_values_are_named(text):
    with pytest.raises(DatasetError, match="mask"):
        parse_mask_values(text)


def test_parse_mask_values_forms():
    assert parse_mask_values(" 0:0, 255:1 ") == {0: 0, 255: 1}
    assert parse_mask_values("labels") == "labels" and parse_mask_values(None) is None
    assert kseg.data.parse_mask_values({1: 1, 2: 0, 3: 255}) == {1: 1, 2: 0, 3: 255}


def test_sample_spreads_over_the_list_from_the_first():
    paths = [f"{i:03d}.png" for i in range(100)]
    sample = sample_mask_paths(paths)
    assert len(sample) == SAMPLED_MASKS == len(set(sample))
    assert sample[0] == paths[0] and sample[-1] == paths[-1]
    assert sample_mask_paths(paths[:3]) == paths[:3]


def test_explicit_options_skip_the_check():
    # No file is read: a missing path would fail if it were.
    missing = ["/nonexistent/mask.png"]
    assert resolve_mask_values("labels", missing) is None
    assert resolve_mask_values(None, missing, label_map={3: 255}) == {3: 255}
    assert resolve_mask_values(None, missing, mask_colors=[(0, 0, 0)]) is None
    assert resolve_mask_values(None, missing, ignore_label=0) is None
