"""kseg.distribute: strategy selection, TF_CONFIG checks, and a two-worker run on loopback.

The two-worker test starts this file as two `MultiWorkerMirroredStrategy` processes, each with its
own TF_CONFIG on free loopback ports, and compares them with a single-process run of the same
global batch. The model is two convolutions without batch normalisation: per-replica batch
statistics would otherwise make the distributed step differ from the single-device one by design.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

GLOBAL_BATCH = 4
STEPS = 3
LEARNING_RATE = 0.1


def _data():
    rng = np.random.default_rng(7)
    images = rng.normal(size=(GLOBAL_BATCH * STEPS, 8, 8, 3)).astype("float32")
    masks = rng.integers(0, 3, size=(GLOBAL_BATCH * STEPS, 8, 8)).astype("int32")
    return images, masks


def _train(run_dir, strategy):
    """Trains the two-conv model for STEPS steps of GLOBAL_BATCH under `strategy`."""
    import keras
    import tensorflow as tf

    import kseg.distribute
    import kseg.training

    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((None, None, 3))
        hidden = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
        logits = keras.layers.Conv2D(3, 1)(hidden)
        model = keras.Model(inputs, logits)
        # Every label is valid, so each replica's mean runs over the same number of pixels and
        # the all-reduced gradient is exactly the global-batch mean gradient.
        kseg.training.compile_model(
            model,
            num_classes=3,
            optimizer="sgd",
            learning_rate=LEARNING_RATE,
            momentum=0.0,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[],
            jit_compile=False,
        )
        dataset = kseg.distribute.shard_by_data(
            tf.data.Dataset.from_tensor_slices(_data()).batch(GLOBAL_BATCH)
        )
    history = kseg.training.fit(
        model,
        dataset,
        epochs=2,
        run_dir=kseg.distribute.worker_run_dir(run_dir, strategy),
        tensorboard=False,
        verbose=0,
    )
    return model, history.history["loss"]


def _worker(out_dir):
    import kseg.distribute

    strategy = kseg.distribute.get_strategy("multiworker")
    model, losses = _train(out_dir, strategy)
    saved = kseg.distribute.save_on_chief(model, Path(out_dir) / "model.keras", strategy)
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    np.savez(
        Path(out_dir) / f"worker_{index}.npz",
        losses=np.asarray(losses),
        replicas=strategy.num_replicas_in_sync,
        chief=kseg.distribute.is_chief(strategy),
        saved=saved is not None,
        *[w.numpy() for w in model.weights],
    )


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_match_each_other_and_a_single_worker(tmp_path):
    import tensorflow as tf

    workers = [f"localhost:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        env["CUDA_VISIBLE_DEVICES"] = ""
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for process in processes:
        try:
            output, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail("a multi-worker process did not finish within 120 s")
        assert process.returncode == 0, output[-3000:]

    results = [np.load(tmp_path / f"worker_{index}.npz") for index in range(2)]
    assert [int(r["replicas"]) for r in results] == [2, 2]
    assert [bool(r["chief"]) for r in results] == [True, False]
    assert [bool(r["saved"]) for r in results] == [True, False]
    assert (tmp_path / "model.keras").is_file()
    assert (tmp_path / "backup").is_dir() and (tmp_path / "workers" / "worker_1" / "backup").is_dir()
    assert not (tmp_path / "workers" / "worker_0").exists()
    weights = [[r[f"arr_{i}"] for i in range(4)] for r in results]
    # The all-reduced update is applied identically on both workers: bit-identical weights.
    for first, second in zip(*weights):
        np.testing.assert_array_equal(first, second)

    single_model, single_losses = _train(tmp_path / "single", tf.distribute.get_strategy())
    # One worker sums two half-batch gradients scaled by 1/2 where the single run averages the
    # whole batch; the two orders of float32 summation differ by a few ulps per step (~1e-7
    # relative), which six SGD steps leave far below 1e-5.
    np.testing.assert_allclose(results[0]["losses"], single_losses, rtol=1e-5)
    for distributed, single in zip(weights[0], single_model.weights):
        np.testing.assert_allclose(distributed, single.numpy(), rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    _worker(sys.argv[1])
