"""Every dataset error names what is wrong and fires before or during the first epoch."""

import numpy as np
import pytest
import tensorflow as tf

from kseg.data import DatasetError, folder_dataset, load_dataset
from kseg.data.validate import assert_valid_example, read_image, read_mask

PIPELINE_OR_EAGER = (DatasetError, tf.errors.InvalidArgumentError)


def _pair(files, root, rng, stem="a", image_hw=(6, 8), mask_hw=(6, 8), labels=(0, 1)):
    image, _ = files.random_pair(rng, *image_hw, labels=[0])
    _, mask = files.random_pair(rng, *mask_hw, labels=list(labels))
    image_path = files.write_image(root / "images" / f"{stem}.png", image)
    mask_path = files.write_mask(root / "masks" / f"{stem}.png", mask)
    return image_path, mask_path


def test_size_mismatch_names_both_files_and_sizes_at_construction(tmp_path, rng, files):
    _pair(files, tmp_path, rng, "ok")
    image_path, mask_path = _pair(files, tmp_path, rng, "bad", mask_hw=(5, 8))
    with pytest.raises(DatasetError) as error:
        folder_dataset(tmp_path / "images", tmp_path / "masks")
    message = str(error.value)
    assert str(image_path) in message and str(mask_path) in message
    assert "8x6" in message and "8x5" in message


def test_size_mismatch_also_caught_in_pipeline_without_scan(tmp_path, rng, files):
    image_path, mask_path = _pair(files, tmp_path, rng, "bad", mask_hw=(6, 7))
    ds = folder_dataset(tmp_path / "images", tmp_path / "masks", validate="none")
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        list(ds.as_numpy_iterator())
    assert str(image_path) in str(error.value) and str(mask_path) in str(error.value)


def test_label_out_of_range_names_file_and_value(tmp_path, rng, files):
    _pair(files, tmp_path, rng, "a", labels=(0, 1, 255))
    _, bad_mask = _pair(files, tmp_path, rng, "b", labels=(0, 1, 7))
    ds = folder_dataset(tmp_path / "images", tmp_path / "masks", num_classes=2)
    # The header scan cannot see values; the first epoch must.
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=rf"{bad_mask}' contains label value\(s\) 7 "
    ):
        list(ds.as_numpy_iterator())
    with pytest.raises(DatasetError, match=rf"{bad_mask}' contains label value\(s\) 7 "):
        folder_dataset(tmp_path / "images", tmp_path / "masks", num_classes=2, validate="full")


def test_ignore_label_is_not_an_error(tmp_path, rng, files):
    _pair(files, tmp_path, rng, "a", labels=(0, 1, 255))
    ds = folder_dataset(tmp_path / "images", tmp_path / "masks", num_classes=2, validate="full")
    assert set(np.unique(next(ds.as_numpy_iterator())[1])) <= {0, 1, 255}


def test_unreadable_image_named_at_construction(tmp_path, rng, files):
    _pair(files, tmp_path, rng, "a")
    (tmp_path / "images" / "a.png").write_bytes(b"this is not a png")
    with pytest.raises(
        DatasetError, match=rf"Cannot read image file '{tmp_path / 'images' / 'a.png'}'"
    ):
        folder_dataset(tmp_path / "images", tmp_path / "masks")


def test_truncated_image_named_during_first_epoch(tmp_path, rng, files):
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    path = files.write_image(tmp_path / "images" / "a.jpg", image)
    files.write_mask(tmp_path / "masks" / "a.png", np.zeros((64, 64)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    ds = folder_dataset(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"Cannot read image file '{path}'"):
        list(ds.as_numpy_iterator())
    with pytest.raises(DatasetError, match=rf"Cannot read image file '{path}'"):
        folder_dataset(tmp_path / "images", tmp_path / "masks", validate="full")


def test_empty_folder_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(
        DatasetError, match=rf"image folder '{tmp_path / 'images'}' holds no images"
    ):
        folder_dataset(tmp_path / "images", tmp_path / "masks")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "nowhere")):
        folder_dataset(tmp_path / "nowhere", tmp_path / "masks")
    with pytest.raises(DatasetError, match=str(tmp_path / "nowhere")):
        load_dataset(tmp_path / "nowhere")


def test_unsupported_validate_mode(tmp_path, rng, files):
    _pair(files, tmp_path, rng)
    with pytest.raises(ValueError, match="validate="):
        folder_dataset(tmp_path / "images", tmp_path / "masks", validate="lazy")


def test_sixteen_bit_masks_keep_values(tmp_path):
    from PIL import Image

    labels = np.array([[0, 300], [1000, 65535]], dtype=np.uint16)
    Image.fromarray(labels).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), labels.astype(np.int32))


def test_in_graph_checks_name_the_source():
    image = tf.zeros((4, 5, 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="sizes differ in my-source"):
        assert_valid_example(image, tf.zeros((4, 4), tf.int32), 3, 255, "my-source")
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"my-source: mask contains label values"
    ):
        assert_valid_example(image, tf.fill((4, 5), 9), 3, 255, "my-source")
    _, mask = assert_valid_example(image, tf.fill((4, 5), 255), 3, 255, "my-source")
    assert int(tf.reduce_max(mask)) == 255


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA"])
def test_uint8_decoding_holds_the_same_values_as_float32(tmp_path, rng, mode):
    # The pipeline decodes to uint8 and casts in the graph; PIL's RGB conversion is 8-bit, so
    # the two reads must match Pillow's own RGB pixels exactly, whatever the stored mode.
    from PIL import Image

    pixels = rng.integers(0, 256, size=(5, 7, 4 if mode == "RGBA" else 3), dtype=np.uint8)
    stored = Image.fromarray(pixels).convert(mode)
    path = tmp_path / "a.png"
    stored.save(path)
    expected = np.asarray(Image.open(path).convert("RGB"))
    as_uint8 = read_image(path, np.uint8)
    assert as_uint8.dtype == np.uint8
    np.testing.assert_array_equal(as_uint8, expected)
    as_float = read_image(path)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, expected.astype(np.float32))
