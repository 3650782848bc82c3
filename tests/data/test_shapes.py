import numpy as np
import pytest
from PIL import Image, ImageDraw

from kseg.data import (
    SHAPES_CLASS_NAMES,
    render_shapes_sample,
    shapes_arrays,
    shapes_dataset,
    shapes_info,
    shapes_instance_dataset,
)
from kseg.data.shapes import CIRCLE, SQUARE, STAR, TRIANGLE, _shape_mask, _shape_vertices


def test_info():
    info = shapes_info()
    assert info.num_classes == 5 == len(SHAPES_CLASS_NAMES)
    assert info.class_names[0] == "background" and len(set(info.palette)) == 5


def test_same_arguments_same_bytes():
    first = render_shapes_sample(3, split="train", seed=7, image_size=64)
    second = render_shapes_sample(3, split="train", seed=7, image_size=64)
    for a, b in zip(first, second):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_sample_does_not_depend_on_how_many_are_drawn():
    few = shapes_arrays("val", num_samples=3, image_size=64)
    many = shapes_arrays("val", num_samples=6, image_size=64)
    assert few["images"].tobytes() == many["images"][:3].tobytes()
    alone = render_shapes_sample(5, split="val", image_size=64)
    np.testing.assert_array_equal(alone.image, many["images"][5])
    np.testing.assert_array_equal(alone.semantic_mask, many["masks"][5])


def test_splits_and_seeds_give_different_samples():
    train = shapes_arrays("train", num_samples=4, image_size=64)["images"]
    val = shapes_arrays("val", num_samples=4, image_size=64)["images"]
    other_seed = shapes_arrays("train", num_samples=4, image_size=64, seed=1)["images"]
    for i in range(4):
        assert not np.array_equal(train[i], val[i])
        assert not np.array_equal(train[i], other_seed[i])


def test_masks_boxes_and_classes_agree():
    seen_classes, counts = set(), set()
    for index in range(60):
        s = render_shapes_sample(index, image_size=96)
        n = len(s.classes)
        counts.add(n)
        seen_classes |= set(s.classes.tolist())
        assert set(np.unique(s.instance_mask)) == set(range(n + 1))
        lookup = np.concatenate([[0], s.classes])
        np.testing.assert_array_equal(s.semantic_mask, lookup[s.instance_mask])
        for i in range(n):
            rows, cols = np.nonzero(s.instance_mask == i + 1)
            expected = [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
            np.testing.assert_array_equal(s.boxes[i], expected)
            # No tiny objects: every visible instance spans at least 12 px each way.
            assert min(expected[2] - expected[0], expected[3] - expected[1]) >= 12
            assert rows.size >= 100
    assert seen_classes == {CIRCLE, SQUARE, TRIANGLE, STAR}
    assert counts == {1, 2, 3, 4}


@pytest.mark.parametrize("kind", [SQUARE, TRIANGLE, STAR])
def test_polygon_raster_matches_pillow(kind):
    # Independent rasteriser: Pillow's polygon fill at 8x resolution gives each pixel's
    # covered fraction. Wherever a pixel is clearly inside (> 3/4) or outside (< 1/4), the
    # centre-sampled mask must agree.
    cx, cy, radius, angle = 31.3, 29.7, 20.0, 0.4
    mask = _shape_mask(kind, cx, cy, radius, angle, 0, 64, 0, 64)
    factor = 8
    canvas = Image.new("L", (64 * factor, 64 * factor))
    vertices = _shape_vertices(kind, cx, cy, radius, angle) * factor
    ImageDraw.Draw(canvas).polygon([tuple(v) for v in vertices], fill=1)
    coverage = np.asarray(canvas, np.float64).reshape(64, factor, 64, factor).mean(axis=(1, 3))
    clear = (coverage < 0.25) | (coverage > 0.75)
    np.testing.assert_array_equal(mask[clear], coverage[clear] > 0.5)


def test_circle_area_matches_formula():
    mask = _shape_mask(CIRCLE, 40.0, 40.0, 25.0, 0.0, 0, 80, 0, 80)
    assert abs(mask.sum() - np.pi * 25.0**2) / (np.pi * 25.0**2) < 0.01


def test_polygon_areas_match_geometry():
    radius = 24.0
    areas = {
        SQUARE: 2 * radius**2,
        TRIANGLE: 3 * np.sqrt(3) / 4 * radius**2,
        # Ten triangles (centre, outer, inner) with the 36 degree angle between them.
        STAR: 10 * 0.5 * radius * 0.45 * radius * np.sin(np.pi / 5),
    }
    for kind, area in areas.items():
        mask = _shape_mask(kind, 50.0, 50.0, radius, 0.3, 0, 100, 0, 100)
        assert abs(mask.sum() - area) / area < 0.03, SHAPES_CLASS_NAMES[kind]


def test_dataset_contract_and_agreement_with_numpy():
    ds = shapes_dataset("val", num_samples=3, image_size=(64, 80), seed=2)
    assert ds.element_spec[0].shape == (64, 80, 3) and ds.element_spec[1].shape == (64, 80)
    for index, (image, mask) in enumerate(ds.as_numpy_iterator()):
        assert image.dtype == np.float32 and mask.dtype == np.int32
        s = render_shapes_sample(index, split="val", seed=2, image_size=(64, 80))
        np.testing.assert_array_equal(image, s.image.astype(np.float32))
        np.testing.assert_array_equal(mask, s.semantic_mask)
        assert mask.min() >= 0 and mask.max() <= 4


def test_instance_dataset():
    ds = shapes_instance_dataset("val", num_samples=2, image_size=64)
    for index, (image, targets) in enumerate(ds.as_numpy_iterator()):
        s = render_shapes_sample(index, split="val", image_size=64)
        np.testing.assert_array_equal(image, s.image.astype(np.float32))
        np.testing.assert_array_equal(targets["instance_mask"], s.instance_mask)
        np.testing.assert_array_equal(targets["classes"], s.classes)
        np.testing.assert_array_equal(targets["boxes"], s.boxes)


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        render_shapes_sample(0, image_size=16)
    with pytest.raises(ValueError, match="num_samples"):
        shapes_dataset(num_samples=0)
    with pytest.raises(ValueError, match="size_range"):
        render_shapes_sample(0, size_range=(0.3, 0.2))


def test_background_contrast_mutes_textures_and_keeps_the_geometry():
    import numpy as np

    import kseg

    for index in range(6):
        full = kseg.data.render_shapes_sample(index, split="val", background_contrast=1.0)
        flat = kseg.data.render_shapes_sample(index, split="val", background_contrast=0.0)
        np.testing.assert_array_equal(full.semantic_mask, flat.semantic_mask)
        background = flat.semantic_mask == 0
        # Only the final sensor noise (sigma at most 8) is left on a zero-contrast background.
        assert flat.image[background].astype(float).std(axis=0).max() < 8 * 1.5
