"""kseg's fused BatchNormalization against Keras's own, in every mode and dtype policy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg


def _pair(**kwargs):
    ours = kseg.layers.BatchNormalization(
        gamma_initializer=keras.initializers.RandomNormal(seed=1),
        beta_initializer=keras.initializers.RandomNormal(seed=2),
        **kwargs,
    )
    theirs = keras.layers.BatchNormalization(**kwargs)
    return ours, theirs


# Relative gradient tolerance: float32 rounding, else one rounding step of the compute dtype
# (10 stored mantissa bits for float16, 7 for bfloat16).
_GRADIENT_TOLERANCE = {"float32": 1e-4, "mixed_float16": 2.0**-10, "mixed_bfloat16": 2.0**-7}


def _difference(a, b):
    return float(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64")).max())


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("options", [{}, {"scale": False}, {"center": False, "epsilon": 1e-5}])
def test_outputs_gradients_and_moving_statistics_equal_keras(policy, options):
    rng = np.random.default_rng(5)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        ours, theirs = _pair(momentum=0.8, **options)
        x = tf.constant(rng.normal(1.5, 2.0, size=(3, 7, 9, 6)).astype("float32"))
        ours.build(x.shape)
        theirs.build(x.shape)
        theirs.set_weights(ours.get_weights())
        for training in (True, True, False):
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(x)
                y_ours, y_theirs = ours(x, training=training), theirs(x, training=training)
                loss_ours = tf.reduce_sum(tf.cast(y_ours, "float32") ** 3)
                loss_theirs = tf.reduce_sum(tf.cast(y_theirs, "float32") ** 3)
            assert y_ours.dtype == y_theirs.dtype
            # Low precision: one rounding step of bfloat16 (7 stored mantissa bits) at the
            # largest output, since the fused kernel and Keras's ops round differently.
            largest = np.abs(np.asarray(y_theirs, "float64")).max()
            tolerance = 1e-5 if policy == "float32" else 2.0**-7 * largest
            assert _difference(y_ours, y_theirs) <= tolerance
            grads_ours = tape.gradient(loss_ours, [x, *ours.trainable_weights])
            grads_theirs = tape.gradient(loss_theirs, [x, *theirs.trainable_weights])
            for g_ours, g_theirs in zip(grads_ours, grads_theirs, strict=True):
                scale = np.abs(np.asarray(g_theirs)).max()
                assert _difference(g_ours, g_theirs) <= _GRADIENT_TOLERANCE[policy] * scale
            assert _difference(ours.moving_mean, theirs.moving_mean) <= 1e-6
            assert _difference(ours.moving_variance, theirs.moving_variance) <= 1e-5
    finally:
        keras.config.set_dtype_policy(previous)


def test_the_training_graph_uses_the_fused_kernel_and_its_gradient():
    layer = kseg.layers.BatchNormalization()
    x = tf.random.normal((2, 5, 5, 4))
    layer.build(x.shape)

    @tf.function
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(layer(inputs, training=True) ** 2)
        return tape.gradient(loss, inputs)

    ops = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
    assert "FusedBatchNormV3" in ops and "FusedBatchNormGradV3" in ops


def test_falls_back_to_keras_for_what_the_kernel_cannot_do():
    rng = np.random.default_rng(6)
    cases = [
        ({"axis": 1}, (2, 3, 4, 5)),  # channels first
        ({}, (4, 6)),  # not an image
        ({"renorm": True}, (2, 4, 4, 3)),
    ]
    for kwargs, shape in cases:
        ours, theirs = _pair(**kwargs)
        x = rng.normal(size=shape).astype("float32")
        ours.build(shape)
        theirs.build(shape)
        theirs.set_weights(ours.get_weights())
        np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), atol=1e-5)
    masked, reference = _pair()
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    mask = rng.uniform(size=(2, 4, 4)) > 0.3
    masked.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(masked.get_weights())
    np.testing.assert_allclose(
        masked(x, training=True, mask=mask), reference(x, training=True, mask=mask), atol=1e-5
    )


def test_a_frozen_layer_normalises_with_its_moving_statistics():
    layer, reference = _pair()
    x = np.random.default_rng(7).normal(3.0, 2.0, size=(2, 4, 4, 3)).astype("float32")
    layer.build(x.shape)
    reference.build(x.shape)
    layer.moving_mean.assign([1.0, 2.0, 3.0])
    reference.set_weights(layer.get_weights())
    layer.trainable = reference.trainable = False
    np.testing.assert_allclose(layer(x, training=True), reference(x, training=True), atol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean, [1.0, 2.0, 3.0])
