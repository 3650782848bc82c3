import keras
import numpy as np
import pytest

from kseg.layers.fpn import FeaturePyramid

RESNET50_STAGE_CHANNELS = (256, 512, 1024, 2048)


def test_resnet50_neck_parameter_count_follows_the_paper_layout():
    # Lin et al. 2017, Sec. 3: a 1x1 lateral (with bias) per stage and a 3x3 output conv per
    # level, all 256 wide; P6 is a parameter-free subsampling. torchvision's ResNet-50 FPN neck
    # has the same 3,344,384 parameters.
    layer = FeaturePyramid(256)
    layer.build([(None, None, None, c) for c in RESNET50_STAGE_CHANNELS])
    laterals = sum(c * 256 + 256 for c in RESNET50_STAGE_CHANNELS)
    outputs = 4 * (3 * 3 * 256 * 256 + 256)
    assert layer.count_params() == laterals + outputs == 3_344_384


@pytest.mark.parametrize("size", [(64, 64), (128, 192)])
def test_levels_have_strides_4_to_64(size):
    height, width = size
    features = [np.zeros((2, height // s, width // s, 3), "float32") for s in (4, 8, 16, 32)]
    outputs = FeaturePyramid(8)(features)
    assert [tuple(o.shape) for o in outputs] == [
        (2, height // s, width // s, 8) for s in (4, 8, 16, 32, 64)
    ]


def test_top_down_path_carries_coarse_information_to_every_finer_level():
    # A signal only in C5 must reach P2 through the nearest-neighbour top-down path, and its
    # 2x2 blocks must be constant (nearest upsampling) before the 3x3 smoothing.
    layer = FeaturePyramid(4, extra_level=False)
    c5 = np.zeros((1, 2, 2, 3), "float32")
    c5[0, 1, 0] = 1.0
    features = [np.zeros((1, 16 // s, 16 // s, 3), "float32") for s in (1, 2, 4)] + [c5]
    layer(features)
    for conv in layer.smoothing:
        kernel = np.zeros((3, 3, 4, 4), "float32")
        kernel[1, 1] = np.eye(4)
        conv.set_weights([kernel, np.zeros(4, "float32")])
    p2 = keras.ops.convert_to_numpy(layer(features)[0])[0, ..., 0]
    lateral = keras.ops.convert_to_numpy(layer.laterals[-1](c5))[0, ..., 0]
    expected = np.kron(lateral, np.ones((8, 8)))
    expected += float(keras.ops.convert_to_numpy(layer.laterals[0].bias)[0])
    expected += float(keras.ops.convert_to_numpy(layer.laterals[1].bias)[0])
    expected += float(keras.ops.convert_to_numpy(layer.laterals[2].bias)[0])
    np.testing.assert_allclose(p2, expected, atol=1e-5)


def test_wrong_number_of_inputs_is_named():
    with pytest.raises(ValueError, match="list of 4 feature maps"):
        FeaturePyramid(8)([np.zeros((1, 4, 4, 3), "float32")] * 3)


def test_saves_and_reloads_in_safe_mode(tmp_path):
    inputs = [keras.Input((None, None, 3)) for _ in range(4)]
    model = keras.Model(inputs, FeaturePyramid(8)(inputs))
    features = [
        np.random.default_rng(s).random((1, 32 // 2**s, 32 // 2**s, 3), "float32") for s in range(4)
    ]
    path = tmp_path / "fpn.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(model(features), reloaded(features)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def _torchvision_v2_parameters(prefix):
    """Values under `prefix` in torchvision's maskrcnn_resnet50_fpn_v2 state dict (counters out)."""
    import json
    from pathlib import Path

    keys = json.loads(
        (
            Path(__file__).resolve().parents[1] / "fixtures" / "torchvision_mask_rcnn_keys.json"
        ).read_text()
    )["maskrcnn_resnet50_fpn_v2"]
    return sum(
        int(np.prod(shape))
        for key, shape in keys
        if key.startswith(prefix) and not key.endswith("num_batches_tracked")
    )


def test_batch_norm_variant_has_torchvisions_v2_neck():
    # torchvision's v2 FPN: Conv2dNormActivation(conv without bias, BatchNorm2d) for every
    # lateral and output; its four BN vectors are Keras's gamma, beta, moving mean and variance.
    layer = FeaturePyramid(256, batch_norm=True)
    layer.build([(None, None, None, c) for c in RESNET50_STAGE_CHANNELS])
    assert layer.count_params() == _torchvision_v2_parameters("backbone.fpn.")
    assert not layer.laterals[0].use_bias and layer.smoothing_norms[3].name == "p5_output_bn"
    config = layer.get_config()
    assert FeaturePyramid.from_config(config).get_config() == config
    # In inference the normalisation uses the moving statistics.
    small = FeaturePyramid(2, extra_level=False, num_inputs=2, batch_norm=True)
    features = [np.ones((1, 4, 4, 3), "float32"), np.ones((1, 2, 2, 3), "float32")]
    small(features)
    for norm in small.lateral_norms + small.smoothing_norms:
        norm.moving_mean.assign([1.0, -1.0])
        # Variance + epsilon = 1: the normalisation is a shift by the mean only.
        norm.moving_variance.assign([1.0 - 1e-5, 1.0 - 1e-5])
    outputs = small(features, training=False)
    plain = FeaturePyramid(2, extra_level=False, num_inputs=2)
    plain(features)
    for source, target in zip(small.laterals + small.smoothing, plain.laterals + plain.smoothing):
        target.kernel.assign(source.kernel)
        target.bias.assign([-1.0, 1.0])
    expected = plain(features)
    for output, reference in zip(outputs, expected):
        np.testing.assert_allclose(np.asarray(output), reference, atol=1e-5)
