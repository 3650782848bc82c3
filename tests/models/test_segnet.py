"""SegNet and SegNet-Basic: the paper's widths and parameter counts, sizes, VGG16 weights."""

import json
import zipfile

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import kseg

VGG16_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def conv3x3_params(c_in, c_out):
    return 9 * c_in * c_out + c_out


def segnet_param_count(num_classes):
    """Counts from the layer widths of Badrinarayanan et al. (2017), Fig. 2 and the authors' model.

    Every convolution is 3x3 with a bias; each but the classifier is followed by
    BN (gamma, beta, moving mean and variance: 4 numbers per channel). The
    decoder mirrors the encoder, each stage's last convolution narrowing to the
    next shallower stage, and the last one is the classifier.
    """
    encoder_in = [3] + VGG16_WIDTHS[:-1]
    encoder = sum(conv3x3_params(i, o) + 4 * o for i, o in zip(encoder_in, VGG16_WIDTHS))
    decoder_out = [512, 512, 512, 512, 512, 256, 256, 256, 128, 128, 64, 64]
    decoder_in = [512] + decoder_out[:-1]
    decoder = sum(conv3x3_params(i, o) + 4 * o for i, o in zip(decoder_in, decoder_out))
    return encoder + decoder + conv3x3_params(64, num_classes)


@pytest.fixture(scope="module")
def vgg16_and_segnet(tmp_path_factory):
    vgg = keras.applications.VGG16(include_top=False, weights=None)
    path = tmp_path_factory.mktemp("vgg16") / "vgg16_notop.weights.h5"
    vgg.save_weights(path)
    return vgg, kseg.models.SegNet(11, backbone_weights=path)


def test_parameter_count_follows_the_layer_widths(vgg16_and_segnet):
    vgg, model = vgg16_and_segnet
    assert model.count_params() == segnet_param_count(11)
    encoder_convs = sum(
        layer.count_params()
        for layer in model.layers
        if layer.name.startswith("block") and isinstance(layer, keras.layers.Conv2D)
    )
    # The paper: "the encoder network ... has 14.7M parameters", VGG16's 13 convolutions.
    assert encoder_convs == vgg.count_params() == 14_714_688


def test_vgg16_weights_fill_the_encoder_and_bn_starts_as_identity(vgg16_and_segnet):
    vgg, model = vgg16_and_segnet
    convs = [layer for layer in vgg.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13
    for conv in convs:
        for ours, theirs in zip(model.get_layer(conv.name).get_weights(), conv.get_weights()):
            np.testing.assert_array_equal(ours, theirs)
        gamma, beta, mean, variance = model.get_layer(f"{conv.name}_bn").get_weights()
        np.testing.assert_array_equal(gamma, 1.0)
        np.testing.assert_array_equal(beta, 0.0)
        np.testing.assert_array_equal(mean, 0.0)
        np.testing.assert_array_equal(variance, 1.0)


def test_decoder_mirrors_the_encoder_with_indices_from_the_matching_stage(vgg16_and_segnet):
    _, model = vgg16_and_segnet
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    decoder = [layer for layer in convs if not layer.name.startswith("block")]
    counts = [sum(layer.name.startswith(f"decoder{s}_") for layer in decoder) for s in (5, 4, 3, 2)]
    assert counts + [sum(layer.name.startswith("decoder1_") for layer in decoder) + 1] == [
        3,
        3,
        3,
        2,
        2,
    ]
    assert [layer.filters for layer in decoder] == [
        512, 512, 512, 512, 512, 256, 256, 256, 128, 128, 64, 64, 11,
    ]  # fmt: skip
    for stage in range(1, 6):
        argmax = model.get_layer(f"decoder{stage}_unpool").input[1]
        assert argmax._keras_history.operation.name == f"block{stage}_pool"


@pytest.mark.parametrize("size", [(360, 480), (45, 61), (17, 33), (5, 7), (1, 1), (2, 3), (1, 17)])
def test_logits_keep_the_input_size(size):
    model = kseg.models.SegNet(11, num_filters=2)
    logits = model(np.zeros((1, *size, 3), "float32"))
    assert tuple(logits.shape) == (1, *size, 11)


def test_segnet_basic_has_the_papers_layers_and_keeps_odd_sizes():
    model = kseg.models.SegNetBasic(11)
    conv7 = 7 * 7 * 64 * 64 + 64
    first = 7 * 7 * 3 * 64 + 64
    bn = 4 * 64
    # Four encoder and four decoder 7x7 convolutions with BN, then a 1x1 classifier.
    assert model.count_params() == first + 7 * conv7 + 8 * bn + (64 * 11 + 11)
    assert not any(
        isinstance(layer, keras.layers.ReLU) for layer in model.layers if "decoder" in layer.name
    )
    small = kseg.models.SegNetBasic(4, num_filters=2)
    for size in [(45, 61), (360, 480), (1, 1), (3, 2)]:
        assert tuple(small(np.zeros((2, *size, 3), "float32")).shape) == (2, *size, 4)


def test_unpooled_features_are_zero_away_from_the_pooled_maxima():
    # Two random filters can leave every ReLU output at zero; a fixed seed keeps some alive.
    keras.utils.set_random_seed(0)
    model = kseg.models.SegNetBasic(3, num_filters=2)
    probe = keras.Model(
        model.input,
        [model.get_layer("encoder1_conv_relu").output, model.get_layer("decoder1_unpool").output],
    )
    features, unpooled = (
        np.asarray(t) for t in probe(np.random.default_rng(0).uniform(0, 255, (1, 8, 12, 3)))
    )
    windows = features.reshape(1, 4, 2, 6, 2, 2)
    nonzero = unpooled.reshape(1, 4, 2, 6, 2, 2) != 0
    # At most one position per 2x2 window and channel is written back, and it is the
    # position of that window's maximum in the encoder's features.
    assert np.all(nonzero.sum(axis=(2, 4)) <= 1)
    window_max = windows.max(axis=(2, 4), keepdims=True)
    assert nonzero.any()
    np.testing.assert_array_equal(
        np.broadcast_to(window_max, windows.shape)[nonzero], windows[nonzero]
    )


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="backbone='resnet50'"):
        kseg.models.SegNet(3, backbone="resnet50")
    with pytest.raises(ValueError, match="num_filters=8"):
        kseg.models.SegNet(3, num_filters=8, backbone_weights="imagenet")
    with pytest.raises(ValueError, match="not found"):
        kseg.models.SegNet(3, backbone_weights=tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="backbone='tiny'"):
        kseg.models.SegNetBasic(3, backbone="tiny")


VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def test_imagenet_weights_load_offline_through_keras_applications(tmp_path, monkeypatch):
    """`backbone_weights="imagenet"` end to end, served from a seeded stand-in of Google's file.

    No VGG16 ImageNet file is on this machine, so a randomly initialised VGG16 is written in the
    legacy HDF5 layout of Google's file, under its name, into a private Keras cache with
    downloads forbidden. Its hash cannot match Google's, so the hash check accepts this file
    alone, and the test records that Keras asked for the real file's hash.
    """
    models = tmp_path / "models"
    models.mkdir()
    keras.utils.set_random_seed(7)
    stand_in = keras.applications.VGG16(weights=None, include_top=False)
    with h5py.File(models / VGG16_NOTOP_FILE, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, stand_in)
    del stand_in

    hashes_checked = kseg.testing.offline_keras_cache(
        monkeypatch, tmp_path, stand_ins=[models / VGG16_NOTOP_FILE]
    )

    keras.utils.set_random_seed(8)
    model = kseg.models.SegNet(11, input_shape=(32, 32, 3), backbone_weights="imagenet")
    # keras.applications' published MD5 of the no-top VGG16 file.
    assert hashes_checked == ["6d6bbae143d832006294945121d1f1fc"]

    with h5py.File(models / VGG16_NOTOP_FILE, "r") as file:
        names = [name for name in file.attrs["layer_names"] if "conv" in str(name)]
        assert len(names) == 13
        for name in map(str, names):
            kernel, bias = model.get_layer(name).get_weights()
            np.testing.assert_array_equal(kernel, file[name][f"{name}/kernel"][()])
            np.testing.assert_array_equal(bias, file[name][f"{name}/bias"][()])
    assert tuple(model(np.zeros((1, 32, 32, 3), "float32")).shape) == (1, 32, 32, 11)


def _strip_index_format(source, target):
    """Copies a .keras file with the pooling configs as written before index_format existed."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] in ("MaxPoolingWithArgmax2D", "MaxUnpooling2D"):
                        layer["config"].pop("index_format")
                        if layer["class_name"] == "MaxUnpooling2D":
                            layer["config"].pop("pool_size")
                data = json.dumps(config)
            new.writestr(item, data)


@pytest.mark.parametrize("builder", [kseg.models.SegNet, kseg.models.SegNetBasic])
def test_old_flat_index_files_reload_and_predict_as_the_window_default(builder, tmp_path):
    flat = builder(3, num_filters=2, index_format="flat")
    rng = np.random.default_rng(1)
    for weight in flat.weights:
        if weight.path.endswith(("moving_mean", "moving_variance")):
            continue
        weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
    flat.save(tmp_path / "flat.keras")
    _strip_index_format(tmp_path / "flat.keras", tmp_path / "old.keras")

    reloaded = keras.saving.load_model(tmp_path / "old.keras", safe_mode=True)
    window = builder(3, num_filters=2)
    window.set_weights(flat.get_weights())
    pools = [layer for layer in reloaded.layers if "pool" in layer.name]
    assert pools and {layer.index_format for layer in pools} == {"flat"}
    assert {layer.index_format for layer in window.layers if "pool" in layer.name} == {"window"}

    # Odd sizes through all the poolings: 19 -> 10 -> 5 -> 3 -> 2 -> 1 rows.
    images = rng.uniform(0, 255, (2, 19, 27, 3)).astype("float32")
    expected = np.asarray(flat(images))
    np.testing.assert_array_equal(np.asarray(reloaded(images)), expected)
    np.testing.assert_array_equal(np.asarray(window(images)), expected)


def test_index_format_is_checked():
    with pytest.raises(ValueError, match="index_format='bits'"):
        kseg.models.SegNet(3, index_format="bits")
    with pytest.raises(ValueError, match="index_format='bits'"):
        kseg.models.SegNetBasic(3, index_format="bits")
