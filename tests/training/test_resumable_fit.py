"""fit resumes a run after an exception or a SIGKILL mid-epoch; a finished run trains nothing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from training_helpers import NUM_CLASSES, tiny_dataset, tiny_model

from kseg import training


def test_fit_requires_compiled_model(tmp_path):
    with pytest.raises(ValueError, match="not compiled"):
        training.fit(tiny_model(), tiny_dataset(), epochs=1, run_dir=tmp_path)


class _CrashAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.crash_epoch, self.crash_batch, self.epoch = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (self.crash_epoch, self.crash_batch):
            raise RuntimeError("simulated crash")


class _HangAt(_CrashAt):
    def __init__(self, epoch, batch, marker):
        super().__init__(epoch, batch)
        self.marker = marker

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (self.crash_epoch, self.crash_batch):
            Path(self.marker).write_text("waiting to be killed")
            time.sleep(600)


class _RestartProbe(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.first_epoch = None

    def on_train_begin(self, logs=None):
        self.weights = [w.copy() for w in self.model.get_weights()]
        self.iterations = int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is None:
            self.first_epoch = epoch


def _compiled(seed):
    return training.compile_model(
        tiny_model(seed),
        num_classes=NUM_CLASSES,
        optimizer="adam",
        learning_rate=training.poly_schedule(0.01, decay_steps=12),
    )


def _assert_resumed(run_dir, crashed_epoch, epochs=4, steps=3):
    model = _compiled(seed=7)
    fresh = [w.copy() for w in model.get_weights()]
    probe = _RestartProbe()
    history = training.fit(
        model,
        tiny_dataset(),
        tiny_dataset(),
        epochs=epochs,
        run_dir=run_dir,
        tensorboard=False,
        verbose=0,
        callbacks=[probe],
    )
    assert probe.first_epoch == crashed_epoch > 0
    assert history.epoch == list(range(crashed_epoch, epochs))
    checkpointed = keras.saving.load_model(
        run_dir / "checkpoints" / f"epoch_{crashed_epoch:03d}.keras"
    )
    for restored, saved, initial in zip(probe.weights, checkpointed.get_weights(), fresh):
        np.testing.assert_array_equal(restored, saved)
        assert not np.array_equal(restored, initial)
    assert probe.iterations == crashed_epoch * steps
    assert int(model.optimizer.iterations.numpy()) == epochs * steps
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == [f"epoch_{e:03d}.keras" for e in range(1, epochs + 1)]
    assert training.latest_checkpoint(run_dir).name == f"epoch_{epochs:03d}.keras"
    rows = (run_dir / "history.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(epochs))
    return model


def test_fit_resumes_after_exception_mid_epoch(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        training.fit(
            _compiled(seed=0),
            tiny_dataset(),
            tiny_dataset(),
            epochs=4,
            run_dir=run_dir,
            tensorboard=False,
            verbose=0,
            callbacks=[_CrashAt(epoch=2, batch=1)],
        )
    model = _assert_resumed(run_dir, crashed_epoch=2)

    # Rerunning a finished run trains nothing and leaves the weights alone.
    final = model.get_weights()
    again = _compiled(seed=11)
    history = training.fit(
        again, tiny_dataset(), epochs=4, run_dir=run_dir, tensorboard=False, verbose=0
    )
    assert history.epoch == []
    for a, b in zip(again.get_weights(), final):
        np.testing.assert_array_equal(a, b)


def test_fit_resumes_after_sigkill(tmp_path):
    run_dir = tmp_path / "run"
    marker = tmp_path / "hanging"
    script = tmp_path / "train.py"
    script.write_text(
        "import importlib.util, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"spec = importlib.util.spec_from_file_location('helpers', {str(Path(__file__))!r})\n"
        "helpers = importlib.util.module_from_spec(spec); spec.loader.exec_module(helpers)\n"
        "data = helpers.tiny_dataset()\n"
        "helpers.training.fit(helpers._compiled(seed=0), data, data,\n"
        f"    epochs=4, run_dir=helpers.Path({str(run_dir)!r}), tensorboard=False, verbose=0,\n"
        f"    callbacks=[helpers._HangAt(epoch=1, batch=1, marker={str(marker)!r})])\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            if process.poll() is not None:
                pytest.fail(
                    f"training script ended early: {process.stderr.read().decode()[-2000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail("training script never reached the kill point")
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    _assert_resumed(run_dir, crashed_epoch=1)


def test_auto_verbosity_prints_one_plain_line_per_epoch_when_not_a_terminal(tmp_path, capsys):
    model = training.compile_model(tiny_model(), num_classes=NUM_CLASSES, metrics=[])
    training.fit(model, tiny_dataset(), epochs=2, run_dir=tmp_path, tensorboard=False)
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\r" not in printed and "━" not in printed
    epoch_lines = [line for line in printed.splitlines() if line.startswith("3/3 - ")]
    assert len(epoch_lines) == 2 and all(" - loss: " in line for line in epoch_lines)
