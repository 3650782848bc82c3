"""BestModel: best.keras follows the monitored value; the patience stop survives a rerun."""

import json

import keras
import numpy as np
import pytest
from training_helpers import NUM_CLASSES, tiny_dataset, tiny_model

from kseg import training


class _ScriptedMetric(keras.callbacks.Callback):
    """Writes a scripted value for `name` into each epoch's logs, and remembers the weights."""

    def __init__(self, name, values):
        super().__init__()
        self.name, self.values, self.weights = name, values, {}

    def on_epoch_end(self, epoch, logs=None):
        logs[self.name] = self.values[epoch]
        self.weights[epoch] = [w.copy() for w in self.model.get_weights()]


def _fit(run_dir, values, *, epochs, patience=None, mode="auto", monitor="val_score"):
    model = training.compile_model(tiny_model(), num_classes=NUM_CLASSES, metrics=[])
    script = _ScriptedMetric(monitor, values)
    history = training.fit(
        model,
        tiny_dataset(),
        epochs=epochs,
        run_dir=run_dir,
        tensorboard=False,
        verbose=0,
        epoch_metrics=[script],
        monitor=monitor,
        mode=mode,
        patience=patience,
    )
    return history, script


def test_best_keras_holds_the_weights_of_the_best_epoch(tmp_path):
    values = [0.2, 0.5, 0.4, float("nan")]  # NaN: an epoch without a measurement
    history, script = _fit(tmp_path, values, epochs=4)
    assert history.epoch == [0, 1, 2, 3]
    saved = keras.saving.load_model(tmp_path / "best.keras").get_weights()
    for got, expected in zip(saved, script.weights[1], strict=True):
        np.testing.assert_array_equal(got, expected)
    state = json.loads((tmp_path / "best.json").read_text())
    assert state == {"monitor": "val_score", "best": 0.5, "best_epoch": 1, "last_epoch": 2}


def test_min_mode_for_losses():
    assert training.BestModel("/tmp/x", "val_loss").mode == "min"
    assert training.BestModel("/tmp/x", "val_mask_AP").mode == "max"
    with pytest.raises(ValueError, match="mode='up'"):
        training.BestModel("/tmp/x", "val_loss", mode="up")


def test_patience_stops_and_a_rerun_stays_stopped_unless_patience_grows(tmp_path, capsys):
    values = [0.5, 0.4, 0.45, 0.3, 0.9, 0.9]
    history, _ = _fit(tmp_path, values, epochs=6, patience=2)
    # Best at epoch 0; epochs 1 and 2 do not improve on it: stop after epoch 2.
    assert history.epoch == [0, 1, 2]
    assert "has not improved for 2 epochs" in capsys.readouterr().out
    again, _ = _fit(tmp_path, values, epochs=6, patience=2)
    assert again.epoch == []
    assert "already stopped" in capsys.readouterr().out
    # More patience continues the same run from epoch 3 (the backup), not from scratch.
    resumed, _ = _fit(tmp_path, values, epochs=6, patience=4)
    assert resumed.epoch == [3, 4, 5]
    assert json.loads((tmp_path / "best.json").read_text())["best_epoch"] == 4
