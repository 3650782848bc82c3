import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.inference.dense_crf import dense_crf
from kseg.layers.crf import DenseCRF
from kseg.testing import run_layer_test


def _inputs(seed=0, batch=2, height=12, width=10, labels=4):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (batch, height, width, 3)).astype("float32")
    logits = rng.normal(size=(batch, height, width, labels)).astype("float32")
    return image, logits


def test_layer_contract():
    run_layer_test(
        DenseCRF,
        {"iterations": 2, "dtype": "float32"},
        [(2, 9, 11, 3), (2, 9, 11, 4)],
        expected_channels=4,
    )


def test_softmax_of_output_equals_post_processing():
    image, logits = _inputs()
    layer = DenseCRF(iterations=3, sxy_bilateral=20, srgb_bilateral=10)
    refined = np.asarray(layer([image, logits]))
    expected = dense_crf(
        image.astype("uint8"),
        logits,
        from_logits=True,
        iterations=3,
        sxy_gaussian=layer.sxy_gaussian,
        compat_gaussian=layer.compat_gaussian,
        sxy_bilateral=20,
        srgb_bilateral=10,
        compat_bilateral=layer.compat_bilateral,
    )
    softmax = np.exp(refined) / np.exp(refined).sum(-1, keepdims=True)
    np.testing.assert_allclose(softmax, np.asarray(expected), atol=1e-5)


def test_saved_model_export_serves_the_same_logits():
    image = keras.Input((None, None, 3), dtype="uint8")
    logits = keras.Input((None, None, 3))
    model = keras.Model([image, logits], DenseCRF(iterations=2)([image, logits]))
    data_image, data_logits = _inputs(seed=1, labels=3)
    data = [data_image.astype("uint8"), data_logits]
    expected = np.asarray(model(data))
    with tempfile.TemporaryDirectory() as folder:
        model.export(folder, format="tf_saved_model", verbose=False)
        served = tf.saved_model.load(folder).serve(data)
    np.testing.assert_allclose(np.asarray(served), expected, atol=1e-5)


def test_gradient_reaches_the_logits():
    image, logits = _inputs(seed=2, batch=1)
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = tf.reduce_sum(DenseCRF(iterations=2)([image, logits])[..., 0])
    gradient = np.asarray(tape.gradient(loss, logits))
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0


def test_float32_logits_under_mixed_policy():
    keras.config.set_dtype_policy("mixed_bfloat16")
    image, logits = _inputs(seed=3, batch=1)
    out = DenseCRF(iterations=1)([image, tf.cast(logits, "bfloat16")])
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_output_shape_keeps_unknown_sizes():
    shape = DenseCRF().compute_output_shape([(None, None, None, 3), (None, None, None, 5)])
    assert shape == (None, None, None, 5)


def test_rejects_logits_at_another_size():
    with pytest.raises(ValueError, match="image's height and width"):
        DenseCRF()([keras.Input((32, 32, 3)), keras.Input((8, 8, 4))])


def test_rejects_non_rgb_image():
    with pytest.raises(ValueError, match="RGB image"):
        DenseCRF()([keras.Input((None, None, 1)), keras.Input((None, None, 4))])


def test_rejects_bad_iterations():
    with pytest.raises(ValueError, match="Received: iterations=-2"):
        DenseCRF(iterations=-2)
