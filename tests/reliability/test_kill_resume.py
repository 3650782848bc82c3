"""A seeded `kseg.training.fit` run killed by SIGKILL and restarted ends as an unkilled run ends.

The training command is this file run as a script: `python test_kill_resume.py RUN_DIR ARM_FILE`.
While `ARM_FILE` exists, the run deletes it when it reaches the global step written in it and
waits to be killed, so the test kills the process at an exact step; the restart is the very same
command (the arm file is gone by then). The uninterrupted reference runs the same command
without an arm file. Resumption restores the epoch-boundary backup, so the work lost is the
unfinished epoch, and because the run is seeded and the data are not shuffled, the remaining
epochs replay bit for bit: the test requires identical final weights and identical logged metrics.
"""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

NUM_CLASSES = 3
EPOCHS = 4
STEPS_PER_EPOCH = 3
SEED = 1234


def seeded_model():
    """Conv, batch norm and a 1x1 classifier: enough to carry optimizer and moving-average state."""
    import keras

    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    logits = keras.layers.Conv2D(NUM_CLASSES, 1)(x)
    return keras.Model(inputs, logits)


def seeded_data():
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    images = rng.uniform(0, 255, (2 * STEPS_PER_EPOCH, 16, 16, 3)).astype("float32")
    masks = (images[..., 0] > 127).astype("int32") + (images[..., 2] > 200).astype("int32")
    masks[:, :2] = 255  # an ignored band, as padding would leave
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(2)


def train(run_dir, arm_file):
    """The training command: seeded model and data, `kseg.training.fit` resuming from `run_dir`."""
    import keras

    from kseg import training

    class WaitToBeKilled(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if not arm_file.exists():
                return
            kill_step = int(arm_file.read_text())
            if int(self.model.optimizer.iterations.numpy()) == kill_step:
                arm_file.unlink()
                print(f"waiting at step {kill_step}", flush=True)
                time.sleep(600)

    model = training.compile_model(
        seeded_model(),
        num_classes=NUM_CLASSES,
        optimizer="adam",
        learning_rate=training.poly_schedule(0.01, decay_steps=EPOCHS * STEPS_PER_EPOCH),
    )
    data = seeded_data()
    training.fit(
        model,
        data,
        data,
        epochs=EPOCHS,
        run_dir=run_dir,
        tensorboard=False,
        verbose=0,
        callbacks=[WaitToBeKilled()],
    )
    np.savez(run_dir / "final_weights.npz", *model.get_weights())


def _command(run_dir, arm_file):
    return [sys.executable, str(Path(__file__).resolve()), str(run_dir), str(arm_file)]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def _start(run_dir, arm_file):
    return subprocess.Popen(
        _command(run_dir, arm_file), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _finish(process):
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()[-3000:]


def _history(run_dir):
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def _final_weights(run_dir):
    with np.load(run_dir / "final_weights.npz") as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _kill_at(process, arm_file, kill_step):
    deadline = time.monotonic() + 300
    while arm_file.exists():
        if process.poll() is not None:
            stderr = process.stderr.read().decode()[-2000:]
            pytest.fail(f"training ended before step {kill_step}: {stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"training never reached step {kill_step}")
        time.sleep(0.1)
    # The arm file goes just before the wait message: wait for the message so the kill lands
    # inside the step, not while the callback is still deciding.
    assert process.stdout.readline().decode().strip() == f"waiting at step {kill_step}"
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_sigkill_at_a_random_step_then_the_same_command_matches_an_uninterrupted_run(tmp_path):
    # The last step is excluded: a kill there would leave nothing to resume after the backup.
    kill_step = random.Random(SEED).randint(1, EPOCHS * STEPS_PER_EPOCH - 1)
    killed_epoch = (kill_step - 1) // STEPS_PER_EPOCH
    run_dir, arm_file = tmp_path / "killed", tmp_path / "arm"
    arm_file.write_text(str(kill_step))
    reference_dir = tmp_path / "reference"
    # The uninterrupted reference runs alongside: the runs share nothing but the seed.
    started = [_start(reference_dir, tmp_path / "never-armed"), _start(run_dir, arm_file)]
    reference, killed = started
    try:
        _kill_at(killed, arm_file, kill_step)
        assert killed.returncode == -signal.SIGKILL
        assert not (run_dir / "final_weights.npz").exists()
        logged_before_kill = [int(row["epoch"]) for row in _history(run_dir)]
        assert logged_before_kill == list(range(killed_epoch))

        started.append(_start(run_dir, arm_file))
        _finish(started[-1])
        _finish(reference)
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()

    resumed, uninterrupted = _history(run_dir), _history(reference_dir)
    # Each epoch logged once: the restart redid the killed (unfinished) epoch and nothing earlier.
    assert [int(row["epoch"]) for row in resumed] == list(range(EPOCHS))
    assert resumed[-1] == uninterrupted[-1]
    weights = zip(_final_weights(run_dir), _final_weights(reference_dir), strict=True)
    for got, expected in weights:
        np.testing.assert_array_equal(got, expected)


if __name__ == "__main__":
    train(Path(sys.argv[1]), Path(sys.argv[2]))
