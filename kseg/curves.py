"""Training curves: read them from a History, a CSV log or TensorBoard events, and plot them.

`plot_history` renders with a bare `matplotlib.figure.Figure` (Agg), never touching pyplot's
global backend. `kseg.viz` exports the same functions beside its other pictures.
"""

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _history_from_csv(path):
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            # A resumed run appends to the same file; the last row of an epoch wins.
            rows[int(float(row.pop("epoch")))] = row
    epochs = np.array(sorted(rows), dtype=np.int64)
    names = sorted({name for row in rows.values() for name in row})
    history = {}
    for name in names:
        values = [rows[e].get(name) for e in epochs]
        # Keras's CSVLogger writes "NA" for a metric an epoch did not log (e.g. val_* columns
        # of a run without validation data).
        keep = [i for i, v in enumerate(values) if v not in (None, "", "NA")]
        if keep:
            history[name] = (epochs[keep], np.array([float(values[i]) for i in keep]))
    return history


def read_tensorboard_scalars(logdir):
    """Read the epoch-level scalars a `keras.callbacks.TensorBoard` wrote under `logdir`.

    Event files are parsed with TensorFlow's record reader and `Event` protos, so the
    `tensorboard` package is not needed. Tags `epoch_<name>` become `<name>` for the "train"
    folder and `val_<name>` for the "validation" folder; several event files (a resumed run) are
    merged, the latest write of a step winning.

    Args:
        logdir: directory searched recursively for `events.out.tfevents.*` files.

    Returns:
        A dict name -> (epochs, values) of numpy arrays sorted by epoch.

    Example:
        >>> sorted(kseg.viz.read_tensorboard_scalars("runs/camvid/logs"))  # doctest: +SKIP
        ['loss', 'mean_iou', 'val_loss', 'val_mean_iou']
    """
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    logdir = Path(logdir)
    points = {}
    for event_file in sorted(logdir.rglob("events.out.tfevents.*")):
        prefix = "val_" if event_file.parent.name == "validation" else ""
        for record in tf.data.TFRecordDataset(str(event_file)):
            event = event_pb2.Event.FromString(record.numpy())
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if not value.tag.startswith("epoch_"):
                    continue
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    number = float(value.simple_value)
                else:
                    continue
                name = prefix + value.tag[len("epoch_") :]
                series = points.setdefault(name, {})
                previous = series.get(event.step)
                if previous is None or event.wall_time >= previous[0]:
                    series[event.step] = (event.wall_time, number)
    return {
        name: (
            np.array(sorted(series), dtype=np.int64),
            np.array([series[step][1] for step in sorted(series)]),
        )
        for name, series in points.items()
    }


def load_history(source):
    """Collect per-epoch training curves from any of the places kseg training leaves them.

    Args:
        source: a `keras.callbacks.History`, its `.history` dict (name -> list of values), a
            `history.csv` written by `keras.callbacks.CSVLogger`, a TensorBoard log directory,
            or a run directory of `kseg.training.fit` (its TensorBoard logs, else its
            history.csv).

    Returns:
        A dict name -> (epochs, values) of numpy arrays, epochs counted from 0.

    Example:
        >>> kseg.viz.load_history({"loss": [1.0, 0.5]})["loss"][0].tolist()
        [0, 1]
    """
    if hasattr(source, "history") and isinstance(source.history, dict):
        epochs = np.asarray(getattr(source, "epoch", None) or [], dtype=np.int64)
        history = {}
        for name, values in source.history.items():
            x = epochs if len(epochs) == len(values) else np.arange(len(values))
            history[name] = (x, np.asarray(values, dtype=np.float64))
        return history
    if isinstance(source, dict):
        return {
            name: (np.arange(len(values)), np.asarray(values, dtype=np.float64))
            for name, values in source.items()
        }
    path = Path(source)
    if path.is_file() and path.suffix == ".csv":
        return _history_from_csv(path)
    if path.is_dir():
        history = read_tensorboard_scalars(path)
        if history:
            return history
        if (path / "history.csv").is_file():
            return _history_from_csv(path / "history.csv")
    raise ValueError(
        "No training history found: expected a History, a dict, a CSVLogger file, or a directory "
        f"with TensorBoard event files or history.csv. Received: source={source!r}"
    )


def plot_history(history_or_logdir, path=None, *, metrics=None, figsize=(10.0, 4.0), dpi=100):
    """Plot training curves, one panel per quantity, training solid and validation dashed.

    Args:
        history_or_logdir: anything `load_history` accepts (History, dict, CSV file, TensorBoard
            log directory, run directory).
        path: optional PNG file to write.
        metrics: names of the quantities to plot (without "val_"), default all of them.
        figsize: figure size in inches; the PNG is figsize * dpi pixels.
        dpi: resolution of the PNG.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:
        >>> logs = {"loss": [1.0, 0.6], "val_loss": [1.1, 0.8]}
        >>> figure = kseg.viz.plot_history(logs, "/tmp/curves.png")
        >>> [axis.get_title() for axis in figure.axes]
        ['loss']
    """
    history = load_history(history_or_logdir)
    names = []
    for name in history:
        base = name.removeprefix("val_")
        if base not in names:
            names.append(base)
    if metrics is not None:
        missing = [m for m in metrics if m not in names]
        if missing:
            raise ValueError(
                f"Unknown metrics {missing}; the history has {names}. Received: metrics={metrics}"
            )
        names = list(metrics)
    else:
        names.sort(key=lambda n: (n != "loss", n))
    if not names:
        raise ValueError(f"The history is empty. Received: {history_or_logdir!r}")

    figure = Figure(figsize=figsize, dpi=dpi)
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    for i, name in enumerate(names):
        axis = figure.add_subplot(rows, columns, i + 1)
        for key, style, label in ((name, "-", "train"), ("val_" + name, "--", "validation")):
            if key in history:
                epochs, values = history[key]
                axis.plot(epochs + 1, values, style, marker="o", markersize=3, label=label)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi, format="png")
    return figure
