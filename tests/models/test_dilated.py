"""DilatedNet: Yu & Koltun 2016's front-end structure, fields and weights."""

import itertools

import keras
import numpy as np
import pytest

from kseg.models.dilated import DilatedNet
from kseg.utils.receptive_field import receptive_field


def vgg16_conv_parameters():
    """VGG16's 13 3x3 convolutions (Simonyan & Zisserman 2015, configuration D) with biases."""
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    return sum(9 * cin * cout + cout for cin, cout in itertools.pairwise(widths))


def context_parameters(c, multipliers):
    """Seven 3x3 layers of the given widths (in units of C), then a 1x1 layer back to C."""
    widths = [c] + [m * c for m in multipliers]
    convs = sum(9 * cin * cout + cout for cin, cout in itertools.pairwise(widths))
    return convs + widths[-1] * c + c


@pytest.fixture(scope="module")
def small_vgg16_net():
    """The paper's VGG16 front-end with narrow fc6/fc7 and the basic context module."""
    return DilatedNet(num_classes=5, backbone="vgg16", num_filters=16)


def test_vgg16_front_end_is_the_papers(small_vgg16_net):
    names = [layer.name for layer in small_vgg16_net.layers]
    assert [n for n in names if n.endswith("_pool")] == [
        "block1_pool",
        "block2_pool",
        "block3_pool",
    ]
    for index in (1, 2, 3):
        assert small_vgg16_net.get_layer(f"block4_conv{index}").dilation_rate == (1, 1)
        assert small_vgg16_net.get_layer(f"block5_conv{index}").dilation_rate == (2, 2)
    fc6 = small_vgg16_net.get_layer("fc6")
    assert fc6.kernel_size == (7, 7) and fc6.dilation_rate == (4, 4)
    assert small_vgg16_net.get_layer("fc7").kernel_size == (1, 1)


def test_front_end_and_context_receptive_fields(small_vgg16_net):
    # Yu's training script crops 8 * n + 372 pixels for n output positions of the "valid"
    # front-end: its field is 372 plus one output stride, 380.
    assert receptive_field(small_vgg16_net, output="final") == 372 + 8
    # The basic context module's 67 positions at stride 8 add 66 * 8 pixels.
    assert receptive_field(small_vgg16_net, output="context") == 380 + 66 * 8


@pytest.mark.parametrize(("size", "scores"), [((64, 72), (8, 9)), ((65, 97), (9, 13))])
def test_scores_are_at_stride_8_before_upsampling_to_the_input(small_vgg16_net, size, scores):
    probe = keras.Model(
        small_vgg16_net.input,
        # The upsampling layer reads the context module's output in the outer graph.
        [small_vgg16_net.get_layer("upsample").input[0], small_vgg16_net.output],
    )
    images = np.random.default_rng(2).uniform(0, 255, (1, *size, 3)).astype("float32")
    coarse, logits = probe(images, training=False)
    assert tuple(coarse.shape) == (1, *scores, 5)
    assert tuple(logits.shape) == (1, *size, 5)


def test_tiny_backbone_runs_at_output_stride_8():
    model = DilatedNet(num_classes=3, backbone="tiny", context_module="large", num_filters=8)
    probe = keras.Model(model.input, model.get_layer("final").output)
    assert tuple(probe(np.zeros((1, 65, 97, 3), "float32")).shape) == (1, 9, 13, 3)


@pytest.mark.parametrize("context", [None, "basic", "large"])
def test_parameter_count_follows_the_architecture(context):
    c, f = 5, 16
    model = DilatedNet(num_classes=c, backbone="vgg16", context_module=context, num_filters=f)
    front_end = vgg16_conv_parameters() + (49 * 512 * f + f) + (f * f + f) + (f * c + c)
    multipliers = {None: None, "basic": [1] * 7, "large": [2, 2, 4, 8, 16, 32, 32]}[context]
    extra = 0 if multipliers is None else context_parameters(c, multipliers)
    assert model.count_params() == front_end + extra


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="context_module='huge'"):
        DilatedNet(num_classes=3, backbone="tiny", context_module="huge")
    with pytest.raises(ValueError, match="num_filters=16"):
        DilatedNet(backbone="vgg16", backbone_weights="imagenet", num_filters=16)
    from kseg.backbones import get_backbone

    with pytest.raises(ValueError, match="output stride 8"):
        DilatedNet(num_classes=3, backbone=get_backbone("tiny", output_stride=16))


@pytest.mark.slow
def test_full_vgg16_front_end_loads_classifier_weights_through_the_surgery(
    random_vgg16_classifier,
):
    # keras.applications checks the hash of a file it finds under its cache name, so random
    # weights reach it through a path, the same loading call as weights="imagenet".
    classifier, path = random_vgg16_classifier
    c = 21
    model = DilatedNet(num_classes=c, backbone_weights=str(path), context_module="basic")
    expected = (
        vgg16_conv_parameters()
        + (7 * 7 * 512 * 4096 + 4096)
        + (4096 * 4096 + 4096)
        + (4096 * c + c)
        + context_parameters(c, [1] * 7)
    )
    assert model.count_params() == expected
    for block, depth in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
        for index in range(1, depth + 1):
            name = f"block{block}_conv{index}"
            for ours, theirs in zip(
                model.get_layer(name).get_weights(), classifier.get_layer(name).get_weights()
            ):
                np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("fc6").kernel).reshape(-1, 4096),
        np.asarray(classifier.get_layer("fc1").kernel),
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("fc7").kernel)[0, 0],
        np.asarray(classifier.get_layer("fc2").kernel),
    )
    # Up to pool3 the front-end is VGG16 itself, preprocessing included: the classifier's
    # own layers, called on an image of another size, give the reference.
    images = np.random.default_rng(4).uniform(0, 255, (1, 48, 64, 3)).astype("float32")
    ours = keras.Model(model.input, model.get_layer("block3_pool").output)(images)
    reference = keras.applications.vgg16.preprocess_input(images.copy())
    for layer in classifier.layers[1:]:
        reference = layer(reference)
        if layer.name == "block3_pool":
            break
    np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=1e-4, atol=1e-3)
