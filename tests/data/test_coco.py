"""kseg.data.coco against pycocotools' reference masks and on hand-made broken datasets."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kseg.data.coco import (
    coco_categories,
    coco_instance_dataset,
    decode_segmentation,
)
from kseg.data.validate import DatasetError

REFS = Path(__file__).resolve().parents[2] / ".." / "shared" / "refs"


@pytest.fixture
def refs():
    if not (REFS / "coco_gt.json").is_file():
        pytest.skip(f"reference vectors {REFS} are absent")
    return REFS


def _extent(mask):
    rows, cols = np.nonzero(mask)
    return [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]


@pytest.fixture
def reference_images(tmp_path, refs):
    """The reference GT's two images: a.png RGB 80x100 and b.png grayscale 30x30."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (30, 30), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(gray).save(tmp_path / "b.png")
    return tmp_path, rgb, gray


def test_reference_masks_boxes_and_images(refs, reference_images):
    image_dir, rgb, gray = reference_images
    truth = np.load(refs / "coco_masks.npz")
    annotations = json.loads((refs / "coco_gt.json").read_text())["annotations"]
    ds = coco_instance_dataset(refs / "coco_gt.json", image_dir, skip_crowd=False)
    examples = list(ds.as_numpy_iterator())
    assert [int(e["image_id"]) for e in examples] == [1, 2]
    np.testing.assert_array_equal(examples[0]["image"], rgb)
    # Grayscale is converted to three equal channels.
    np.testing.assert_array_equal(examples[1]["image"], np.repeat(gray[..., None], 3, axis=2))
    by_image = {
        1: [a for a in annotations if a["image_id"] == 1],
        2: [a for a in annotations if a["image_id"] == 2],
    }
    for example, image_id in zip(examples, (1, 2)):
        expected = by_image[image_id]
        assert example["masks"].dtype == np.uint8 and example["boxes"].dtype == np.float32
        assert example["classes"].dtype == np.int32
        assert example["masks"].shape[0] == len(expected)
        for mask, box, cls, crowd, ann in zip(
            example["masks"], example["boxes"], example["classes"], example["is_crowd"], expected
        ):
            np.testing.assert_array_equal(mask, truth[f"gt_{ann['id']}"])
            np.testing.assert_array_equal(box, _extent(mask))
            x, y, w, h = ann["bbox"]
            np.testing.assert_allclose(box, [y, x, y + h, x + w])
            assert cls == ann["category_id"]  # ids 1, 2 are already contiguous
            assert crowd == bool(ann["iscrowd"])


def test_crowd_regions_skipped_by_default_and_category_subset(refs, reference_images):
    image_dir = reference_images[0]
    second = list(coco_instance_dataset(refs / "coco_gt.json", image_dir).as_numpy_iterator())[1]
    assert second["classes"].tolist() == [2] and not second["is_crowd"].any()

    discs = coco_instance_dataset(refs / "coco_gt.json", image_dir, category_ids=[2])
    classes = [e["classes"].tolist() for e in discs.as_numpy_iterator()]
    assert classes == [[1], [1]]  # disc becomes contiguous class 1
    categories = coco_categories(refs / "coco_gt.json", category_ids=[2])
    assert categories.coco_ids == (2,) and categories.names == ("disc",)
    info = coco_categories(refs / "coco_gt.json").info()
    assert info.num_classes == 3 and info.class_names == ("background", "square", "disc")


def test_decode_segmentation_formats_match_reference(refs):
    cases = json.loads((refs / "coco_rle_tests.json").read_text())
    tiny = cases["encode_tiny_2x3"]
    expected = np.asarray(tiny["mask"], dtype=np.uint8)
    compressed = decode_segmentation(tiny["rle"], 2, 3)
    uncompressed = decode_segmentation(
        {"size": [2, 3], "counts": tiny["uncompressed_counts_colmajor_start_with_zeros"]}, 2, 3
    )
    np.testing.assert_array_equal(compressed, expected)
    np.testing.assert_array_equal(uncompressed, expected)
    polygon = decode_segmentation(cases["polygon_rect_gt1"]["polygon"], 80, 100)
    rectangle = np.zeros((80, 100), np.uint8)
    rectangle[2:14, 3:20] = 1
    np.testing.assert_array_equal(polygon, rectangle)
    with pytest.raises(DatasetError, match=r"RLE size \[2, 3\] differs"):
        decode_segmentation(tiny["rle"], 3, 3, source="here")


def _write_tree(tmp_path, images, annotations, categories=({"id": 5, "name": "thing"},)):
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "ann.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": list(categories)})
    )
    return path, tmp_path / "images"


def _square(ann_id, image_id, x, y, size, **extra):
    polygon = [x, y, x + size, y, x + size, y + size, x, y + size]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 5,
        "iscrowd": 0,
        "bbox": [x, y, size, size],
        "area": size * size,
        "segmentation": [polygon],
        **extra,
    }


def test_rgba_empty_degenerate_and_missing_images(tmp_path):
    images = [
        {"id": 10, "file_name": "rgba.png", "height": 12, "width": 16},
        {"id": 11, "file_name": "empty.jpg", "height": 8, "width": 8},
        {"id": 12, "file_name": "gone.png", "height": 8, "width": 8},
    ]
    annotations = [
        _square(1, 10, 2, 3, 4),
        _square(2, 10, 1, 1, 0),  # zero area
        {**_square(3, 10, 0, 0, 2), "segmentation": [[1, 1, 3, 3]]},  # two points only
        _square(4, 12, 0, 0, 3),
    ]
    path, image_dir = _write_tree(tmp_path, images, annotations)
    rgba = np.random.default_rng(1).integers(0, 256, (12, 16, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(image_dir / "rgba.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(image_dir / "empty.jpg")

    with pytest.raises(DatasetError, match="gone.png"), pytest.warns(UserWarning, match="dropped"):
        coco_instance_dataset(path, image_dir)
    with pytest.warns(UserWarning) as record:
        ds = coco_instance_dataset(path, image_dir, missing_images="skip")
    messages = " ".join(str(w.message) for w in record)
    assert "gone.png" in messages and "dropped 2 annotation(s)" in messages

    first, second = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(first["image"], rgba[..., :3])
    expected = np.zeros((1, 12, 16), np.uint8)
    expected[0, 3:7, 2:6] = 1
    np.testing.assert_array_equal(first["masks"], expected)
    np.testing.assert_array_equal(first["boxes"], [[3, 2, 7, 6]])
    assert first["classes"].tolist() == [1]
    assert second["masks"].shape == (0, 8, 8) and second["boxes"].shape == (0, 4)
    assert second["classes"].shape == (0,)
    assert second["image"].shape == (8, 8, 3)

    with pytest.warns(UserWarning):
        non_empty = coco_instance_dataset(
            path, image_dir, missing_images="skip", skip_empty_images=True
        )
    assert [int(e["image_id"]) for e in non_empty.as_numpy_iterator()] == [10]


def test_corrupt_and_wrongly_sized_images_are_named(tmp_path):
    images = [{"id": 1, "file_name": "broken.jpg", "height": 8, "width": 8}]
    path, image_dir = _write_tree(tmp_path, images, [_square(1, 1, 0, 0, 4)])
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(tf.errors.InvalidArgumentError, match="broken.jpg"):
        list(coco_instance_dataset(path, image_dir))

    images = [{"id": 1, "file_name": "small.png", "height": 8, "width": 8}]
    path, image_dir = _write_tree(tmp_path, images, [_square(1, 1, 0, 0, 4)])
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(image_dir / "small.png")
    with pytest.raises(tf.errors.InvalidArgumentError, match="small.png.*8x6"):
        list(coco_instance_dataset(path, image_dir))


def test_malformed_json_and_missing_keys_are_named(tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [}')
    with pytest.raises(DatasetError, match="broken.json.*not valid JSON"):
        coco_instance_dataset(broken, image_dir)

    no_categories = tmp_path / "no_categories.json"
    no_categories.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match="no_categories.json.*'categories'"):
        coco_instance_dataset(no_categories, image_dir)

    images = [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}]
    annotation = _square(7, 1, 0, 0, 4)
    del annotation["segmentation"]
    path, image_dir = _write_tree(tmp_path, images, [annotation])
    with pytest.raises(DatasetError, match=r"ann.json.*annotations\[0\] \(id=7\).*'segmentation'"):
        coco_instance_dataset(path, image_dir)

    path, image_dir = _write_tree(tmp_path, [{"id": 1, "file_name": "a.png"}], [])
    with pytest.raises(DatasetError, match="ann.json.*images\\[0\\].*'height'"):
        coco_instance_dataset(path, image_dir)

    path, image_dir = _write_tree(tmp_path, images, [_square(1, 99, 0, 0, 4)])
    with pytest.raises(DatasetError, match="image_id=99"):
        coco_instance_dataset(path, image_dir)

    twice = [images[0], {**images[0], "file_name": "b.png"}]
    path, image_dir = _write_tree(tmp_path, twice, [])
    with pytest.raises(DatasetError, match=r"images\[1\] repeats image id 1"):
        coco_instance_dataset(path, image_dir)

    with pytest.raises(ValueError, match="missing_images"):
        coco_instance_dataset(path, image_dir, missing_images="ignore")


def test_boxes_come_from_masks_and_disagreeing_bbox_is_reported(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 20, "width": 20}]
    annotation = _square(1, 1, 4, 6, 5)
    annotation["bbox"] = [0.0, 0.0, 15.0, 15.0]  # stated box far from the polygon
    path, image_dir = _write_tree(tmp_path, images, [annotation])
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image_dir / "a.png")
    with pytest.warns(UserWarning, match=r"bbox .* disagrees"):
        (example,) = list(coco_instance_dataset(path, image_dir).as_numpy_iterator())
    np.testing.assert_array_equal(example["boxes"], [[6, 4, 11, 9]])
