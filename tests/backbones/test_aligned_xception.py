import keras
import numpy as np
import pytest

import kseg.backbones
from kseg.backbones.aligned_xception import AlignedXception65

# DeepLabv3+ with Xception-65 and 21 classes: 41,258,213 parameters in the Keras port of the
# official TensorFlow model (ZFTurbo, Keras-inference-time-optimizer, README table).
PUBLISHED_DEEPLABV3PLUS_XCEPTION65_PARAMS = 41_258_213


def _batch_norm(channels):
    return 4 * channels  # gamma, beta, moving mean, moving variance


def _separable(channels_in, channels_out):
    # depthwise 3x3 -> BN -> pointwise 1x1 -> BN, no biases
    return (
        9 * channels_in
        + _batch_norm(channels_in)
        + channels_in * channels_out
        + _batch_norm(channels_out)
    )


def _xception65_params():
    """Parameter count from the layer widths of Chen et al. (2018), Figure 4."""
    total = 3 * 3 * 3 * 32 + _batch_norm(32) + 3 * 3 * 32 * 64 + _batch_norm(64)
    blocks = [
        (64, (128, 128, 128), True),
        (128, (256, 256, 256), True),
        (256, (728, 728, 728), True),
        *[(728, (728, 728, 728), False)] * 16,
        (728, (728, 1024, 1024), True),
        (1024, (1536, 1536, 2048), False),
    ]
    for channels_in, widths, conv_shortcut in blocks:
        previous = channels_in
        for width in widths:
            total += _separable(previous, width)
            previous = width
        if conv_shortcut:
            total += channels_in * widths[-1] + _batch_norm(widths[-1])
    return total


def _deeplabv3plus_head_params(num_classes=21):
    """ASPP (image pooling, 1x1, three atrous separable 3x3, projection) and decoder."""
    aspp = 2 * (2048 * 256 + _batch_norm(256)) + 3 * _separable(2048, 256)
    aspp += 5 * 256 * 256 + _batch_norm(256)
    decoder = 256 * 48 + _batch_norm(48) + _separable(256 + 48, 256) + _separable(256, 256)
    return aspp + decoder + 256 * num_classes + num_classes


def test_formula_reproduces_the_published_deeplab_count():
    total = _xception65_params() + _deeplabv3plus_head_params()
    assert total == PUBLISHED_DEEPLABV3PLUS_XCEPTION65_PARAMS


@pytest.fixture(scope="module")
def xception65():
    # Only the graph and shapes are read: a StatelessScope defers the weights' random values.
    with keras.StatelessScope():
        return kseg.backbones.get_backbone("xception65")


def test_parameter_count(xception65):
    assert xception65.count_params() == _xception65_params()


def test_decoder_feature_and_names(xception65):
    info = {entry["key"]: entry for entry in xception65.feature_info}
    assert info["P2"]["layer"] == "entry_flow_block2_sepconv2_pointwise_relu"
    assert (info["P2"]["stride"], info["P2"]["channels"]) == (4, 256)
    assert (info["P5"]["stride"], info["P5"]["channels"]) == (32, 2048)
    flows = ("entry_flow_", "middle_flow_", "exit_flow_")
    unnamed = [layer.name for layer in xception65.layers[2:] if not layer.name.startswith(flows)]
    assert unnamed == []
    assert (
        len(
            [
                layer
                for layer in xception65.layers
                if layer.name.startswith("middle_flow") and layer.name.endswith("_add")
            ]
        )
        == 16
    )


@pytest.mark.parametrize(
    "output_stride, rates",
    [
        # DeepLab's stack_blocks_dense: once the target stride is reached, later blocks run at
        # stride 1 and the rate grows by each skipped stride.
        (
            32,
            {
                "entry_flow_block3": 1,
                "middle_flow_block1": 1,
                "exit_flow_block1": 1,
                "exit_flow_block2": 1,
            },
        ),
        (
            16,
            {
                "entry_flow_block3": 1,
                "middle_flow_block1": 1,
                "exit_flow_block1": 1,
                "exit_flow_block2": 2,
            },
        ),
        (
            8,
            {
                "entry_flow_block3": 1,
                "middle_flow_block16": 2,
                "exit_flow_block1": 2,
                "exit_flow_block2": 4,
            },
        ),
    ],
)
def test_native_output_strides(output_stride, rates):
    model = AlignedXception65(output_stride=output_stride)
    for block, rate in rates.items():
        layer = model.get_layer(f"{block}_sepconv1_depthwise")
        assert layer.dilation_rate == (rate, rate), block
    strided = [
        block
        for block in (
            "entry_flow_block1",
            "entry_flow_block2",
            "entry_flow_block3",
            "exit_flow_block1",
        )
        if model.get_layer(f"{block}_sepconv3_depthwise").strides == (2, 2)
    ]
    assert 2 * 2 ** len(strided) == output_stride
    assert model.output.shape[-1] == 2048


def test_multi_grid_on_the_last_block():
    model = AlignedXception65(output_stride=16, multi_grid=(1, 2, 4))
    rates = [
        model.get_layer(f"exit_flow_block2_sepconv{i}_depthwise").dilation_rate for i in (1, 2, 3)
    ]
    assert rates == [(2, 2), (4, 4), (8, 8)]


def test_one_weights_file_serves_every_output_stride(xception65, tmp_path):
    path = tmp_path / "xception65.weights.h5"
    xception65.save_weights(path)
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    reference = xception65(images)
    for output_stride, deepest in ((16, "P4"), (8, "P3")):
        dilated = kseg.backbones.get_backbone(
            "xception65", weights=path, output_stride=output_stride
        )
        features = dilated(images)
        assert max(features, key=lambda k: int(k[1:])) == deepest
        assert features[deepest].shape[1:] == (64 // output_stride, 64 // output_stride, 2048)
        np.testing.assert_array_equal(np.asarray(features["P2"]), np.asarray(reference["P2"]))
        # Symmetric explicit padding centres every strided output i on input 2i, as the 1x1
        # shortcuts do, so the dilated network's outputs at multiples of the lost stride are
        # the strided network's.
        step = 32 // output_stride
        coarse = np.asarray(reference["P5"])
        np.testing.assert_allclose(
            np.asarray(features[deepest])[:, ::step, ::step],
            coarse,
            rtol=1e-4,
            atol=1e-4 * np.abs(coarse).max(),
        )


def test_invalid_arguments():
    with pytest.raises(ValueError, match="No ImageNet"):
        kseg.backbones.get_backbone("xception65", weights="imagenet")
    with pytest.raises(ValueError, match="Received: output_stride=4"):
        AlignedXception65(output_stride=4)
    with pytest.raises(ValueError, match="Received: multi_grid=\\(1, 2\\)"):
        AlignedXception65(multi_grid=(1, 2))
