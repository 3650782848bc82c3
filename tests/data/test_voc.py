import numpy as np
import pytest

from kseg.data import DatasetError, voc_colormap, voc_dataset, voc_info


def _voc_tree(files, root, rng, names_by_split, palette=None, size=(12, 16)):
    palette = voc_colormap() if palette is None else palette
    truth = {}
    for split, names in names_by_split.items():
        for name in names:
            image, mask = files.random_pair(rng, *size, labels=[0, 1, 15, 20, 255])
            files.write_image(root / "JPEGImages" / f"{name}.jpg", image)
            files.write_mask(root / "SegmentationClass" / f"{name}.png", mask, palette)
            truth[name] = mask
        split_dir = root / "ImageSets" / "Segmentation"
        split_dir.mkdir(parents=True, exist_ok=True)
        (split_dir / f"{split}.txt").write_text("\n".join(names) + "\n")
    return truth


def test_voc_colormap_matches_devkit_colours():
    # Colours published with the VOC devkit for these labels.
    expected = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        4: (0, 0, 128),
        15: (192, 128, 128),
        20: (0, 64, 128),
        255: (224, 224, 192),
    }
    cmap = voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    for label, colour in expected.items():
        assert tuple(cmap[label]) == colour
    assert len({tuple(c) for c in cmap}) == 256


def test_voc_info():
    info = voc_info()
    assert info.num_classes == 21
    assert info.class_names[0] == "background" and info.class_names[15] == "person"
    assert info.ignore_label == 255
    assert info.palette_array().tolist() == voc_colormap(21).tolist()


def test_voc_reads_palette_indices_in_split_order(tmp_path, rng, files):
    truth = _voc_tree(
        files, tmp_path, rng, {"train": ["2007_000032", "2007_000039"], "val": ["2008_1"]}
    )
    ds = voc_dataset(tmp_path, "train")
    pairs = list(ds.as_numpy_iterator())
    assert len(pairs) == 2
    for (image, mask), name in zip(pairs, ["2007_000032", "2007_000039"]):
        assert image.shape == (12, 16, 3) and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 255
        assert mask.shape == (12, 16) and mask.dtype == np.int32
        np.testing.assert_array_equal(mask, truth[name])
    ((_, val_mask),) = list(voc_dataset(tmp_path, "val").as_numpy_iterator())
    np.testing.assert_array_equal(val_mask, truth["2008_1"])


def test_voc_indices_do_not_depend_on_the_stored_palette(tmp_path, rng, files):
    # A file re-saved with another palette keeps its indices: reading colours would break here.
    scrambled = rng.permutation(voc_colormap())
    truth = _voc_tree(files, tmp_path, rng, {"train": ["a"]}, palette=scrambled)
    ((_, mask),) = list(voc_dataset(tmp_path, "train").as_numpy_iterator())
    np.testing.assert_array_equal(mask, truth["a"])


def test_voc_accepts_the_devkit_folder_above(tmp_path, rng, files):
    truth = _voc_tree(files, tmp_path / "VOCdevkit" / "VOC2012", rng, {"val": ["x"]})
    ((_, mask),) = list(voc_dataset(tmp_path, "val").as_numpy_iterator())
    np.testing.assert_array_equal(mask, truth["x"])


def test_voc_missing_split_file_names_expected_path(tmp_path, rng, files):
    _voc_tree(files, tmp_path, rng, {"train": ["a"]})
    expected = tmp_path / "ImageSets" / "Segmentation" / "val.txt"
    with pytest.raises(DatasetError, match=str(expected)):
        voc_dataset(tmp_path, "val")


def test_voc_missing_mask_names_the_sample(tmp_path, rng, files):
    _voc_tree(files, tmp_path, rng, {"train": ["a", "b"]})
    (tmp_path / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"SegmentationClass/b\.png"):
        voc_dataset(tmp_path, "train")


def test_not_a_voc_folder(tmp_path):
    with pytest.raises(DatasetError, match="JPEGImages"):
        voc_dataset(tmp_path, "train")


def test_voc_other_ignore_label(tmp_path, rng, files):
    truth = _voc_tree(files, tmp_path, rng, {"train": ["a"]})
    ((_, mask),) = list(voc_dataset(tmp_path, "train", ignore_label=21).as_numpy_iterator())
    np.testing.assert_array_equal(mask, np.where(truth["a"] == 255, 21, truth["a"]))
