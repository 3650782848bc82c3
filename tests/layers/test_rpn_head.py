import keras
import numpy as np

from kseg.layers.rpn_head import RegionProposalHead


def test_outputs_follow_the_anchor_order_y_x_anchor():
    # generate_anchors orders anchors row-major over (y, x, anchor); a response at one position
    # must land at flat index (y * W + x) * A + a.
    head = RegionProposalHead(num_anchors=3, channels=2)
    feature = np.zeros((1, 4, 5, 2), "float32")
    head([feature])
    head.shared.set_weights([np.zeros((3, 3, 2, 2), "float32"), np.zeros(2, "float32")])
    head.objectness.set_weights([np.zeros((1, 1, 2, 3), "float32"), np.array([0, 1, 2], "float32")])
    kernel = np.zeros((1, 1, 2, 12), "float32")
    head.box_deltas.set_weights([kernel, np.arange(12, dtype="float32")])
    scores, deltas = head([feature])
    scores = keras.ops.convert_to_numpy(scores[0])[0]
    deltas = keras.ops.convert_to_numpy(deltas[0])[0]
    assert scores.shape == (4 * 5 * 3,)
    np.testing.assert_array_equal(scores.reshape(20, 3), np.tile([0, 1, 2], (20, 1)))
    np.testing.assert_array_equal(deltas.reshape(20, 3, 4)[7], np.arange(12).reshape(3, 4))


def test_one_set_of_weights_serves_every_level_and_parameter_count():
    head = RegionProposalHead(3, 256)
    levels = [np.zeros((1, s, s, 256), "float32") for s in (16, 8, 4)]
    scores, deltas = head(levels)
    assert [s.shape[1] for s in scores] == [16 * 16 * 3, 8 * 8 * 3, 4 * 4 * 3]
    assert [tuple(d.shape[1:]) for d in deltas] == [(768, 4), (192, 4), (48, 4)]
    # Ren et al. 2015: a 3x3x256 conv and sibling 1x1 convs for A scores and 4A deltas.
    assert head.count_params() == (9 * 256 * 256 + 256) + (256 * 3 + 3) + (256 * 12 + 12)


def test_outputs_are_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    scores, deltas = RegionProposalHead(3, 4)([np.zeros((1, 2, 2, 4), "float32")])
    assert scores[0].dtype == "float32" and deltas[0].dtype == "float32"


def test_two_convolution_head_is_torchvisions_v2_rpn():
    # torchvision's RPNHead(256, 3, conv_depth=2): two 3x3 convolutions with bias and ReLU.
    head = RegionProposalHead(3, 256, num_convs=2)
    head.build([(None, None, None, 256)])
    assert head.count_params() == 2 * (9 * 256 * 256 + 256) + (256 * 3 + 3) + (256 * 12 + 12)
    assert [conv.name for conv in head.convs] == ["rpn_conv", "rpn_conv_2"]
    assert head.shared is head.convs[0]
    config = head.get_config()
    assert RegionProposalHead.from_config(config).get_config() == config
