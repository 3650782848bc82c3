import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("skimage", reason="kseg.weak needs scikit-image (the `weak` extra)")
from scipy import ndimage

import kseg.data
from kseg.weak.labels import (
    boxes_from_mask,
    scribbles_from_mask,
    tags_from_mask,
    weak_label_dataset,
)

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@pytest.fixture(scope="module")
def shapes():
    return kseg.data.shapes_arrays("val", num_samples=6, image_size=64, seed=3)


def regions_of(mask, ignore_label=255):
    """Every 4-connected region of every class, found with scipy instead of scikit-image."""
    regions = []
    for class_id in np.unique(mask[mask != ignore_label]):
        components, count = ndimage.label(mask == class_id, structure=FOUR_CONNECTED)
        regions.extend((class_id, components == i) for i in range(1, count + 1))
    return regions


def test_scribbles_lie_inside_their_regions_with_their_class(shapes):
    for mask in shapes["masks"]:
        scribbles = scribbles_from_mask(mask, seed=0)
        drawn = scribbles != 255
        assert drawn.any()
        np.testing.assert_array_equal(scribbles[drawn], mask[drawn])
        # Every region gets a stroke at fraction 1.
        for class_id, region in regions_of(mask):
            assert (scribbles[region] == class_id).any()


def test_scribbles_are_thin_and_away_from_the_boundary():
    mask = np.zeros((48, 48), np.uint8)
    mask[8:40, 8:40] = 2
    scribbles = scribbles_from_mask(mask, width=3, seed=0)
    square = mask == 2
    stroke = scribbles == 2
    depth = ndimage.distance_transform_edt(square)
    assert stroke.any()
    assert depth[stroke].min() >= 2  # eroded by a radius-3 disk, thickened by one pixel
    assert stroke.sum() < 0.25 * square.sum()


def test_regions_too_small_to_erode_still_get_a_stroke():
    mask = np.zeros((12, 12), np.uint8)
    mask[2, 2] = 1  # a single pixel
    mask[6, 1:11] = 3  # a one-pixel-wide line
    scribbles = scribbles_from_mask(mask, width=5, seed=0)
    assert scribbles[2, 2] == 1
    assert (scribbles[6] == 3).sum() >= 1
    assert set(np.unique(scribbles[mask == 3])) <= {3, 255}


def test_scribble_fraction_counts_regions_and_seed_fixes_the_choice(shapes):
    mask = np.concatenate(list(shapes["masks"][:3]), axis=1)
    regions = regions_of(mask)
    assert len(regions) >= 6
    for fraction in (0.0, 0.5, 1.0):
        scribbles = scribbles_from_mask(mask, fraction=fraction, seed=7)
        scribbled = sum((scribbles[region] != 255).any() for _, region in regions)
        assert scribbled == round(fraction * len(regions))
    first = scribbles_from_mask(mask, fraction=0.5, seed=11)
    np.testing.assert_array_equal(first, scribbles_from_mask(mask, fraction=0.5, seed=11))
    choices = {scribbles_from_mask(mask, fraction=0.5, seed=s).tobytes() for s in range(6)}
    assert len(choices) > 1


def test_scribbles_skip_ignored_pixels_and_reject_bad_input():
    mask = np.zeros((16, 16), np.int32)
    mask[:, 8:] = 255
    scribbles = scribbles_from_mask(mask, seed=0)
    assert (scribbles[:, 8:] == 255).all() and (scribbles[:, :8] == 0).any()
    with pytest.raises(ValueError, match="fraction"):
        scribbles_from_mask(mask, fraction=1.5)
    with pytest.raises(ValueError, match="width"):
        scribbles_from_mask(mask, width=0)
    with pytest.raises(ValueError, match=r"300"):
        scribbles_from_mask(np.full((4, 4), 300))
    with pytest.raises(ValueError, match="shape"):
        scribbles_from_mask(np.zeros((2, 4, 4)))


def test_tags_are_the_classes_present_and_sizes_their_shares(shapes):
    for mask in shapes["masks"]:
        tags, sizes = tags_from_mask(mask, 5, with_sizes=True)
        assert tags.dtype == np.float32 and tags.shape == (5,)
        assert set(np.flatnonzero(tags)) == set(np.unique(mask).tolist())
        np.testing.assert_allclose(
            sizes, np.bincount(mask.ravel(), minlength=5) / mask.size, atol=1e-7
        )
    mask = np.array([[1, 1, 255, 255]])
    tags, sizes = tags_from_mask(mask, 3, with_sizes=True)
    np.testing.assert_array_equal(tags, [0, 1, 0])
    np.testing.assert_array_equal(sizes, [0, 1, 0])
    tags, sizes = tags_from_mask(np.full((2, 2), 255), 3, with_sizes=True)
    assert not tags.any() and not sizes.any()


def test_tags_name_a_label_beyond_num_classes():
    with pytest.raises(ValueError, match=r"\[7\].*num_classes=5"):
        tags_from_mask(np.array([[0, 7]]), 5)


def test_boxes_are_each_components_extent():
    mask = np.zeros((20, 24), np.uint8)
    mask[1:4, 2:9] = 1
    mask[10:18, 3:5] = 1  # a second region of class 1
    mask[5:12, 12:23] = 4
    mask[0, 23] = 255
    boxes, classes = boxes_from_mask(mask)
    expected = []
    for class_id in (1, 4):
        components, _ = ndimage.label(mask == class_id, structure=FOUR_CONNECTED)
        for rows, cols in ndimage.find_objects(components):
            expected.append([rows.start, cols.start, rows.stop, cols.stop, class_id])
    got = np.concatenate([boxes, classes[:, None]], axis=1)
    np.testing.assert_array_equal(got, np.asarray(expected, np.float32))
    assert boxes.dtype == np.float32 and classes.dtype == np.int32
    all_boxes, all_classes = boxes_from_mask(mask, background=None)
    assert 0 in all_classes.tolist() and len(all_boxes) == 4


def test_boxes_from_instances_match_the_renderers_boxes():
    for index in range(4):
        sample = kseg.data.render_shapes_sample(index, split="val", seed=5, image_size=64)
        boxes, classes = boxes_from_mask(sample.semantic_mask, instance_mask=sample.instance_mask)
        visible = [i for i in range(len(sample.classes)) if (sample.instance_mask == i + 1).any()]
        np.testing.assert_array_equal(boxes, sample.boxes[visible])
        np.testing.assert_array_equal(classes, sample.classes[visible])


def test_boxes_of_an_empty_mask_and_mismatched_instances():
    boxes, classes = boxes_from_mask(np.zeros((5, 5), np.int32))
    assert boxes.shape == (0, 4) and classes.shape == (0,)
    with pytest.raises(ValueError, match="same shape"):
        boxes_from_mask(np.zeros((5, 5)), instance_mask=np.zeros((4, 5)))


def test_weak_label_dataset_applies_the_generators(shapes):
    dataset = tf.data.Dataset.from_tensor_slices(
        (shapes["images"].astype(np.float32), shapes["masks"].astype(np.int32))
    )
    tagged = list(weak_label_dataset(dataset, "tags", num_classes=5, with_sizes=True))
    for (_, weak), mask in zip(tagged, shapes["masks"]):
        np.testing.assert_array_equal(
            weak.numpy(), np.concatenate(tags_from_mask(mask, 5, with_sizes=True))
        )
    scribbled = weak_label_dataset(dataset, "scribbles", seed=3, fraction=0.5)
    first = [weak.numpy() for _, weak in scribbled]
    again = [weak.numpy() for _, weak in scribbled]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert first[0].dtype == np.uint8 and first[0].shape == (64, 64)
    boxed = next(iter(weak_label_dataset(dataset, "boxes")))
    expected_boxes, expected_classes = boxes_from_mask(shapes["masks"][0])
    np.testing.assert_array_equal(boxed[1][0].numpy(), expected_boxes)
    np.testing.assert_array_equal(boxed[1][1].numpy(), expected_classes)
    with pytest.raises(ValueError, match="kind"):
        weak_label_dataset(dataset, "points")
    with pytest.raises(ValueError, match="num_classes"):
        weak_label_dataset(dataset, "tags")
    with pytest.raises(TypeError):
        weak_label_dataset(dataset, "boxes", widht=3)
