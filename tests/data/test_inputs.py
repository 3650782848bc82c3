"""load_split: one split of a source, resized to a fixed size or by a per-image policy."""

import numpy as np

import kseg


def test_load_split_resizes_every_pair_to_a_fixed_size():
    dataset, _ = kseg.data.load_split(
        "shapes", "val", num_samples=2, image_size=48, resize=(20, 30)
    )
    for image, mask in dataset:
        assert image.shape[:2] == (20, 30) and mask.shape[:2] == (20, 30)


def test_load_split_resizes_each_pair_by_a_policy_of_its_own_size():
    calls = []

    def half(height, width):
        calls.append(1)
        return height // 2, width // 2

    dataset, _ = kseg.data.load_split("shapes", "val", num_samples=2, image_size=48, resize=half)
    plain, _ = kseg.data.load_split("shapes", "val", num_samples=2, image_size=48)
    for (image, mask), (original, original_mask) in zip(dataset, plain):
        assert image.shape[:2] == (24, 24) and mask.shape[:2] == (24, 24)
        expected = kseg.data.resize_pair(original, original_mask, (24, 24))
        np.testing.assert_array_equal(mask.numpy(), expected[1].numpy())
        np.testing.assert_allclose(image.numpy(), expected[0].numpy(), atol=1e-4)
    assert calls  # the policy was called (once, when tf.data traced the map)
