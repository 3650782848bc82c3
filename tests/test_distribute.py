"""kseg.distribute: strategy selection, TF_CONFIG checks, and a two-worker run on loopback.

The two-worker test starts this file as two `MultiWorkerMirroredStrategy` processes, each with its
own TF_CONFIG on free loopback ports, and compares them with a single-process run of the same
global batch. The model is two convolutions without batch normalisation: per-replica batch
statistics would otherwise make the distributed step differ from the single-device one by design.
"""

import json
import os
import re
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


def _dataset():
    import tensorflow as tf

    import kseg.distribute

    return kseg.distribute.shard_by_data(
        tf.data.Dataset.from_tensor_slices(_data()).batch(GLOBAL_BATCH)
    )


def _train(run_dir, strategy):
    """Trains the two-conv model for STEPS steps of GLOBAL_BATCH under `strategy`."""
    import keras

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
        dataset = _dataset()
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
    first_images, _ = next(iter(strategy.experimental_distribute_dataset(_dataset())))
    first_images = strategy.experimental_local_results(first_images)[0].numpy()
    np.savez(
        Path(out_dir) / f"worker_{index}.npz",
        losses=np.asarray(losses),
        replicas=strategy.num_replicas_in_sync,
        chief=kseg.distribute.is_chief(strategy),
        saved=saved is not None,
        first_images=first_images,
        **{f"weight_{i}": w.numpy() for i, w in enumerate(model.weights)},
    )


class _Replicas:
    """Only what the batch and learning-rate rules read from a strategy: its replica count."""

    def __init__(self, count):
        self.num_replicas_in_sync = count


@pytest.mark.parametrize(
    "text, named",
    [
        ("", "TF_CONFIG is not set"),
        ("{not json", "not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "'worker' (or 'chief') address list"),
        (
            '{"cluster": {"worker": "localhost:1"}, "task": {"type": "worker"}}',
            "list of 'host:port'",
        ),
        ('{"cluster": {"worker": ["localhost:1"]}}', "task=None"),
        ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}', "'ps'"),
        (
            '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}',
            "index=1",
        ),
    ],
)
def test_bad_tf_config_is_explained(text, named, monkeypatch):
    from kseg.distribute import DistributionError, get_strategy

    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(DistributionError, match=re.escape(named)):
        get_strategy("multiworker")


def test_good_tf_config_is_returned_decoded():
    from kseg.distribute import parse_tf_config

    text = json.dumps(
        {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    )
    assert parse_tf_config(text) == json.loads(text)


def test_default_and_mirrored_strategies_on_one_cpu():
    import tensorflow as tf

    from kseg.distribute import get_strategy, is_chief, worker_run_dir

    assert get_strategy("default") is tf.distribute.get_strategy()
    mirrored = get_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 1
    assert is_chief(mirrored) and worker_run_dir("runs/x", mirrored) == Path("runs/x")


def test_unknown_strategy_lists_the_choices():
    from kseg.distribute import DistributionError, get_strategy

    with pytest.raises(DistributionError, match="mirrored.*Received: name='horovod'"):
        get_strategy("horovod")


def test_global_batch_splits_evenly_and_learning_rate_scales_linearly():
    from kseg.distribute import DistributionError, per_replica_batch_size, scale_learning_rate

    assert per_replica_batch_size(12, _Replicas(4)) == 3
    assert scale_learning_rate(0.01, _Replicas(4)) == pytest.approx(0.04)
    for batch in (6, 2):
        with pytest.raises(
            DistributionError, match=f"multiple of the 4 replicas.*batch_size={batch}"
        ):
            per_replica_batch_size(batch, _Replicas(4))


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
    assert (tmp_path / "backup").is_dir() and (
        tmp_path / "workers" / "worker_1" / "backup"
    ).is_dir()
    assert not (tmp_path / "workers" / "worker_0").exists()
    # Each worker's replica gets its half of every global batch, worker 0 the first half.
    images, _ = _data()
    half = GLOBAL_BATCH // 2
    np.testing.assert_array_equal(results[0]["first_images"], images[:half])
    np.testing.assert_array_equal(results[1]["first_images"], images[half:GLOBAL_BATCH])
    weights = [[r[f"weight_{i}"] for i in range(4)] for r in results]
    # The all-reduced update is applied identically on both workers: bit-identical weights.
    for first, second in zip(*weights):
        np.testing.assert_array_equal(first, second)

    single_model, single_losses = _train(tmp_path / "single", tf.distribute.get_strategy())
    # One worker sums two half-batch gradients scaled by 1/2 where the single run averages the
    # whole batch; the two orders of float32 summation differ by a few ulps per step (~1e-7
    # relative), which six SGD steps leave far below 1e-5 (measured: 2.5e-7 on the weights).
    np.testing.assert_allclose(results[0]["losses"], single_losses, rtol=1e-5)
    np.testing.assert_array_equal(results[0]["losses"], results[1]["losses"])
    assert single_losses[1] < single_losses[0]  # the six steps did train
    for distributed, single in zip(weights[0], single_model.weights):
        np.testing.assert_allclose(distributed, single.numpy(), rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    _worker(sys.argv[1])
