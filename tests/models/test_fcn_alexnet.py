import keras
import numpy as np
import pytest

from kseg.backbones.surgery import convolutionalize
from kseg.inference.patch_classifier import patch_scores
from kseg.models.fcn_alexnet import AlexNetClassifier, FCNAlexNet

TINY = {"conv_filters": (4, 4, 4, 4, 4), "num_filters": 8}


def test_paper_configuration_has_fcn_alexnet_size_and_stride():
    # Long et al. 2015, table 1: FCN-AlexNet has 57M parameters and stride 32.
    classifier = AlexNetClassifier()
    assert classifier.output_shape == (None, 21)
    assert abs(classifier.count_params() - 57e6) < 0.5e6
    assert tuple(classifier.get_layer("flatten").input.shape[1:]) == (6, 6, 256)
    body = convolutionalize(classifier)
    assert tuple(body.get_layer("fc6").kernel.shape) == (6, 6, 256, 4096)
    # 227 + 32 k pixels give k + 1 windows per side.
    assert tuple(body.compute_output_shape((1, 227 + 64, 227 + 32, 3))) == (1, 3, 2, 21)


def test_unpadded_fcn_scores_equal_the_patch_classifier_where_the_stride_samples():
    keras.utils.set_random_seed(0)
    classifier = AlexNetClassifier(num_classes=5, padding="valid", **TINY)
    image = np.random.default_rng(0).uniform(0, 255, (1, 227 + 64, 227 + 32, 3)).astype("float32")
    score_map = np.asarray(convolutionalize(classifier)(image))
    assert score_map.shape == (1, 3, 2, 5)
    # Window (i, j) starts at (32 i, 32 j), so it is the patch centred on (32 i + 113, 32 j + 113).
    rows, columns = np.meshgrid(np.arange(3), np.arange(2), indexing="ij")
    pixels = np.stack([32 * rows.ravel() + 113, 32 * columns.ravel() + 113], axis=1)
    patch_map = patch_scores(classifier, image, pixels=pixels, batch_size=6)
    np.testing.assert_allclose(patch_map[0].reshape(3, 2, 5), score_map[0], atol=1e-4)


@pytest.mark.parametrize("size", [(1, 1), (31, 45), (227, 130)])
def test_logits_keep_the_input_size(size):
    model = FCNAlexNet(num_classes=3, **TINY)
    assert tuple(model(np.zeros((1, *size, 3), "float32")).shape) == (1, *size, 3)


def test_fcn_reuses_the_given_classifier_weights():
    keras.utils.set_random_seed(1)
    classifier = AlexNetClassifier(num_classes=4, **TINY)
    model = FCNAlexNet(num_classes=4, classifier=classifier)
    fc6 = classifier.get_layer("fc6").kernel
    body = model.get_layer("fcn_alexnet_body")
    np.testing.assert_array_equal(
        np.asarray(body.get_layer("fc6").kernel), np.asarray(fc6).reshape(6, 6, 4, 8)
    )
    assert not model.get_layer("upscore").trainable


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="input_padding"):
        FCNAlexNet(input_padding=100, **TINY)
    with pytest.raises(ValueError, match="backbone=None"):
        FCNAlexNet(backbone="tiny", **TINY)
    with pytest.raises(ValueError, match="num_classes"):
        FCNAlexNet(num_classes=3, classifier=AlexNetClassifier(num_classes=4, **TINY))
    with pytest.raises(ValueError, match="padding"):
        AlexNetClassifier(padding="reflect")
