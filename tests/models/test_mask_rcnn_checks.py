"""MaskRCNN's argument checks name what is wrong."""

import pytest
import tensorflow as tf

from kseg.models.mask_rcnn_checks import check_images, check_options, check_targets

DEFAULTS = {
    "size_divisor": 64,
    "resize_min_side": None,
    "resize_max_side": None,
    "input_normalization": None,
    "anchor_layout": "centred",
    "clip_boxes_to": "padded",
    "mask_paste": "centres",
}


def test_defaults_and_torchvisions_settings_pass():
    check_options(**DEFAULTS)
    check_options(
        size_divisor=32,
        resize_min_side=800,
        resize_max_side=1333,
        input_normalization="torch",
        anchor_layout="grid",
        clip_boxes_to="image",
        mask_paste="torchvision",
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"size_divisor": True}, "size_divisor must be a positive integer"),
        ({"resize_max_side": 1333}, "go together"),
        ({"input_normalization": "imagenet"}, "input_normalization must be one of"),
        ({"clip_boxes_to": None}, "clip_boxes_to must be one of"),
    ],
)
def test_bad_options_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        check_options(**{**DEFAULTS, **change})


def test_images_and_targets_are_checked():
    with pytest.raises(ValueError, match=r"images.shape=\(2, 8, 8\)"):
        check_images(tf.zeros((2, 8, 8)))
    images = tf.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match=r"\['gt_masks'\] missing"):
        check_targets(images, {"gt_boxes": tf.zeros((1, 2, 4)), "gt_classes": tf.zeros((1, 2))})
