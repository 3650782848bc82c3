"""kseg.curves: training curves read from a History, a CSV log or TensorBoard events, plotted."""

import csv

import keras
import numpy as np
import pytest
from PIL import Image

from kseg import viz


def _assert_png(path, size):
    assert path.stat().st_size > 0
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == size


def test_plot_history_from_dict_history_and_csv(tmp_path):
    logs = {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.9, 0.8], "mean_iou": [0.2, 0.3, 0.4]}
    figure = viz.plot_history(logs, tmp_path / "dict.png", figsize=(6, 3), dpi=50)
    _assert_png(tmp_path / "dict.png", (300, 150))
    assert [axis.get_title() for axis in figure.axes] == ["loss", "mean_iou"]
    assert [len(line.get_xdata()) for line in figure.axes[0].get_lines()] == [3, 3]

    history = keras.callbacks.History()
    history.history, history.epoch = {"loss": [0.9, 0.8]}, [3, 4]
    assert viz.load_history(history)["loss"][0].tolist() == [3, 4]

    csv_path = tmp_path / "history.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "val_loss"])
        writer.writerows([[0, 1.0, 1.2], [1, 0.8, 1.0], [1, 0.7, 0.9], [2, 0.6, 0.8]])
    loaded = viz.load_history(csv_path)
    assert loaded["loss"][0].tolist() == [0, 1, 2]
    assert loaded["loss"][1].tolist() == [1.0, 0.7, 0.6]
    viz.plot_history(csv_path, tmp_path / "csv.png", metrics=["loss"], figsize=(4, 4), dpi=40)
    _assert_png(tmp_path / "csv.png", (160, 160))
    with pytest.raises(ValueError, match="Unknown metrics"):
        viz.plot_history(csv_path, metrics=["accuracy"])
    with pytest.raises(ValueError, match="No training history"):
        viz.load_history(tmp_path / "missing")


def test_tensorboard_logs_of_a_resumed_fit_are_read_back(tmp_path):
    pytest.importorskip(
        "tensorboard", reason="keras.callbacks.TensorBoard needs the tensorboard package"
    )
    from kseg import training

    def model():
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        logits = keras.layers.Conv2D(3, 1, dtype="float32")(x)
        return training.compile_model(
            keras.Model(inputs, logits), num_classes=3, optimizer="adam", learning_rate=0.01
        )

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    masks = rng.integers(0, 3, (4, 16, 16))
    run_dir = tmp_path / "run"
    first = training.fit(
        model(),
        (images, masks),
        (images, masks),
        epochs=2,
        run_dir=run_dir,
        verbose=0,
        batch_size=2,
    )
    # A second call asking for one more epoch continues the run and writes new event files.
    second = training.fit(
        model(),
        (images, masks),
        (images, masks),
        epochs=3,
        run_dir=run_dir,
        verbose=0,
        batch_size=2,
    )
    assert second.epoch == [2]

    scalars = viz.read_tensorboard_scalars(run_dir / "logs")
    assert {"loss", "val_loss", "mean_iou", "val_mean_iou"} <= set(scalars)
    for name in ("loss", "val_loss", "mean_iou"):
        epochs, values = scalars[name]
        assert epochs.tolist() == [0, 1, 2]
        expected = first.history[name] + second.history[name]
        np.testing.assert_allclose(values, expected, rtol=1e-5)
    assert viz.load_history(run_dir)["val_loss"][0].tolist() == [0, 1, 2]
    viz.plot_history(run_dir, tmp_path / "tb.png", figsize=(8, 3), dpi=60)
    _assert_png(tmp_path / "tb.png", (480, 180))


def test_history_csv_with_keras_na_cells_skips_them(tmp_path):
    # Keras's CSVLogger writes "NA" where an epoch logged no value (val_* without validation).
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("epoch,loss,val_loss\n0,1.0,NA\n1,0.5,0.7\n2,0.25,NA\n")
    loaded = viz.load_history(csv_path)
    assert loaded["loss"][1].tolist() == [1.0, 0.5, 0.25]
    assert loaded["val_loss"][0].tolist() == [1] and loaded["val_loss"][1].tolist() == [0.7]
    csv_path.write_text("epoch,loss,val_loss\n0,1.0,NA\n1,0.5,NA\n")
    assert "val_loss" not in viz.load_history(csv_path)
