"""Which layers kseg swaps for its faster equivalents, and that weights still load across them."""

import keras
import numpy as np

import kseg
from kseg.layers.fast_equivalents import conv2d, fast_equivalent, has_slower_layers


def test_only_the_exact_keras_classes_are_replaced():
    dilated = keras.layers.Conv2D(2, 3, dilation_rate=(1, 3)).get_config()
    assert fast_equivalent(keras.layers.Conv2D, dilated) is kseg.layers.Conv2D
    assert fast_equivalent(keras.layers.Conv2D, {**dilated, "dilation_rate": 1}) is (
        keras.layers.Conv2D
    )
    batchnorm = keras.layers.BatchNormalization().get_config()
    assert fast_equivalent(keras.layers.BatchNormalization, batchnorm) is (
        kseg.layers.BatchNormalization
    )
    # Subclasses keep their class: their call may compute something else.
    frozen = kseg.backbones.resnet.FrozenBatchNormalization
    assert fast_equivalent(frozen, batchnorm) is frozen
    separable = keras.layers.SeparableConv2D
    assert fast_equivalent(separable, dilated) is separable


def test_conv2d_picks_the_class_by_dilation():
    assert type(conv2d(2, 3, dilation_rate=(1, 2))) is kseg.layers.Conv2D
    assert type(conv2d(2, 3, dilation_rate=1)) is keras.layers.Conv2D


def test_weights_saved_with_keras_layers_load_into_kseg_layers(tmp_path):
    # Weight files key layers by class name: kseg's classes keep Keras's names so files
    # written by either load into the other.
    def build(batchnorm, conv):
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", name="plain")(inputs)
        x = conv(4, 3, dilation_rate=2, padding="same", name="dilated")(x)
        x = batchnorm(name="bn")(x)
        return keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(x))

    keras_model = build(keras.layers.BatchNormalization, keras.layers.Conv2D)
    kseg_model = build(kseg.layers.BatchNormalization, kseg.layers.Conv2D)
    assert not has_slower_layers(kseg_model) and has_slower_layers(keras_model)
    rng = np.random.default_rng(0)
    for variable in keras_model.weights:
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    path = tmp_path / "keras.weights.h5"
    keras_model.save_weights(path)
    kseg_model.load_weights(path)
    x = rng.normal(size=(1, 10, 10, 3)).astype("float32")
    np.testing.assert_allclose(kseg_model(x), keras_model(x), rtol=1e-5, atol=1e-5)
