"""EM-Fixed (Papandreou et al., ICCV 2015): fixed-bias E-step, front marks, mixed supervision."""

import numpy as np
import tensorflow as tf
from em_helpers import fit_two_steps, shifted_logits

from kseg.weak.box_labels import box_label_map
from kseg.weak.em_fixed import (
    EMFixedCrossEntropy,
    em_fixed_latent_labels,
    mixed_supervision_dataset,
    tag_label_map,
)


def test_em_fixed_assigns_a_class_only_inside_its_boxes():
    height, width, num_classes = 20, 24, 4
    boxes = np.array([[2, 3, 12, 10], [8, 6, 18, 22]], np.float32)
    classes = np.array([1, 3])
    allowed = box_label_map(boxes, classes, height, width, num_classes)
    logits = shifted_logits(4, 1, height, width, [0.0, 0.0, 4.0, 0.0])
    labels = np.asarray(em_fixed_latent_labels(allowed[None], logits))[0]

    inside = [np.zeros((height, width), bool) for _ in classes]
    inside[0][2:12, 3:10] = True
    inside[1][8:18, 6:22] = True
    assert not np.any(labels == 2), "class 2 has no box"
    assert np.all(labels[~(inside[0] | inside[1])] == 0)
    assert np.all(inside[0][labels == 1]) and np.all(inside[1][labels == 3])
    # The E-step is the argmax of logits + b over allowed classes, b_fg = 5 and b_bg = 3.
    biased = logits[0] + np.array([3.0, 5.0, 5.0, 5.0])
    expected = np.argmax(np.where(allowed > 0, biased, -np.inf), axis=-1)
    np.testing.assert_array_equal(labels, expected)


def test_em_fixed_prefers_the_class_in_front_by_the_bias_gap():
    # One pixel allows classes 1 (in front) and 2; no background class. The front class wins
    # unless the other leads it by more than b_fg - b_bg = 2 in the logits.
    allowed = np.zeros((1, 1, 3, 3), np.uint8)
    allowed[..., 1] = 2
    allowed[..., 2] = 1
    logits = np.zeros((1, 1, 3, 3), np.float32)
    logits[0, 0, :, 2] = [1.0, 1.9, 2.1]
    labels = em_fixed_latent_labels(allowed, logits, background_class=None)
    assert np.asarray(labels).tolist() == [[[1, 1, 2]]]
    # Without the mark the two classes tie in bias and the logits alone decide.
    plain = em_fixed_latent_labels(np.minimum(allowed, 1), logits, background_class=None)
    assert np.asarray(plain).tolist() == [[[2, 2, 2]]]


def test_marking_a_single_object_box_keeps_the_papers_e_step():
    # Inside one object box the mark makes the object b_fg and the background b_bg, as the
    # class vector already does.
    rng = np.random.default_rng(3)
    boxes, classes = np.array([[2.0, 3.0, 9.0, 12.0]]), np.array([2])
    plain = box_label_map(boxes, classes, 12, 16, 4)
    marked = box_label_map(boxes, classes, 12, 16, 4, mark_front=True)
    logits = rng.normal(scale=3.0, size=(1, 12, 16, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        np.asarray(em_fixed_latent_labels(marked[None], logits)),
        np.asarray(em_fixed_latent_labels(plain[None], logits)),
    )


def test_em_fixed_trains_on_a_mix_of_strong_masks_and_weak_boxes():
    rng = np.random.default_rng(8)
    images = rng.uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32)
    masks = np.zeros((2, 32, 32), np.uint8)
    masks[0, 4:20, 6:18] = 1
    masks[1, 10:30, 12:28] = 2
    masks[1, :2] = 255
    strong = tf.data.Dataset.from_tensor_slices((images[:2], masks))
    weak_maps = np.stack(
        [
            box_label_map([[2, 2, 20, 16]], [1], 32, 32, 3),
            tag_label_map([1, 1, 1], 32, 32),
        ]
    )
    weak = tf.data.Dataset.from_tensor_slices((images[2:], weak_maps))
    mixed = list(mixed_supervision_dataset(strong, weak, num_classes=3).as_numpy_iterator())
    assert len(mixed) == 4
    # A strong mask becomes its one-hot map (ignored pixels allow nothing), so EM-Fixed's
    # latent labels on it are the mask itself whatever the logits.
    strong_maps = np.stack([allowed for _, allowed in mixed[:2]])
    logits = shifted_logits(9, 2, 32, 32, [4.0, -4.0, 0.0])
    np.testing.assert_array_equal(em_fixed_latent_labels(strong_maps, logits), masks)
    np.testing.assert_array_equal(mixed[2][1], weak_maps[0])

    sampled = mixed_supervision_dataset(strong, weak, num_classes=3, strong_fraction=0.5, seed=1)
    assert all(allowed.shape == (32, 32, 3) for _, allowed in sampled.as_numpy_iterator())
    x = np.stack([image for image, _ in mixed])
    y = np.stack([allowed for _, allowed in mixed])
    fit_two_steps(EMFixedCrossEntropy(), x, y)
