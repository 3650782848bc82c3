import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.metrics import (
    ClassIoU,
    MeanIoU,
    PixelAccuracy,
    confusion_matrix_scores,
    per_class_iou_metrics,
)

NUM_CLASSES = 5
IGNORE = 255


def random_batch(seed, shape=(2, 9, 11), ignored_fraction=0.25, absent_class=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=shape).astype("int32")
    labels[rng.random(shape) < ignored_fraction] = IGNORE
    logits = rng.normal(size=shape + (NUM_CLASSES,)).astype("float32")
    if absent_class is not None:
        labels[labels == absent_class] = IGNORE
        logits[..., absent_class] = -10.0
    return labels, logits


def np_confusion(labels, logits_or_map, sparse=False):
    """Rows true class, columns predicted class, over non-ignored pixels, by np.bincount."""
    predictions = logits_or_map if sparse else np.argmax(logits_or_map, axis=-1)
    labels, predictions = np.ravel(labels), np.ravel(predictions)
    keep = labels != IGNORE
    flat = NUM_CLASSES * labels[keep].astype(np.int64) + predictions[keep]
    return np.bincount(flat, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def np_iou(confusion):
    iou = []
    for c in range(NUM_CLASSES):
        intersection = confusion[c, c]
        union = confusion[c, :].sum() + confusion[:, c].sum() - intersection
        iou.append(intersection / union if union else np.nan)
    return np.array(iou)


def test_mean_iou_on_logits_matches_numpy_confusion_matrix():
    labels, logits = random_batch(seed=0, absent_class=3)
    metric = MeanIoU(NUM_CLASSES)
    metric.update_state(labels, logits)
    confusion = np_confusion(labels, logits)
    np.testing.assert_array_equal(np.asarray(metric.total_cm), confusion)
    iou = np_iou(confusion)
    assert np.isnan(iou[3])
    np.testing.assert_allclose(float(metric.result()), np.nanmean(iou), rtol=1e-6)


def test_metrics_accumulate_over_updates_and_reset():
    batches = [random_batch(seed=s, shape=(1, 4 + s, 6)) for s in range(3)]
    labels = np.concatenate([b[0].ravel() for b in batches])
    logits = np.concatenate([b[1].reshape(-1, NUM_CLASSES) for b in batches])
    confusion = np_confusion(labels, logits)
    valid = labels != IGNORE
    mean_iou, class_iou, accuracy = MeanIoU(NUM_CLASSES), ClassIoU(NUM_CLASSES, 2), PixelAccuracy()
    for batch_labels, batch_logits in batches:
        for metric in (mean_iou, class_iou, accuracy):
            metric.update_state(batch_labels[..., None], batch_logits)
    np.testing.assert_allclose(float(mean_iou.result()), np.nanmean(np_iou(confusion)), rtol=1e-6)
    np.testing.assert_allclose(float(class_iou.result()), np_iou(confusion)[2], rtol=1e-6)
    expected_accuracy = np.mean(np.argmax(logits, -1)[valid] == labels[valid])
    np.testing.assert_allclose(float(accuracy.result()), expected_accuracy, rtol=1e-6)

    for metric in (mean_iou, class_iou, accuracy):
        metric.reset_state()
    assert float(mean_iou.result()) == 0.0 and float(accuracy.result()) == 0.0
    assert np.isnan(float(class_iou.result()))
    last_labels, last_logits = batches[-1]
    mean_iou.update_state(last_labels, last_logits)
    np.testing.assert_array_equal(
        np.asarray(mean_iou.total_cm), np_confusion(last_labels, last_logits)
    )


def test_class_iou_matches_numpy_and_is_nan_for_absent_class():
    labels, logits = random_batch(seed=1, absent_class=4)
    expected = np_iou(np_confusion(labels, logits))
    for class_id in range(NUM_CLASSES):
        metric = ClassIoU(NUM_CLASSES, class_id)
        metric.update_state(labels, logits)
        if class_id == 4:
            assert np.isnan(float(metric.result()))
        else:
            np.testing.assert_allclose(float(metric.result()), expected[class_id], rtol=1e-6)


def test_ignored_pixels_count_nowhere_whatever_is_predicted_there():
    labels, logits = random_batch(seed=2)
    rng = np.random.default_rng(0)
    changed = np.where((labels == IGNORE)[..., None], rng.normal(size=logits.shape) * 100, logits)
    for make in (lambda: MeanIoU(NUM_CLASSES), lambda: ClassIoU(NUM_CLASSES, 1), PixelAccuracy):
        original, perturbed = make(), make()
        original.update_state(labels, logits)
        perturbed.update_state(labels, changed.astype("float32"))
        assert float(original.result()) == float(perturbed.result())


def test_pixel_accuracy_weighs_batches_by_pixel_count():
    small, small_logits = random_batch(seed=3, shape=(1, 2, 2), ignored_fraction=0.0)
    large, large_logits = random_batch(seed=4, shape=(1, 12, 12), ignored_fraction=0.3)
    metric = PixelAccuracy()
    metric.update_state(small, small_logits)
    metric.update_state(large, large_logits)
    hits = np.concatenate(
        [
            (np.argmax(small_logits, -1) == small).ravel(),
            (np.argmax(large_logits, -1) == large)[large != IGNORE],
        ]
    )
    np.testing.assert_allclose(float(metric.result()), hits.mean(), rtol=1e-6)


def test_confusion_matrix_scores_match_independent_formulas():
    labels, logits = random_batch(seed=5, shape=(3, 16, 16), absent_class=1)
    confusion = np_confusion(labels, logits)
    scores = confusion_matrix_scores(confusion)
    iou = np_iou(confusion)
    np.testing.assert_allclose(scores["iou"], iou, rtol=1e-12)
    assert np.isnan(scores["iou"][1])
    np.testing.assert_allclose(scores["mean_iou"], np.nanmean(iou), rtol=1e-12)
    valid = labels != IGNORE
    predictions = np.argmax(logits, -1)
    np.testing.assert_allclose(
        scores["pixel_accuracy"], np.mean(predictions[valid] == labels[valid]), rtol=1e-12
    )
    present = [c for c in range(NUM_CLASSES) if np.any(labels == c)]
    per_class = [np.mean(predictions[labels == c] == c) for c in present]
    np.testing.assert_allclose(scores["mean_accuracy"], np.mean(per_class), rtol=1e-12)
    frequency = np.array([np.sum(labels == c) for c in present]) / valid.sum()
    np.testing.assert_allclose(
        scores["frequency_weighted_iou"], np.sum(frequency * iou[present]), rtol=1e-12
    )


def test_scores_name_the_classes_the_mean_iou_leaves_out():
    labels, logits = random_batch(seed=6, shape=(2, 12, 12), absent_class=3)
    predictions = np.argmax(logits, -1)
    scores = confusion_matrix_scores(np_confusion(labels, logits))
    seen = set(labels[labels != IGNORE]) | set(predictions[labels != IGNORE])
    assert scores["present_classes"] == sorted(int(c) for c in seen)
    assert scores["absent_classes"] == [c for c in range(NUM_CLASSES) if c not in seen] == [3]
    np.testing.assert_allclose(
        scores["mean_iou"], np.mean(scores["iou"][scores["present_classes"]]), rtol=1e-12
    )


def test_binary_run_with_the_foreground_all_ignored_is_not_reported_as_two_classes():
    # 0/255 masks read with 255 as the ignore label: background only, predicted everywhere.
    scores = confusion_matrix_scores([[1000, 0], [0, 0]])
    assert scores["mean_iou"] == 1.0 and np.isnan(scores["iou"][1])
    assert scores["present_classes"] == [0] and scores["absent_classes"] == [1]


def test_confusion_matrix_scores_of_empty_matrix_and_bad_input():
    scores = confusion_matrix_scores(np.zeros((3, 3)))
    assert (
        np.all(np.isnan(scores["iou"]))
        and np.isnan(scores["mean_iou"])
        and np.isnan(scores["pixel_accuracy"])
    )
    with pytest.raises(ValueError, match="square"):
        confusion_matrix_scores(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        confusion_matrix_scores(-np.eye(2))


@pytest.fixture
def miou_reference(shared_dir):
    refs = shared_dir / "refs"
    if not (refs / "miou.npz").is_file() or not (refs / "miou.json").is_file():
        pytest.skip(f"reference vectors miou.npz / miou.json are absent from {refs}")
    return np.load(refs / "miou.npz"), json.loads((refs / "miou.json").read_text())


def test_against_sklearn_reference_vectors(miou_reference):
    arrays, meta = miou_reference
    assert meta["num_classes"] == NUM_CLASSES and meta["ignore_label"] == IGNORE
    metric = MeanIoU(NUM_CLASSES, sparse_y_pred=True)
    metric.update_state(arrays["y_true"], arrays["y_pred"])
    np.testing.assert_array_equal(np.asarray(metric.total_cm), arrays["confusion_matrix"])
    np.testing.assert_allclose(float(metric.result()), meta["miou"], rtol=1e-6)

    scores = metric.scores()
    np.testing.assert_allclose(scores["iou"], arrays["iou_per_class"], rtol=1e-12)
    np.testing.assert_allclose(scores["mean_iou"], float(arrays["miou"]), rtol=1e-12)
    np.testing.assert_allclose(scores["pixel_accuracy"], meta["pixel_acc"], rtol=1e-12)
    np.testing.assert_allclose(scores["mean_accuracy"], meta["mean_acc"], rtol=1e-12)
    np.testing.assert_allclose(scores["frequency_weighted_iou"], meta["fwiou"], rtol=1e-12)

    logits = np.eye(NUM_CLASSES, dtype="float32")[arrays["y_pred"]]
    accuracy = PixelAccuracy()
    accuracy.update_state(arrays["y_true"], logits)
    np.testing.assert_allclose(float(accuracy.result()), meta["pixel_acc"], rtol=1e-6)
    for class_id, expected in enumerate(meta["iou_per_class"]):
        class_metric = ClassIoU(NUM_CLASSES, class_id)
        class_metric.update_state(arrays["y_true"], logits)
        np.testing.assert_allclose(float(class_metric.result()), expected, rtol=1e-6)


def test_against_reference_tiny_case_with_absent_class(miou_reference):
    _, meta = miou_reference
    tiny = meta["tiny_case"]
    expected_iou = np.array([np.nan if v is None else v for v in tiny["iou_per_class"]])
    y_true, y_pred = np.array(tiny["y_true"]), np.array(tiny["y_pred"])
    metric = MeanIoU(NUM_CLASSES, sparse_y_pred=True)
    metric.update_state(y_true, y_pred)
    np.testing.assert_allclose(float(metric.result()), tiny["miou"], rtol=1e-6)
    scores = metric.scores()
    np.testing.assert_allclose(scores["iou"], expected_iou, rtol=1e-12)
    np.testing.assert_allclose(scores["mean_iou"], tiny["miou"], rtol=1e-12)
    for class_id, expected in enumerate(expected_iou):
        class_metric = ClassIoU(NUM_CLASSES, class_id, sparse_y_pred=True)
        class_metric.update_state(y_true, y_pred)
        np.testing.assert_allclose(float(class_metric.result()), expected, rtol=1e-6)


def test_per_image_sample_weight():
    labels, logits = random_batch(seed=6)
    for make in (lambda: MeanIoU(NUM_CLASSES), PixelAccuracy):
        weighted, first_only = make(), make()
        weighted.update_state(labels, logits, sample_weight=np.array([1, 0]))
        first_only.update_state(labels[:1], logits[:1])
        assert float(weighted.result()) == float(first_only.result())


def test_bfloat16_logits():
    labels, logits = random_batch(seed=7)
    low_precision = tf.cast(logits, tf.bfloat16)
    expected = np_confusion(labels, tf.cast(low_precision, tf.float32).numpy())
    metric = MeanIoU(NUM_CLASSES)
    metric.update_state(labels, low_precision)
    np.testing.assert_array_equal(np.asarray(metric.total_cm), expected)
    accuracy = PixelAccuracy()
    accuracy.update_state(labels, low_precision)
    assert accuracy.result().dtype == tf.float32


@pytest.mark.parametrize(
    "make", [lambda: MeanIoU(NUM_CLASSES), lambda: ClassIoU(NUM_CLASSES, 0), PixelAccuracy]
)
def test_out_of_range_label_raises_an_error_naming_the_value(make):
    labels, logits = random_batch(seed=8)
    labels[0, 1, 1] = 9
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside \[0, 5\)[\s\S]*9"):
        make().update_state(labels, logits)


def test_per_class_iou_metrics_names_and_errors():
    names = [m.name for m in per_class_iou_metrics(3, ["sky", "road sign", "car-2"])]
    assert names == ["iou_sky", "iou_road_sign", "iou_car_2"]
    assert [m.name for m in per_class_iou_metrics(2)] == ["iou_0", "iou_1"]
    assert [m.class_id for m in per_class_iou_metrics(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="one name per class"):
        per_class_iou_metrics(3, ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        per_class_iou_metrics(2, ["a b", "a_b"])
    with pytest.raises(ValueError, match="class_id"):
        ClassIoU(3, 3)
    with pytest.raises(ValueError, match="num_classes"):
        MeanIoU(0)
    with pytest.raises(ValueError, match="y_true.shape"):
        MeanIoU(NUM_CLASSES).update_state(np.zeros((1, 4, 4)), np.zeros((1, 4, 5, NUM_CLASSES)))


ALL_METRICS = {
    "mean_iou": lambda: MeanIoU(
        NUM_CLASSES, ignore_label=0, sparse_y_pred=True, check_labels=False
    ),
    "class_iou": lambda: ClassIoU(
        NUM_CLASSES, 2, ignore_label=None, name="iou_car", dtype="float64"
    ),
    "pixel_accuracy": lambda: PixelAccuracy(ignore_label=254),
}


@pytest.mark.parametrize("name", sorted(ALL_METRICS))
def test_config_round_trip_and_serialization(name):
    metric = ALL_METRICS[name]()
    config = metric.get_config()
    assert type(metric).from_config(config).get_config() == config
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert type(restored) is type(metric) and restored.get_config() == config


def tiny_model():
    inputs = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 1)(hidden))


def test_compile_fit_evaluate_and_reload(tmp_path):
    keras.utils.set_random_seed(0)
    labels, _ = random_batch(seed=9, shape=(6, 8, 8), absent_class=4)
    images = np.random.default_rng(1).normal(size=(6, 8, 8, 3)).astype("float32")
    model = tiny_model()
    metrics = [
        MeanIoU(NUM_CLASSES),
        PixelAccuracy(),
        *per_class_iou_metrics(NUM_CLASSES, list("abcde")),
    ]
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE),
        metrics=metrics,
    )
    history = model.fit(images, labels, batch_size=3, epochs=1, verbose=0)
    assert {"mean_iou", "pixel_accuracy", "iou_a", "iou_e"} <= set(history.history)

    results = model.evaluate(images, labels[..., None], batch_size=4, verbose=0, return_dict=True)
    predictions = model.predict(images, verbose=0)
    confusion = np_confusion(labels, predictions)
    iou = np_iou(confusion)
    valid = labels != IGNORE
    np.testing.assert_allclose(results["mean_iou"], np.nanmean(iou), rtol=1e-5)
    np.testing.assert_allclose(
        results["pixel_accuracy"],
        np.mean(np.argmax(predictions, -1)[valid] == labels[valid]),
        rtol=1e-5,
    )
    for class_id, letter in enumerate("abcde"):
        np.testing.assert_allclose(
            results[f"iou_{letter}"], iou[class_id], rtol=1e-5, equal_nan=True
        )

    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    reloaded = restored.evaluate(images, labels, batch_size=6, verbose=0, return_dict=True)
    np.testing.assert_allclose(reloaded["mean_iou"], results["mean_iou"], rtol=1e-5)
