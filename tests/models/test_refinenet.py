import keras
import numpy as np
import pytest

from kseg.backbones import get_backbone
from kseg.models.refinenet import RefineNet

# Parameters of the public RefineNet-101 for PASCAL VOC (21 classes): 118,052,437 in all,
# 42,500,160 of them in its ResNet-101 and 75,552,277 in the RefineNet part. Counted by
# instantiating, with torch 2.x, the module structure of rf101(num_classes=21) in
# github.com/DrSleep/refinenet-pytorch (models/resnet.py, utils/layer_factory.py), the
# PyTorch port of the authors' released model (4 pooling blocks per chained residual
# pooling, a 3x3 classifier).
PUBLIC_RF101_DECODER_PARAMS = 75_552_277
PUBLIC_RF101_CLASSIFIER_PARAMS = 3 * 3 * 256 * 21 + 21


def _rcu(channels):
    return 18 * channels * channels + channels


def _decoder_params(stage_channels, num_filters, deepest_filters, crp_blocks, num_classes):
    """RefineNet parameters outside the backbone, from Lin et al. 2017, Sec. 3.2 and Fig. 2.

    `stage_channels` are the backbone widths at strides 4, 8, 16, 32.
    """
    c2, c3, c4, c5 = stage_channels
    f, d = num_filters, deepest_filters
    reduce = 9 * (c5 * d + (c4 + c3 + c2) * f)  # bias-free 3x3 reductions
    crp = crp_blocks * 9  # times width squared
    refinenet_4 = 2 * _rcu(d) + crp * d * d + _rcu(d)
    # RefineNet-3: paths of widths f (stage) and d (RefineNet-4); fusion to f.
    refinenet_3 = 2 * (_rcu(f) + _rcu(d)) + 9 * f * (f + d) + crp * f * f + _rcu(f)
    refinenet_2_and_1 = 2 * (4 * _rcu(f) + 9 * f * 2 * f + crp * f * f + _rcu(f))
    head = 2 * _rcu(f) + f * num_classes + num_classes  # two final RCUs, 1x1 classifier
    return reduce + refinenet_4 + refinenet_3 + refinenet_2_and_1 + head


def _stand_in_backbone(stage_channels):
    """A cheap backbone with the given widths at strides 4..32, in get_backbone's form."""
    image = keras.Input((None, None, 3))
    x = image
    outputs, info = {}, []
    for level, channels in zip((2, 3, 4, 5), stage_channels):
        x = keras.layers.AveragePooling2D(4 if level == 2 else 2, padding="same")(x)
        outputs[f"P{level}"] = keras.layers.Conv2D(channels, 1)(x)
        info.append({"key": f"P{level}", "stride": 2**level, "channels": channels, "layer": None})
    backbone = keras.Model(image, outputs)
    backbone.feature_info = info
    return backbone


@pytest.mark.parametrize("size, fused_size", [((64, 64), (16, 16)), ((65, 97), (17, 25))])
def test_refined_feature_has_output_stride_4_and_logits_the_input_size(size, fused_size):
    model = RefineNet(num_classes=3, backbone="tiny", num_filters=8)
    probe = keras.Model(
        model.input,
        [model.get_layer(f"refinenet_{level}").output for level in (4, 3, 2, 1)] + [model.output],
    )
    outputs = probe(np.zeros((1, *size, 3), "float32"))
    # Ceil division by the stride gives the sizes of a 'same'-padded backbone.
    assert [tuple(out.shape[1:3]) for out in outputs[:4]] == [
        tuple(-(-s // stride) for s in size) for stride in (32, 16, 8, 4)
    ]
    assert tuple(outputs[3].shape[1:3]) == fused_size
    assert [out.shape[-1] for out in outputs[:4]] == [16, 8, 8, 8]
    assert tuple(outputs[4].shape) == (1, *size, 3)


def test_parameter_count_follows_the_architecture_on_the_tiny_backbone():
    backbone = get_backbone("tiny")
    channels = [info["channels"] for info in backbone.feature_info if info["stride"] >= 4]
    model = RefineNet(num_classes=5, backbone=backbone, num_filters=8, crp_blocks=2)
    decoder = model.count_params() - backbone.count_params()
    assert decoder == _decoder_params(channels, 8, 16, crp_blocks=2, num_classes=5)


def test_released_configuration_matches_the_public_resnet101_refinenet():
    # The released model groups its units differently (three RCUs after each chained pooling,
    # none on the incoming coarse path) but the layers are the same; only the classifier
    # differs: 3x3 there, 1x1 here.
    backbone = _stand_in_backbone((256, 512, 1024, 2048))
    model = RefineNet(num_classes=21, backbone=backbone, crp_blocks=4)
    decoder = model.count_params() - backbone.count_params()
    expected = PUBLIC_RF101_DECODER_PARAMS - PUBLIC_RF101_CLASSIFIER_PARAMS + 256 * 21 + 21
    assert decoder == expected
    assert decoder == _decoder_params((256, 512, 1024, 2048), 256, 512, 4, 21)


def test_paper_configuration_has_two_pooling_blocks_and_512_wide_refinenet_4():
    model = RefineNet(num_classes=21, backbone=_stand_in_backbone((8, 8, 8, 8)))
    assert model.get_layer("p5_reduce").filters == 512
    assert {model.get_layer(f"p{level}_reduce").filters for level in (2, 3, 4)} == {256}
    assert all(model.get_layer(f"refinenet_{level}").crp_blocks == 2 for level in (1, 2, 3, 4))
    assert model.get_layer("refinenet_1").output.shape[-1] == 256


def test_dropout_before_the_classifier_is_optional():
    model = RefineNet(num_classes=3, backbone="tiny", num_filters=8, dropout=0.5)
    assert model.get_layer("dropout").rate == 0.5
    plain = RefineNet(num_classes=3, backbone="tiny", num_filters=8)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in plain.layers)


def test_rejects_a_backbone_without_stride_32_features():
    with pytest.raises(ValueError, match="'P5' at stride 32"):
        RefineNet(num_classes=3, backbone=get_backbone("tiny", output_stride=16))
    with pytest.raises(ValueError, match="dropout"):
        RefineNet(num_classes=3, backbone="tiny", dropout=1.0)
