"""Fully-convolutional surgery: the converted network scores every stride-32 crop at once."""

import keras
import numpy as np
import pytest

from kseg.backbones.surgery import convolutionalize


def crops_at_stride(image, crop, stride):
    """Every `crop` x `crop` window of `image` (H, W, C) at `stride`, row-major, as a batch."""
    rows = (image.shape[0] - crop) // stride + 1
    cols = (image.shape[1] - crop) // stride + 1
    windows = [
        image[i * stride : i * stride + crop, j * stride : j * stride + crop]
        for i in range(rows)
        for j in range(cols)
    ]
    return np.stack(windows), rows, cols


def assert_score_map_matches_crops(classifier, image, crop, stride, atol):
    scores = np.asarray(convolutionalize(classifier)(image[None], training=False))[0]
    windows, rows, cols = crops_at_stride(image, crop, stride)
    expected = np.asarray(classifier.predict(windows, batch_size=8, verbose=0))
    assert scores.shape == (rows, cols, expected.shape[-1])
    np.testing.assert_allclose(scores.reshape(rows * cols, -1), expected, rtol=0, atol=atol)


def small_classifier(num_classes=5):
    """Stride-4 stand-in for 32x32 inputs: unpadded conv/pool stages, a Flatten/Dense head.

    Unpadded convolutions make a crop see exactly the pixels the large image shows the same
    units, so the sliding-window equality is exact (with "same" padding a crop sees zeros at
    its border where the large image has neighbours).
    """
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(24, activation="relu", name="fc1"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(12, activation="relu", name="fc2"),
            keras.layers.Dense(num_classes, name="predictions"),
        ]
    )


def test_small_classifier_on_a_larger_image_scores_every_stride_4_crop():
    keras.utils.set_random_seed(0)
    classifier = small_classifier()
    image = np.random.default_rng(0).uniform(-1, 1, (48, 52, 3)).astype("float32")
    # 32x32 crops of a 48x52 image at stride 4: a 5x6 score map.
    assert_score_map_matches_crops(classifier, image, crop=32, stride=4, atol=1e-5)


def test_dense_kernels_become_convolution_kernels_of_the_feature_map_size():
    classifier = small_classifier()
    fcn = convolutionalize(classifier)
    assert fcn.get_layer("fc1").kernel.shape == (4, 4, 16, 24)
    assert fcn.get_layer("fc2").kernel.shape == (1, 1, 24, 12)
    np.testing.assert_array_equal(
        np.asarray(fcn.get_layer("fc1").kernel).reshape(-1, 24),
        np.asarray(classifier.get_layer("fc1").kernel),
    )
    assert fcn.count_params() == classifier.count_params()


def test_a_head_without_flatten_is_refused_with_a_clear_error():
    classifier = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="Flatten"):
        convolutionalize(classifier)


def test_a_branching_classifier_is_refused():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    b = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    x = keras.layers.Flatten()(keras.layers.Add()([a, b]))
    classifier = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="chain"):
        convolutionalize(classifier)


@pytest.fixture(scope="module")
def vgg16_and_fcn():
    keras.utils.set_random_seed(0)
    # Logits rather than softmax so the comparison sees the full numerical range.
    vgg = keras.applications.VGG16(weights=None, include_top=True, classifier_activation=None)
    return vgg, convolutionalize(vgg)


def test_vgg16_on_384x384_gives_the_6x6_map_of_the_head_on_its_36_stride_32_windows(vgg16_and_fcn):
    """The seed's example on VGG16: 384x384 in, 6x6 scores out, one per stride-32 window.

    VGG16 pads its 3x3 convolutions, so a 224x224 crop run alone sees zeros at its border
    where the whole image has neighbours: the body's features differ near crop borders and
    the crop-by-crop equality cannot be exact (with seeded random weights the 36 crops differ
    from the map by up to 0.46 on logits of magnitude 1.3, correlation 0.96). What the surgery
    must preserve exactly is the head: the converted fc layers at output pixel (i, j) equal
    the Dense head on the 7x7 window of pool5 at (i, j), i.e. on the 224x224 window at
    (32i, 32j) as the fully convolutional body sees it.
    """
    vgg, fcn = vgg16_and_fcn
    assert vgg.count_params() == 138_357_544
    assert fcn.count_params() == vgg.count_params()
    assert fcn.get_layer("fc1").kernel.shape == (7, 7, 512, 4096)
    assert fcn.get_layer("fc2").kernel.shape == (1, 1, 4096, 4096)
    assert fcn.get_layer("predictions").kernel.shape == (1, 1, 4096, 1000)
    image = np.random.default_rng(0).uniform(0, 255, (1, 384, 384, 3)).astype("float32")
    body = keras.Model(fcn.input, [fcn.get_layer("block5_pool").output, fcn.output])
    pool5, scores = (np.asarray(t) for t in body(image, training=False))
    assert pool5.shape == (1, 12, 12, 512) and scores.shape == (1, 6, 6, 1000)
    windows, rows, cols = crops_at_stride(pool5[0], 7, 1)
    assert (rows, cols) == (6, 6)
    head_input = keras.Input((7, 7, 512))
    x = head_input
    for name in ("flatten", "fc1", "fc2", "predictions"):
        x = vgg.get_layer(name)(x)
    expected = np.asarray(keras.Model(head_input, x)(windows, training=False))
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(scores[0].reshape(36, -1), expected, rtol=0, atol=1e-4)
