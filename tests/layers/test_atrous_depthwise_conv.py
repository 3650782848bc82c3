"""kseg's DepthwiseConv2D against Keras's own dilated DepthwiseConv2D, and where builders use it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.layers.atrous_depthwise_conv import DepthwiseConv2D as NativeDilationDepthwiseConv2D
from kseg.layers.fast_equivalents import depthwise_conv2d


def _pair(rate, padding="same", multiplier=1, kernel_size=3, strides=1, dtype=None):
    layer = NativeDilationDepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding=padding,
        depth_multiplier=multiplier,
        dilation_rate=rate,
        activation="relu",
        bias_initializer="random_normal",
        dtype=dtype,
    )
    reference = keras.layers.DepthwiseConv2D.from_config(layer.get_config())
    return layer, reference


def _built(layer, reference, shape):
    layer.build(shape)
    reference.build(shape)
    reference.set_weights(layer.get_weights())


def _graph_op_types(function, *args):
    graph = tf.function(function).get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations()}


# Rates past 8 are where oneDNN's kernel would fall back to its slow path with "same" padding;
# (2, 4) and a 4x4 kernel cover unequal rates and the uneven padding of an even kernel.
@pytest.mark.parametrize(
    "rate, padding, multiplier, kernel_size",
    [
        (2, "same", 1, 3),
        ((2, 4), "same", 2, 3),
        (12, "same", 1, 3),
        (18, "same", 3, 3),
        ((3, 2), "valid", 2, 3),
        ((2, 3), "same", 1, 4),
    ],
)
def test_outputs_and_gradients_equal_keras_dilated_depthwise_conv(
    rate, padding, multiplier, kernel_size
):
    rng = np.random.default_rng(11)
    x = tf.constant(rng.normal(size=(2, 33, 29, 5)).astype("float32"))
    layer, reference = _pair(rate, padding, multiplier, kernel_size)
    _built(layer, reference, x.shape)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, theirs = layer(x), reference(x)
        ours_loss = tf.reduce_sum(ours * ours)
        theirs_loss = tf.reduce_sum(theirs * theirs)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    for ours_grad, theirs_grad in zip(
        tape.gradient(ours_loss, [x, *layer.trainable_weights]),
        tape.gradient(theirs_loss, [x, *reference.trainable_weights]),
        strict=True,
    ):
        scale = np.abs(theirs_grad).max()
        np.testing.assert_allclose(ours_grad / scale, theirs_grad / scale, atol=1e-5)


def test_the_forward_graph_runs_one_native_op_without_the_rewrite():
    x = tf.zeros((1, 32, 32, 3))
    layer, reference = _pair(12)
    _built(layer, reference, x.shape)
    assert "SpaceToBatchND" in _graph_op_types(reference, x)
    ours = _graph_op_types(layer, x)
    assert "SpaceToBatchND" not in ours and "BatchToSpaceND" not in ours
    assert "DepthwiseConv2dNative" in ours


@pytest.mark.parametrize(
    "case",
    [
        {"dtype": "float64"},
        {"dtype": "float16"},
        {"strides": 2, "rate": 1},
    ],
)
def test_falls_back_to_keras_outside_the_native_cases(case):
    rate = case.get("rate", 2)
    layer, reference = _pair(rate, strides=case.get("strides", 1), dtype=case.get("dtype"))
    dtype = case.get("dtype", "float32")
    x = tf.constant(np.random.default_rng(1).normal(size=(1, 17, 17, 4)), dtype=dtype)
    _built(layer, reference, x.shape)
    with tf.GradientTape() as tape:
        y = layer(x)
        total = tf.reduce_sum(y)
    assert all(g is not None for g in tape.gradient(total, layer.trainable_weights))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(reference(x)))


def test_bfloat16_runs_natively_and_matches_float32():
    x = tf.constant(np.random.default_rng(2).normal(size=(1, 20, 20, 4)).astype("float32"))
    layer, _ = _pair(6, dtype="bfloat16")
    layer.build(x.shape)
    assert "SpaceToBatchND" not in _graph_op_types(layer, tf.cast(x, "bfloat16"))
    full = NativeDilationDepthwiseConv2D.from_config({**layer.get_config(), "dtype": "float32"})
    full.build(x.shape)
    full.set_weights([np.asarray(w, "float32") for w in layer.get_weights()])
    expected = full(x)
    got = tf.cast(layer(tf.cast(x, "bfloat16")), "float32")
    assert np.abs(got - expected).max() <= 0.02 * np.abs(expected).max()


def test_mixed_precision_training_step_has_finite_gradients():
    layer = depthwise_conv2d(3, dilation_rate=4, padding="same", dtype="mixed_bfloat16")
    x = tf.constant(np.random.default_rng(5).normal(size=(1, 16, 16, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        y = layer(x)
        total = tf.reduce_sum(tf.cast(y, "float32") ** 2)
    assert y.dtype == tf.bfloat16 and layer.kernel.dtype == "float32"
    gradients = tape.gradient(total, layer.trainable_weights)
    assert len(gradients) == 2  # kernel and bias
    assert all(g.dtype == tf.float32 and np.isfinite(g).all() for g in gradients)


def test_round_trips_through_a_keras_file(tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, depthwise_conv2d(3, dilation_rate=2, padding="same")(inputs))
    path = tmp_path / "atrous_depthwise.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is NativeDilationDepthwiseConv2D
    x = np.random.default_rng(3).normal(size=(1, 12, 12, 3)).astype("float32")
    np.testing.assert_array_equal(model(x), loaded(x))


def test_separable_aspp_and_folding_run_without_the_rewrite():
    model = kseg.models.get_model(
        "deeplabv3plus", num_classes=3, backbone="tiny", num_filters=16, separable=True
    )
    dilated = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.DepthwiseConv2D) and max(layer.dilation_rate) > 1
    ]
    assert dilated and all(isinstance(layer, NativeDilationDepthwiseConv2D) for layer in dilated)
    x = np.random.default_rng(6).normal(size=(1, 64, 64, 3)).astype("float32")
    folded = kseg.inference.fold_batch_norm(model)
    assert "SpaceToBatchND" not in _graph_op_types(lambda t: folded(t, training=False), x)
    np.testing.assert_allclose(folded(x), model(x, training=False), atol=1e-4)

    # A model saved before the layer existed holds plain dilated DepthwiseConv2D layers;
    # folding gives its inference copy the native form.
    inputs = keras.Input((None, None, 3))
    y = keras.layers.DepthwiseConv2D(3, dilation_rate=3, padding="same", use_bias=False)(inputs)
    y = keras.layers.BatchNormalization()(y)
    plain = keras.Model(inputs, y)
    folded = kseg.inference.fold_batch_norm(plain)
    assert any(type(layer) is NativeDilationDepthwiseConv2D for layer in folded.layers)
    sample = np.random.default_rng(4).normal(size=(1, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(folded(sample), plain(sample), atol=1e-5)
