"""Training on several devices or machines through `tf.distribute`.

kseg has no distribution scheme of its own: it picks a `tf.distribute` strategy by name and
builds the model, its optimizer and the datasets inside `strategy.scope()`, after which Keras's
`Model.fit` runs each step on every replica and all-reduces the gradients.

Batch size and learning rate follow the "global batch" convention of `tf.distribute`: the batch
size of the `tf.data` pipeline is the number of examples per optimizer step summed over every
replica, and each replica sees `global_batch // num_replicas` of them. Keras divides each
replica's mean loss by the number of replicas, so the summed gradient equals the gradient of the
mean loss over the global batch; with the same global batch, one step on N replicas updates the
weights as one step on one device does (up to float rounding and per-replica batch normalisation
statistics). When the global batch grows with the number of machines, Goyal et al. ("Accurate,
Large Minibatch SGD: Training ImageNet in 1 Hour", 2017) scale the learning rate linearly with it
(`scale_learning_rate`), ideally with a warm-up (`kseg.training.poly_schedule(warmup_steps=...)`).

Under `MultiWorkerMirroredStrategy` every worker runs the same program; only the chief (task
"chief", or worker 0 when there is no chief) writes the run's artefacts, the others write to a
private folder (`worker_run_dir`), the pattern of the Keras multi-worker tutorial.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


class DistributionError(ValueError):
    """A strategy cannot be set up: unknown name, bad TF_CONFIG, no TPU, indivisible batch."""


def parse_tf_config(text=None):
    """Read and check the TF_CONFIG cluster description used by `MultiWorkerMirroredStrategy`.

    TF_CONFIG is JSON such as `{"cluster": {"worker": ["host1:12345", "host2:12345"]},
    "task": {"type": "worker", "index": 0}}`, set differently on each machine only in
    `task.index` (see the `tf.distribute.cluster_resolver.TFConfigClusterResolver` docs).

    Args:
        text: the JSON text; None reads the TF_CONFIG environment variable.

    Returns:
        The decoded dict.

    Raises:
        DistributionError: TF_CONFIG is unset, not JSON, or lacks a worker list or a valid task.

    Example:
        >>> config = kseg.distribute.parse_tf_config(
        ...     '{"cluster": {"worker": ["localhost:2222"]}, '
        ...     '"task": {"type": "worker", "index": 0}}'
        ... )
        >>> config["task"]["index"]
        0
    """
    if text is None:
        text = os.environ.get("TF_CONFIG")
    if not text:
        raise DistributionError(
            "--strategy multiworker needs the TF_CONFIG environment variable describing the "
            'cluster, e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\' (index differs per machine). '
            "Received: TF_CONFIG is not set"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise DistributionError(
            f"TF_CONFIG is not valid JSON ({error}). Received: {text!r}"
        ) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not (cluster.get("worker") or cluster.get("chief")):
        raise DistributionError(
            "TF_CONFIG needs a 'cluster' with a 'worker' (or 'chief') address list. "
            f"Received: {text!r}"
        )
    for role, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise DistributionError(
                f"TF_CONFIG cluster[{role!r}] must be a list of 'host:port' strings. "
                f"Received: {addresses!r}"
            )
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise DistributionError(
            "TF_CONFIG needs a 'task' whose 'type' is one of the cluster roles "
            f"{sorted(cluster)}. Received: task={task!r}"
        )
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise DistributionError(
            f"TF_CONFIG task index must be in [0, {len(cluster[task['type']])}) for "
            f"type {task['type']!r}. Received: index={index!r}"
        )
    return config


def get_strategy(name="default"):
    """Create the `tf.distribute` strategy called `name`.

    Args:
        name: "default" (the current strategy, one device), "mirrored" (`MirroredStrategy`: all
            local GPUs, or the CPU), "multiworker" (`MultiWorkerMirroredStrategy` over the
            cluster in TF_CONFIG; create it before any other TensorFlow work of the process) or
            "tpu" (`TPUStrategy` on the TPU found by `TPUClusterResolver`).

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        DistributionError: unknown name, missing or malformed TF_CONFIG, or no reachable TPU.

    Example:
        >>> strategy = kseg.distribute.get_strategy("mirrored")
        >>> with strategy.scope():
        ...     model = kseg.models.get_model("fcn8s", num_classes=3, backbone="tiny")
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        parse_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy()
    raise DistributionError(
        f"Unknown strategy. Expected one of {STRATEGIES}. Received: name={name!r}"
    )


def _tpu_strategy():
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise DistributionError(
            "--strategy tpu found no reachable TPU (set TPU_NAME or run on a TPU VM). "
            f"Received: {first_line}"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def per_replica_batch_size(global_batch_size, strategy):
    """The batch each replica sees when every step consumes `global_batch_size` examples.

    Args:
        global_batch_size: examples per optimizer step over all replicas.
        strategy: a `tf.distribute.Strategy`.

    Returns:
        `global_batch_size // strategy.num_replicas_in_sync`.

    Raises:
        DistributionError: the global batch does not split evenly over the replicas (uneven
            splits would weight replicas differently in the averaged gradient).

    Example:
        >>> kseg.distribute.per_replica_batch_size(8, tf.distribute.get_strategy())
        8
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size < replicas or global_batch_size % replicas:
        raise DistributionError(
            f"The global batch size must be a multiple of the {replicas} replicas. "
            f"Received: batch_size={global_batch_size}"
        )
    return global_batch_size // replicas


def scale_learning_rate(learning_rate, strategy):
    """Linear scaling rule: multiply the learning rate by the number of replicas.

    Goyal et al. (2017) keep the per-example contribution to each update constant when the
    global batch grows k-fold by multiplying the learning rate by k. Use it when the per-replica
    batch is kept fixed and the global batch grows with the replicas.

    Args:
        learning_rate: the learning rate tuned for one replica.
        strategy: a `tf.distribute.Strategy`.

    Returns:
        `learning_rate * strategy.num_replicas_in_sync`.

    Example:
        >>> kseg.distribute.scale_learning_rate(0.01, tf.distribute.get_strategy())
        0.01
    """
    return learning_rate * strategy.num_replicas_in_sync


def is_chief(strategy=None):
    """Whether this process writes the run's artefacts (always True outside multi-worker runs).

    Args:
        strategy: a `tf.distribute.Strategy`; None uses the current one.

    Returns:
        True for the chief task, worker 0 of a chief-less cluster, or any single-process run.

    Example:
        >>> kseg.distribute.is_chief(tf.distribute.get_strategy())
        True
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def worker_run_dir(run_dir, strategy=None):
    """The folder this process should write to: `run_dir` on the chief, a private one elsewhere.

    Non-chief workers keep their backups in `run_dir/workers/<type>_<index>` so that a restarted
    worker restores the same state as the chief, and their checkpoints there too, where they
    overwrite nothing the chief writes.

    Args:
        run_dir: the run folder.
        strategy: a `tf.distribute.Strategy`; None uses the current one.

    Returns:
        A `pathlib.Path`.

    Example:
        >>> kseg.distribute.worker_run_dir("runs/a", tf.distribute.get_strategy())
        PosixPath('runs/a')
    """
    strategy = strategy or tf.distribute.get_strategy()
    if is_chief(strategy):
        return Path(run_dir)
    resolver = strategy.cluster_resolver
    return Path(run_dir) / "workers" / f"{resolver.task_type}_{resolver.task_id}"


def save_on_chief(model, path, strategy=None):
    """Save `model` to `path` on the chief; other workers save to a temporary file and drop it.

    Every worker takes part in the save, as the Keras multi-worker tutorial does, so that a
    save which reads distributed variables runs the same steps on every task.

    Args:
        model: the trained `keras.Model`.
        path: the `.keras` destination used by the chief.
        strategy: a `tf.distribute.Strategy`; None uses the current one.

    Returns:
        `path` on the chief, None on other workers.

    Example:
        >>> kseg.distribute.save_on_chief(model, "runs/a/model.keras")  # doctest: +SKIP
    """
    if is_chief(strategy):
        model.save(path)
        return Path(path)
    scratch = tempfile.mkdtemp(prefix="kseg_worker_")
    try:
        model.save(Path(scratch) / Path(path).name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None


def shard_by_data(dataset):
    """Make `tf.distribute` split a dataset by elements instead of by input files.

    With DATA sharding every worker reads the whole pipeline and keeps its share of each global
    batch, so the examples of a step are the same whatever the number of workers; FILE sharding
    would need at least as many input files as workers and gives each worker different files.

    Args:
        dataset: a `tf.data.Dataset`.

    Returns:
        The dataset with `AutoShardPolicy.DATA`.

    Example:
        >>> dataset = kseg.distribute.shard_by_data(tf.data.Dataset.range(4).batch(2))
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
