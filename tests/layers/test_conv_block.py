"""ConvBNReLU against an explicit convolution, batch normalisation and ReLU."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.layers import ConvBNReLU
from kseg.testing import run_layer_test

EPSILON = 1e-5


def _randomise(layer, rng):
    """Random kernels and BN statistics, so the comparison covers every weight."""
    for bn in [layer.bn] + ([layer.depthwise_bn] if layer.separable else []):
        channels = bn.gamma.shape[0]
        bn.set_weights(
            [
                rng.uniform(0.5, 1.5, channels),
                rng.normal(size=channels),
                rng.normal(size=channels),
                rng.uniform(0.5, 2.0, channels),
            ]
        )
    for conv in [layer.conv] + ([layer.depthwise] if layer.separable else []):
        conv.set_weights([rng.normal(size=w.shape) for w in conv.get_weights()])


def _batch_norm(x, bn):
    gamma, beta, mean, variance = (np.asarray(w) for w in bn.get_weights())
    return (x - mean) / np.sqrt(variance + EPSILON) * gamma + beta


@pytest.mark.parametrize(("kernel_size", "dilation"), [(3, 1), (3, 2), (1, 1), (5, 3)])
def test_dense_block_is_conv_then_bn_then_relu(kernel_size, dilation):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 10, 4)).astype("float32")
    layer = ConvBNReLU(6, kernel_size, dilation_rate=dilation)
    layer(x)
    _randomise(layer, rng)
    (kernel,) = layer.conv.get_weights()
    conv = tf.nn.conv2d(x, kernel, strides=1, padding="SAME", dilations=dilation).numpy()
    expected = np.maximum(_batch_norm(conv, layer.bn), 0)
    np.testing.assert_allclose(layer(x, training=False), expected, rtol=1e-4, atol=1e-4)
    assert layer.conv.bias is None


def test_separable_block_is_depthwise_bn_relu_then_pointwise_bn_relu():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 8, 7, 3)).astype("float32")
    layer = ConvBNReLU(5, 3, dilation_rate=2, separable=True)
    layer(x)
    _randomise(layer, rng)
    (depthwise,) = layer.depthwise.get_weights()
    (pointwise,) = layer.conv.get_weights()
    spatial = tf.nn.depthwise_conv2d(
        x, depthwise, strides=[1, 1, 1, 1], padding="SAME", dilations=[2, 2]
    ).numpy()
    spatial = np.maximum(_batch_norm(spatial, layer.depthwise_bn), 0)
    mixed = np.einsum("bhwc,cd->bhwd", spatial, pointwise[0, 0])
    expected = np.maximum(_batch_norm(mixed, layer.bn), 0)
    np.testing.assert_allclose(layer(x, training=False), expected, rtol=1e-4, atol=1e-4)


def test_without_activation_negative_values_stay():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 6, 6, 2)).astype("float32")
    layer = ConvBNReLU(4, 3, use_activation=False)
    layer(x)
    _randomise(layer, rng)
    (kernel,) = layer.conv.get_weights()
    conv = tf.nn.conv2d(x, kernel, strides=1, padding="SAME").numpy()
    out = np.asarray(layer(x, training=False))
    np.testing.assert_allclose(out, _batch_norm(conv, layer.bn), rtol=1e-4, atol=1e-4)
    assert out.min() < 0


def test_training_normalises_with_the_batch_statistics():
    x = np.random.default_rng(3).normal(3.0, 2.0, size=(4, 8, 8, 3)).astype("float32")
    layer = ConvBNReLU(6, 3, use_activation=False)
    out = np.asarray(layer(x, training=True))
    # gamma = 1 and beta = 0 at the start: each channel has mean 0 and variance 1 over the batch.
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(out.var(axis=(0, 1, 2)), 1, rtol=1e-3)


def test_a_1x1_kernel_is_never_separable():
    layer = ConvBNReLU(4, 1, separable=True)
    assert not layer.separable and not hasattr(layer, "depthwise")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filters": 8, "kernel_size": 3, "dilation_rate": 2},
        {"filters": 8, "kernel_size": 3, "separable": True, "batchnorm_momentum": 0.9},
        {"filters": 4, "kernel_size": 1, "use_activation": False},
    ],
)
def test_layer_contract(kwargs):
    out = run_layer_test(ConvBNReLU, kwargs, (2, 9, 11, 4), expected_channels=kwargs["filters"])
    if kwargs.get("use_activation", True):
        assert out.min() >= 0


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"filters": 0}, "filters=0"),
        ({"filters": 4, "kernel_size": 0}, "kernel_size=0"),
        ({"filters": 4, "dilation_rate": -1}, "dilation_rate=-1"),
    ],
)
def test_bad_arguments_are_named(kwargs, named):
    with pytest.raises(ValueError, match=named):
        ConvBNReLU(**kwargs)


def test_reloaded_block_keeps_its_momentum():
    layer = ConvBNReLU(4, 3, batchnorm_momentum=0.5)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.get_config() == layer.get_config() and clone.bn.momentum == 0.5
