"""Checks every registered segmentation model passes, whatever its architecture."""

import os

import keras
import numpy as np
import pytest

import kseg

NUM_CLASSES = 3


def build(name, **overrides):
    return kseg.testing.build_small_model(name, NUM_CLASSES, **overrides)


MODELS = kseg.models.list_models()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_logits_take_the_input_size_and_are_float32(name, size):
    model = build(name)
    images = np.random.default_rng(0).uniform(0, 255, (2, *size, 3)).astype("float32")
    logits = model(images, training=False)
    assert tuple(logits.shape) == (2, *size, NUM_CLASSES)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


@pytest.mark.parametrize("name", MODELS)
def test_logits_stay_float32_under_mixed_bfloat16(name):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = build(name)
    logits = model(np.zeros((1, 64, 64, 3), "float32"), training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize("name", MODELS)
def test_keras_file_reloads_in_safe_mode_with_equal_outputs(name, tmp_path):
    model = build(name)
    images = np.random.default_rng(1).uniform(0, 255, (1, 48, 80, 3)).astype("float32")
    expected = np.asarray(model(images, training=False))
    path = os.fspath(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(images, training=False)), expected, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_one_fit_step_is_finite_and_ignores_the_ignore_label(name):
    model = build(name)
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, (2, 32, 32)).astype("int32")
    labels[:, :8] = 255
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
    )
    history = model.fit(images, labels, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="deeplabv3plus"):
        kseg.models.get_model("no-such-net")
