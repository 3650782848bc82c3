"""Logits and a two-step fit shared by the tests of EM-Adapt, EM-Fixed and their loss."""

import keras
import numpy as np

import kseg


def shifted_logits(seed, batch, height, width, shifts):
    """Random logits whose classes win very unequal shares of the pixels."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, height, width, len(shifts)))
    return (logits + np.asarray(shifts)).astype(np.float32)


def fit_two_steps(loss, x, y):
    model = kseg.testing.build_small_model("fcn8s", num_classes=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert any(changed)
