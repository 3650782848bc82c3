import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.inference import dense_crf, make_predictor, multiscale_predict, sliding_window_predict


@pytest.fixture(scope="module")
def model():
    return kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny", num_filters=8)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 255, (2, 40, 56, 3)).astype(np.uint8)


def test_defaults_are_the_argmax_of_the_logits(model, images):
    logits = np.asarray(model(images.astype("float32"), training=False))
    labels = make_predictor(model)(images)
    # The predictor runs the model in its own graph, whose float rounding may differ from this
    # call's: pixels whose two best classes are within rounding of each other may go either way.
    top_two = np.sort(logits, axis=-1)[..., -2:]
    clear = top_two[..., 1] - top_two[..., 0] > 1e-6
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels[clear], np.argmax(logits, -1)[clear])


def test_scales_and_flip_follow_multiscale_predict(model, images):
    expected = np.asarray(multiscale_predict(model, images, scales=(0.5, 1.0), flip=True)).argmax(
        -1
    )
    labels = make_predictor(model, scales=(0.5, 1.0), flip=True)(images)
    np.testing.assert_array_equal(labels, expected)


def test_window_follows_sliding_window_predict(model, images):
    expected = [
        np.asarray(sliding_window_predict(model, image, window=32, overlap=0.5)).argmax(-1)
        for image in images
    ]
    labels = make_predictor(model, window=32, overlap=0.5)(images)
    np.testing.assert_array_equal(labels, np.stack(expected))


def test_crf_refines_the_softmax_of_each_image(model, images):
    options = {"iterations": 3}
    probabilities = tf.nn.softmax(model(images.astype("float32"), training=False)).numpy()
    expected = [
        np.asarray(dense_crf(image, score, **options)).argmax(-1)
        for image, score in zip(images, probabilities)
    ]
    labels = make_predictor(model, crf=True, crf_options=options)(images)
    np.testing.assert_array_equal(labels, np.stack(expected))


def test_evaluation_counts_the_predictor_labels(model, images):
    masks = np.random.default_rng(1).integers(0, 3, images.shape[:3]).astype(np.int32)
    masks[0, :5] = 255
    dataset = tf.data.Dataset.from_tensor_slices((images.astype("float32"), masks)).batch(2)
    predict = make_predictor(model, scales=(0.75, 1.0), flip=True)
    labels = predict(images)
    keep = masks != 255
    expected = np.bincount(masks[keep] * 3 + labels[keep], minlength=9).reshape(3, 3)
    confusion = kseg.evaluation.confusion_matrix(
        model, dataset, 3, progress=False, predict_fn=predict
    )
    np.testing.assert_array_equal(confusion, expected)


@pytest.mark.parametrize("scales", [(), (0.0, 1.0), (-1.0,)])
def test_bad_scales_are_named(model, scales):
    with pytest.raises(ValueError, match="scales"):
        make_predictor(model, scales=scales)


def test_unbatched_images_are_refused(model, images):
    with pytest.raises(ValueError, match="shape"):
        make_predictor(model)(images[0])
