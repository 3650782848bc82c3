"""Bad-input census: every public entry point given the wrong thing fails with an error naming it.

Each case feeds one entry point (model builders, layers, data loaders and pipelines, the CLI,
export) one wrong input and requires an error whose message names the problem: the file, the
shape, the value or the argument. Cases where kseg's message is still unclear are marked
`xfail(strict=True)` with the reason, so fixing one turns the census red until the mark goes.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg
import kseg.cli
import kseg.export
from kseg.data import DatasetError, load_dataset, make_pipeline, paired_files_dataset
from kseg.layers.crop import CropToMatch, PadToMultiple
from kseg.layers.pyramid_pooling import PyramidPooling
from kseg.layers.resize import ResizeToMatch
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

NUM_CLASSES = 3


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


# --- layers -------------------------------------------------------------------------------------

RANK3 = np.zeros((4, 4, 2), "float32")
RANK4 = np.zeros((1, 4, 4, 2), "float32")

LAYER_CASES = {
    "CropToMatch rank 3": (lambda: CropToMatch()([RANK3, RANK3]), r"rank|4-D|\(4, 4, 2\)"),
    "CropToMatch source smaller": (
        lambda: CropToMatch()([RANK4, np.zeros((1, 6, 6, 1), "float32")]),
        r"smaller",
    ),
    "PadToMultiple rank 3": (lambda: PadToMultiple(4)(RANK3), r"rank|4-D|\(4, 4, 2\)"),
    "PadToMultiple zero multiple": (lambda: PadToMultiple(0), r"multiple=0"),
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
