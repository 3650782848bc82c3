"""set_batchnorm_momentum reaches nested layers and survives saving."""

import keras
import pytest

import kseg


def test_set_batchnorm_momentum_reaches_nested_layers_and_survives_saving(tmp_path):
    model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny", num_filters=8)
    changed = kseg.training.set_batchnorm_momentum(model, 0.9)
    norms = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    # tiny backbone: 10 conv blocks; ASPP: 1x1, three separable 3x3 (2 BNs each), pooling and
    # projection; decoder: the 1x1 low-level block and two separable 3x3 blocks
    assert changed == len(norms) == 10 + (1 + 3 * 2 + 1 + 1) + (1 + 2 * 2)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert {
        layer.momentum
        for layer in reloaded._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    } == {0.9}
    with pytest.raises(ValueError, match="momentum"):
        kseg.training.set_batchnorm_momentum(model, 1.5)
