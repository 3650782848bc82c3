import numpy as np
import pytest
from PIL import Image

from kseg.data import DatasetError, camvid_dataset, camvid_info
from kseg.data.camvid import camvid_pairs


def test_camvid_info():
    info = camvid_info()
    assert info.num_classes == 11 and len(info.class_names) == 11 and len(info.palette) == 11
    assert info.class_names[0] == "Sky" and info.class_names[10] == "Bicyclist"
    assert info.ignore_label == 255


def test_real_camvid_pairs(shared_dir):
    root = shared_dir / "data" / "camvid"
    if not root.is_dir():
        pytest.skip(f"CamVid is absent from {root}")
    images, _masks = camvid_pairs(root, "train")
    assert len(images) == 367 and len(camvid_pairs(root, "val")[0]) == 101
    ds = camvid_dataset(root, "val", validate="none").take(3)
    for (image, mask), mask_path in zip(ds.as_numpy_iterator(), camvid_pairs(root, "val")[1]):
        assert image.shape == (360, 480, 3) and image.dtype == np.float32
        assert mask.shape == (360, 480) and mask.dtype == np.int32
        raw = np.asarray(Image.open(mask_path)).astype(np.int32)
        # Void (11) became the ignore label and nothing else moved.
        np.testing.assert_array_equal(mask, np.where(raw == 11, 255, raw))
        assert set(np.unique(mask)) <= set(range(11)) | {255}
    assert (raw == 11).any(), "the checked masks should contain void pixels"


def _tiny_camvid(files, root, rng, listed_as):
    lines = []
    for stem in ("0001TP_1", "0001TP_2"):
        image, mask = files.random_pair(rng, 6, 8, labels=list(range(12)))
        files.write_image(root / "train" / f"{stem}.png", image)
        files.write_mask(root / "trainannot" / f"{stem}.png", mask)
        lines.append(listed_as.format(split="train", stem=stem))
    (root / "train.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "listed_as",
    [
        "/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png",
        "{split}/{stem}.png {split}annot/{stem}.png",
    ],
)
def test_split_file_paths_resolve_below_root(tmp_path, rng, files, listed_as):
    _tiny_camvid(files, tmp_path, rng, listed_as)
    ds = camvid_dataset(tmp_path, "train", validate="full")
    masks = [m for _, m in ds.as_numpy_iterator()]
    assert len(masks) == 2
    raw = np.asarray(Image.open(tmp_path / "trainannot" / "0001TP_1.png")).astype(np.int32)
    np.testing.assert_array_equal(masks[0], np.where(raw == 11, 255, raw))


def test_split_folders_without_split_file(tmp_path, rng, files):
    _tiny_camvid(files, tmp_path, rng, "{split}/{stem}.png {split}annot/{stem}.png")
    (tmp_path / "train.txt").unlink()
    assert len(list(camvid_dataset(tmp_path, "train").as_numpy_iterator())) == 2


def test_missing_split_names_expected_paths(tmp_path, rng, files):
    _tiny_camvid(files, tmp_path, rng, "{split}/{stem}.png {split}annot/{stem}.png")
    with pytest.raises(DatasetError, match=str(tmp_path / "test.txt")):
        camvid_dataset(tmp_path, "test")


def test_listed_file_missing_names_line(tmp_path, rng, files):
    _tiny_camvid(files, tmp_path, rng, "{split}/{stem}.png {split}annot/{stem}.png")
    (tmp_path / "trainannot" / "0001TP_2.png").unlink()
    with pytest.raises(DatasetError, match=r"train\.txt' line 2 lists 'trainannot/0001TP_2\.png'"):
        camvid_dataset(tmp_path, "train")
