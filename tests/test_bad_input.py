"""Bad-input census: every public entry point given the wrong thing fails with an error naming it.

Each case feeds one entry point (model builders, Mask R-CNN, layers, data loaders and pipelines,
COCO instance data, weak-supervision labels and losses, the CLI, export and serving) one wrong
input and requires an error whose message names the problem: the file, the shape, the value or
the argument. Where a wrong-looking input is documented as handled (empty tags, a box reaching
past the image, a missing COCO image with missing_images="skip"), the documented handling is
asserted instead. The census size is the number of collected test items. Cases where kseg's
message is still unclear are marked
`xfail(strict=True)` with the reason, so fixing one turns the census red until the mark goes.
"""

import importlib.util
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
import kseg.cli
import kseg.export
from kseg.data import DatasetError, load_dataset, make_pipeline, paired_files_dataset
from kseg.data.coco import coco_categories, coco_instance_dataset
from kseg.data.instances import pad_instance_batch
from kseg.detection.serving import export_instance_saved_model
from kseg.layers.crop import CenteredPadToMultiple, CropToMatch
from kseg.layers.pyramid_pooling import PyramidPooling
from kseg.layers.resize import ResizeToMatch
from kseg.layers.roi_align import RoIAlign
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kseg.models.mask_rcnn import MaskRCNN
from kseg.weak.box_labels import bbox_seg_labels, box_label_map
from kseg.weak.constrained import ConstrainedCrossEntropy
from kseg.weak.em_adapt import EMAdaptCrossEntropy
from kseg.weak.scribblesup import propagate_scribbles

NUM_CLASSES = 3


def _mask_rcnn_small_config():
    """The SMALL configuration of tests/models/test_mask_rcnn.py (tests/ is not a package)."""
    path = Path(__file__).resolve().parent / "models" / "test_mask_rcnn.py"
    spec = importlib.util.spec_from_file_location("mask_rcnn_model_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.SMALL)


MASK_RCNN_SMALL = _mask_rcnn_small_config()


def _raises(call, errors, *fragments):
    """Run `call`, require one of `errors`, and require each fragment (regex) in the message."""
    with pytest.raises(errors) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert re.search(fragment, message), f"{fragment!r} not in: {message[:1500]}"


def _image(path, size=(6, 5), mode="RGB", value=100):
    Image.new(mode, size[::-1], value if mode != "RGB" else (value,) * 3).save(path)
    return path


def _mask(path, size=(6, 5), labels=(0, 1)):
    array = np.resize(np.asarray(labels, np.uint8), size)
    Image.fromarray(array, mode="L").save(path)
    return path


@pytest.fixture
def folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    return images, masks


# --- model builders -----------------------------------------------------------------------------

MODEL_CASES = {
    "unknown model": ({"name": "no_such_net"}, ValueError, [r"no_such_net", r"deeplabv3plus"]),
    "zero classes": ({"num_classes": 0}, ValueError, [r"num_classes"]),
    "negative classes": ({"num_classes": -2}, ValueError, [r"num_classes", r"-2"]),
    "classes as text": pytest.param(
        {"num_classes": "3"},
        (TypeError, ValueError),
        [r"num_classes"],
    ),
    "unknown backbone": ({"backbone": "no_such_backbone"}, ValueError, [r"no_such_backbone"]),
    # Keras's input check names the shape it got and the rank it expected.
    "input rank 2": ({"input_shape": (64, 64)}, ValueError, [r"\(None, 64, 64\)", r"ndim=4"]),
}


@pytest.mark.parametrize(
    "overrides, errors, fragments",
    list(MODEL_CASES.values()),
    ids=list(MODEL_CASES),
)
def test_model_builders_name_the_bad_argument(overrides, errors, fragments):
    kwargs = {"name": "deeplabv3plus", "num_classes": NUM_CLASSES, "backbone": "tiny"}
    kwargs.update(overrides)
    name = kwargs.pop("name")
    _raises(lambda: kseg.models.get_model(name, num_filters=8, **kwargs), errors, *fragments)


@pytest.mark.parametrize(
    "images, fragment",
    [
        (np.zeros((32, 32, 3), "float32"), r"32, 32, 3"),
        (np.zeros((1, 32, 32, 1), "float32"), r"1, 32, 32, 1|axis -1|3"),
    ],
    ids=["rank 3", "one channel"],
)
def test_built_model_names_the_bad_input_shape(images, fragment):
    model = kseg.models.get_model("deeplabv3plus", num_classes=NUM_CLASSES, backbone="tiny")
    _raises(lambda: model(images), ValueError, fragment)


# --- Mask R-CNN ---------------------------------------------------------------------------------

MASK_RCNN_CASES = {
    "one class": ({"num_classes": 1}, ValueError, [r"num_classes=1", r"background"]),
    "classes as text": ({"num_classes": "3"}, ValueError, [r"num_classes='3'"]),
    "two anchor sizes": (
        {"anchor_sizes": (32, 64)},
        ValueError,
        [r"anchor_sizes=\(32, 64\)", r"P2\.\.P6"],
    ),
    "six anchor sizes": (
        {"anchor_sizes": (8, 16, 32, 64, 128, 256)},
        ValueError,
        [r"anchor_sizes"],
    ),
    "backbone given as a model": (
        {"backbone": keras.Sequential(name="my_trunk")},
        TypeError,
        [r"by name", r"my_trunk"],
    ),
    "zero positive fraction": (
        {"roi_positive_fraction": 0.0},
        ValueError,
        [r"roi_positive_fraction=0\.0"],
    ),
}


@pytest.mark.parametrize(
    "overrides, errors, fragments",
    list(MASK_RCNN_CASES.values()),
    ids=list(MASK_RCNN_CASES),
)
def test_mask_rcnn_names_the_bad_argument(overrides, errors, fragments):
    kwargs = {**MASK_RCNN_SMALL, "num_classes": NUM_CLASSES, **overrides}
    _raises(lambda: MaskRCNN(**kwargs), errors, *fragments)


@pytest.fixture(scope="module")
def tiny_mask_rcnn():
    keras.config.set_dtype_policy("float32")
    return MaskRCNN(num_classes=NUM_CLASSES, **MASK_RCNN_SMALL)


@pytest.mark.parametrize(
    "shape, fragment",
    [
        ((64, 64, 3), r"images\.shape=\(64, 64, 3\)"),
        ((1, 64, 64, 2), r"images\.shape=\(1, 64, 64, 2\)"),
        ((1, 64, 64, 1), r"images\.shape=\(1, 64, 64, 1\)"),
    ],
    ids=["rank 3", "two channels", "one channel"],
)
def test_mask_rcnn_names_a_bad_image_batch(tiny_mask_rcnn, shape, fragment):
    _raises(lambda: tiny_mask_rcnn(np.zeros(shape, "float32")), ValueError, fragment)


def _targets(boxes=(1, 2, 4), classes=(1, 2), masks=(1, 2, 64, 64), drop=()):
    targets = {
        "gt_boxes": np.zeros(boxes, "float32"),
        "gt_classes": np.ones(classes, "int32"),
        "gt_masks": np.zeros(masks, "uint8"),
    }
    return {key: value for key, value in targets.items() if key not in drop}


MASK_RCNN_TARGET_CASES = {
    "more classes than boxes": (_targets(classes=(1, 3)), r"gt_classes\.shape=\(1, 3\)"),
    "masks smaller than the image": (
        _targets(masks=(1, 2, 32, 32)),
        r"images\.shape=\(1, 64, 64, 3\).*gt_masks\.shape=\(1, 2, 32, 32\)",
    ),
    "boxes of 5 coordinates": (_targets(boxes=(1, 2, 5)), r"gt_boxes\.shape=\(1, 2, 5\)"),
    "masks without an instance axis": (
        _targets(masks=(1, 64, 64)),
        r"gt_masks\.shape=\(1, 64, 64\)",
    ),
    "no gt_masks": (_targets(drop=("gt_masks",)), r"\['gt_masks'\] missing"),
}


@pytest.mark.parametrize("case", list(MASK_RCNN_TARGET_CASES))
def test_mask_rcnn_names_mismatched_targets(tiny_mask_rcnn, case):
    targets, fragment = MASK_RCNN_TARGET_CASES[case]
    images = np.zeros((1, 64, 64, 3), "float32")
    _raises(lambda: tiny_mask_rcnn.compute_losses(images, targets), ValueError, fragment)


# --- layers -------------------------------------------------------------------------------------

RANK3 = np.zeros((4, 4, 2), "float32")
RANK4 = np.zeros((1, 4, 4, 2), "float32")

LAYER_CASES = {
    "CropToMatch rank 3": (lambda: CropToMatch()([RANK3, RANK3]), r"rank|4-D|\(4, 4, 2\)"),
    "CropToMatch source smaller": (
        lambda: CropToMatch()([RANK4, np.zeros((1, 6, 6, 1), "float32")]),
        r"smaller",
    ),
    "CenteredPadToMultiple rank 3": (
        lambda: CenteredPadToMultiple(4)(RANK3),
        r"rank|4-D|\(4, 4, 2\)",
    ),
    "CenteredPadToMultiple zero multiple": (lambda: CenteredPadToMultiple(0), r"multiple=0"),
    "ResizeToMatch rank 3": (lambda: ResizeToMatch()([RANK3, RANK4]), r"rank|4-D|\(4, 4, 2\)"),
    "ResizeToMatch bad interpolation": (lambda: ResizeToMatch("cubic"), r"interpolation='cubic'"),
    "PyramidPooling rank 3": (lambda: PyramidPooling(filters=2)(RANK3), r"rank|4-D|\(4, 4, 2\)"),
    "PyramidPooling no bins": (lambda: PyramidPooling(bins=()), r"bins"),
    "MaxPoolingWithArgmax2D rank 3": (
        lambda: MaxPoolingWithArgmax2D()(RANK3),
        r"rank|4-D|\(4, 4, 2\)",
    ),
    "MaxUnpooling2D two inputs": (lambda: MaxUnpooling2D()([RANK4, RANK4]), r"argmax"),
    "MaxUnpooling2D float argmax": (
        lambda: MaxUnpooling2D()([RANK4, RANK4, RANK4]),
        r"argmax dtype=.*float32",
    ),
    "RoIAlign adaptive sampling_ratio 0": (
        lambda: RoIAlign(7, sampling_ratio=0),
        r"sampling_ratio=0",
    ),
    "RoIAlign boxes of 5 coordinates": (
        lambda: RoIAlign(2)([RANK4, np.zeros((1, 3, 5), "float32")]),
        r"boxes\.shape=\(1, 3, 5\)",
    ),
    "RoIAlign boxes without a batch axis": (
        lambda: RoIAlign(2)([RANK4, np.zeros((3, 4), "float32")]),
        r"boxes\.shape=\(3, 4\)",
    ),
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layers_name_the_bad_input(case):
    call, fragment = LAYER_CASES[case]
    _raises(call, (ValueError, TypeError, tf.errors.InvalidArgumentError), fragment)


# --- data ---------------------------------------------------------------------------------------


def test_load_dataset_names_a_missing_folder(tmp_path):
    missing = tmp_path / "no_such_dataset"
    _raises(lambda: load_dataset(str(missing)), (DatasetError, ValueError), "no_such_dataset")


def test_load_dataset_names_a_missing_mask_folder(folders, tmp_path):
    images, _ = folders
    _image(images / "a.png")
    missing = tmp_path / "no_masks_here"
    _raises(lambda: load_dataset((images, missing)), (DatasetError, ValueError), "no_masks_here")


def test_empty_folders_are_reported(folders):
    _raises(lambda: load_dataset(folders), (DatasetError, ValueError), r"images|no image")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_corrupt_image_file_is_named(folders, suffix):
    images, masks = folders
    (images / f"a{suffix}").write_bytes(
        b"\x89PNG\r\n\x1a\n truncated" if suffix == ".png" else b"\xff\xd8\xff junk"
    )
    _mask(masks / "a.png")
    _raises(lambda: load_dataset(folders), DatasetError, rf"a\{suffix}")


def test_corrupt_mask_file_is_named(folders):
    images, masks = folders
    _image(images / "a.png")
    (masks / "a.png").write_bytes(b"not a png at all")
    _raises(lambda: load_dataset(folders), DatasetError, r"mask.*a\.png")


@pytest.mark.parametrize("validate", ["full", "header"])
def test_label_at_or_above_num_classes_is_named_with_file_and_value(folders, validate):
    images, masks = folders
    _image(images / "a.png")
    _mask(masks / "a.png", labels=(0, 1, 7))

    def load_all():
        ds = load_dataset(folders, num_classes=NUM_CLASSES, validate=validate)
        list(ds)

    _raises(load_all, (DatasetError, tf.errors.InvalidArgumentError), r"a\.png", r"\b7\b")


def test_mismatched_image_and_mask_sizes_name_both_files(folders):
    images, masks = folders
    _image(images / "a.png", size=(6, 5))
    _mask(masks / "a.png", size=(6, 4))
    _raises(lambda: load_dataset(folders), DatasetError, r"images/a\.png", r"masks/a\.png", r"4")


def test_colour_mask_without_palette_is_named(folders):
    images, masks = folders
    _image(images / "a.png")
    array = np.zeros((6, 5, 3), np.uint8)
    array[0, 0] = (255, 0, 0)
    Image.fromarray(array, "RGB").save(masks / "a.png")
    _raises(lambda: list(load_dataset(folders, validate="full")), DatasetError, r"a\.png", "colour")


def test_mismatched_file_lists_are_counted(tmp_path):
    image = _image(tmp_path / "a.png")
    _raises(
        lambda: paired_files_dataset([image, image], [image]), ValueError, r"2 images", r"1 mask"
    )


def _tensor_pairs(image_shape, mask_shape, image_dtype="float32", mask_dtype="int32"):
    image = np.zeros(image_shape, image_dtype)
    mask = np.zeros(mask_shape, mask_dtype)
    return tf.data.Dataset.from_tensors((image, mask))


PIPELINE_CASES = {
    "batch size 0": (
        lambda: make_pipeline(_tensor_pairs((8, 8, 3), (8, 8)), 0, crop_size=4),
        r"batch_size",
    ),
    "augment without crop": (
        lambda: make_pipeline(_tensor_pairs((8, 8, 3), (8, 8)), 2),
        r"crop_size",
    ),
    "zero crop": (
        lambda: make_pipeline(_tensor_pairs((8, 8, 3), (8, 8)), 2, crop_size=(0, 4)),
        r"crop_size",
    ),
    "one-channel images": (
        lambda: make_pipeline(_tensor_pairs((8, 8, 1), (8, 8)), 1, crop_size=4),
        r"channel|\(8, 8, 1\)|3",
    ),
    "mask with a channel axis": (
        lambda: make_pipeline(_tensor_pairs((8, 8, 3), (8, 8, 1)), 1, crop_size=4),
        r"mask|\(8, 8, 1\)",
    ),
    "text images": (
        lambda: make_pipeline(
            tf.data.Dataset.from_tensors((tf.fill([8, 8, 3], "x"), tf.zeros([8, 8], tf.int32))),
            1,
            crop_size=4,
        ),
        r"image dtype=string",
    ),
    "float mask": (
        lambda: make_pipeline(
            _tensor_pairs((8, 8, 3), (8, 8), mask_dtype="float32"), 1, crop_size=4
        ),
        r"mask dtype=float32",
    ),
    "evaluation image larger than eval_size": (
        lambda: list(
            make_pipeline(_tensor_pairs((8, 8, 3), (8, 8)), 1, augment=False, eval_size=(4, 4))
        ),
        r"eval_size",
    ),
}


@pytest.mark.parametrize("case", list(PIPELINE_CASES))
def test_make_pipeline_names_the_bad_argument(case):
    call, fragment = PIPELINE_CASES[case]
    _raises(call, (ValueError, TypeError, tf.errors.InvalidArgumentError), fragment)


def test_zero_size_image_in_a_pipeline_is_reported():
    ds = _tensor_pairs((0, 0, 3), (0, 0))
    _raises(
        lambda: list(make_pipeline(ds, 1, augment=False)),
        (ValueError, tf.errors.InvalidArgumentError),
        r"empty|zero|0x0|\(0, 0",
    )


# --- COCO instance data -------------------------------------------------------------------------


@pytest.fixture
def coco_tree(tmp_path):
    """A valid one-image COCO file (ann.json) with its image folder; cases break one piece."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    _image(image_dir / "a.png", size=(8, 8))
    content = {
        "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
        "annotations": [
            {
                "id": 7,
                "image_id": 1,
                "category_id": 5,
                "iscrowd": 0,
                "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]],
            }
        ],
        "categories": [{"id": 5, "name": "thing"}],
    }
    annotations = tmp_path / "ann.json"
    annotations.write_text(json.dumps(content))
    return annotations, image_dir, content


def _rewrite(path, content):
    path.write_text(json.dumps(content))
    return path


def _coco_missing_file(tree):
    _, image_dir, _ = tree
    return lambda: coco_instance_dataset(image_dir.parent / "nowhere.json", image_dir)


def _coco_categories_missing_file(tree):
    return lambda: coco_categories(tree[1].parent / "nowhere.json")


def _coco_malformed_json(tree):
    annotations, image_dir, _ = tree
    annotations.write_text('{"images": [}')
    return lambda: coco_instance_dataset(annotations, image_dir)


def _coco_categories_malformed_json(tree):
    annotations, _, _ = tree
    annotations.write_text("[1, 2")
    return lambda: coco_categories(annotations)


def _coco_json_list(tree):
    annotations, image_dir, _ = tree
    annotations.write_text("[]")
    return lambda: coco_instance_dataset(annotations, image_dir)


def _coco_without_annotations_key(tree):
    annotations, image_dir, content = tree
    _rewrite(annotations, {k: v for k, v in content.items() if k != "annotations"})
    return lambda: coco_instance_dataset(annotations, image_dir)


def _coco_image_without_height(tree):
    annotations, image_dir, content = tree
    del content["images"][0]["height"]
    _rewrite(annotations, content)
    return lambda: coco_instance_dataset(annotations, image_dir)


def _coco_annotation_without_segmentation(tree):
    annotations, image_dir, content = tree
    del content["annotations"][0]["segmentation"]
    _rewrite(annotations, content)
    return lambda: coco_instance_dataset(annotations, image_dir)


def _coco_category_without_name(tree):
    annotations, _, content = tree
    del content["categories"][0]["name"]
    _rewrite(annotations, content)
    return lambda: coco_categories(annotations)


def _coco_unknown_category_ids(tree):
    annotations, _, _ = tree
    return lambda: coco_categories(annotations, category_ids=[5, 7])


def _coco_annotation_of_unknown_image(tree):
    annotations, image_dir, content = tree
    content["annotations"][0]["image_id"] = 99
    _rewrite(annotations, content)
    return lambda: coco_instance_dataset(annotations, image_dir)


def _coco_missing_image(tree):
    annotations, image_dir, _ = tree
    (image_dir / "a.png").unlink()
    return lambda: coco_instance_dataset(annotations, image_dir, missing_images="error")


def _coco_missing_image_folder(tree):
    annotations, image_dir, _ = tree
    return lambda: coco_instance_dataset(annotations, image_dir.parent / "no_images")


def _coco_unknown_missing_images_mode(tree):
    annotations, image_dir, _ = tree
    return lambda: coco_instance_dataset(annotations, image_dir, missing_images="ignore")


def _coco_corrupt_image(tree):
    annotations, image_dir, _ = tree
    (image_dir / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return lambda: list(coco_instance_dataset(annotations, image_dir))


def _coco_image_of_the_wrong_size(tree):
    annotations, image_dir, _ = tree
    _image(image_dir / "a.png", size=(6, 8))
    return lambda: list(coco_instance_dataset(annotations, image_dir))


# Decoding runs inside tf.data, so a bad image surfaces as InvalidArgumentError carrying kseg's
# DatasetError text; everything checked when the dataset is built is a DatasetError.
COCO_CASES = {
    "missing annotation file": (_coco_missing_file, DatasetError, [r"nowhere\.json"]),
    "coco_categories missing file": (
        _coco_categories_missing_file,
        DatasetError,
        [r"nowhere\.json"],
    ),
    "malformed JSON": (_coco_malformed_json, DatasetError, [r"ann\.json.*not valid JSON"]),
    "coco_categories malformed JSON": (
        _coco_categories_malformed_json,
        DatasetError,
        [r"ann\.json.*not valid JSON"],
    ),
    "JSON list instead of object": (_coco_json_list, DatasetError, [r"ann\.json", r"list"]),
    "no 'annotations' key": (
        _coco_without_annotations_key,
        DatasetError,
        [r"ann\.json.*'annotations'"],
    ),
    "image entry without height": (
        _coco_image_without_height,
        DatasetError,
        [r"ann\.json.*images\[0\].*'height'"],
    ),
    "annotation without segmentation": (
        _coco_annotation_without_segmentation,
        DatasetError,
        [r"annotations\[0\] \(id=7\).*'segmentation'"],
    ),
    "category without name": (
        _coco_category_without_name,
        DatasetError,
        [r"categories\[0\].*'name'"],
    ),
    "unknown category id": (_coco_unknown_category_ids, DatasetError, [r"no categories \[7\]"]),
    "annotation of an unknown image": (
        _coco_annotation_of_unknown_image,
        DatasetError,
        [r"image_id=99"],
    ),
    "missing image, missing_images='error'": (
        _coco_missing_image,
        DatasetError,
        [r"a\.png", r"missing_images='skip'"],
    ),
    "missing image folder": (_coco_missing_image_folder, DatasetError, [r"no_images"]),
    "unknown missing_images mode": (
        _coco_unknown_missing_images_mode,
        ValueError,
        [r"missing_images='ignore'"],
    ),
    "corrupt image": (_coco_corrupt_image, tf.errors.InvalidArgumentError, [r"a\.png"]),
    "image of the wrong size": (
        _coco_image_of_the_wrong_size,
        tf.errors.InvalidArgumentError,
        [r"a\.png.*8x6"],
    ),
}


@pytest.mark.parametrize("case", list(COCO_CASES))
def test_coco_loaders_name_the_bad_file_or_key(coco_tree, case):
    break_tree, errors, fragments = COCO_CASES[case]
    _raises(break_tree(coco_tree), errors, *fragments)


def test_coco_missing_image_with_skip_is_left_out_with_a_warning(coco_tree, tmp_path):
    # Documented handling, not an error: missing_images="skip" warns naming the file.
    annotations, image_dir, content = coco_tree
    content["images"].append({"id": 2, "file_name": "gone.png", "height": 8, "width": 8})
    _rewrite(annotations, content)
    with pytest.warns(UserWarning, match=r"gone\.png"):
        ds = coco_instance_dataset(annotations, image_dir, missing_images="skip")
    assert [int(e["image_id"]) for e in ds.as_numpy_iterator()] == [1]


def _instance_examples(classes, mask_size=(8, 8)):
    count = len(classes)
    return tf.data.Dataset.from_tensors(
        {
            "image": np.zeros((8, 8, 3), "uint8"),
            "boxes": np.zeros((count, 4), "float32"),
            "classes": np.asarray(classes, "int32"),
            "masks": np.zeros((count, *mask_size), "uint8"),
        }
    )


PAD_INSTANCE_CASES = {
    "class id at num_classes": (
        lambda: next(iter(pad_instance_batch(_instance_examples([1, 3]), 1, num_classes=3))),
        [r"1\.\.2 \(num_classes=3", r"\[3\]"],
    ),
    "class id far above num_classes": (
        lambda: next(iter(pad_instance_batch(_instance_examples([9]), 1, num_classes=3))),
        [r"1\.\.2", r"\[9\]"],
    ),
    "background class id 0": (
        lambda: next(iter(pad_instance_batch(_instance_examples([0, 1]), 1))),
        [r"1\.\.K", r"\[0\]"],
    ),
    "masks of another size than the image": (
        lambda: next(iter(pad_instance_batch(_instance_examples([1], (4, 8)), 1))),
        [r"shapes disagree", r"\[1 4 8\]"],
    ),
    "num_classes 1": (
        lambda: pad_instance_batch(_instance_examples([1]), 1, num_classes=1),
        [r"num_classes=1"],
    ),
}


@pytest.mark.parametrize("case", list(PAD_INSTANCE_CASES))
def test_pad_instance_batch_names_the_bad_value(case):
    call, fragments = PAD_INSTANCE_CASES[case]
    _raises(call, (ValueError, tf.errors.InvalidArgumentError), *fragments)


# --- weak supervision ---------------------------------------------------------------------------

TAG_LOGITS = np.zeros((1, 4, 4, NUM_CLASSES), "float32")
WEAK_IMAGE = np.zeros((16, 16, 3), "float32")


def _scribbles(*labels):
    scribbles = np.full((16, 16), 255, "uint8")
    for index, label in enumerate(labels):
        scribbles[2 + 4 * index, 2] = label
    return scribbles


WEAK_CASES = {
    "scribble class at num_classes": (
        lambda: propagate_scribbles(WEAK_IMAGE, _scribbles(0, 3), num_classes=NUM_CLASSES),
        [r"class 3, outside 0\.\.2"],
    ),
    "image without a scribble": (
        lambda: propagate_scribbles(WEAK_IMAGE, _scribbles(), num_classes=NUM_CLASSES),
        [r"no scribble pixel"],
    ),
    "ConstrainedCrossEntropy tag beyond K": (
        lambda: ConstrainedCrossEntropy()(np.array([[1, 0, 0, 0, 1]], "float32"), TAG_LOGITS),
        [r"5 columns", r"class\(es\) 4"],
    ),
    "EMAdaptCrossEntropy tag beyond K": (
        lambda: EMAdaptCrossEntropy()(np.array([[1, 0, 0, 0, 1]], "float32"), TAG_LOGITS),
        [r"y_true\.shape=\(1, 5\)", r"predicts 3"],
    ),
    "box_label_map box outside the image": (
        lambda: box_label_map([[20, 20, 30, 30]], [1], 8, 8, NUM_CLASSES),
        [r"`boxes`\[0\] lies entirely outside the 8x8 image", r"\[20\.0, 20\.0, 30\.0, 30\.0\]"],
    ),
    "box_label_map class at num_classes": (
        lambda: box_label_map([[1, 1, 3, 3]], [3], 8, 8, NUM_CLASSES),
        [r"box 0 has class 3"],
    ),
    "box_label_map background box": (
        lambda: box_label_map([[1, 1, 3, 3]], [0], 8, 8, NUM_CLASSES),
        [r"box 0 has the background class"],
    ),
    "bbox_seg_labels box outside the image": (
        lambda: bbox_seg_labels(np.zeros((8, 8, 3), "uint8"), [[-9, 2, -1, 6]], [1], NUM_CLASSES),
        [r"`boxes`\[0\] lies entirely outside the 8x8 image"],
    ),
}


@pytest.mark.parametrize("case", list(WEAK_CASES))
def test_weak_entry_points_name_the_bad_label(case):
    call, fragments = WEAK_CASES[case]
    _raises(call, ValueError, *fragments)


def test_empty_tags_are_documented_as_zero_loss():
    # Documented handling: an image without tags contributes nothing (Constrained CNN) or gets
    # the ignore label everywhere (EM-Adapt), so both losses are exactly 0, not an error.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=TAG_LOGITS.shape).astype("float32")
    empty = np.zeros((1, NUM_CLASSES), "float32")
    assert ConstrainedCrossEntropy(reduction="none")(empty, logits).numpy().tolist() == [0.0]
    assert not EMAdaptCrossEntropy(reduction="none")(empty, logits).numpy().any()


def test_box_partly_outside_the_image_is_documented_as_clipped():
    allowed = box_label_map([[4, 5, 30, 30]], [1], 8, 8, NUM_CLASSES)
    expected = np.zeros((8, 8), "uint8")
    expected[4:, 5:] = 1
    np.testing.assert_array_equal(allowed[..., 1], expected)


# --- CLI ----------------------------------------------------------------------------------------


def _cli_error(capsys, argv, *fragments):
    with pytest.raises(SystemExit) as caught:
        kseg.cli.main(argv)
    captured = capsys.readouterr()
    message = f"{caught.value.code if not isinstance(caught.value.code, int) else ''}{captured.err}"
    assert caught.value.code not in (0, None)
    for fragment in fragments:
        assert re.search(fragment, message), f"{fragment!r} not in: {message[-1500:]}"


def test_cli_without_a_command(capsys):
    _cli_error(capsys, [], r"command|usage")


def test_cli_unknown_command(capsys):
    _cli_error(capsys, ["frobnicate"], r"frobnicate")


def test_cli_bad_crop_size(capsys):
    _cli_error(capsys, ["train", "--data", "shapes", "--crop-size", "big"], r"big")


def test_cli_train_missing_data_folder(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    _cli_error(
        capsys,
        ["train", "--data", str(missing), "--run-dir", str(tmp_path / "run"), "--epochs", "1"],
        r"nowhere",
    )


def test_cli_train_unknown_model(capsys, tmp_path):
    _cli_error(
        capsys,
        ["train", "--data", "shapes", "--model", "no_such_net", "--run-dir", str(tmp_path)],
        r"no_such_net",
    )


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_cli_missing_model_file(capsys, tmp_path, command):
    missing = str(tmp_path / "missing.keras")
    extra = {
        "evaluate": ["--data", "shapes"],
        "predict": [str(tmp_path)],
        "export": ["--out", str(tmp_path / "out")],
    }[command]
    _cli_error(capsys, [command, "--model", missing, *extra], r"missing\.keras")


@pytest.fixture(scope="module")
def tiny_keras_file(tmp_path_factory):
    keras.config.set_dtype_policy("float32")
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    kseg.models.get_model(
        "deeplabv3plus", num_classes=NUM_CLASSES, backbone="tiny", num_filters=8
    ).save(path)
    return path


def test_cli_predict_corrupt_image(capsys, tmp_path, tiny_keras_file):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    _cli_error(
        capsys,
        ["predict", "--model", str(tiny_keras_file), str(broken), "--out", str(tmp_path / "o")],
        r"broken\.jpg",
    )


def test_cli_predict_missing_input(capsys, tmp_path, tiny_keras_file):
    _cli_error(
        capsys,
        ["predict", "--model", str(tiny_keras_file), str(tmp_path / "gone.png")],
        r"gone\.png",
    )


def test_cli_model_file_that_is_not_a_keras_archive(capsys, tmp_path):
    fake = tmp_path / "fake.keras"
    fake.write_text("this is not a zip archive")
    _cli_error(
        capsys,
        ["export", "--model", str(fake), "--out", str(tmp_path / "out")],
        r"fake\.keras",
    )


@pytest.fixture(scope="module")
def mask_rcnn_keras_file(tmp_path_factory, tiny_mask_rcnn):
    path = tmp_path_factory.mktemp("mask_rcnn") / "mask_rcnn.keras"
    tiny_mask_rcnn.save(path)
    return path


def test_cli_evaluate_semantic_model_on_coco_data(capsys, tmp_path, tiny_keras_file):
    _cli_error(
        capsys,
        [
            "evaluate",
            "--model",
            str(tiny_keras_file),
            "--data",
            f"coco:{tmp_path}/a.json,{tmp_path}",
        ],
        r"only MaskRCNN models",
        r"tiny\.keras is a semantic",
    )


@pytest.mark.parametrize(
    "data",
    ["coco:only_annotations.json", "coco:,images", "coco:a.json,images,extra"],
    ids=["one part", "empty annotations", "three parts"],
)
def test_cli_malformed_coco_argument(capsys, mask_rcnn_keras_file, data):
    _cli_error(
        capsys,
        ["evaluate", "--model", str(mask_rcnn_keras_file), "--data", data],
        r"coco:ANNOTATIONS\.json,IMAGE_DIR",
        re.escape(data),
    )


def test_cli_evaluate_mask_rcnn_on_a_missing_coco_file(capsys, tmp_path, mask_rcnn_keras_file):
    (tmp_path / "images").mkdir()
    _cli_error(
        capsys,
        [
            "evaluate",
            "--model",
            str(mask_rcnn_keras_file),
            "--data",
            f"coco:{tmp_path / 'absent.json'},{tmp_path / 'images'}",
        ],
        r"absent\.json",
    )


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_cli_export_mask_rcnn_to_a_format_without_detection_support(
    capsys, tmp_path, mask_rcnn_keras_file, fmt
):
    _cli_error(
        capsys,
        [
            "export",
            "--model",
            str(mask_rcnn_keras_file),
            "--format",
            fmt,
            "--out",
            str(tmp_path / f"m.{fmt}"),
        ],
        rf"--format {fmt}",
        r"MaskRCNN",
    )


# --- export -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_keras_file):
    return keras.saving.load_model(tiny_keras_file)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"image_size": (0, 32)}, r"image_size"),
        ({"input_size": (32, 32, 3)}, r"input_size"),
        ({"size_divisor": -8}, r"size_divisor"),
    ],
    ids=["zero image_size", "input_size of rank 3", "negative size_divisor"],
)
def test_export_names_a_bad_size(tmp_path, tiny_model, kwargs, fragment):
    _raises(
        lambda: kseg.export.saved_model(tiny_model, tmp_path / "out", **kwargs),
        ValueError,
        fragment,
    )


def test_export_rejects_something_that_is_not_a_model(tmp_path):
    _raises(
        lambda: kseg.export.saved_model("model.keras", tmp_path / "out"),
        (TypeError, ValueError),
        r"model",
    )


def test_tflite_names_an_unknown_quantization(tmp_path, tiny_model):
    _raises(
        lambda: kseg.export.tflite(tiny_model, tmp_path / "m.tflite", quantization="int4"),
        ValueError,
        r"int4",
    )


def test_export_into_a_path_that_is_a_file(tmp_path, tiny_model):
    occupied = tmp_path / "occupied"
    occupied.write_text("a file, not a folder")
    _raises(
        lambda: kseg.export.saved_model(tiny_model, occupied),
        (ValueError, OSError, tf.errors.FailedPreconditionError),
        r"occupied.*not a directory",
    )


# --- Mask R-CNN export and serving --------------------------------------------------------------

MASK_RCNN_EXPORT_CASES = {
    "saved_model image_size": (
        lambda model, out: kseg.export.saved_model(model, out, image_size=(64, 64)),
        ValueError,
        r"\['image_size'\] apply to semantic models",
    ),
    "saved_model size_divisor": (
        lambda model, out: kseg.export.saved_model(model, out, size_divisor=32),
        ValueError,
        r"\['size_divisor'\]",
    ),
    "saved_model include_logits and input_size": (
        lambda model, out: kseg.export.saved_model(
            model, out, include_logits=True, input_size=(64, 64)
        ),
        ValueError,
        r"\['include_logits', 'input_size'\]",
    ),
    "export_instance_saved_model include_logits": (
        lambda model, out: export_instance_saved_model(model, out, include_logits=True),
        TypeError,
        r"include_logits",
    ),
    "onnx": (
        lambda model, out: kseg.export.onnx(model, out.with_suffix(".onnx")),
        TypeError,
        r"MaskRCNN",
    ),
}


@pytest.mark.parametrize("case", list(MASK_RCNN_EXPORT_CASES))
def test_mask_rcnn_export_refuses_semantic_options(tmp_path, tiny_mask_rcnn, case):
    export, errors, fragment = MASK_RCNN_EXPORT_CASES[case]
    _raises(lambda: export(tiny_mask_rcnn, tmp_path / "out"), errors, fragment)


@pytest.fixture(scope="module")
def mask_rcnn_serving(tmp_path_factory, tiny_mask_rcnn):
    path = kseg.export.saved_model(tiny_mask_rcnn, tmp_path_factory.mktemp("serving") / "m")
    return tf.saved_model.load(str(path)).signatures["serving_default"]


@pytest.mark.parametrize(
    "image, fragment",
    [
        (
            tf.zeros((64, 64, 2), tf.uint8),
            r"\(height, width, 3\) RGB; received shape\] \[64 64 2\]",
        ),
        (tf.zeros((64, 64), tf.uint8), r"\(height, width, 3\) RGB; received shape\] \[64 64\]"),
        (tf.zeros((64, 64, 3), tf.float32), r"uint8 tensor but is a float tensor"),
    ],
    ids=["two channels", "rank 2", "float32"],
)
def test_mask_rcnn_serving_signature_names_a_bad_image(mask_rcnn_serving, image, fragment):
    _raises(lambda: mask_rcnn_serving(image=image), tf.errors.InvalidArgumentError, fragment)
