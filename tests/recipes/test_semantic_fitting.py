"""kseg.recipes.semantic_fitting (and instance_fitting): the batches, training and score record."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kseg.testing
from kseg.recipes import (
    clipped_optimizer,
    fit_semantic,
    scores_record,
    segmentation_loss,
    semantic_batches,
)


def _pairs(count, size=48):
    images = np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype(np.float32)
    masks = np.tile(np.arange(size, dtype=np.int32) % 3, (count, size, 1))
    return tf.data.Dataset.from_tensor_slices((images, masks))


def test_semantic_batches_crop_repeat_and_count_one_pass_as_an_epoch():
    train, val, steps = semantic_batches(_pairs(10), _pairs(3), batch_size=4, crop_size=32, seed=0)
    assert steps == 10 // 4
    # Training batches repeat: more batches than one pass holds.
    shapes = [tuple(images.shape) for images, _ in train.take(5)]
    assert shapes == [(4, 32, 32, 3)] * 5
    # Validation: whole images, min(batch_size, 16) at a time, no augmentation.
    (images, masks), *rest = list(val)
    assert images.shape[0] == 3 and not rest
    np.testing.assert_array_equal(masks.numpy()[:, :48, :48], np.asarray([m for _, m in _pairs(3)]))


def test_semantic_batches_steps_and_validation_batch_can_be_set():
    _, val, steps = semantic_batches(
        _pairs(3), _pairs(3), batch_size=8, crop_size=32, val_batch_size=1, steps_per_epoch=None
    )
    assert steps == 1  # fewer pairs than a batch still make one step
    assert [int(images.shape[0]) for images, _ in val] == [1, 1, 1]
    _, _, steps = semantic_batches(
        _pairs(3), _pairs(3), batch_size=1, crop_size=32, steps_per_epoch=7
    )
    assert steps == 7


def test_fit_semantic_uses_adam_under_poly_decay_over_all_steps(tmp_path):
    train, val, _ = semantic_batches(_pairs(4), _pairs(2), batch_size=2, crop_size=32, seed=0)
    model = kseg.testing.build_small_model("fcn8s", num_classes=3)
    history = fit_semantic(
        model,
        train,
        val,
        num_classes=3,
        epochs=2,
        steps_per_epoch=1,
        learning_rate=0.01,
        run_dir=tmp_path,
        ignore_label=255,
        run_eagerly=True,
    )
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    schedule = model.optimizer.learning_rate
    # Two steps taken of a decay over epochs * steps_per_epoch = 2: the rate has reached zero.
    assert float(keras.ops.convert_to_numpy(schedule)) == pytest.approx(0.0, abs=1e-9)
    assert len(history.history["loss"]) == 2 and "val_loss" in history.history
    assert all(math.isfinite(value) for value in history.history["loss"])
    assert (tmp_path / "history.csv").is_file()


def test_scores_record_is_plain_json_with_default_class_names():
    scores = {
        "iou": np.array([0.25, np.nan, 1.0], np.float64),
        "mean_iou": np.float64(0.625),
        "pixel_accuracy": np.float32(0.5),
        "mean_accuracy": 0.75,
        "confusion_matrix": np.eye(3),
    }
    record = scores_record(scores)
    assert record["class_names"] == ["0", "1", "2"]
    assert record["iou"][0] == 0.25 and math.isnan(record["iou"][1])
    assert set(record) == {"class_names", "iou", "mean_iou", "pixel_accuracy", "mean_accuracy"}
    assert json.loads(json.dumps(record))["mean_iou"] == 0.625
    assert scores_record(scores, ("sky", "road", "car"))["class_names"] == ["sky", "road", "car"]


def test_fit_semantic_takes_the_command_line_choices(tmp_path):
    train, val, _ = semantic_batches(_pairs(4), _pairs(2), batch_size=2, crop_size=32, seed=0)
    model = kseg.testing.build_small_model("deeplabv3plus", num_classes=3)
    fit_semantic(
        model,
        train,
        val,
        num_classes=3,
        epochs=1,
        steps_per_epoch=1,
        learning_rate=0.01,
        run_dir=tmp_path,
        optimizer="sgd",
        loss="ce+dice",
        batchnorm_momentum=0.5,
        jit_compile=False,
        tensorboard=True,
        run_eagerly=True,
    )
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert isinstance(model.loss, kseg.losses.CombinedLoss)
    norms = [
        layer for layer in model._flatten_layers() if "BatchNormalization" in type(layer).__name__
    ]
    assert norms and all(layer.momentum == 0.5 for layer in norms)
    assert any((tmp_path / "logs").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    "name, expected",
    [("ce", "SegmentationCrossEntropy"), ("focal", "FocalLoss"), ("dice", "DiceLoss")],
)
def test_segmentation_loss_by_name(name, expected):
    assert type(segmentation_loss(name, 3)).__name__ == expected
    with pytest.raises(ValueError, match="'lovasz'"):
        segmentation_loss("lovasz", 3)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("sgd", keras.optimizers.SGD),
        ("adam", keras.optimizers.Adam),
        ("adamw", keras.optimizers.AdamW),
    ],
)
def test_clipped_optimizer_clips_the_global_norm_at_10(name, kind):
    optimizer = clipped_optimizer(name, 0.01)
    assert type(optimizer) is kind and optimizer.global_clipnorm == 10.0
    with pytest.raises(ValueError, match="'rmsprop'"):
        clipped_optimizer("rmsprop", 0.01)


def test_fit_semantic_keeps_the_best_epoch_previews_and_one_checkpoint(tmp_path):
    train, val, _ = semantic_batches(_pairs(4), _pairs(3), batch_size=2, crop_size=32, seed=0)
    model = kseg.testing.build_small_model("fcn8s", num_classes=3)
    history = fit_semantic(
        model,
        train,
        val,
        num_classes=3,
        epochs=2,
        steps_per_epoch=1,
        learning_rate=0.01,
        run_dir=tmp_path,
        run_eagerly=True,
        monitor="val_mean_iou",
        keep_checkpoints=1,
        preview_images=2,
        history_plot=True,
    )
    scores = history.history["val_mean_iou"]
    best_epoch = int(np.argmax(scores))
    state = json.loads((tmp_path / "best.json").read_text())
    assert state["best_epoch"] == best_epoch and state["best"] == pytest.approx(scores[best_epoch])
    best = keras.saving.load_model(tmp_path / "best.keras")
    # The saved best model scores what its epoch logged.
    best.compile(metrics=[keras.metrics.MeanIoU(3, sparse_y_pred=False, ignore_class=255)])
    assert best.evaluate(val, verbose=0, return_dict=True)["mean_io_u"] == pytest.approx(
        scores[best_epoch], abs=1e-5
    )
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch_002.keras"]
    previews = sorted(p.name for p in (tmp_path / "previews").iterdir())
    assert previews == ["epoch_001.png", "epoch_002.png"]
    # Two validation images of 48 x 48, padded to 64 by the validation pipeline: two rows of
    # image | prediction | ground truth, under titles.
    height, width, _ = np.asarray(Image.open(tmp_path / "previews" / "epoch_002.png")).shape
    assert height > 2 * 64 and width >= 3 * 64
    assert (tmp_path / "history.png").is_file()


def test_fit_semantic_warms_up_and_passes_weight_decay_and_momentum(tmp_path):
    train, val, _ = semantic_batches(_pairs(4), _pairs(2), batch_size=2, crop_size=32, seed=0)
    model = kseg.testing.build_small_model("fcn8s", num_classes=3)
    fit_semantic(
        model,
        train,
        None,
        num_classes=3,
        epochs=1,
        steps_per_epoch=1,
        learning_rate=0.1,
        run_dir=tmp_path,
        optimizer="sgd",
        warmup_steps=4,
        weight_decay=1e-4,
        momentum=0.8,
        run_eagerly=True,
        verbose=0,
    )
    assert model.optimizer.momentum == 0.8 and model.optimizer.weight_decay == 1e-4
    schedule = model.optimizer._learning_rate
    # Linear warm-up from 0 to the peak over 4 steps, then poly decay over the rest.
    assert [round(float(schedule(step)), 6) for step in (0, 2, 4)] == [0.0, 0.05, 0.1]


def test_constant_schedule_keeps_the_rate():
    from kseg.recipes import learning_rate_schedule

    assert learning_rate_schedule(0.1, 100, "constant") == 0.1
    with pytest.raises(ValueError, match="cosine"):
        learning_rate_schedule(0.1, 100, "cosine")
