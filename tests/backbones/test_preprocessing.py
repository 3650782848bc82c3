import keras
import numpy as np
import pytest

import kseg.backbones
import kseg.testing
from kseg.backbones import registry
from kseg.backbones.preprocessing import ImagePreprocessing

# Each registered backbone beside the keras.applications module whose preprocess_input
# defines what its weights expect.
REFERENCE_PREPROCESSING = {
    "vgg16": keras.applications.vgg16.preprocess_input,
    "resnet50": keras.applications.resnet.preprocess_input,
    "resnet101": keras.applications.resnet.preprocess_input,
    "resnet152": keras.applications.resnet.preprocess_input,
    "resnet50v2": keras.applications.resnet_v2.preprocess_input,
    "resnet101v2": keras.applications.resnet_v2.preprocess_input,
    "resnet152v2": keras.applications.resnet_v2.preprocess_input,
    "xception": keras.applications.xception.preprocess_input,
    "mobilenet": keras.applications.mobilenet.preprocess_input,
    "mobilenetv2": keras.applications.mobilenet_v2.preprocess_input,
    **{f"efficientnetb{v}": keras.applications.efficientnet.preprocess_input for v in range(8)},
}


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, size=(2, 5, 7, 3)).astype("float32")


@pytest.mark.parametrize("mode", ["tf", "torch", "caffe"])
def test_matches_imagenet_utils(mode):
    images = _images()
    expected = keras.applications.imagenet_utils.preprocess_input(images.copy(), mode=mode)
    result = np.asarray(ImagePreprocessing(mode)(images))
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-5)


def test_caffe_mode_reorders_channels_and_subtracts_the_bgr_mean():
    pixel = np.array([[[[10.0, 20.0, 30.0]]]], "float32")
    result = np.asarray(ImagePreprocessing("caffe")(pixel))[0, 0, 0]
    np.testing.assert_allclose(result, [30.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(REFERENCE_PREPROCESSING))
def test_backbone_mode_matches_its_application(name):
    # The registry's mode, read without building the network.
    mode = registry._BACKBONES[name].preprocessing
    images = _images(seed=1)
    expected = np.asarray(REFERENCE_PREPROCESSING[name](images.copy()))
    np.testing.assert_allclose(
        np.asarray(ImagePreprocessing(mode)(images)), expected, rtol=1e-6, atol=1e-5
    )


def test_backbone_applies_preprocessing_as_first_layer():
    backbone = kseg.backbones.get_backbone("tiny", input_shape=(32, 32, 3))
    first = backbone.layers[1]
    assert isinstance(first, ImagePreprocessing)
    assert first.mode == backbone.preprocessing == "tf"
    raw = kseg.backbones.get_backbone("tiny", include_preprocessing=False)
    assert not any(isinstance(layer, ImagePreprocessing) for layer in raw.layers)
    assert raw.preprocessing == "tf"
    raw.set_weights(backbone.get_weights())
    images = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    with_layer = backbone(images)
    by_hand = raw(images / 127.5 - 1.0)
    for key in with_layer:
        np.testing.assert_allclose(np.asarray(with_layer[key]), np.asarray(by_hand[key]), atol=1e-5)


@pytest.mark.parametrize("mode", ["tf", "torch", "caffe", "none"])
def test_layer_contract(mode):
    out = kseg.testing.run_layer_test(ImagePreprocessing, {"mode": mode}, (2, 5, 7, 3))
    assert out.shape == (2, 5, 7, 3)


def test_symbolic_shape_with_unknown_size():
    inputs = keras.Input((None, None, 3))
    assert ImagePreprocessing("tf")(inputs).shape == (None, None, None, 3)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="Received: mode='rgb'"):
        ImagePreprocessing("rgb")
    with pytest.raises(ValueError, match="three RGB channels"):
        ImagePreprocessing("caffe")(np.zeros((1, 4, 4, 1), "float32"))
