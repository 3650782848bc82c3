"""The fast-layer copy of networks kseg does not build itself (keras.applications)."""

import keras
import numpy as np

import kseg
from kseg.backbones.rebuild import with_fast_layers


def test_a_keras_applications_backbone_gets_kseg_layers_and_computes_the_same():
    inputs = keras.Input((64, 64, 3))
    network = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_tensor=inputs, alpha=0.35
    )
    rng = np.random.default_rng(0)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, variance = layer.moving_mean, layer.moving_variance
            mean.assign(rng.normal(0, 0.5, mean.shape).astype("float32"))
            variance.assign(rng.uniform(0.5, 2.0, variance.shape).astype("float32"))
    fast = with_fast_layers(network)
    batchnorms = [layer for layer in fast.layers if "BatchNormalization" in type(layer).__name__]
    assert batchnorms and all(type(b) is kseg.layers.BatchNormalization for b in batchnorms)
    x = rng.uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(fast(x), network(x), rtol=1e-4, atol=1e-4)
    # Batch statistics of 2x2 maps at the bottom of 52 normalisations amplify float rounding.
    reference = np.asarray(network(x, training=True))
    difference = np.abs(np.asarray(fast(x, training=True)) - reference).max()
    assert difference <= 1e-3 * np.abs(reference).max()
    assert with_fast_layers(fast) is fast  # nothing left to replace: no copy


def test_get_backbone_builds_keras_applications_networks_with_kseg_layers():
    backbone = kseg.backbones.get_backbone("resnet50", input_shape=(64, 64, 3), output_stride=16)
    kinds = {type(layer) for layer in backbone.layers}
    assert kseg.layers.BatchNormalization in kinds and keras.layers.BatchNormalization not in kinds
    dilated = [layer for layer in backbone.layers if getattr(layer, "dilation_rate", (1,))[0] > 1]
    assert dilated and all(type(layer) is kseg.layers.Conv2D for layer in dilated)
