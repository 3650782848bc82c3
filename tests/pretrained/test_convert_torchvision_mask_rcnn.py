import json
import subprocess
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.detection.serving import detections_with_masks
from kseg.pretrained import read_torch_checkpoint
from kseg.pretrained.convert_torchvision_mask_rcnn import (
    TORCHVISION_MASK_RCNN_CONFIGS,
    build_torchvision_mask_rcnn,
    current_key,
    load_torchvision_mask_rcnn_checkpoint,
    load_torchvision_mask_rcnn_weights,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Written by tests/fixtures/torchvision_mask_rcnn_reference.py (NAME "small") with torch 2.14.1
# and torchvision 0.29.1.
SMALL_STATE = FIXTURES / "torchvision_mask_rcnn_small.pth"
SMALL_REFERENCE = FIXTURES / "torchvision_mask_rcnn_small.npz"
REFERENCE_SCRIPT = FIXTURES / "torchvision_mask_rcnn_reference.py"
# Written by tests/fixtures/make_torchvision_mask_rcnn_keys.py (torchvision 0.29.1).
KEY_SHAPES = json.loads((FIXTURES / "torchvision_mask_rcnn_keys.json").read_text())
NAMES = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
# The reference script's transform sizes (torchvision's min_size / max_size).
TEST_SIZES = {"resize_min_side": 160, "resize_max_side": 256}
# The narrow model of the reference script, as a kseg configuration.
SMALL_OVERRIDES = {
    **TEST_SIZES,
    "num_classes": 5,
    "fpn_channels": 16,
    "box_fc_units": 32,
    "mask_channels": 16,
    "backbone_kwargs": {"frozen_batchnorm": True, "base_channels": 2},
}


def _small_model():
    model = build_torchvision_mask_rcnn("maskrcnn_resnet50_fpn", **SMALL_OVERRIDES)
    load_torchvision_mask_rcnn_weights(model, read_torch_checkpoint(SMALL_STATE))
    return model


def _parity(model, reference, index):
    """Detections of `model` against torchvision's on image `index`, as the issue measures them."""
    image = reference[f"image{index}"].astype("float32")
    out = {key: value.numpy() for key, value in detections_with_masks(model, image).items()}
    count = int(out["num_detections"][0])
    expected_boxes = reference[f"boxes{index}"]
    assert count == len(expected_boxes), f"image {index}: {count} detections"
    boxes = out["boxes"][0, :count][:, [1, 0, 3, 2]]  # kseg [y1, x1, y2, x2] -> torch's order
    order = _pair_near_ties(
        out["scores"][0, :count], out["classes"][0, :count], boxes, reference, index
    )
    np.testing.assert_array_equal(out["classes"][0, order], reference[f"labels{index}"])
    masks = out["masks"][0, order].astype(bool)
    return {
        "box": float(np.abs(boxes[order] - expected_boxes).max()),
        "score": float(np.abs(out["scores"][0, order] - reference[f"scores{index}"]).max()),
        "mask": float(np.mean(masks == reference[f"masks{index}"].astype(bool))),
        "count": count,
    }


# Detections whose scores differ by less than float32 rounding of the network can come out in
# either order from either library; such a pair is compared with each other, not by position.
NEAR_TIE = 1e-5


def _pair_near_ties(scores, labels, boxes, reference, index):
    """For each torchvision detection, the kseg detection it is: by position, except that
    among detections within `NEAR_TIE` of its score the one with its label and nearest box."""
    expected_scores = reference[f"scores{index}"]
    expected_labels = reference[f"labels{index}"]
    expected_boxes = reference[f"boxes{index}"]
    order, used = [], set()
    for position, score in enumerate(expected_scores):
        candidates = [
            j
            for j in range(len(scores))
            if j not in used
            and abs(scores[j] - score) <= NEAR_TIE
            and labels[j] == expected_labels[position]
        ]
        if not candidates:
            candidates = [position]
        distance = [np.abs(boxes[j] - expected_boxes[position]).max() for j in candidates]
        order.append(candidates[int(np.argmin(distance))])
        used.add(order[-1])
    return np.array(order)


def _assert_parity(figures):
    assert figures["count"] > 0
    assert figures["box"] <= 1e-3, figures
    assert figures["score"] <= 1e-4, figures
    assert figures["mask"] >= 0.999, figures


def test_narrow_model_matches_torchvision_detections_on_five_sizes():
    model = _small_model()
    reference = np.load(SMALL_REFERENCE)
    for index in range(5):
        _assert_parity(_parity(model, reference, index))


@pytest.mark.parametrize("name", NAMES)
def test_every_key_of_the_full_models_fills_one_variable(name):
    rng = np.random.default_rng(0)
    state = {
        key: np.array(0, "int64")
        if key.endswith("num_batches_tracked")
        else rng.normal(size=shape).astype("float32")
        for key, shape in KEY_SHAPES[name]
    }
    model = build_torchvision_mask_rcnn(name)
    assert load_torchvision_mask_rcnn_weights(model, state) == sorted(state)
    placements = {
        "rpn.head.cls_logits.bias": model.rpn_head.objectness.bias,
        "roi_heads.mask_predictor.mask_fcn_logits.bias": model.mask_head.predictor.bias,
        "roi_heads.box_predictor.cls_score.bias": model.box_head.classifier.bias,
    }
    if name.endswith("v2"):
        # torchvision v2: Conv2dNormActivation blocks (conv, BN) in the FPN, the box and mask
        # heads; a second RPN convolution; one Linear after the box head's Flatten (index 4).
        placements["backbone.fpn.layer_blocks.2.1.running_var"] = (
            model.feature_pyramid.smoothing_norms[2].moving_variance
        )
        placements["rpn.head.conv.1.0.bias"] = model.rpn_head.convs[1].bias
        placements["roi_heads.box_head.3.1.weight"] = model.box_head.conv_norms[3].gamma
        placements["roi_heads.box_head.5.bias"] = model.box_head.hidden[0].bias
        placements["roi_heads.mask_head.2.1.bias"] = model.mask_head.conv_norms[2].beta
    else:
        placements["backbone.fpn.inner_blocks.1.0.bias"] = model.feature_pyramid.laterals[1].bias
        placements["roi_heads.box_head.fc7.bias"] = model.box_head.hidden[1].bias
    for key, variable in placements.items():
        np.testing.assert_array_equal(np.asarray(variable), state[key], key)


def test_every_key_is_used_once_and_lands_on_its_layer():
    state = read_torch_checkpoint(SMALL_STATE)
    model = build_torchvision_mask_rcnn("maskrcnn_resnet50_fpn", **SMALL_OVERRIDES)
    assert load_torchvision_mask_rcnn_weights(model, state) == sorted(state)
    # Keras Dense kernels are torch's Linear weights transposed; box deltas are reordered from
    # (dx, dy, dw, dh) to (dy, dx, dh, dw) per class, so class k's dy column is torch's row
    # 4k + 1.
    regressor = np.asarray(model.box_head.regressor.kernel)
    torch_rows = state["roi_heads.box_predictor.bbox_pred.weight"]
    np.testing.assert_array_equal(regressor[:, 4 * 3 + 0], torch_rows[4 * 3 + 1])
    np.testing.assert_array_equal(regressor[:, 4 * 3 + 3], torch_rows[4 * 3 + 2])
    # fc6 reads (C, 7, 7)-flattened features in torch and (7, 7, C)-flattened ones here.
    fc6 = state["roi_heads.box_head.fc6.weight"].reshape(32, 16, 7, 7)
    kernel = np.asarray(model.box_head.hidden[0].kernel).reshape(7, 7, 16, 32)
    np.testing.assert_array_equal(kernel[2, 5, 9], fc6[:, 9, 2, 5])
    # ConvTranspose2d weights are (in, out, kh, kw); Keras's are (kh, kw, out, in).
    deconv = state["roi_heads.mask_predictor.conv5_mask.weight"]
    np.testing.assert_array_equal(
        np.asarray(model.mask_head.upsample.kernel)[1, 0, 3, 7], deconv[7, 3, 1, 0]
    )


def test_old_key_spellings_of_the_published_checkpoint_are_accepted():
    state = read_torch_checkpoint(SMALL_STATE)
    renamed = {}
    for key, value in state.items():
        old = key.replace(".0.weight", ".weight").replace(".0.bias", ".bias")
        if key.startswith("backbone.fpn."):
            renamed[old] = value
        elif key.startswith("rpn.head.conv.0.0."):
            renamed[key.replace("conv.0.0.", "conv.")] = value
        elif key.startswith("roi_heads.mask_head."):
            index = int(key.split(".")[2])
            renamed[f"roi_heads.mask_head.mask_fcn{index + 1}.{key.split('.')[-1]}"] = value
        else:
            renamed[key] = value
    assert "rpn.head.conv.weight" in renamed and "roi_heads.mask_head.mask_fcn4.bias" in renamed
    assert current_key("backbone.fpn.layer_blocks.3.bias") == "backbone.fpn.layer_blocks.3.0.bias"
    model = build_torchvision_mask_rcnn("maskrcnn_resnet50_fpn", **SMALL_OVERRIDES)
    assert load_torchvision_mask_rcnn_weights(model, renamed) == sorted(renamed)
    expected = _small_model()
    for weight, other in zip(model.weights, expected.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(weight), np.asarray(other))


def test_unused_and_missing_keys_are_listed_before_anything_is_written():
    state = read_torch_checkpoint(SMALL_STATE)
    model = build_torchvision_mask_rcnn("maskrcnn_resnet50_fpn", **SMALL_OVERRIDES)
    before = [np.asarray(weight).copy() for weight in model.weights]
    broken = dict(state)
    del broken["rpn.head.cls_logits.bias"]
    broken["roi_heads.box_head.fc8.weight"] = np.zeros((4, 4), "float32")
    with pytest.raises(ValueError) as raised:
        load_torchvision_mask_rcnn_weights(model, broken)
    message = str(raised.value)
    assert "unused keys (1): ['roi_heads.box_head.fc8.weight']" in message
    assert "rpn_head/rpn_objectness/bias" in message
    broken = dict(state)
    del broken["backbone.body.layer3.1.bn2.running_var"]
    with pytest.raises(ValueError, match=r"layer3\.1\.bn2/moving_variance"):
        load_torchvision_mask_rcnn_weights(model, broken)
    for weight, old in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(np.asarray(weight), old)


def test_a_wrong_class_count_names_the_key():
    model = build_torchvision_mask_rcnn(
        "maskrcnn_resnet50_fpn", **{**SMALL_OVERRIDES, "num_classes": 7}
    )
    with pytest.raises(ValueError, match="'roi_heads.box_predictor.cls_score.weight' has shape"):
        load_torchvision_mask_rcnn_weights(model, read_torch_checkpoint(SMALL_STATE))


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="Unknown torchvision Mask R-CNN 'fasterrcnn"):
        build_torchvision_mask_rcnn("fasterrcnn_resnet50_fpn")


def test_the_registry_converter_builds_the_entrys_model_from_the_file():
    builder, kwargs = TORCHVISION_MASK_RCNN_CONFIGS["maskrcnn_resnet50_fpn"]
    entry = types.SimpleNamespace(builder=builder, builder_kwargs={**kwargs, **SMALL_OVERRIDES})
    model = load_torchvision_mask_rcnn_checkpoint(entry, SMALL_STATE)
    assert model.name == "maskrcnn_resnet50_fpn"
    _assert_parity(_parity(model, np.load(SMALL_REFERENCE), 1))


def test_configuration_is_torchvisions_transform_and_heads():
    _, kwargs = TORCHVISION_MASK_RCNN_CONFIGS["maskrcnn_resnet50_fpn"]
    # GeneralizedRCNNTransform(min_size=800, max_size=1333, size_divisible=32), ImageNet mean
    # and std; MultiScaleRoIAlign(sampling_ratio=2) with roi_align(aligned=False) and
    # LevelMapper(eps=1e-6); RoIHeads(score_thresh=0.05, nms_thresh=0.5,
    # detections_per_img=100) with remove_small_boxes(1e-2).
    assert (kwargs["resize_min_side"], kwargs["resize_max_side"], kwargs["size_divisor"]) == (
        800,
        1333,
        32,
    )
    model = build_torchvision_mask_rcnn("maskrcnn_resnet50_fpn", **SMALL_OVERRIDES)
    assert model.box_roi_align.aligned is False and model.mask_roi_align.level_epsilon == 1e-6
    assert (model.score_threshold, model.detection_nms_iou, model.detections_per_image) == (
        0.05,
        0.5,
        100,
    )
    assert model.rpn_test_nms == (1000, 1000) and model.rpn_nms_iou == 0.7
    assert model.detection_min_size == 1e-2 and model.mask_paste == "torchvision"
    # maskrcnn_resnet50_fpn_v2: FPN(norm_layer=BatchNorm2d), RPNHead(conv_depth=2),
    # FastRCNNConvFCHead([256] * 4, [1024], BatchNorm2d), MaskRCNNHeads(..., BatchNorm2d).
    _, v2 = TORCHVISION_MASK_RCNN_CONFIGS["maskrcnn_resnet50_fpn_v2"]
    assert {key: v2[key] for key in ("rpn_num_convs", "box_head_convs", "box_head_fc")} == {
        "rpn_num_convs": 2,
        "box_head_convs": 4,
        "box_head_fc": 1,
    }
    assert v2["fpn_batch_norm"] and v2["mask_head_batch_norm"]
    assert {key: v2[key] for key in kwargs if key != "name"} == {
        key: kwargs[key] for key in kwargs if key != "name"
    }


def test_converted_model_saves_and_reloads(tmp_path):
    model = _small_model()
    path = tmp_path / "maskrcnn.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.get_config() == model.get_config()
    image = tf.constant(np.load(SMALL_REFERENCE)["image4"].astype("float32"))
    expected, result = model(image), reloaded(image)
    for key in ("boxes", "scores", "masks"):
        np.testing.assert_allclose(result[key], expected[key], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_full_model_matches_torchvision(name, tmp_path, torch_python):
    subprocess.run([torch_python, str(REFERENCE_SCRIPT), name, str(tmp_path)], check=True)
    state = read_torch_checkpoint(tmp_path / "state_dict.pth")
    reference = np.load(tmp_path / "reference.npz")
    model = build_torchvision_mask_rcnn(name, **TEST_SIZES)
    assert load_torchvision_mask_rcnn_weights(model, state) == sorted(state)
    for index in range(5):
        figures = _parity(model, reference, index)
        print(f"{name} image {index} {reference[f'image{index}'].shape[1:3]}: {figures}")
        _assert_parity(figures)


def test_saved_model_export_serves_torchvisions_detections(tmp_path):
    import kseg

    model = _small_model()
    path = kseg.export.saved_model(model, tmp_path / "export")
    serving = tf.saved_model.load(str(path)).signatures["serving_default"]
    reference = np.load(SMALL_REFERENCE)
    image = reference["image1"][0]
    served = serving(image=tf.constant(image))
    count = int(served["num_detections"])
    assert count == len(reference["boxes1"])
    boxes = served["boxes"].numpy()[:count][:, [1, 0, 3, 2]]
    assert np.abs(boxes - reference["boxes1"]).max() <= 1e-3
    assert np.abs(served["scores"].numpy()[:count] - reference["scores1"]).max() <= 1e-4
    np.testing.assert_array_equal(served["classes"].numpy()[:count], reference["labels1"])
    masks = served["masks"].numpy()[:count].astype(bool)
    assert masks.shape[1:] == image.shape[:2]
    assert np.mean(masks == reference["masks1"].astype(bool)) >= 0.999
