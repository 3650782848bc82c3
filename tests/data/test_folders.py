import numpy as np
import pytest
import tensorflow as tf

from kseg.data import DatasetError, folder_dataset, folder_info, match_folder_pairs


def test_pairs_matched_by_stem_across_extensions(tmp_path, rng, files):
    truth = {}
    for stem, ext in [("b", ".jpg"), ("a", ".png"), ("c", ".jpeg")]:
        image, mask = files.random_pair(rng, 6, 9, labels=[0, 1, 2])
        files.write_image(tmp_path / "img" / f"{stem}{ext}", image)
        files.write_mask(tmp_path / "lbl" / f"{stem}.png", mask)
        truth[stem] = (image, mask)
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    ds = folder_dataset(tmp_path / "img", tmp_path / "lbl", num_classes=3)
    pairs = list(ds.as_numpy_iterator())
    assert len(pairs) == 3
    for (image, mask), stem in zip(pairs, ["a", "b", "c"]):
        np.testing.assert_array_equal(mask, truth[stem][1])
        if stem == "a":  # lossless png: exact pixels
            np.testing.assert_array_equal(image, truth[stem][0].astype(np.float32))
        assert image.dtype == np.float32 and mask.dtype == np.int32


def test_label_map_and_mask_suffix(tmp_path, rng, files):
    image, mask = files.random_pair(rng, 5, 7, labels=[0, 1, 2])
    files.write_image(tmp_path / "i" / "x.png", image)
    files.write_mask(tmp_path / "m" / "x_mask.png", mask)
    ds = folder_dataset(
        tmp_path / "i", tmp_path / "m", mask_suffix="_mask", label_map={0: 255, 2: 0}, num_classes=2
    )
    ((_, got),) = list(ds.as_numpy_iterator())
    expected = np.select([mask == 0, mask == 2], [255, 0], mask.astype(np.int64))
    np.testing.assert_array_equal(got, expected)


def test_colour_coded_masks_with_mask_colors(tmp_path, rng, files):
    colours = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    labels = rng.integers(0, 3, size=(6, 6))
    files.write_image(tmp_path / "i" / "x.png", np.zeros((6, 6, 3)))
    files.write_image(tmp_path / "m" / "x.png", np.asarray(colours, np.uint8)[labels])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x\.png' is a colour"):
        list(folder_dataset(tmp_path / "i", tmp_path / "m").as_numpy_iterator())
    ds = folder_dataset(tmp_path / "i", tmp_path / "m", mask_colors=colours, num_classes=3)
    ((_, got),) = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(got, labels)


def test_unknown_colour_is_named(tmp_path, files):
    files.write_image(tmp_path / "i" / "x.png", np.zeros((2, 2, 3)))
    files.write_image(tmp_path / "m" / "x.png", np.full((2, 2, 3), (10, 20, 30)))
    ds = folder_dataset(tmp_path / "i", tmp_path / "m", mask_colors=[(0, 0, 0)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x\.png.*\(10, 20, 30\)"):
        list(ds.as_numpy_iterator())


def test_unmatched_files(tmp_path, rng, files):
    image, mask = files.random_pair(rng, 4, 4, labels=[0])
    files.write_image(tmp_path / "i" / "a.png", image)
    files.write_image(tmp_path / "i" / "lonely.png", image)
    files.write_mask(tmp_path / "m" / "a.png", mask)
    with pytest.raises(DatasetError, match="lonely"):
        match_folder_pairs(tmp_path / "i", tmp_path / "m")
    images, _masks = match_folder_pairs(tmp_path / "i", tmp_path / "m", strict=False)
    assert [p.rsplit("/", 1)[1] for p in images] == ["a.png"]


def test_duplicate_stems_are_rejected(tmp_path, rng, files):
    image, mask = files.random_pair(rng, 4, 4, labels=[0])
    files.write_image(tmp_path / "i" / "a.png", image)
    files.write_image(tmp_path / "i" / "a.jpg", image)
    files.write_mask(tmp_path / "m" / "a.png", mask)
    with pytest.raises(DatasetError, match=r"a\.jpg.*a\.png|a\.png.*a\.jpg"):
        match_folder_pairs(tmp_path / "i", tmp_path / "m")


def test_folder_info():
    info = folder_info(num_classes=2, class_names=["bg", "cell"])
    assert info.num_classes == 2 and info.class_names == ("bg", "cell") and info.ignore_label == 255
    with pytest.raises(ValueError, match="class_names"):
        folder_info(num_classes=3, class_names=["bg", "cell"])
