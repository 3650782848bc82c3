"""A random VGG16 classifier and its weights file, shared by the VGG16 weight-transfer tests."""

import keras
import pytest


@pytest.fixture(scope="package")
def random_vgg16_classifier(tmp_path_factory):
    """keras.applications.VGG16 with its classifier, seeded random weights, and their file.

    Built and written once (138M parameters, a 528 MB file): FCN, DilatedNet and DeepLab v1
    each load it through their own surgery and compare with these layers.
    """
    keras.utils.set_random_seed(1)
    classifier = keras.applications.VGG16(weights=None, include_top=True)
    path = tmp_path_factory.mktemp("vgg16") / "vgg16_random.weights.h5"
    classifier.save_weights(path)
    yield classifier, path
    path.unlink()
