import keras
import numpy as np
import pytest

import kseg.backbones
from kseg.backbones.tiny import TINY_WIDTHS, TinyBackbone


def test_parameter_count_from_widths():
    # Two bias-free 3x3 convolutions per stage, each followed by batch norm (4 per channel).
    expected, previous = 0, 3
    for width in TINY_WIDTHS:
        expected += 9 * previous * width + 9 * width * width + 2 * 4 * width
        previous = width
    model = TinyBackbone()
    assert model.count_params() == expected
    assert 10_000 < expected < 100_000


def test_stage_outputs_halve_the_size():
    model = TinyBackbone(input_shape=(64, 32, 3))
    for stage, width in enumerate(TINY_WIDTHS, start=1):
        shape = model.get_layer(f"stage{stage}_conv2_relu").output.shape
        assert shape[1:] == (64 >> stage, 32 >> stage, width)


def test_builds_on_a_given_tensor_and_trains():
    inputs = keras.Input((None, None, 1))
    model = TinyBackbone(input_tensor=inputs, widths=(4, 4, 4, 4, 4))
    assert model.input is inputs
    model.compile(optimizer="sgd", loss="mse")
    loss = model.train_on_batch(np.ones((2, 32, 32, 1), "float32"), np.zeros((2, 1, 1, 4)))
    assert np.isfinite(loss)


def test_invalid_widths():
    with pytest.raises(ValueError, match="Received: widths=\\(8, 16\\)"):
        TinyBackbone(widths=(8, 16))


def test_backbone_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    backbone = kseg.backbones.get_backbone("tiny", output_stride=16)
    features = backbone(np.full((1, 32, 32, 3), 128.0, "float32"))
    assert keras.backend.standardize_dtype(features["P4"].dtype) == "bfloat16"
    assert features["P4"].shape == (1, 2, 2, TINY_WIDTHS[-1])
