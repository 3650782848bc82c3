"""FrozenModel against the live model it was made from."""

import keras
import numpy as np
import pytest

import kseg
from kseg.inference.frozen import FrozenModel

SEMANTIC_MODELS = kseg.models.list_models(task="semantic")


def _relative_difference(a, b):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


@pytest.mark.parametrize("name", SEMANTIC_MODELS)
def test_every_registered_model_computes_its_own_outputs_at_any_size(name):
    keras.utils.set_random_seed(3)
    model = kseg.testing.build_small_model(name, 4)
    frozen = FrozenModel(model)
    rng = np.random.default_rng(4)
    for height, width in [(48, 64), (64, 96)]:  # two sizes through the one graph
        images = rng.uniform(0, 255, (2, height, width, 3)).astype("float32")
        assert _relative_difference(frozen(images), model(images, training=False)) < 1e-4


def test_the_graph_reads_no_variables_and_is_a_snapshot():
    model = kseg.models.UNet(num_classes=3, base_filters=4, depth=2, padding="same")
    frozen = FrozenModel(model)
    op_types = {op.type for op in frozen._function.graph.get_operations()}
    assert not op_types & {"ReadVariableOp", "VarHandleOp", "ResourceGather"}
    images = np.random.default_rng(5).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    before = np.asarray(model(images, training=False))
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, weight.dtype))
    np.testing.assert_allclose(frozen(images), before, rtol=1e-5, atol=1e-5)
    assert not np.allclose(model(images, training=False), before)


def test_structured_outputs_keep_their_structure():
    inputs = keras.Input((None, None, 3))
    outputs = {
        "logits": keras.layers.Conv2D(2, 1, name="logits")(inputs),
        "aux": keras.layers.Conv2D(5, 3, padding="same", name="aux")(inputs),
    }
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(6).normal(size=(1, 9, 11, 3)).astype("float32")
    got = FrozenModel(model)(images)
    assert sorted(got) == ["aux", "logits"]
    for key, value in model(images).items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5)


def test_training_mode_is_refused_by_name():
    model = kseg.models.UNet(num_classes=2, base_filters=4, depth=2, padding="same", name="tiny")
    with pytest.raises(ValueError, match="'tiny'.*training=True"):
        FrozenModel(model)(np.zeros((1, 16, 16, 3), "float32"), training=True)


def test_make_predictor_freezes_a_snapshot_unless_told_to_follow_the_model():
    model = kseg.models.UNet(num_classes=3, base_filters=4, depth=2, padding="same")
    images = np.random.default_rng(7).uniform(0, 255, (2, 24, 32, 3)).astype("float32")
    snapshot = kseg.inference.make_predictor(model)
    live = kseg.inference.make_predictor(model, freeze=False, fold_batchnorm=False)
    before = snapshot(images)
    np.testing.assert_array_equal(before, live(images))
    np.testing.assert_array_equal(before, np.argmax(model(images, training=False), -1))
    last = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    bias = np.zeros(last.bias.shape, "float32")
    bias[0] = 1e6  # every pixel becomes class 0 in the live model
    last.bias.assign(bias)
    np.testing.assert_array_equal(snapshot(images), before)
    assert (live(images) == 0).all()
