"""Checks every registered model passes, whatever its architecture, with each task's own checks.

Semantic models map images to float32 logits of the input's size; instance models map them to
detections. Both reload from `.keras` in safe mode with equal outputs and take one finite
training step.
"""

import os

import keras
import numpy as np
import pytest

import kseg

NUM_CLASSES = 3


def build(name, **overrides):
    return kseg.testing.build_small_model(name, NUM_CLASSES, **overrides)


@pytest.fixture(scope="module")
def float32_model():
    """Builds each semantic model once, in float32, for the checks that only call and save it."""
    built = {}

    def get(name):
        if name not in built:
            built[name] = build(name)
        return built[name]

    return get


SEMANTIC_MODELS = kseg.models.list_models(task="semantic")
INSTANCE_MODELS = kseg.models.list_models(task="instance")


def test_every_registered_model_has_a_task_with_checks():
    assert sorted(SEMANTIC_MODELS + INSTANCE_MODELS) == kseg.models.list_models()
    assert "mask_rcnn" in INSTANCE_MODELS


# --- semantic models -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEMANTIC_MODELS)
@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_logits_take_the_input_size_and_are_float32(name, size, float32_model):
    model = float32_model(name)
    images = np.random.default_rng(0).uniform(0, 255, (2, *size, 3)).astype("float32")
    logits = model(images, training=False)
    assert tuple(logits.shape) == (2, *size, NUM_CLASSES)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


@pytest.mark.parametrize("name", SEMANTIC_MODELS)
def test_logits_stay_float32_under_mixed_bfloat16(name):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = build(name)
    logits = model(np.zeros((1, 64, 64, 3), "float32"), training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize("name", SEMANTIC_MODELS)
def test_keras_file_reloads_in_safe_mode_with_equal_outputs(name, tmp_path, float32_model):
    model = float32_model(name)
    images = np.random.default_rng(1).uniform(0, 255, (1, 48, 80, 3)).astype("float32")
    expected = np.asarray(model(images, training=False))
    path = os.fspath(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(images, training=False)), expected, atol=1e-5)


@pytest.mark.parametrize("name", SEMANTIC_MODELS)
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


# --- instance models -----------------------------------------------------------------------------

SHAPES_CLASSES = kseg.data.shapes_info().num_classes


def build_instance(name, num_classes=NUM_CLASSES, **overrides):
    keras.utils.set_random_seed(0)
    return kseg.testing.build_small_model(name, num_classes, **overrides)


@pytest.mark.parametrize("name", INSTANCE_MODELS)
def test_detections_have_documented_shapes_and_dtypes(name):
    # A zero score threshold keeps every detection, so the output is full.
    model = build_instance(name, score_threshold=0.0)
    out = model(np.zeros((2, 64, 96, 3), "float32"), training=False)
    limit = kseg.testing.SMALL_MODEL_CONFIGS[name]["detections_per_image"]
    assert tuple(out["boxes"].shape) == (2, limit, 4)
    assert tuple(out["scores"].shape) == (2, limit)
    assert tuple(out["classes"].shape) == (2, limit)
    assert tuple(out["num_detections"].shape) == (2,)
    assert out["masks"].shape[:2] == (2, limit) and out["masks"].shape[2] == out["masks"].shape[3]
    for key in ("boxes", "scores", "masks"):
        assert keras.backend.standardize_dtype(out[key].dtype) == "float32", key
    classes = np.asarray(out["classes"])
    assert np.issubdtype(classes.dtype, np.integer)
    count = np.asarray(out["num_detections"])
    assert np.all((count >= 0) & (count <= limit))
    valid = np.arange(limit)[None] < count[:, None]
    assert np.all((classes[valid] >= 1) & (classes[valid] < NUM_CLASSES))


@pytest.mark.parametrize("name", INSTANCE_MODELS)
def test_instance_keras_file_reloads_in_safe_mode_with_equal_detections(name, tmp_path):
    model = build_instance(name, score_threshold=0.0)
    images = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    expected = model(images, training=False)
    path = os.fspath(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded) is type(model)
    got = reloaded(images, training=False)
    for key in ("boxes", "scores", "classes", "num_detections", "masks"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=1e-5)


@pytest.mark.parametrize("name", INSTANCE_MODELS)
def test_one_instance_fit_step_on_shapes_is_finite(name):
    model = build_instance(name, num_classes=SHAPES_CLASSES)
    examples = kseg.data.shapes_instance_examples("train", num_samples=2, image_size=64)
    batches = kseg.data.pad_instance_batch(examples, 2, num_classes=SHAPES_CLASSES)
    model.compile(optimizer=keras.optimizers.SGD(1e-3, global_clipnorm=10.0), run_eagerly=True)
    history = model.fit(batches, epochs=1, verbose=0, shuffle=False)
    losses = {key: value[0] for key, value in history.history.items()}
    assert losses and all(np.isfinite(value) for value in losses.values()), losses


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="deeplabv3plus"):
        kseg.models.get_model("no-such-net")
