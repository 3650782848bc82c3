"""kseg.tasks: each model name and model finds its task, and each task runs the right functions."""

import numpy as np
import pytest

import kseg
from kseg import tasks

SMALL_MASK_RCNN = {
    "backbone": "tiny",
    "fpn_channels": 16,
    "box_fc_units": 32,
    "mask_channels": 16,
    "rpn_test_nms": (100, 50),
    "detections_per_image": 10,
    "score_threshold": 0.0,
}


@pytest.fixture(scope="module")
def semantic_model():
    return tasks.SEMANTIC.build("deeplabv3plus", num_classes=5, backbone="tiny", num_filters=8)


@pytest.fixture(scope="module")
def instance_model():
    import keras

    keras.utils.set_random_seed(0)
    return tasks.INSTANCE.build("maskrcnn", num_classes=3, **SMALL_MASK_RCNN)


def test_every_registered_name_finds_its_task():
    for name in kseg.models.list_models():
        expected = tasks.INSTANCE if name == "mask_rcnn" else tasks.SEMANTIC
        assert tasks.for_name(name) is expected
    assert tasks.for_name("MaskRCNN") is tasks.INSTANCE
    with pytest.raises(ValueError, match="no_such_net"):
        tasks.for_name("no_such_net")


def test_models_find_their_task_also_after_reloading(semantic_model, instance_model, tmp_path):
    import keras

    assert tasks.for_model(semantic_model) is tasks.SEMANTIC
    assert tasks.for_model(instance_model) is tasks.INSTANCE
    instance_model.save(tmp_path / "m.keras")
    assert tasks.for_model(keras.saving.load_model(tmp_path / "m.keras")) is tasks.INSTANCE


def test_semantic_predictor_is_the_argmax_or_the_inference_modes(semantic_model):
    image = np.random.default_rng(0).uniform(0, 255, (40, 56, 3)).astype("float32")
    labels = tasks.SEMANTIC.predictor(semantic_model)(image)
    expected = np.argmax(np.asarray(semantic_model(image[None]))[0], axis=-1)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected)
    flipped = tasks.SEMANTIC.predictor(semantic_model, flip=True)(image)
    reference = kseg.inference.make_predictor(semantic_model, flip=True)(image[None])[0]
    np.testing.assert_array_equal(flipped, reference)
    assert tasks.SEMANTIC.inference(semantic_model) is None


def test_semantic_evaluate_and_draw_are_the_library_functions(semantic_model):
    val = kseg.data.make_pipeline(kseg.data.shapes_dataset("val", 2, 48), 2, augment=False)
    scores = tasks.SEMANTIC.evaluate(semantic_model, val, 5, ignore_label=255)
    reference = kseg.evaluation.evaluate_model(semantic_model, val, 5, progress=False)
    np.testing.assert_array_equal(scores["confusion_matrix"], reference["confusion_matrix"])
    image = np.full((4, 5, 3), 100, np.uint8)
    labels = np.arange(20).reshape(4, 5) % 5
    np.testing.assert_array_equal(
        tasks.SEMANTIC.draw(image, labels), kseg.viz.overlay(image, labels)
    )


def test_instance_predictor_keeps_the_detections_scoring_at_least_min_score(instance_model):
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    serve = kseg.detection.instance_serving_function(instance_model, mask_threshold=0.3)
    raw = {key: value.numpy() for key, value in serve(image).items()}
    count = int(raw["num_detections"])
    assert count > 0
    min_score = float(np.median(raw["scores"][:count]))
    detections = tasks.INSTANCE.predictor(instance_model, mask_threshold=0.3, min_score=min_score)(
        image
    )
    keep = raw["scores"][:count] >= min_score
    assert 0 < len(detections["scores"]) == keep.sum()
    for key in ("boxes", "classes", "scores", "masks"):
        np.testing.assert_allclose(detections[key], raw[key][:count][keep], atol=1e-4)
    drawn = tasks.INSTANCE.draw(image, detections)
    expected = kseg.viz.draw_instances(image, detections["masks"], detections["boxes"])
    np.testing.assert_array_equal(drawn, expected)
