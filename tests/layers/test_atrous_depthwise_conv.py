"""kseg's DepthwiseConv2D against Keras's own dilated DepthwiseConv2D, and where builders use it."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from native_dilation_checks import (
    assert_bfloat16_runs_natively,
    assert_outputs_and_gradients_match,
    assert_round_trips,
    assert_runs_keras_path,
    build_with_same_weights,
    graph_op_types,
)

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
    x = tf.constant(np.random.default_rng(11).normal(size=(2, 33, 29, 5)).astype("float32"))
    assert_outputs_and_gradients_match(*_pair(rate, padding, multiplier, kernel_size), x)


def test_the_forward_graph_runs_one_native_op_without_the_rewrite():
    x = tf.zeros((1, 32, 32, 3))
    layer, reference = _pair(12)
    build_with_same_weights(layer, reference, x.shape)
    assert "SpaceToBatchND" in graph_op_types(reference, x)
    ours = graph_op_types(layer, x)
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
    layer, reference = _pair(
        case.get("rate", 2), strides=case.get("strides", 1), dtype=case.get("dtype")
    )
    assert_runs_keras_path(layer, reference, case.get("dtype", "float32"))


def test_bfloat16_runs_natively_and_matches_float32():
    assert_bfloat16_runs_natively(_pair(6, dtype="bfloat16")[0])


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
    layer = depthwise_conv2d(3, dilation_rate=2, padding="same")
    assert type(layer) is NativeDilationDepthwiseConv2D
    assert_round_trips(layer, tmp_path / "atrous_depthwise.keras")


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
    assert "SpaceToBatchND" not in graph_op_types(lambda t: folded(t, training=False), x)
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
