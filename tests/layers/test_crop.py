from pathlib import Path

import keras
import numpy as np
import pytest

from kseg.layers.crop import CenteredPadToMultiple, CropToMatch, PadToMultiple
from kseg.testing import run_layer_test

# Saved before the layer was renamed: Input -> PadToMultiple(16, "reflect", name="pad") -> Conv2D.
OLD_PAD_MODEL = (
    Path(__file__).resolve().parents[1] / "fixtures" / "pad_to_multiple_before_rename.keras"
)


@pytest.mark.parametrize(
    "source_size, target_size", [((9, 11), (5, 6)), ((8, 8), (8, 3)), ((64, 64), (56, 56))]
)
def test_crop_takes_the_centre_like_numpy_slicing(source_size, target_size):
    source = np.random.default_rng(0).normal(size=(2, *source_size, 3)).astype("float32")
    reference = np.zeros((2, *target_size, 1), "float32")
    top = (source_size[0] - target_size[0]) // 2
    left = (source_size[1] - target_size[1]) // 2
    expected = source[:, top : top + target_size[0], left : left + target_size[1], :]
    np.testing.assert_array_equal(np.asarray(CropToMatch()([source, reference])), expected)


def test_crop_of_the_paper_skip_removes_four_pixels_per_side():
    # U-Net's first skip: 568x568 cropped to the 392x392 of the last up-convolution (paper Fig. 1).
    skip = np.zeros((1, 568, 568, 1), "float32")
    skip[:, 88:480, 88:480] = 1.0
    out = np.asarray(CropToMatch()([skip, np.zeros((1, 392, 392, 1), "float32")]))
    assert out.shape == (1, 392, 392, 1) and out.min() == 1.0


def test_crop_rejects_a_source_smaller_than_the_reference():
    with pytest.raises(ValueError, match="only shrink"):
        CropToMatch()([keras.Input((4, 9, 2)), keras.Input((5, 5, 1))])
    with pytest.raises(Exception, match="only shrink"):
        CropToMatch()([np.zeros((1, 4, 9, 2), "float32"), np.zeros((1, 5, 5, 1), "float32")])


def test_crop_layer_contract():
    run_layer_test(CropToMatch, {}, [(2, 9, 11, 3), (2, 5, 6, 1)], expected_channels=3)


@pytest.mark.parametrize("mode", ["constant", "reflect", "symmetric"])
def test_pad_reaches_the_multiple_and_crop_undoes_it(mode):
    image = np.random.default_rng(1).normal(size=(2, 65, 97, 3)).astype("float32")
    padded = np.asarray(CenteredPadToMultiple(16, mode=mode)(image))
    assert padded.shape == (2, 80, 112, 3)
    np.testing.assert_array_equal(np.asarray(CropToMatch()([padded, image])), image)
    expected = np.pad(image, ((0, 0), (7, 8), (7, 8), (0, 0)), mode=mode)
    np.testing.assert_array_equal(padded, expected)


def test_pad_leaves_divisible_sizes_unchanged():
    image = np.ones((1, 32, 48, 2), "float32")
    np.testing.assert_array_equal(np.asarray(CenteredPadToMultiple(16)(image)), image)


def test_pad_static_shape():
    assert CenteredPadToMultiple(8)(keras.Input((13, None, 3))).shape == (None, 16, None, 3)


def test_pad_layer_contract():
    run_layer_test(
        CenteredPadToMultiple,
        {"multiple": 4, "mode": "reflect"},
        (2, 9, 11, 3),
        expected_channels=3,
    )


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"multiple": 0}, "multiple"),
        ({"multiple": 2.0}, "multiple"),
        ({"multiple": 4, "mode": "wrap"}, "mode"),
    ],
)
def test_pad_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        CenteredPadToMultiple(**kwargs)


def test_a_model_saved_with_the_pre_rename_layer_name_still_loads():
    model = keras.saving.load_model(OLD_PAD_MODEL)
    pad = model.get_layer("pad")
    assert isinstance(pad, CenteredPadToMultiple)
    assert (pad.multiple, pad.mode) == (16, "reflect")
    image = np.random.default_rng(2).normal(size=(1, 21, 35, 3)).astype("float32")
    expected = np.pad(image, ((0, 0), (5, 6), (6, 7), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(np.asarray(pad(image)), expected)
    assert model(image).shape == (1, 32, 48, 2)


def test_the_pre_rename_name_serialises_as_itself_and_the_new_name_as_the_new():
    assert keras.saving.get_registered_name(PadToMultiple) == "kseg>PadToMultiple"
    assert keras.saving.get_registered_name(CenteredPadToMultiple) == "kseg>CenteredPadToMultiple"
