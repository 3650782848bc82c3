"""Mask R-CNN: structure, training through fit, mixed precision, saving and export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.models.mask_rcnn import MaskRCNN

SMALL = {"backbone": "tiny", **kseg.testing.SMALL_MODEL_CONFIGS["mask_rcnn"]}
# torchvision 0.29.1 maskrcnn_resnet50_fpn(num_classes=81): parameters, and those of its ResNet-50
# trunk (its frozen batch norms are buffers, so the trunk counts convolution kernels only).
TORCHVISION_MASK_RCNN_R50_81 = 44_400_693
TORCHVISION_R50_TRUNK = 23_508_032


def small_model(num_classes=5, **overrides):
    return MaskRCNN(num_classes=num_classes, **{**SMALL, **overrides})


def shapes_batches(batch_size=2, num_samples=4, image_size=64):
    examples = kseg.data.shapes_instance_examples(
        "train", num_samples=num_samples, image_size=image_size
    )
    return kseg.data.pad_instance_batch(examples, batch_size)


def test_resnet50_model_matches_the_paper_layout_and_torchvision_count():
    # Only shapes are read: a StatelessScope defers the weights' random initialisation.
    with keras.StatelessScope():
        model = MaskRCNN(num_classes=81, backbone="resnet50")
    trunk = model.backbone.count_params()
    heads = model.count_params() - trunk
    # FPN, RPN, box and mask heads are layer-for-layer those of torchvision's model.
    assert heads == TORCHVISION_MASK_RCNN_R50_81 - TORCHVISION_R50_TRUNK
    # keras.applications' ResNet-50 adds conv biases and batch-norm statistics: +0.18 %.
    assert model.count_params() / TORCHVISION_MASK_RCNN_R50_81 == pytest.approx(1.0, abs=0.005)


@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_inference_returns_fixed_size_detections_for_any_image_size(size):
    model = small_model()
    out = model(np.random.default_rng(0).uniform(0, 255, (2, *size, 3)).astype("float32"))
    assert tuple(out["boxes"].shape) == (2, 10, 4)
    assert tuple(out["masks"].shape) == (2, 10, 28, 28)
    assert out["classes"].dtype == tf.int32 and tuple(out["num_detections"].shape) == (2,)
    boxes = out["boxes"].numpy()
    assert boxes.min() >= 0 and boxes[..., 2].max() <= 128 and boxes[..., 3].max() <= 128
    classes = out["classes"].numpy()
    counts = out["num_detections"].numpy()
    for b in range(2):
        assert np.all((classes[b, : counts[b]] >= 1) & (classes[b, : counts[b]] <= 4))


def test_fit_lowers_the_loss_on_one_repeated_batch():
    keras.utils.set_random_seed(0)
    model = small_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    batch = shapes_batches().take(1).cache().repeat()
    history = model.fit(batch, epochs=4, steps_per_epoch=3, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    for name in ("rpn_objectness_loss", "rpn_box_loss", "box_class_loss", "mask_loss"):
        assert np.isfinite(history.history[name]).all()


def test_images_without_instances_train_without_nan():
    model = small_model()
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    targets = {
        "gt_boxes": np.zeros((2, 1, 4), "float32"),
        "gt_classes": -np.ones((2, 1), "int32"),
        "gt_masks": np.zeros((2, 1, 64, 64), "uint8"),
    }
    logs = model.train_on_batch(images, targets, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    assert logs["mask_loss"] == 0.0 and logs["box_regression_loss"] == 0.0


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_losses(policy):
    keras.config.set_dtype_policy(policy)
    model = small_model()
    # Eager steps: tracing the training graph twice more would cost most of a minute.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    if policy == "mixed_float16":
        # Keras wraps the optimizer in dynamic loss scaling for float16.
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.box_head.compute_dtype == policy.split("_")[1]
    images, targets = next(iter(shapes_batches()))
    logs = model.train_on_batch(images, targets, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    out = model(np.zeros((1, 64, 64, 3), "float32"))
    assert out["boxes"].dtype == tf.float32 and out["masks"].dtype == tf.float32


def test_keras_file_reloads_in_safe_mode_with_identical_detections(tmp_path):
    model = small_model(score_threshold=0.0)
    images = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    path = tmp_path / "mask_rcnn.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(reloaded, MaskRCNN)
    a, b = model(images), reloaded(images)
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-6)


def test_saved_model_takes_a_uint8_image_of_any_size_and_matches_keras(tmp_path):
    model = small_model(score_threshold=0.0)
    path = kseg.export.saved_model(model, tmp_path / "export")
    serving = tf.saved_model.load(str(path)).signatures["serving_default"]
    predict = kseg.detection.instance_predictor(model)
    for height, width in ((64, 64), (70, 90)):
        image = np.random.default_rng(height).integers(0, 256, (height, width, 3), "uint8")
        served = serving(image=tf.constant(image))
        padded = np.zeros((1, 128 if height > 64 else 64, 128 if width > 64 else 64, 3), "float32")
        padded[0, :height, :width] = image
        expected = {k: v.numpy()[0] for k, v in predict(padded).items()}
        count = int(served["num_detections"])
        assert count == expected["num_detections"] > 0
        np.testing.assert_array_equal(served["classes"].numpy(), expected["classes"])
        np.testing.assert_allclose(served["scores"].numpy(), expected["scores"], atol=1e-5)
        clipped = np.minimum(expected["boxes"], [height, width, height, width])
        np.testing.assert_allclose(served["boxes"].numpy(), clipped, atol=1e-4)
        assert served["masks"].shape == (10, height, width)
        np.testing.assert_array_equal(
            served["masks"].numpy(), expected["masks"][:, :height, :width]
        )


def test_semantic_export_options_are_refused_for_mask_rcnn(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        kseg.export.saved_model(small_model(), tmp_path / "x", image_size=(64, 64))


def test_configuration_errors_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        MaskRCNN(num_classes=1, backbone="tiny")
    with pytest.raises(ValueError, match="anchor_sizes"):
        MaskRCNN(num_classes=3, backbone="tiny", anchor_sizes=(32, 64))
    with pytest.raises(TypeError, match="by name"):
        MaskRCNN(num_classes=3, backbone=keras.Sequential())


def test_degenerate_outside_and_empty_ground_truth_train_without_nan():
    # Rows a user's annotations can contain: a zero-area box, a box reaching outside the image,
    # a box with an empty mask, a box entirely outside the image.
    model = small_model()
    model.compile(optimizer=keras.optimizers.SGD(1e-3), run_eagerly=True)
    masks = np.zeros((1, 4, 64, 64), "uint8")
    masks[0, 1, 40:64, 50:64] = 1
    targets = {
        "gt_boxes": np.array(
            [[[10, 10, 10, 30], [40, 50, 90, 100], [5, 5, 20, 20], [70, 70, 90, 90]]], "float32"
        ),
        "gt_classes": np.array([[1, 2, 3, 4]], "int32"),
        "gt_masks": masks,
    }
    images = np.random.default_rng(3).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    for _ in range(2):
        logs = model.train_on_batch(images, targets, return_dict=True)
        assert all(np.isfinite(v) for v in logs.values()), logs


TORCHVISION_STYLE = {
    "size_divisor": 32,
    "anchor_layout": "grid",
    "clip_boxes_to": "image",
    "roi_aligned": False,
    "roi_level_epsilon": 1e-6,
    "detection_min_size": 1e-2,
    "mask_paste": "torchvision",
}


def test_resizing_inside_the_model_equals_resizing_before_it():
    resizing = small_model(
        score_threshold=0.0, resize_min_side=80, resize_max_side=120, **TORCHVISION_STYLE
    )
    plain = small_model(score_threshold=0.0, **TORCHVISION_STYLE)
    plain.set_weights(resizing.get_weights())
    image = np.random.default_rng(3).uniform(0, 255, (1, 50, 70, 3)).astype("float32")
    # 50 x 70 -> shorter side 80: (80, 112); boxes come back scaled by 50 / 80 and 70 / 112.
    resized = tf.image.resize(image, (80, 112), method="bilinear")
    expected = plain(resized)
    got = resizing(image)
    count = int(got["num_detections"][0])
    assert count == int(expected["num_detections"][0]) > 0
    np.testing.assert_array_equal(got["classes"], expected["classes"])
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-6)
    scale = np.array([50 / 80, 70 / 112, 50 / 80, 70 / 112], "float32")
    np.testing.assert_allclose(got["boxes"], expected["boxes"] * scale, atol=1e-4)
    assert float(tf.reduce_max(got["boxes"][..., 2])) <= 50.0
    masks = kseg.detection.instance_predictor(resizing)(image)["masks"]
    assert masks.shape == (1, resizing.detections_per_image, 50, 70)


def test_image_clipping_and_normalisation_before_padding():
    model = small_model(
        score_threshold=0.0,
        input_normalization="torch",
        backbone_kwargs={"include_preprocessing": False},
        **TORCHVISION_STYLE,
    )
    image = np.random.default_rng(4).uniform(0, 255, (1, 40, 50, 3)).astype("float32")
    detections = model(image)
    # Boxes stay inside the 40 x 50 image, not the 64 x 64 padded input.
    assert float(tf.reduce_max(detections["boxes"][..., 2])) <= 40.0
    assert float(tf.reduce_max(detections["boxes"][..., 3])) <= 50.0
    # Padding comes after normalisation: the padded pixels are zeros in normalised values.
    inputs, image_size = model._inputs(tf.constant(image))
    assert inputs.shape == (1, 64, 64, 3) and image_size.numpy().tolist() == [40, 50]
    np.testing.assert_array_equal(inputs.numpy()[0, 40:], 0.0)
    normalised = kseg.backbones.preprocessing.ImagePreprocessing("torch")(image)
    np.testing.assert_allclose(inputs.numpy()[:, :40, :50], normalised, atol=1e-6)


def test_torchvision_options_default_to_kseg_behaviour_and_are_checked():
    config = small_model().get_config()
    assert config["size_divisor"] == 64 and config["anchor_layout"] == "centred"
    assert config["clip_boxes_to"] == "padded" and config["roi_aligned"] is True
    assert config["resize_min_side"] is None and config["mask_paste"] == "centres"
    for options, message in (
        ({"anchor_layout": "torchvision"}, "anchor_layout must be one of"),
        ({"clip_boxes_to": "original"}, "clip_boxes_to must be one of"),
        ({"resize_min_side": 800}, "go together"),
        ({"resize_min_side": 900, "resize_max_side": 800}, "at most resize_max_side"),
        ({"size_divisor": 0}, "size_divisor must be a positive integer"),
        ({"mask_paste": "nearest"}, "mask_paste must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            small_model(**options)


def test_training_with_a_resize_moves_the_targets_with_the_images():
    resizing = small_model(resize_min_side=96, resize_max_side=128, **TORCHVISION_STYLE)
    plain = small_model(**TORCHVISION_STYLE)
    plain.set_weights(resizing.get_weights())
    images, targets = next(iter(shapes_batches(batch_size=2, num_samples=2)))
    # 64 x 64 images become 96 x 96: boxes scale by 1.5, masks follow by nearest neighbour.
    resized = tf.image.resize(images, (96, 96), method="bilinear")
    masks = tf.transpose(targets["gt_masks"], (0, 2, 3, 1))
    resized_targets = {
        "gt_boxes": targets["gt_boxes"] * 1.5,
        "gt_classes": targets["gt_classes"],
        "gt_masks": tf.transpose(tf.image.resize(masks, (96, 96), method="nearest"), (0, 3, 1, 2)),
    }
    # The same random sampling in both: the global seed restarts the op seeds.
    tf.random.set_seed(0)
    losses = resizing.compute_losses(images, targets)
    tf.random.set_seed(0)
    expected = plain.compute_losses(resized, resized_targets)
    for name in ("loss", *kseg.models.mask_rcnn.LOSS_NAMES):
        np.testing.assert_allclose(losses[name], expected[name], rtol=1e-4, err_msg=name)


V2_HEADS = {
    "fpn_batch_norm": True,
    "rpn_num_convs": 2,
    "box_head_convs": 2,
    "box_head_fc": 1,
    "mask_head_batch_norm": True,
}


def test_torchvision_v2_options_train_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = small_model(**TORCHVISION_STYLE, **V2_HEADS)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    images, targets = next(iter(shapes_batches()))
    before = np.asarray(model.box_head.conv_norms[0].moving_mean).copy()
    logs = model.train_on_batch(images, targets, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    # The heads' batch norms learn their statistics in training, as torchvision's do.
    assert not np.array_equal(np.asarray(model.box_head.conv_norms[0].moving_mean), before)
    out = model(np.zeros((1, 70, 50, 3), "float32"))
    assert out["boxes"].dtype == tf.float32 and out["masks"].dtype == tf.float32
    assert np.isfinite(out["scores"].numpy()).all()
