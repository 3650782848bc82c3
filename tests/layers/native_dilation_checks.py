"""Checks shared by the tests of kseg's native-dilation layers (Conv2D, DepthwiseConv2D).

Each takes a kseg layer and its Keras counterpart built from the same config, so the same
contract (same outputs and gradients as Keras's rewrite, Keras's path where the native kernel is
missing, bfloat16, a `.keras` round trip) is asserted on both layers in one place.
"""

import keras
import numpy as np
import tensorflow as tf


def graph_op_types(function, *args):
    graph = tf.function(function).get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations()}


def build_with_same_weights(layer, reference, shape):
    layer.build(shape)
    reference.build(shape)
    reference.set_weights(layer.get_weights())


def assert_outputs_and_gradients_match(layer, reference, x):
    """Same outputs, and gradients to the input and every weight, within float32 rounding."""
    build_with_same_weights(layer, reference, x.shape)
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


def assert_runs_keras_path(layer, reference, dtype):
    """Bit-identical to Keras's layer (its own path) with gradients for every weight."""
    x = tf.constant(np.random.default_rng(1).normal(size=(1, 17, 17, 4)), dtype=dtype)
    build_with_same_weights(layer, reference, x.shape)
    with tf.GradientTape() as tape:
        y = layer(x)
        total = tf.reduce_sum(y)
    assert all(g is not None for g in tape.gradient(total, layer.trainable_weights))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(reference(x)))


def assert_bfloat16_runs_natively(layer):
    """A bfloat16 `layer` has no SpaceToBatchND rewrite and stays near its float32 twin."""
    x = tf.constant(np.random.default_rng(2).normal(size=(1, 20, 20, 4)).astype("float32"))
    layer.build(x.shape)
    assert "SpaceToBatchND" not in graph_op_types(layer, tf.cast(x, "bfloat16"))
    full = type(layer).from_config({**layer.get_config(), "dtype": "float32"})
    full.build(x.shape)
    full.set_weights([np.asarray(w, "float32") for w in layer.get_weights()])
    expected = full(x)
    got = tf.cast(layer(tf.cast(x, "bfloat16")), "float32")
    assert np.abs(got - expected).max() <= 0.02 * np.abs(expected).max()


def assert_round_trips(layer, path):
    """A model of `layer` saved to a `.keras` file loads back as the same class and outputs."""
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layer(inputs))
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is type(layer)
    x = np.random.default_rng(3).normal(size=(1, 12, 12, 3)).astype("float32")
    np.testing.assert_array_equal(model(x), loaded(x))
