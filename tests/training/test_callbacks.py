"""make_callbacks' run directory and TimeLimit's stop."""

import keras
import pytest
from training_helpers import NUM_CLASSES, tiny_dataset, tiny_model

from kseg import training


def test_make_callbacks_layout(tmp_path):
    callbacks = training.make_callbacks(tmp_path / "run", checkpoint_format="weights")
    kinds = [type(c) for c in callbacks]
    assert issubclass(kinds[0], keras.callbacks.BackupAndRestore)
    assert keras.callbacks.ModelCheckpoint in kinds
    assert keras.callbacks.CSVLogger in kinds
    checkpoint = callbacks[kinds.index(keras.callbacks.ModelCheckpoint)]
    assert checkpoint.filepath.endswith("epoch_{epoch:03d}.weights.h5")
    with pytest.raises(ValueError, match="checkpoint_format='h5'"):
        training.make_callbacks(tmp_path / "run", checkpoint_format="h5")


@pytest.mark.parametrize("minutes, expected_epochs", [(1e-9, 1), (0, 4), (60, 4)])
def test_time_limit_stops_after_the_epoch_that_crosses_it(tmp_path, minutes, expected_epochs):
    model = tiny_model()
    training.compile_model(model, num_classes=NUM_CLASSES, metrics=[])
    limit = training.TimeLimit(minutes)
    history = training.fit(
        model,
        tiny_dataset(),
        epochs=4,
        run_dir=tmp_path,
        callbacks=[limit],
        tensorboard=False,
        verbose=0,
    )
    assert len(history.epoch) == expected_epochs
    assert limit.stopped_epoch == (0 if expected_epochs == 1 else None)


def test_keep_checkpoints_leaves_only_the_newest(tmp_path):
    model = tiny_model()
    training.compile_model(model, num_classes=NUM_CLASSES, metrics=[])
    training.fit(
        model,
        tiny_dataset(),
        epochs=3,
        run_dir=tmp_path,
        tensorboard=False,
        verbose=0,
        keep_checkpoints=1,
    )
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch_003.keras"]
    assert training.latest_checkpoint(tmp_path).name == "epoch_003.keras"
    with pytest.raises(ValueError, match="keep_checkpoints"):
        training.make_callbacks(tmp_path, keep_checkpoints=0)
