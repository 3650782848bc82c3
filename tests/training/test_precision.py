"""Precision policies: hardware detection, the auto choice, and training under mixed precision."""

import math

import keras
import numpy as np
import pytest
from training_helpers import NUM_CLASSES, one_step_loss, tiny_model

from kseg import training
from kseg.training import precision


def test_cpu_supports_bf16_reads_flags(tmp_path):
    with_bf16 = tmp_path / "bf16"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    with_amx = tmp_path / "amx"
    with_amx.write_text("flags\t\t: fpu amx_tile amx_bf16\n")
    without = tmp_path / "plain"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\nbugs\t: avx512_bf16\n")
    # AVX512_BF16 without AMX runs bf16 convolutions slower than float32: not worth it.
    assert not training.cpu_supports_bf16(with_bf16)
    assert training.cpu_supports_bf16(with_amx)
    assert not training.cpu_supports_bf16(without)
    assert not training.cpu_supports_bf16(tmp_path / "missing")


def test_auto_precision_picks_by_hardware(monkeypatch):
    monkeypatch.setattr(precision, "_gpu_visible", lambda: True)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert training.resolve_precision("auto") == "mixed_float16"
    monkeypatch.setattr(precision, "_gpu_visible", lambda: False)
    assert training.set_precision("auto") == "mixed_bfloat16"
    assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert training.set_precision("auto") == "float32"
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_set_precision_rejects_unknown_policy():
    with pytest.raises(ValueError, match="policy='float8'"):
        training.set_precision("float8")


def test_mixed_float16_uses_dynamic_loss_scaling():
    assert training.set_precision("mixed_float16") == "mixed_float16"
    model = training.compile_model(tiny_model(), num_classes=NUM_CLASSES, learning_rate=0.01)
    conv = model.layers[2]
    assert conv.kernel.dtype == "float32"
    assert conv.compute_dtype == "float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, keras.optimizers.SGD)
    loss = one_step_loss(model)
    assert math.isfinite(loss)
    scale = float(model.optimizer.dynamic_scale.numpy())
    assert math.isfinite(scale) and scale > 1
    assert model(np.zeros((1, 16, 16, 3), "float32")).dtype == "float32"


def test_mixed_bfloat16_trains_without_loss_scaling():
    training.set_precision("mixed_bfloat16")
    model = training.compile_model(tiny_model(), num_classes=NUM_CLASSES, learning_rate=0.01)
    conv = model.layers[2]
    assert conv.kernel.dtype == "float32"
    assert conv.compute_dtype == "bfloat16"
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert math.isfinite(one_step_loss(model))
    assert model(np.zeros((1, 16, 16, 3), "float32")).dtype == "float32"
