import keras
import numpy as np
import pytest

from kseg.inference.patch_classifier import patch_labels, patch_scores


def small_classifier(patch_size, channels=2, num_classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((*patch_size, channels)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes),
        ]
    )


def reference_scores(classifier, image, y, x):
    """The classifier on the zero-padded patch whose top-left is (y - ph // 2, x - pw // 2)."""
    patch_height, patch_width = classifier.input_shape[1:3]
    top, left = patch_height // 2, patch_width // 2
    padded = np.pad(image, [(top, patch_height - 1 - top), (left, patch_width - 1 - left), (0, 0)])
    patch = padded[y : y + patch_height, x : x + patch_width]
    return np.asarray(classifier(patch[None], training=False))[0]


@pytest.mark.parametrize("patch_size", [(5, 5), (6, 7)])
def test_each_pixel_scores_as_the_classifier_on_its_centred_patch(patch_size):
    classifier = small_classifier(patch_size)
    images = np.random.default_rng(0).normal(size=(2, 9, 11, 2)).astype("float32")
    scores = patch_scores(classifier, images, batch_size=16)
    assert scores.shape == (2, 9, 11, 3)
    # Corners and edges exercise the zero padding, (4, 5) a full interior patch.
    for index in range(2):
        for y, x in [(0, 0), (0, 10), (8, 0), (8, 10), (4, 5), (3, 1)]:
            np.testing.assert_allclose(
                scores[index, y, x], reference_scores(classifier, images[index], y, x), atol=1e-5
            )


def test_chosen_pixels_match_the_dense_map_whatever_the_batch_size():
    classifier = small_classifier((5, 5))
    images = np.random.default_rng(1).normal(size=(1, 7, 8, 2)).astype("float32")
    dense = patch_scores(classifier, images, batch_size=7)
    pixels = np.array([[6, 7], [0, 3], [2, 2]])
    chosen = patch_scores(classifier, images, pixels=pixels, batch_size=2)
    np.testing.assert_allclose(chosen[0], dense[0, pixels[:, 0], pixels[:, 1]], atol=1e-5)


def test_labels_are_the_arg_max_of_the_scores():
    classifier = small_classifier((3, 3))
    images = np.random.default_rng(2).normal(size=(1, 6, 6, 2)).astype("float32")
    np.testing.assert_array_equal(
        patch_labels(classifier, images), np.argmax(patch_scores(classifier, images), axis=-1)
    )


def test_bad_input_gets_a_clear_error():
    classifier = small_classifier((3, 3))
    images = np.zeros((1, 4, 4, 2), "float32")
    with pytest.raises(ValueError, match="inside the 4x4 image"):
        patch_scores(classifier, images, pixels=np.array([[4, 0]]))
    with pytest.raises(ValueError, match="batch_size"):
        patch_scores(classifier, images, batch_size=0)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        patch_scores(classifier, images[0])
    sizeless = keras.Sequential(
        [keras.Input((None, None, 2)), keras.layers.GlobalAveragePooling2D()]
    )
    with pytest.raises(ValueError, match="fixed"):
        patch_scores(sizeless, images)
