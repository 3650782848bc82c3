"""NativeDilationConv2D against Keras's own dilated Conv2D, and where the builders use it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.layers.atrous_conv import Conv2D as NativeDilationConv2D
from kseg.layers.fast_equivalents import conv2d


def _pair(rate, padding="same", use_bias=True, activation=None, strides=1, dtype=None):
    layer = NativeDilationConv2D(
        5,
        3,
        strides=strides,
        padding=padding,
        dilation_rate=rate,
        use_bias=use_bias,
        activation=activation,
        bias_initializer="random_normal",
        dtype=dtype,
    )
    reference = keras.layers.Conv2D.from_config(layer.get_config())
    return layer, reference


def _graph_op_types(function, *args):
    graph = tf.function(function).get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("rate", [2, 3, (2, 4), 12])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_outputs_and_gradients_equal_keras_dilated_conv(rate, padding):
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(2, 29, 31, 4)).astype("float32"))
    layer, reference = _pair(rate, padding, activation="relu")
    layer.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, theirs = layer(x), reference(x)
        ours_loss = tf.reduce_sum(ours * ours)
        theirs_loss = tf.reduce_sum(theirs * theirs)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    for ours_grad, theirs_grad in zip(
        tape.gradient(ours_loss, [x, *layer.trainable_weights]),
        tape.gradient(theirs_loss, [x, *reference.trainable_weights]),
        strict=True,
    ):
        scale = np.abs(theirs_grad).max()
        np.testing.assert_allclose(ours_grad / scale, theirs_grad / scale, atol=1e-5)


def test_the_dilated_graph_has_no_space_to_batch_rewrite():
    x = tf.zeros((1, 32, 32, 3))
    layer, reference = _pair(6)
    layer.build(x.shape)
    reference.build(x.shape)
    assert "SpaceToBatchND" in _graph_op_types(reference, x)
    ours = _graph_op_types(layer, x)
    assert "SpaceToBatchND" not in ours and "BatchToSpaceND" not in ours
    assert "Conv2D" in ours


@pytest.mark.parametrize(
    "case",
    [
        {"dtype": "float64"},  # TensorFlow's CPU gradients need the rewrite here
        {"dtype": "float16"},
        {"strides": 2, "rate": 1},
    ],
)
def test_falls_back_to_keras_where_the_native_kernel_is_missing(case):
    rate = case.get("rate", 2)
    layer, reference = _pair(rate, strides=case.get("strides", 1), dtype=case.get("dtype"))
    dtype = case.get("dtype", "float32")
    x = tf.constant(np.random.default_rng(1).normal(size=(1, 17, 17, 4)), dtype=dtype)
    layer.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    with tf.GradientTape() as tape:
        y = layer(x)
        total = tf.reduce_sum(y)
    assert all(g is not None for g in tape.gradient(total, layer.trainable_weights))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(reference(x)))


def test_bfloat16_runs_natively_and_matches_float32():
    x = tf.constant(np.random.default_rng(2).normal(size=(1, 20, 20, 4)).astype("float32"))
    layer, _ = _pair(3, dtype="bfloat16")
    layer.build(x.shape)
    assert "SpaceToBatchND" not in _graph_op_types(layer, tf.cast(x, "bfloat16"))
    full = NativeDilationConv2D.from_config({**layer.get_config(), "dtype": "float32"})
    full.build(x.shape)
    full.set_weights([np.asarray(w, "float32") for w in layer.get_weights()])
    expected = full(x)
    got = tf.cast(layer(tf.cast(x, "bfloat16")), "float32")
    assert np.abs(got - expected).max() <= 0.02 * np.abs(expected).max()


def test_round_trips_through_a_keras_file(tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, conv2d(4, 3, dilation_rate=2, padding="same")(inputs))
    path = tmp_path / "atrous.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is NativeDilationConv2D
    x = np.random.default_rng(3).normal(size=(1, 12, 12, 3)).astype("float32")
    np.testing.assert_array_equal(model(x), loaded(x))


def test_dilated_builders_and_folding_run_without_the_rewrite():
    small = {**kseg.testing.SMALL_MODEL_CONFIGS.get("deeplabv3", {}), "output_stride": 8}
    model = kseg.models.get_model("deeplabv3", num_classes=3, backbone="tiny", **small)
    dilated = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.Conv2D) and max(layer.dilation_rate) > 1
    ]
    assert dilated and all(isinstance(layer, NativeDilationConv2D) for layer in dilated)
    x = tf.zeros((1, 64, 64, 3))
    assert "SpaceToBatchND" not in _graph_op_types(lambda t: model(t, training=False), x)

    # A model saved before the layer existed holds plain dilated Conv2D layers; folding
    # gives its inference copy the native form.
    inputs = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(4, 3, dilation_rate=3, padding="same", use_bias=False)(inputs)
    y = keras.layers.BatchNormalization()(y)
    plain = keras.Model(inputs, y)
    folded = kseg.inference.fold_batch_norm(plain)
    assert any(type(layer) is NativeDilationConv2D for layer in folded.layers)
    sample = np.random.default_rng(4).normal(size=(1, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(folded(sample), plain(sample), atol=1e-5)
