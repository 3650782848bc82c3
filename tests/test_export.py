import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg import export

NUM_CLASSES = 4


@pytest.fixture(autouse=True)
def _float32_policy():
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def tiny_model(input_shape=(None, None, 3), downsample=False, upsample=False):
    """RGB [0, 255] in, float32 logits out; optional stride-2 logits or a pool/upsample pair."""
    init = keras.initializers.RandomNormal(stddev=0.5, seed=1)
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", kernel_initializer=init)(x)
    x = keras.layers.BatchNormalization()(x)
    if downsample or upsample:
        x = keras.layers.MaxPooling2D()(x)
    if upsample:
        x = keras.layers.UpSampling2D()(x)
    logits = keras.layers.Conv2D(
        NUM_CLASSES,
        1,
        dtype="float32",
        kernel_initializer=init,
        bias_initializer=keras.initializers.RandomNormal(seed=2),
    )(x)
    return keras.Model(inputs, logits)


def _images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype("uint8")


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _assert_labels_match(labels, logits):
    """Argmax equality wherever the top two logits are not a near tie."""
    top2 = np.sort(logits, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 1e-4
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(labels[clear], logits.argmax(-1)[clear])


def _serving(path):
    return tf.saved_model.load(str(path)).signatures["serving_default"]


def test_saved_model_serves_uint8_of_any_size(tmp_path):
    model = tiny_model()
    serving = _serving(export.saved_model(model, tmp_path / "sm"))
    _, inputs = serving.structured_input_signature
    assert inputs["images"].dtype == tf.uint8
    assert inputs["images"].shape.as_list() == [None, None, None, 3]
    for shape in [(2, 16, 16, 3), (1, 21, 30, 3)]:
        images = _images(shape)
        outputs = serving(images=tf.constant(images))
        assert set(outputs) == {"labels", "probabilities"}
        assert outputs["labels"].dtype == tf.int32 and outputs["labels"].shape == shape[:3]
        assert outputs["probabilities"].dtype == tf.float32
        logits = model.predict(images.astype("float32"), verbose=0)
        np.testing.assert_allclose(outputs["probabilities"].numpy(), _softmax(logits), atol=1e-5)
        _assert_labels_match(outputs["labels"].numpy(), logits)


def test_saved_model_without_probabilities(tmp_path):
    serving = _serving(
        export.saved_model(tiny_model(), tmp_path / "sm", include_probabilities=False)
    )
    outputs = serving(images=tf.constant(_images((1, 8, 8, 3))))
    assert set(outputs) == {"labels"}


def test_saved_model_resizes_strided_logits_back(tmp_path):
    model = tiny_model(downsample=True)
    serving = _serving(export.saved_model(model, tmp_path / "sm"))
    images = _images((1, 16, 24, 3))
    outputs = serving(images=tf.constant(images))
    assert outputs["labels"].shape == (1, 16, 24)
    # Half-pixel bilinear upsampling by exactly 2 is a fixed 0.75/0.25 stencil, with the edge
    # rows and columns copied: check that independently in numpy.
    low = model.predict(images.astype("float32"), verbose=0)[0].astype("float64")

    def upsample_axis(a, axis):
        a = np.moveaxis(a, axis, 0)
        prev = np.concatenate([a[:1], a[:-1]])
        nxt = np.concatenate([a[1:], a[-1:]])
        out = np.empty((2 * len(a),) + a.shape[1:])
        out[0::2] = 0.75 * a + 0.25 * prev
        out[1::2] = 0.75 * a + 0.25 * nxt
        return np.moveaxis(out, 0, axis)

    expected = upsample_axis(upsample_axis(low, 0), 1)
    np.testing.assert_allclose(outputs["probabilities"].numpy()[0], _softmax(expected), atol=1e-5)


def test_size_divisor_pads_and_crops(tmp_path):
    model = tiny_model(upsample=True)
    serving = _serving(export.saved_model(model, tmp_path / "sm", size_divisor=4))
    images = _images((1, 13, 18, 3))
    outputs = serving(images=tf.constant(images))
    assert outputs["labels"].shape == (1, 13, 18)
    padded = np.pad(images, [(0, 0), (0, 3), (0, 2), (0, 0)]).astype("float32")
    logits = model.predict(padded, verbose=0)[:, :13, :18]
    np.testing.assert_allclose(outputs["probabilities"].numpy(), _softmax(logits), atol=1e-5)


def test_input_size_serves_a_fixed_size_model_at_any_size(tmp_path):
    model = tiny_model(input_shape=(16, 16, 3))
    serving = _serving(export.saved_model(model, tmp_path / "sm", input_size=(16, 16)))
    assert serving(images=tf.constant(_images((2, 20, 28, 3))))["labels"].shape == (2, 20, 28)
    images = _images((1, 16, 16, 3))
    logits = model.predict(images.astype("float32"), verbose=0)
    outputs = serving(images=tf.constant(images))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), _softmax(logits), atol=1e-5)


def test_mixed_precision_model_exports_float32_probabilities(tmp_path):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    model = tiny_model()
    keras.mixed_precision.set_dtype_policy("float32")
    serving = _serving(export.saved_model(model, tmp_path / "sm"))
    images = _images((1, 12, 12, 3))
    outputs = serving(images=tf.constant(images))
    assert outputs["probabilities"].dtype == tf.float32
    logits = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), _softmax(logits), atol=1e-5)


def test_serving_function_rejects_bad_arguments():
    model = tiny_model()
    with pytest.raises(ValueError, match="dtype=float32"):
        export.serving_function(model)(tf.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="not both"):
        export.serving_function(model, input_size=16, size_divisor=8)
    with pytest.raises(ValueError, match="size_divisor=0"):
        export.serving_function(model, size_divisor=0)
    with pytest.raises(ValueError, match=r"input_size=\(16, -1\)"):
        export.serving_function(model, input_size=(16, -1))
    with pytest.raises(ValueError, match="must end in '.tflite'"):
        export.tflite(model, "model.lite")


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = tiny_model(upsample=True)
    # Move the BatchNormalization statistics off their initial values so they are checked too.
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    images = _images((2, 16, 16, 3)).astype("float32")
    model.fit(images, np.zeros((2, 16, 16), "int32"), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    for shape in [(1, 16, 16, 3), (2, 12, 20, 3)]:
        x = _images(shape, seed=5).astype("float32")
        np.testing.assert_allclose(
            restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
        )


def _tflite_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = getattr(tf.lite, "Interpreter", None)
    if Interpreter is None:
        pytest.skip(
            "no TFLite interpreter: neither ai_edge_litert nor tf.lite.Interpreter is available"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Interpreter(model_path=str(path))


def test_tflite_keeps_dynamic_uint8_signature(tmp_path):
    model = tiny_model()
    interpreter = _tflite_interpreter(export.tflite(model, tmp_path / "model.tflite"))
    assert interpreter.get_signature_list()["serving_default"]["inputs"] == ["images"]
    runner = interpreter.get_signature_runner("serving_default")
    for shape in [(1, 16, 16, 3), (2, 19, 26, 3)]:
        images = _images(shape, seed=3)
        outputs = runner(images=images)
        logits = model.predict(images.astype("float32"), verbose=0)
        assert outputs["labels"].shape == shape[:3]
        np.testing.assert_allclose(outputs["probabilities"], _softmax(logits), atol=1e-5)
        _assert_labels_match(outputs["labels"], logits)
