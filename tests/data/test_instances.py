"""Instance example dicts from label maps and the shapes data, and their padded batching."""

import numpy as np
import pytest
import tensorflow as tf

from kseg.data.instances import (
    instances_from_label_map,
    pad_instance_batch,
    shapes_instance_examples,
)
from kseg.data.shapes import shapes_dataset


def _numpy_extents(masks):
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.nonzero(mask)
        if rows.size:
            boxes[i] = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    return boxes


def test_instances_from_label_map_drops_invisible_instances_and_checks_values():
    label_map = np.array([[0, 1, 1, 0], [3, 3, 0, 0], [3, 0, 0, 0]], np.int32)
    example = instances_from_label_map(label_map, [4, 2, 1], image=np.ones((3, 4, 3)))
    # Instance 2 has no pixel, so it and its class (2) are gone.
    assert example["classes"].numpy().tolist() == [4, 1]
    np.testing.assert_array_equal(example["masks"].numpy(), [label_map == 1, label_map == 3])
    np.testing.assert_array_equal(example["boxes"].numpy(), [[0, 1, 1, 3], [1, 0, 3, 2]])
    assert example["masks"].dtype == tf.uint8 and example["image"].dtype == tf.uint8

    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"outside 0..N[\s\S]*offending values:\W*5"
    ):
        instances_from_label_map(np.array([[0, 5]]), [1, 1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be >= 1"):
        instances_from_label_map(np.array([[0, 1]]), [0])


def test_shapes_examples_masks_cover_the_semantic_mask():
    kwargs = {"num_samples": 4, "image_size": (56, 72), "seed": 5, "max_objects": 4}
    examples = shapes_instance_examples("val", **kwargs)
    semantic = shapes_dataset("val", **kwargs)
    for example, (image, mask) in zip(examples.as_numpy_iterator(), semantic.as_numpy_iterator()):
        masks, classes = example["masks"], example["classes"]
        np.testing.assert_array_equal(example["image"], image.astype(np.uint8))
        assert masks.shape[1:] == mask.shape and len(classes) == len(masks) >= 1
        # Instances do not overlap, their union is the foreground, each carries its class.
        assert masks.sum(axis=0).max() <= 1
        np.testing.assert_array_equal(masks.any(axis=0), mask > 0)
        labelled = (masks * classes[:, None, None]).sum(axis=0)
        np.testing.assert_array_equal(labelled, mask)
        np.testing.assert_array_equal(example["boxes"], _numpy_extents(masks))


def _examples(specs):
    """A dataset of examples from (height, width, classes) triples with random masks."""
    rng = np.random.default_rng(7)
    built = []
    for height, width, classes in specs:
        masks = (rng.random((len(classes), height, width)) < 0.3).astype(np.uint8)
        masks[:, 0, 0] = 1  # never empty
        built.append(
            {
                "image": rng.integers(1, 256, (height, width, 3), dtype=np.uint8),
                "boxes": _numpy_extents(masks),
                "classes": np.asarray(classes, np.int32),
                "masks": masks,
            }
        )
    signature = {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "boxes": tf.TensorSpec([None, 4], tf.float32),
        "classes": tf.TensorSpec([None], tf.int32),
        "masks": tf.TensorSpec([None, None, None], tf.uint8),
    }
    return built, tf.data.Dataset.from_generator(lambda: iter(built), output_signature=signature)


def test_pad_instance_batch_shapes_and_padding_values():
    built, ds = _examples([(50, 70, [1, 3]), (65, 30, []), (20, 20, [2])])
    batches = list(pad_instance_batch(ds, 2, num_classes=4))
    assert len(batches) == 2
    images, targets = batches[0]
    assert images.dtype == tf.float32 and images.shape == (2, 128, 128, 3)
    assert targets["gt_boxes"].shape == (2, 2, 4) and targets["gt_classes"].shape == (2, 2)
    assert targets["gt_masks"].shape == (2, 2, 128, 128) and targets["gt_masks"].dtype == tf.uint8
    np.testing.assert_array_equal(targets["image_shape"], [[50, 70], [65, 30]])
    np.testing.assert_array_equal(targets["gt_classes"], [[1, 3], [-1, -1]])
    for b, example in enumerate(built[:2]):
        height, width = example["image"].shape[:2]
        image = images[b].numpy()
        np.testing.assert_array_equal(image[:height, :width], example["image"])
        assert not image[height:].any() and not image[:, width:].any()
        n = len(example["classes"])
        masks = targets["gt_masks"][b].numpy()
        np.testing.assert_array_equal(masks[:n, :height, :width], example["masks"])
        assert not masks[n:].any() and masks[:n].sum() == example["masks"].sum()
        np.testing.assert_array_equal(targets["gt_boxes"][b, :n], example["boxes"])
        assert not targets["gt_boxes"][b, n:].numpy().any()

    # A batch whose images have sizes already at a multiple keeps them; M >= 1 even with N = 1.
    images, targets = batches[1]
    assert images.shape == (1, 64, 64, 3) and targets["gt_classes"].numpy().tolist() == [[2]]


def test_pad_instance_batch_fixed_rows_and_empty_batches():
    _, ds = _examples([(10, 10, [1, 2, 3]), (12, 9, [])])
    images, targets = next(iter(pad_instance_batch(ds, 2, max_instances=2, pad_to_multiple=8)))
    assert images.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(targets["gt_classes"], [[1, 2], [-1, -1]])
    assert targets["gt_masks"].shape == (2, 2, 16, 16)

    _, empty = _examples([(10, 10, []), (12, 9, [])])
    images, targets = next(iter(pad_instance_batch(empty, 2)))
    np.testing.assert_array_equal(targets["gt_classes"], [[-1], [-1]])
    assert targets["gt_boxes"].shape == (2, 1, 4) and not targets["gt_masks"].numpy().any()


def test_pad_instance_batch_rejects_bad_class_ids_and_arguments():
    _, ds = _examples([(10, 10, [1, 7])])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"1..4[\s\S]*\[7\]"):
        next(iter(pad_instance_batch(ds, 1, num_classes=5)))
    _, ds = _examples([(10, 10, [0])])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"1..K[\s\S]*\[0\]"):
        next(iter(pad_instance_batch(ds, 1)))
    with pytest.raises(ValueError, match="pad_to_multiple"):
        pad_instance_batch(ds, 1, pad_to_multiple=0)
    with pytest.raises(ValueError, match="num_classes"):
        pad_instance_batch(ds, 1, num_classes=1)
