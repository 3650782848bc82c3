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
