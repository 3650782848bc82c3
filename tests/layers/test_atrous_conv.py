"""NativeDilationConv2D against Keras's own dilated Conv2D, and where the builders use it."""

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


@pytest.mark.parametrize("rate", [2, 3, (2, 4), 12])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_outputs_and_gradients_equal_keras_dilated_conv(rate, padding):
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(2, 29, 31, 4)).astype("float32"))
    assert_outputs_and_gradients_match(*_pair(rate, padding, activation="relu"), x)


def test_the_dilated_graph_has_no_space_to_batch_rewrite():
    x = tf.zeros((1, 32, 32, 3))
    layer, reference = _pair(6)
    build_with_same_weights(layer, reference, x.shape)
    assert "SpaceToBatchND" in graph_op_types(reference, x)
    ours = graph_op_types(layer, x)
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
    layer, reference = _pair(
        case.get("rate", 2), strides=case.get("strides", 1), dtype=case.get("dtype")
    )
    assert_runs_keras_path(layer, reference, case.get("dtype", "float32"))


def test_bfloat16_runs_natively_and_matches_float32():
    assert_bfloat16_runs_natively(_pair(3, dtype="bfloat16")[0])


def test_round_trips_through_a_keras_file(tmp_path):
    layer = conv2d(4, 3, dilation_rate=2, padding="same")
    assert type(layer) is NativeDilationConv2D
    assert_round_trips(layer, tmp_path / "atrous.keras")


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
    assert "SpaceToBatchND" not in graph_op_types(lambda t: model(t, training=False), x)

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
