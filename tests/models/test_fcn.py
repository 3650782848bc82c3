"""FCN-32s/16s/8s: paper structure, any input size, VGG16 classifier weights through the surgery."""

import itertools

import keras
import numpy as np
import pytest

import kseg
from kseg.layers.bilinear import bilinear_kernel_1d
from kseg.models import FCN8s, FCN16s, FCN32s, backbone_of

BUILDERS = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s}
ODD_SIZES = [(1, 1), (33, 47), (65, 97), (101, 37)]


def images(size, batch=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, *size, 3)).astype("float32")


def randomise_scores(model, seed=0):
    """Score layers start at zero (the paper's init); random ones make outputs informative."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.startswith("score_") and layer.weights:
            layer.set_weights(
                [rng.normal(0, 0.1, w.shape).astype("float32") for w in layer.get_weights()]
            )


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("size", ODD_SIZES)
def test_any_input_size_gives_logits_of_the_same_size(name, size):
    model = BUILDERS[name](num_classes=3, backbone="tiny", num_filters=8)
    logits = model(images(size, batch=2), training=False)
    assert tuple(logits.shape) == (2, *size, 3)


@pytest.fixture(scope="module")
def small_vgg16_fcn8s():
    keras.utils.set_random_seed(0)
    return FCN8s(num_classes=4, backbone="vgg16", num_filters=16)


@pytest.mark.parametrize("size", [(1, 1), (33, 47), (65, 97)])
def test_vgg16_fcn8s_keeps_odd_input_sizes(small_vgg16_fcn8s, size):
    randomise_scores(small_vgg16_fcn8s)
    logits = np.asarray(small_vgg16_fcn8s(images(size), training=False))
    assert logits.shape == (1, *size, 4)
    assert np.abs(logits).max() > 0


def test_vgg16_pools_in_ceil_mode_like_caffe(small_vgg16_fcn8s):
    # 65 + 200 = 265 px: Caffe's ceil-mode pools give 133, 67, 34, 17, 9 (floor would end at 8).
    encoder = small_vgg16_fcn8s.get_layer("vgg16_backbone")
    features = encoder(np.zeros((1, 265, 265, 3), "float32"))
    assert [features[f"P{n}"].shape[1] for n in range(1, 6)] == [133, 67, 34, 17, 9]


def test_score_layers_start_at_zero_so_the_first_prediction_is_zero():
    model = FCN8s(num_classes=3, backbone="tiny", num_filters=8)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert not any(np.asarray(w).any() for w in model.get_layer(name).weights)
    assert not np.asarray(model(images((40, 40)), training=False)).any()


@pytest.mark.parametrize(
    "name,learned,frozen",
    [
        ("fcn32s", {}, {"upscore32": 64}),
        ("fcn16s", {"upscore_2": 4}, {"upscore16": 32}),
        ("fcn8s", {"upscore_2": 4, "upscore_pool4": 4}, {"upscore8": 16}),
    ],
)
def test_upsampling_is_bilinear_and_only_the_final_one_is_frozen(name, learned, frozen):
    model = BUILDERS[name](num_classes=3, backbone="tiny", num_filters=8)
    deconvolutions = {layer.name: layer for layer in model.layers if "upscore" in layer.name}
    assert set(deconvolutions) == set(learned) | set(frozen)
    for layer_name, size in {**learned, **frozen}.items():
        layer = deconvolutions[layer_name]
        assert layer.trainable == (layer_name in learned)
        kernel = np.asarray(layer.weights[0])
        assert kernel.shape == (size, size, 3, 3)
        profile = bilinear_kernel_1d(size)
        np.testing.assert_allclose(kernel[:, :, 1, 1], np.outer(profile, profile))
        assert not kernel[:, :, 0, 1].any()


def test_skip_fusion_adds_cropped_pool_scores():
    model = FCN16s(num_classes=2, backbone="tiny", num_filters=8)
    randomise_scores(model)
    probe = keras.Model(
        model.input,
        [
            model.get_layer(n).output
            for n in ("upscore_2", "score_pool4", "score_pool4c", "fuse_pool4")
        ],
    )
    upsampled, pool4, cropped, fused = (
        np.asarray(t) for t in probe(images((50, 70)), training=False)
    )
    np.testing.assert_allclose(fused, upsampled + cropped, atol=1e-5)
    top = (pool4.shape[1] - cropped.shape[1]) // 2
    left = (pool4.shape[2] - cropped.shape[2]) // 2
    np.testing.assert_array_equal(
        cropped, pool4[:, top : top + cropped.shape[1], left : left + cropped.shape[2]]
    )


def test_bad_backbone_weights_configuration_is_explained():
    with pytest.raises(ValueError, match="num_filters=16"):
        FCN8s(backbone="vgg16", backbone_weights="imagenet", num_filters=16)


def vgg16_conv_parameters():
    """VGG16's 13 3x3 convolutions (Simonyan & Zisserman 2015, configuration D) with biases."""
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    return sum(9 * cin * cout + cout for cin, cout in itertools.pairwise(widths))


@pytest.mark.slow
@pytest.mark.parametrize("fc6_padding", ["valid", "same"])
def test_full_vgg16_fcn8s_loads_classifier_weights_through_the_surgery(
    random_vgg16_classifier, fc6_padding
):
    classifier, path = random_vgg16_classifier
    model = FCN8s(
        num_classes=21, backbone="vgg16", backbone_weights=str(path), fc6_padding=fc6_padding
    )
    k = 21
    expected = (
        vgg16_conv_parameters()
        + 7 * 7 * 512 * 4096
        + 4096  # fc6
        + 4096 * 4096
        + 4096  # fc7
        + (4096 + 1) * k
        + (512 + 1) * k
        + (256 + 1) * k  # score_fr, score_pool4, score_pool3
        + (4 * 4 + 4 * 4 + 16 * 16) * k * k  # upscore2, upscore_pool4, upscore8 (no bias)
    )
    assert model.count_params() == expected
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("fc6").kernel).reshape(-1, 4096),
        np.asarray(classifier.get_layer("fc1").kernel),
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("fc7").kernel)[0, 0],
        np.asarray(classifier.get_layer("fc2").kernel),
    )
    encoder = model.get_layer("vgg16_backbone")
    np.testing.assert_array_equal(
        np.asarray(encoder.get_layer("block5_conv3").kernel),
        np.asarray(classifier.get_layer("block5_conv3").kernel),
    )
    assert tuple(model(images((45, 51)), training=False).shape) == (1, 45, 51, 21)


def copy_first_channels(layer, centre):
    """Sets a convolution to pass its first three channels through from the kernel's `centre`."""
    kernel = np.zeros(layer.kernel.shape, "float32")
    kernel[centre, centre, range(3), range(3)] = 1
    layer.set_weights([kernel, np.zeros(layer.bias.shape, "float32")])


@pytest.mark.parametrize("builder", [FCN32s, FCN16s, FCN8s])
def test_vgg16_crop_offsets_centre_the_output_on_the_input(builder):
    """A bright block filling one pool5 cell must come out centred on itself.

    With pass-through kernels the body max-pools the image, fc6 reads its kernel centre
    and the frozen bilinear deconvolution spreads each cell symmetrically, so a wrong crop
    offset shows as an asymmetric response around the block's centre.
    """
    keras.utils.set_random_seed(0)
    model = builder(num_classes=3, backbone="vgg16", num_filters=3)
    for layer in model.get_layer("vgg16_backbone").layers:
        if isinstance(layer, keras.layers.Conv2D):
            copy_first_channels(layer, 1)
    copy_first_channels(model.get_layer("fc6"), 3)
    for name in ("fc7", "score_fr"):
        copy_first_channels(model.get_layer(name), 0)
    # 100 px padding: pool5 cell 4 covers padded pixels 128..159, i.e. image pixels 28..59.
    image = np.zeros((1, 96, 96, 3), "float32")
    image[:, 28:60, 28:60] = 255
    response = np.asarray(model(image, training=False))[0, :, :, 0]
    assert response.max() > 0
    # Centre 43.5: the response is mirror-symmetric about it on rows and columns.
    window = response[12:76, 12:76]
    np.testing.assert_allclose(window, window[::-1, :], atol=1e-4 * response.max())
    np.testing.assert_allclose(window, window[:, ::-1], atol=1e-4 * response.max())


@pytest.fixture(scope="module")
def mobilenetv2_fcn8s():
    return FCN8s(num_classes=3, backbone="mobilenetv2", num_filters=8, alpha=0.35)


@pytest.mark.parametrize("size", [(1, 1), (2, 40), (13, 17)])
def test_registry_backbone_fcn_accepts_images_smaller_than_its_minimum(mobilenetv2_fcn8s, size):
    # 1 + 2 * 100 px gives MobileNetV2 a 6x6 stride-32 map, too small for fc6's 7x7 kernel.
    logits = mobilenetv2_fcn8s(images(size), training=False)
    assert tuple(logits.shape) == (1, *size, 3)


def test_registry_backbone_padding_is_raised_to_the_least_that_reaches_fc6(mobilenetv2_fcn8s):
    padding = mobilenetv2_fcn8s.get_layer("input_padding").padding[0][0]
    encoder = backbone_of(mobilenetv2_fcn8s)

    def stride32_side(side):
        return encoder.compute_output_spec(keras.KerasTensor((1, side, side, 3)))["P5"].shape[1]

    assert padding > 100
    assert stride32_side(1 + 2 * padding) >= 7 > stride32_side(1 + 2 * (padding - 1))
    assert stride32_side(1 + 2 * 100) < 7


def test_vgg16_refuses_padding_that_small_images_cannot_survive():
    with pytest.raises(ValueError, match=r"input_padding >= 96.*Received: input_padding=50"):
        FCN8s(num_classes=3, backbone="vgg16", num_filters=8, input_padding=50)


# fc6_padding="same": unpadded body, 'same' fc6 (keras-segmentation's fcn_8_vgg layout).


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("size", ODD_SIZES)
def test_same_padded_fcn_gives_logits_of_the_input_size(name, size):
    model = BUILDERS[name](num_classes=3, backbone="tiny", num_filters=8, fc6_padding="same")
    randomise_scores(model)
    logits = np.asarray(model(images(size, batch=2), training=False))
    assert logits.shape == (2, *size, 3)
    assert np.isfinite(logits).all()


@pytest.fixture(scope="module")
def small_vgg16_fcn8s_same():
    keras.utils.set_random_seed(0)
    return FCN8s(num_classes=4, backbone="vgg16", num_filters=16, fc6_padding="same")


@pytest.mark.parametrize("size", [(1, 1), (31, 33), (65, 97), (101, 37)])
def test_same_padded_vgg16_fcn8s_keeps_odd_input_sizes(small_vgg16_fcn8s_same, size):
    randomise_scores(small_vgg16_fcn8s_same)
    logits = np.asarray(small_vgg16_fcn8s_same(images(size), training=False))
    assert logits.shape == (1, *size, 4)
    assert np.abs(logits).max() > 0


def test_same_padded_vgg16_runs_the_body_on_the_unpadded_image(small_vgg16_fcn8s_same):
    layer_names = {layer.name for layer in small_vgg16_fcn8s_same.layers}
    assert "input_padding" not in layer_names
    encoder = small_vgg16_fcn8s_same.get_layer("vgg16_backbone")
    probe = keras.Model(
        small_vgg16_fcn8s_same.input, small_vgg16_fcn8s_same.get_layer("fc6").output
    )
    fc6 = probe(images((65, 97)), training=False)
    pool5 = encoder(images((65, 97)))["P5"]
    # Ceil-mode pooling of 65x97 five times: ceil(65 / 32) = 3, ceil(97 / 32) = 4.
    assert tuple(pool5.shape[1:3]) == tuple(fc6.shape[1:3]) == (3, 4)


@pytest.mark.parametrize(
    "backbone,num_filters", [("tiny", 8), ("vgg16", 16)], ids=["tiny", "vgg16"]
)
@pytest.mark.parametrize("name", BUILDERS)
def test_same_padded_fcn_has_the_paper_forms_parameters(name, backbone, num_filters):
    paper, same = (
        BUILDERS[name](
            num_classes=5, backbone=backbone, num_filters=num_filters, fc6_padding=fc6_padding
        )
        for fc6_padding in ("valid", "same")
    )
    assert same.count_params() == paper.count_params()
    assert same.get_layer("fc6").kernel.shape == paper.get_layer("fc6").kernel.shape
    assert tuple(same.get_layer("fc6").kernel.shape[:2]) == (7, 7)


@pytest.mark.parametrize("builder", [FCN32s, FCN16s, FCN8s])
def test_same_padded_vgg16_crops_centre_the_output_on_the_input(builder):
    """The bright-block test of the paper form, on an unpadded 90x90 image.

    Without input padding pool5 cell 1 covers pixels 32..63. At 90 px the final
    upsampled map (8 * 12 + 8 = 104 px for FCN-8s) is not a multiple of the image, so a
    centred crop (offset 7) would shift the response off the block; offset 4 keeps it
    mirror-symmetric about the block's centre 47.5.
    """
    keras.utils.set_random_seed(0)
    model = builder(num_classes=3, backbone="vgg16", num_filters=3, fc6_padding="same")
    for layer in model.get_layer("vgg16_backbone").layers:
        if isinstance(layer, keras.layers.Conv2D):
            copy_first_channels(layer, 1)
    copy_first_channels(model.get_layer("fc6"), 3)
    for name in ("fc7", "score_fr"):
        copy_first_channels(model.get_layer(name), 0)
    image = np.zeros((1, 90, 90, 3), "float32")
    image[:, 32:64, 32:64] = 255
    response = np.asarray(model(image, training=False))[0, :, :, 0]
    assert response.max() > 0
    window = response[16:80, 16:80]
    np.testing.assert_allclose(window, window[::-1, :], atol=1e-4 * response.max())
    np.testing.assert_allclose(window, window[:, ::-1], atol=1e-4 * response.max())


def test_same_padded_fcn_reloads_in_safe_mode(tmp_path):
    model = FCN8s(num_classes=3, backbone="tiny", num_filters=8, fc6_padding="same")
    randomise_scores(model)
    path = tmp_path / "fcn8s_same.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    batch = images((37, 51))
    np.testing.assert_allclose(
        np.asarray(reloaded(batch, training=False)),
        np.asarray(model(batch, training=False)),
        atol=1e-5,
    )


def test_bad_fc6_padding_configuration_is_explained():
    with pytest.raises(ValueError, match=r"one of.*Received: fc6_padding='valid '"):
        FCN8s(num_classes=3, backbone="tiny", num_filters=8, fc6_padding="valid ")
    with pytest.raises(ValueError, match=r"input_padding must be None or 0.*input_padding=100"):
        FCN8s(num_classes=3, backbone="tiny", num_filters=8, fc6_padding="same", input_padding=100)


def test_the_dilated_head_takes_torchvisions_auxiliary_head_and_the_skips_head_refuses_it():
    model = kseg.models.get_model(
        "fcn8s",
        num_classes=3,
        backbone="resnet50_v1.5",
        base_channels=2,
        head="dilated",
        num_filters=8,
        auxiliary_loss_weight=0.5,
        auxiliary_filters=8,
    )
    assert isinstance(model, kseg.models.DeepSupervisionModel)
    image = np.zeros((1, 33, 40, 3), "float32")
    assert model(image, training=True)["auxiliary_logits"].shape == (1, 33, 40, 3)
    with pytest.raises(ValueError, match="applies to head='dilated' only"):
        kseg.models.get_model("fcn8s", backbone="tiny", auxiliary_loss_weight=0.5)
