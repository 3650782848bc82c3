import keras
import numpy as np
import pytest

from kseg.layers.roi_heads import BoxHead, MaskHead


def test_box_head_has_the_paper_layout_for_coco():
    # He et al. 2017, Fig. 4: 7x7x256 RoI features, two 1024-d fc layers, 81 class scores and
    # 81 x 4 class-specific box deltas.
    head = BoxHead(81)
    head.build((None, None, 7, 7, 256))
    expected = (7 * 7 * 256 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 81 + 81)
    expected += 1024 * 324 + 324
    assert head.count_params() == expected == 14_310_805


def test_mask_head_has_the_paper_layout_for_coco():
    # Four 3x3x256 convs, a 2x2 stride-2 deconv to 28x28 and a 1x1 conv to 81 masks.
    head = MaskHead(81)
    out = head(np.zeros((1, 2, 14, 14, 256), "float32"))
    assert tuple(out.shape) == (1, 2, 28, 28, 81)
    expected = 4 * (9 * 256 * 256 + 256) + (2 * 2 * 256 * 256 + 256) + (256 * 81 + 81)
    assert head.count_params() == expected == 2_643_537


def test_regions_are_independent():
    # Each region's outputs depend on its own pooled features only.
    rng = np.random.default_rng(0)
    pooled = rng.random((2, 3, 7, 7, 4), "float32")
    box_head, mask_head = BoxHead(3, 8), MaskHead(3, channels=4)
    logits, _ = box_head(pooled)
    masks = mask_head(pooled)
    changed = pooled.copy()
    changed[1, 2] += 1.0
    logits2, _ = box_head(changed)
    masks2 = mask_head(changed)
    diff = np.abs(keras.ops.convert_to_numpy(logits2 - logits)).sum(-1)
    assert diff[1, 2] > 0 and np.count_nonzero(diff) == 1
    mask_diff = np.abs(keras.ops.convert_to_numpy(masks2 - masks)).sum((2, 3, 4))
    assert mask_diff[1, 2] > 0 and np.count_nonzero(mask_diff) == 1


@pytest.mark.parametrize("num_classes", [1, 0])
def test_box_head_needs_a_background_and_an_object_class(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        BoxHead(num_classes)


def test_heads_output_float32_under_mixed_precision_and_reload(tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")
    pooled = keras.Input((None, 7, 7, 4))
    logits, deltas = BoxHead(3, 8)(pooled)
    masks = MaskHead(3, channels=4)(pooled)
    model = keras.Model(pooled, [logits, deltas, masks])
    x = np.random.default_rng(1).random((1, 2, 7, 7, 4), "float32")
    outputs = model(x)
    assert all(o.dtype == "float32" for o in outputs)
    path = tmp_path / "heads.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(outputs, reloaded(x)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def _torchvision_v2_parameters(*prefixes):
    """Values under `prefixes` in torchvision's maskrcnn_resnet50_fpn_v2 state dict."""
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
        if key.startswith(prefixes) and not key.endswith("num_batches_tracked")
    )


def test_conv_box_head_has_torchvisions_v2_layout():
    # FastRCNNConvFCHead((256, 7, 7), [256] * 4, [1024], BatchNorm2d) and FastRCNNPredictor.
    head = BoxHead(91, 1024, num_convs=4, conv_channels=256, num_fc=1)
    head.build((None, None, 7, 7, 256))
    assert head.count_params() == _torchvision_v2_parameters(
        "roi_heads.box_head.", "roi_heads.box_predictor."
    )
    assert [layer.name for layer in head.hidden] == ["box_fc1"]
    assert [norm.name for norm in head.conv_norms] == [f"box_conv{i}_bn" for i in (1, 2, 3, 4)]
    config = head.get_config()
    assert BoxHead.from_config(config).get_config() == config
    logits, deltas = head(np.zeros((2, 3, 7, 7, 256), "float32"))
    assert tuple(logits.shape) == (2, 3, 91) and tuple(deltas.shape) == (2, 3, 91, 4)
    with pytest.raises(ValueError, match="num_convs must be a non-negative integer"):
        BoxHead(3, num_convs=-1)


def test_batch_norm_mask_head_has_torchvisions_v2_layout():
    # MaskRCNNHeads(256, [256] * 4, 1, norm_layer=BatchNorm2d) and MaskRCNNPredictor.
    head = MaskHead(91, batch_norm=True)
    head.build((None, None, 14, 14, 256))
    assert head.count_params() == _torchvision_v2_parameters(
        "roi_heads.mask_head.", "roi_heads.mask_predictor."
    )
    assert not head.convs[0].use_bias and head.convs[0].activation.__name__ == "linear"
    config = head.get_config()
    assert MaskHead.from_config(config).get_config() == config
    # Batch norm comes before the ReLU: a negative normalised value is cut to zero.
    small = MaskHead(2, channels=1, num_convs=1, batch_norm=True)
    small.build((None, None, 2, 2, 1))
    small.convs[0].kernel.assign(np.zeros((3, 3, 1, 1), "float32"))
    small.conv_norms[0].beta.assign([-1.0])
    small.upsample.kernel.assign(np.ones((2, 2, 1, 1), "float32"))
    small.upsample.bias.assign([0.0])
    small.predictor.kernel.assign(np.ones((1, 1, 1, 2), "float32"))
    small.predictor.bias.assign([0.5, 0.5])
    np.testing.assert_allclose(small(np.ones((1, 1, 2, 2, 1), "float32")), 0.5)
