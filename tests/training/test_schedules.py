"""The poly learning-rate schedule against its formula, with warm-up, and through serialisation."""

import json

import keras
import numpy as np
import pytest
from training_helpers import NUM_CLASSES, one_step_loss, tiny_model

from kseg import training


@pytest.mark.parametrize("step", [0, 1, 37, 99, 100, 250])
def test_poly_schedule_matches_formula(step):
    schedule = training.poly_schedule(0.01, decay_steps=100)
    expected = 0.01 * (1 - min(step, 100) / 100) ** 0.9
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-9)


def test_poly_schedule_with_warmup_and_end_rate():
    lr, warmup, decay, end = 0.02, 10, 50, 1e-4
    schedule = training.poly_schedule(lr, decay, end_learning_rate=end, warmup_steps=warmup)
    for step in range(0, 80, 3):
        if step < warmup:
            expected = lr * step / warmup
        else:
            t = min(step - warmup, decay)
            expected = (lr - end) * (1 - t / decay) ** 0.9 + end
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("warmup_steps", [0, 5])
def test_poly_schedule_serializes(warmup_steps):
    schedule = training.poly_schedule(
        0.01, 40, power=0.8, end_learning_rate=1e-3, warmup_steps=warmup_steps
    )
    config = keras.optimizers.schedules.serialize(schedule)
    restored = keras.optimizers.schedules.deserialize(json.loads(json.dumps(config)))
    assert type(restored) is type(schedule)
    for step in (0, 3, 20, 60):
        np.testing.assert_allclose(float(restored(step)), float(schedule(step)), rtol=1e-6)


def test_poly_schedule_survives_keras_file(tmp_path):
    model = training.compile_model(
        tiny_model(),
        num_classes=NUM_CLASSES,
        learning_rate=training.poly_schedule(0.01, 40, warmup_steps=4),
    )
    one_step_loss(model)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.optimizer.get_config()["learning_rate"]["registered_name"] == (
        "kseg>WarmupPolynomialDecay"
    )
    # One step into a 4-step warm-up to 0.01.
    assert int(restored.optimizer.iterations.numpy()) == 1
    assert float(restored.optimizer.learning_rate) == pytest.approx(0.0025)


def test_poly_schedule_rejects_bad_steps():
    with pytest.raises(ValueError, match="decay_steps=0"):
        training.poly_schedule(0.01, 0)
    with pytest.raises(ValueError, match="warmup_steps=-1"):
        training.poly_schedule(0.01, 10, warmup_steps=-1)
