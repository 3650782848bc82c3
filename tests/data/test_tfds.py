import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kseg.data import load_dataset, tfds_dataset, tfds_info


def _pet_examples(masks):
    """A stand-in for the prepared pets data: known images and trimaps."""

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
        del self, split, decoders, read_config, shuffle_files, kwargs
        examples = {
            "image": np.stack(
                [np.full(m.shape + (3,), 7 * i, np.uint8) for i, m in enumerate(masks)]
            ),
            "segmentation_mask": np.stack([m[..., None] for m in masks]).astype(np.uint8),
            "label": np.zeros(len(masks), np.int64),
        }
        return tf.data.Dataset.from_tensor_slices(examples)

    return as_dataset


def test_oxford_pet_trimap_mapping():
    trimaps = [np.array([[1, 2, 3], [3, 2, 1]]), np.array([[2, 2, 2], [1, 1, 3]])]
    with tfds.testing.mock_data(as_dataset_fn=_pet_examples(trimaps)):
        pairs = list(tfds_dataset("oxford_iiit_pet", "train").as_numpy_iterator())
    assert len(pairs) == 2
    for (image, mask), trimap in zip(pairs, trimaps):
        assert image.shape == trimap.shape + (3,) and image.dtype == np.float32
        assert mask.shape == trimap.shape and mask.dtype == np.int32
        # The dataset's README: 1 = pet, 2 = background, 3 = border ("not classified").
        np.testing.assert_array_equal(mask, np.select([trimap == 1, trimap == 2], [1, 0], 255))
    info = tfds_info("oxford_iiit_pet")
    assert info.num_classes == 2 and info.class_names == ("background", "pet")


def test_custom_label_map_and_ignore_label():
    trimaps = [np.array([[1, 2, 3]])]
    with tfds.testing.mock_data(as_dataset_fn=_pet_examples(trimaps)):
        ((_, three_class),) = list(
            tfds_dataset(
                "oxford_iiit_pet", label_map={1: 1, 2: 0, 3: 2}, num_classes=3
            ).as_numpy_iterator()
        )
        ((_, other_ignore),) = list(
            tfds_dataset("oxford_iiit_pet", ignore_label=99).as_numpy_iterator()
        )
    np.testing.assert_array_equal(three_class, [[1, 0, 2]])
    np.testing.assert_array_equal(other_ignore, [[1, 0, 99]])


def test_load_dataset_tfds_prefix_and_info():
    with tfds.testing.mock_data(as_dataset_fn=_pet_examples([np.array([[2, 1]])])):
        ds, info = load_dataset("tfds:oxford_iiit_pet", "test", with_info=True)
        ((_, mask),) = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(mask, [[0, 1]])
    assert info.num_classes == 2


def test_random_mock_data_fails_loudly():
    # tfds's random mocks give masks of another size than the images: the checks must say so.
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = tfds_dataset("oxford_iiit_pet", "train")
        with pytest.raises(tf.errors.InvalidArgumentError, match="oxford_iiit_pet"):
            list(ds.as_numpy_iterator())


def test_unknown_builder_needs_keys():
    with pytest.raises(ValueError, match="image_key= and mask_key="):
        tfds_info("some_unknown_builder")
    info = tfds_info("some_unknown_builder", image_key="img", mask_key="seg", num_classes=4)
    assert info.num_classes == 4 and info.class_names is None


def test_missing_feature_is_named():
    with (
        tfds.testing.mock_data(as_dataset_fn=_pet_examples([np.array([[1]])])),
        pytest.raises(ValueError, match="no feature 'mask'"),
    ):
        tfds_dataset("oxford_iiit_pet", mask_key="mask")


def test_cityscapes_preset_maps_label_ids_to_train_ids():
    info = tfds_info("cityscapes/semantic_segmentation")
    assert (
        info.num_classes == 19
        and info.class_names[0] == "road"
        and info.class_names[-1] == "bicycle"
    )
    from kseg.data.tfds import PRESETS, _lookup_table

    table = _lookup_table(PRESETS["cityscapes"], 255, True).numpy()
    # cityscapesScripts: road 7 -> 0, car 26 -> 13, bicycle 33 -> 18, unlabeled/parking ignored.
    assert (table[7], table[26], table[33], table[0], table[9]) == (0, 13, 18, 255, 255)
