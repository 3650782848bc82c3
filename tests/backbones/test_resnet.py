import keras
import numpy as np
import pytest

import kseg.backbones
from kseg.backbones.atrous import layer_strides
from kseg.backbones.resnet import FrozenBatchNormalization, ResNet, resnet_taps, stage_dilations

# Narrow networks keep builds and steps to a fraction of a second; layout and names are the
# full depth-50 network's.
SMALL = {"depth": 50, "base_channels": 4}


def _pytorch_size(size, kernel, stride, padding, dilation=1):
    # torch.nn.Conv2d / MaxPool2d output size (floor mode), from the PyTorch documentation.
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _expected_tap_sizes(size, output_stride):
    """Spatial size of each stage output by PyTorch's formula, for one image side."""
    sizes = {}
    size = _pytorch_size(size, 7, 2, 3)
    sizes["relu"] = size
    size = _pytorch_size(size, 3, 2, 1)
    sizes["layer1"] = size
    strided = {32: (2, 3, 4), 16: (2, 3), 8: (2,)}[output_stride]
    for stage in (2, 3, 4):
        if stage in strided:
            size = _pytorch_size(size, 3, 2, 1)
        sizes[f"layer{stage}"] = size
    return sizes


def _pyramid(model, depth=50):
    """The stage outputs of a `ResNet` as a dict keyed by the torchvision module name."""
    taps = resnet_taps(depth)
    names = {"relu": taps["P1"], **{f"layer{s}": taps[f"P{s + 1}"] for s in range(1, 5)}}
    return keras.Model(model.input, {key: model.get_layer(n).output for key, n in names.items()})


# torchvision.models.resnet.ResNet._make_layer with replace_stride_with_dilation: the first
# unit of a dilated stage keeps the previous rate (read from torchvision 0.29.1).
@pytest.mark.parametrize(
    "output_stride, expected",
    [
        (32, [(1, [1] * 3), (2, [1] * 4), (2, [1] * 6), (2, [1] * 3)]),
        (16, [(1, [1] * 3), (2, [1] * 4), (2, [1] * 6), (1, [1, 2, 2])]),
        (8, [(1, [1] * 3), (2, [1] * 4), (1, [1] + [2] * 5), (1, [2, 4, 4])]),
    ],
)
def test_stage_dilations_follow_torchvision(output_stride, expected):
    assert stage_dilations(output_stride) == expected


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_strides_and_odd_sizes_match_pytorch(output_stride):
    with keras.StatelessScope():
        model = ResNet(output_stride=output_stride, **SMALL)
    pyramid = _pyramid(model)
    strides = layer_strides(model)
    expected_strides = {"relu": 2, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
    for height, width in [(33, 47), (64, 50), (1, 2)]:
        spec = pyramid.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
        rows, columns = (
            _expected_tap_sizes(height, output_stride),
            _expected_tap_sizes(width, output_stride),
        )
        for key, tensor in spec.items():
            assert tensor.shape[1:3] == (rows[key], columns[key]), (key, height, width)
    for key, layer in zip(expected_strides, resnet_taps(50).values(), strict=True):
        assert strides[layer][1] == min(expected_strides[key], output_stride), key
    channels = {key: tensor.shape[-1] for key, tensor in pyramid.output.items()}
    assert channels == {"relu": 4, "layer1": 16, "layer2": 32, "layer3": 64, "layer4": 128}


def test_feature_info_of_a_tapped_model_at_output_stride_8():
    model = ResNet(output_stride=8, **SMALL)
    taps = resnet_taps(50)
    tapped = keras.Model(model.input, {key: model.get_layer(n).output for key, n in taps.items()})
    info = kseg.backbones.feature_info(tapped)
    by_layer = {entry["layer"]: entry["stride"] for entry in info}
    assert by_layer == {
        "relu": 2,
        "layer1.2.out": 4,
        "layer2.3.out": 8,
        "layer3.5.out": 8,
        "layer4.2.out": 8,
    }
    features = tapped(np.zeros((1, 37, 29, 3), "float32"))
    assert tuple(features["P5"].shape) == (1, 5, 4, 128)


def test_dilated_units_pad_by_their_rate():
    with keras.StatelessScope():
        model = ResNet(output_stride=8, **SMALL)
    for name, rate in [("layer3.0", 1), ("layer3.1", 2), ("layer4.0", 2), ("layer4.2", 4)]:
        conv = model.get_layer(f"{name}.conv2")
        assert conv.dilation_rate == (rate, rate) and conv.strides == (1, 1)
        assert model.get_layer(f"{name}.conv2_pad").padding == ((rate, rate), (rate, rate))
    assert model.get_layer("layer4.0.downsample.0").strides == (1, 1)


@pytest.mark.parametrize("stride_in_1x1", [False, True])
def test_stride_placement_of_v1_and_v1_5(stride_in_1x1):
    with keras.StatelessScope():
        model = ResNet(stride_in_1x1=stride_in_1x1, **SMALL)
    for stage in (2, 3, 4):
        conv1 = model.get_layer(f"layer{stage}.0.conv1").strides
        conv2 = model.get_layer(f"layer{stage}.0.conv2").strides
        assert (conv1, conv2) == (((2, 2), (1, 1)) if stride_in_1x1 else ((1, 1), (2, 2)))
        assert model.get_layer(f"layer{stage}.0.downsample.0").strides == (2, 2)
        assert model.get_layer(f"layer{stage}.1.conv2").strides == (1, 1)
    # layer1 only widens the channels: its projection keeps stride 1.
    assert model.get_layer("layer1.0.downsample.0").strides == (1, 1)


def test_bias_epsilon_and_layer_names():
    with keras.StatelessScope():
        model = ResNet(use_bias=True, bn_epsilon=1.001e-5, **SMALL)
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.use_bias for layer in convolutions)
    assert all(layer.epsilon == 1.001e-5 for layer in norms)
    # 1 stem + 16 units x 3 + 4 projections; every convolution has its BatchNorm.
    assert len(convolutions) == len(norms) == 53
    assert {layer.name for layer in convolutions} >= {
        "conv1",
        "layer4.2.conv3",
        "layer3.0.downsample.0",
    }
    with keras.StatelessScope():
        default = ResNet(**SMALL)
    assert not any(
        layer.use_bias for layer in default.layers if isinstance(layer, keras.layers.Conv2D)
    )
    assert default.get_layer("bn1").epsilon == 1e-5


def _fit_one_step(model):
    head = keras.layers.Conv2D(2, 1)(model.output)
    trainer = keras.Model(model.input, head)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    trainer.fit(images, rng.normal(size=(2, 1, 1, 2)).astype("float32"), epochs=1, verbose=0)


def test_frozen_batchnorm_stays_in_inference_mode_during_fit():
    model = ResNet(frozen_batchnorm=True, **SMALL)
    # Trying to unfreeze, as fine-tuning code does, must not unfreeze these layers.
    model.trainable = True
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(isinstance(layer, FrozenBatchNormalization) for layer in norms)
    before = [[np.array(w) for w in layer.weights] for layer in norms]
    images = np.random.default_rng(1).normal(size=(2, 17, 19, 3)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(model(images, training=True)), np.asarray(model(images, training=False))
    )
    _fit_one_step(model)
    for layer, weights in zip(norms, before, strict=True):
        for new, old in zip(layer.weights, weights, strict=True):
            np.testing.assert_array_equal(np.array(new), old, err_msg=layer.name)
    # The convolutions did train, so the step ran.
    trainable = [w.path for w in model.trainable_weights]
    assert trainable and all("kernel" in path for path in trainable)


def test_plain_batchnorm_does_update_during_fit():
    model = ResNet(**SMALL)
    mean = model.get_layer("bn1").moving_mean
    before = np.array(mean)
    _fit_one_step(model)
    assert not np.allclose(np.array(mean), before)


def test_config_round_trip_and_save_reload(tmp_path):
    model = ResNet(frozen_batchnorm=True, output_stride=16, **SMALL)
    rng = np.random.default_rng(2)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    images = rng.normal(size=(1, 27, 35, 3)).astype("float32")
    expected = np.asarray(model(images))
    path = tmp_path / "resnet.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded(images)), expected, rtol=1e-6, atol=1e-6)
    layer = reloaded.get_layer("layer2.0.bn2")
    assert isinstance(layer, FrozenBatchNormalization) and not layer.trainable
    clone = keras.Model.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.get_layer("layer4.1.conv2").dilation_rate == (2, 2)


def test_weights_file_loads(tmp_path):
    source = ResNet(**SMALL)
    path = tmp_path / "small.weights.h5"
    source.save_weights(path)
    target = ResNet(weights=path, **SMALL)
    for new, old in zip(target.weights, source.weights, strict=True):
        np.testing.assert_array_equal(np.array(new), np.array(old))


def test_multi_grid_multiplies_layer4_rates():
    with keras.StatelessScope():
        model = ResNet(output_stride=16, multi_grid=(1, 2, 4), **SMALL)
    rates = [model.get_layer(f"layer4.{unit}.conv2").dilation_rate[0] for unit in range(3)]
    assert rates == [1, 4, 8]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="Received: depth=18"):
        ResNet(depth=18)
    with pytest.raises(ValueError, match="Received: output_stride=4"):
        ResNet(output_stride=4, **SMALL)
    with pytest.raises(ValueError, match="Received: multi_grid=\\(1, 2\\)"):
        ResNet(multi_grid=(1, 2), **SMALL)
    with pytest.raises(ValueError, match="Received: base_channels=0"):
        ResNet(depth=50, base_channels=0)
    with pytest.raises(ValueError, match="Received: bn_epsilon=0"):
        ResNet(bn_epsilon=0, **SMALL)
    with pytest.raises(ValueError, match="load_torchvision_resnet_weights"):
        ResNet(weights="imagenet", **SMALL)
