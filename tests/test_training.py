import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg import training

NUM_CLASSES = 3


@pytest.fixture(autouse=True)
def _float32_policy():
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def tiny_model(seed=0):
    """A two-convolution segmentation net: RGB [0, 255] in, float32 logits (B, H, W, 3) out."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(
        4,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
    )(x)
    logits = keras.layers.Conv2D(
        NUM_CLASSES,
        1,
        dtype="float32",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
    )(x)
    return keras.Model(inputs, logits)


def tiny_dataset(num_images=6, size=16, batch_size=2):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (num_images, size, size, 3)).astype("float32")
    masks = (images[..., 0] > 127).astype("int32") + (images[..., 1] > 200).astype("int32")
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch_size)


def _one_step_loss(model):
    images = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    masks = np.random.default_rng(2).integers(0, NUM_CLASSES, (2, 16, 16))
    history = model.fit(images, masks, epochs=1, batch_size=2, verbose=0)
    return history.history["loss"][0]


# --- precision -------------------------------------------------------------------------------


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
    monkeypatch.setattr(training, "_gpu_visible", lambda: True)
    monkeypatch.setattr(training, "cpu_supports_bf16", lambda: True)
    assert training.resolve_precision("auto") == "mixed_float16"
    monkeypatch.setattr(training, "_gpu_visible", lambda: False)
    assert training.set_precision("auto") == "mixed_bfloat16"
    assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    monkeypatch.setattr(training, "cpu_supports_bf16", lambda: False)
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
    loss = _one_step_loss(model)
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
    assert math.isfinite(_one_step_loss(model))
    assert model(np.zeros((1, 16, 16, 3), "float32")).dtype == "float32"


# --- schedule --------------------------------------------------------------------------------


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
    _one_step_loss(model)
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


# --- compile ---------------------------------------------------------------------------------


def test_default_loss_ignores_ignore_label():
    model = training.compile_model(tiny_model(), num_classes=NUM_CLASSES, learning_rate=0.01)
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    masks = rng.integers(0, NUM_CLASSES, (2, 8, 8)).astype("int32")
    masks[:, :3] = 255
    logits = model.predict(images, verbose=0).astype("float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = masks != 255
    nll = -np.take_along_axis(log_probs, np.where(valid, masks, 0)[..., None], -1)[..., 0]
    expected = nll[valid].mean()
    results = model.evaluate(images, masks, batch_size=2, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["loss"], expected, rtol=1e-4)
    assert "mean_iou" in results


def test_compile_model_rejects_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer='lbfgs'"):
        training.compile_model(tiny_model(), num_classes=3, optimizer="lbfgs")


def test_jit_compile_flag_reaches_keras():
    model = training.compile_model(tiny_model(), num_classes=NUM_CLASSES, jit_compile=True)
    assert model.jit_compile is True
    assert math.isfinite(_one_step_loss(model))
    auto = training.compile_model(tiny_model(), num_classes=NUM_CLASSES, jit_compile="auto")
    # Keras's "auto" keeps XLA off on CPU-only machines and turns it on with an accelerator.
    assert auto.jit_compile == bool(tf.config.list_physical_devices("GPU"))


# --- callbacks and resumable fit -------------------------------------------------------------


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


def test_set_batchnorm_momentum_reaches_nested_layers_and_survives_saving(tmp_path):
    import kseg

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
