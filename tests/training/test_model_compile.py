"""compile_model: the ignore-aware default loss, optimizer names and the XLA flag."""

import math

import numpy as np
import pytest
import tensorflow as tf
from training_helpers import NUM_CLASSES, one_step_loss, tiny_model

from kseg import training


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
    assert math.isfinite(one_step_loss(model))
    auto = training.compile_model(tiny_model(), num_classes=NUM_CLASSES, jit_compile="auto")
    # Keras's "auto" keeps XLA off on CPU-only machines and turns it on with an accelerator.
    assert auto.jit_compile == bool(tf.config.list_physical_devices("GPU"))
