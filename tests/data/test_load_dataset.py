import numpy as np
import pytest

from kseg.data import DatasetError, describe_source, load_dataset, voc_colormap


def _folder(files, images_dir, masks_dir, rng, stems=("a", "b")):
    truth = []
    for stem in stems:
        image, mask = files.random_pair(rng, 5, 6, labels=[0, 1])
        files.write_image(images_dir / f"{stem}.png", image)
        files.write_mask(masks_dir / f"{stem}.png", mask)
        truth.append(mask)
    return truth


def _masks(ds):
    return [m for _, m in ds.as_numpy_iterator()]


def test_shapes_with_info():
    ds, info = load_dataset("shapes", "val", num_samples=2, image_size=64, with_info=True)
    assert describe_source("shapes") == "shapes"
    assert info.num_classes == 5 and len(_masks(ds)) == 2


def test_folder_pair_forms(tmp_path, rng, files):
    truth = _folder(files, tmp_path / "imgs", tmp_path / "lbls", rng)
    for source in [
        (tmp_path / "imgs", tmp_path / "lbls"),
        f"{tmp_path / 'imgs'},{tmp_path / 'lbls'}",
    ]:
        assert describe_source(source) == "folders"
        ds, info = load_dataset(source, num_classes=2, class_names=["bg", "fg"], with_info=True)
        for got, expected in zip(_masks(ds), truth):
            np.testing.assert_array_equal(got, expected)
        assert info.class_names == ("bg", "fg")


def test_folder_root_with_split_subfolders(tmp_path, rng, files):
    train = _folder(
        files, tmp_path / "images" / "train", tmp_path / "labels" / "train", rng, ["a", "b"]
    )
    val = _folder(files, tmp_path / "images" / "val", tmp_path / "labels" / "val", rng, ["c"])
    assert describe_source(tmp_path) == "folders"
    assert len(_masks(load_dataset(tmp_path, "train"))) == len(train) == 2
    (got,) = _masks(load_dataset(tmp_path, "val"))
    np.testing.assert_array_equal(got, val[0])


def test_voc_and_camvid_roots_are_recognised(tmp_path, rng, files):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    _folder(files, voc / "JPEGImages", voc / "SegmentationClass", rng, ["x"])
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("x\n")
    (voc / "SegmentationClass" / "x.png").unlink()
    files.write_mask(voc / "SegmentationClass" / "x.png", np.full((5, 6), 15), voc_colormap())
    (voc / "JPEGImages" / "x.png").rename(voc / "JPEGImages" / "x.jpg")
    assert describe_source(tmp_path / "VOCdevkit") == "voc"
    ds, info = load_dataset(tmp_path / "VOCdevkit", "val", with_info=True)
    assert info.num_classes == 21 and (_masks(ds)[0] == 15).all()

    camvid = tmp_path / "camvid"
    _folder(files, camvid / "val", camvid / "valannot", rng, ["f"])
    assert describe_source(camvid) == "camvid"
    ds, info = load_dataset(camvid, "val", with_info=True)
    assert info.num_classes == 11 and len(_masks(ds)) == 1


def test_unknown_folder_is_explained(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match="Cannot tell what dataset"):
        load_dataset(tmp_path)
