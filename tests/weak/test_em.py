"""EM-Adapt, EM-Fixed, Bbox-Seg and the strong/weak mix of Papandreou et al. (ICCV 2015)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.weak.em import (
    EMAdaptCrossEntropy,
    EMFixedCrossEntropy,
    bbox_rect_labels,
    bbox_seg_labels,
    box_label_map,
    em_adapt_cross_entropy,
    em_adapt_latent_labels,
    em_fixed_cross_entropy,
    em_fixed_latent_labels,
    mixed_supervision_dataset,
    tag_label_map,
)


def _shifted_logits(seed, batch, height, width, shifts):
    """Random logits whose classes win very unequal shares of the pixels."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, height, width, len(shifts)))
    return (logits + np.asarray(shifts)).astype(np.float32)


def _counts(labels, num_classes):
    return np.stack([np.bincount(image.ravel(), minlength=num_classes) for image in labels])


def _adaptive_bias_reference(logits, tags, fractions, sweeps=200):
    """Numpy version of the released DeepLab AdaptiveBiasChannel layer, iterated to rest.

    One class after another (background first), the class's score is raised by the
    floor(rho * N)-th smallest gap between the best present score and its own, absent classes
    are pushed below every present one, and the sweep repeats until no bias changes.
    """
    scores = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    present = np.flatnonzero(tags > 0.5)
    scores[:, [c for c in range(scores.shape[1]) if c not in present]] = -np.inf
    pixels = scores.shape[0]
    for _ in range(sweeps):
        changed = False
        for label in present:
            gap = scores[:, present].max(axis=1) - scores[:, label]
            nth = int(np.floor(fractions[label] * pixels))
            shift = np.partition(gap, nth)[nth]
            if shift > 1e-12:
                scores[:, label] += shift
                changed = True
        if not changed:
            break
    return np.argmax(scores, axis=1).reshape(logits.shape[:-1])


def test_em_adapt_latent_labels_take_the_preset_fractions():
    height, width = 30, 40
    pixels = height * width
    # Background and class 2 start far behind class 3, so both need a bias.
    logits = _shifted_logits(0, 3, height, width, [-3.0, 0.0, 0.0, 2.0, 5.0])
    tags = np.array([[1, 0, 1, 1, 0], [1, 1, 0, 0, 0], [0, 1, 0, 1, 0]], np.float32)
    labels = np.asarray(em_adapt_latent_labels(tags, logits, max_iterations=100))
    counts = _counts(labels, 5)
    targets = np.where(tags > 0, np.where(np.arange(5) == 0, 0.4, 0.2), 0.0) * pixels
    targets = np.floor(targets + 1e-6).astype(int)

    present_logits = np.where(tags[:, None, None, :] > 0, logits, -np.inf)
    unbiased = _counts(np.argmax(present_logits, axis=-1), 5)
    assert np.all(counts[tags == 0] == 0), "an absent class was assigned"
    assert np.all(counts[tags > 0] >= targets[tags > 0])
    short = (tags > 0) & (unbiased < targets)
    assert short.sum() >= 3  # the test exercises the biases
    np.testing.assert_array_equal(counts[short], targets[short])
    assert np.all(counts.sum(axis=1) == pixels)


def test_em_adapt_agrees_with_the_sequential_released_algorithm():
    logits = _shifted_logits(1, 1, 24, 32, [-2.0, 1.0, -1.0, 0.5])
    tags = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
    labels = np.asarray(em_adapt_latent_labels(tags[None], logits, max_iterations=100))[0]
    fractions = np.array([0.4, 0.2, 0.2, 0.2])
    reference = _adaptive_bias_reference(logits[0], tags, fractions)
    # The released layer gives a boosted class one tied pixel more; otherwise both reach the
    # smallest biases meeting every fraction.
    assert np.mean(labels == reference) > 0.99


def test_em_adapt_scales_fractions_that_exceed_the_image_and_ignores_untagged_images():
    logits = _shifted_logits(2, 2, 16, 16, [0.0, 3.0, -1.0, -2.0, 1.0, -3.0, 0.0])
    tags = np.array([[1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]], np.float32)
    labels = np.asarray(em_adapt_latent_labels(tags, logits, max_iterations=200))
    # 0.4 + 6 * 0.2 = 1.6 of the image is asked for: each share is divided by 1.6.
    counts = _counts(labels[:1], 256)[0]
    targets = np.floor(np.array([0.4] + [0.2] * 6) / 1.6 * 256 + 1e-6)
    assert np.all(counts[:7] >= targets)
    assert np.all(labels[1] == 255)


def test_em_adapt_compiles_with_xla_and_matches_eager():
    logits = _shifted_logits(3, 2, 12, 20, [-2.0, 0.0, 1.5])
    tags = np.array([[1, 1, 1], [1, 0, 1]], np.float32)
    compiled = tf.function(em_adapt_latent_labels, jit_compile=True)
    np.testing.assert_array_equal(
        compiled(tf.constant(tags), tf.constant(logits)), em_adapt_latent_labels(tags, logits)
    )


def test_em_fixed_assigns_a_class_only_inside_its_boxes():
    height, width, num_classes = 20, 24, 4
    boxes = np.array([[2, 3, 12, 10], [8, 6, 18, 22]], np.float32)
    classes = np.array([1, 3])
    allowed = box_label_map(boxes, classes, height, width, num_classes)
    logits = _shifted_logits(4, 1, height, width, [0.0, 0.0, 4.0, 0.0])
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


def test_box_label_map_properties():
    rng = np.random.default_rng(5)
    height, width, num_classes = 13, 17, 5
    for _ in range(20):
        count = rng.integers(0, 4)
        corners = rng.uniform(-4, 21, size=(count, 2, 2))
        corners.sort(axis=1)
        boxes = corners.transpose(0, 2, 1).reshape(count, 4)[:, [0, 2, 1, 3]]
        boxes[:, 2:] += 0.5
        inside = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < height)
        boxes = boxes[inside & (boxes[:, 1] < width)]
        classes = rng.integers(1, num_classes, size=len(boxes))
        allowed = box_label_map(boxes, classes, height, width, num_classes)
        assert allowed.shape == (height, width, num_classes) and allowed.dtype == np.uint8
        assert np.all(allowed[..., 0] == 1)
        for label in range(1, num_classes):
            expected = np.zeros((height, width), bool)
            for box in boxes[classes == label]:
                for i in range(height):
                    for j in range(width):
                        overlap_y = min(i + 1, box[2]) - max(i, box[0])
                        overlap_x = min(j + 1, box[3]) - max(j, box[1])
                        expected[i, j] |= overlap_y > 0 and overlap_x > 0
            np.testing.assert_array_equal(allowed[..., label], expected)


def test_box_label_map_clips_boxes_and_refuses_bad_ones():
    clipped = box_label_map([[-5, -2, 4, 30]], [1], height=8, width=10, num_classes=2)
    np.testing.assert_array_equal(
        clipped, box_label_map([[0, 0, 4, 10]], [1], height=8, width=10, num_classes=2)
    )
    with pytest.raises(ValueError, match="box 1 lies entirely outside the 8x10 image"):
        box_label_map([[0, 0, 2, 2], [9, 1, 12, 5]], [1, 1], height=8, width=10, num_classes=2)
    with pytest.raises(ValueError, match="box 0 has class 7, outside the model's classes"):
        box_label_map([[0, 0, 2, 2]], [7], height=8, width=10, num_classes=3)
    with pytest.raises(ValueError, match="background class"):
        box_label_map([[0, 0, 2, 2]], [0], height=8, width=10, num_classes=3)
    with pytest.raises(ValueError, match="y1 < y2"):
        box_label_map([[3, 0, 2, 2]], [1], height=8, width=10, num_classes=3)


def _random_boxes(rng, count, height, width):
    """Integer-cornered boxes inside a height x width image."""
    y = np.sort(rng.integers(0, height + 1, size=(count, 2)), axis=1)
    x = np.sort(rng.integers(0, width + 1, size=(count, 2)), axis=1)
    keep = (y[:, 1] > y[:, 0]) & (x[:, 1] > x[:, 0])
    return np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], axis=1)[keep].astype(np.float64)


@pytest.mark.parametrize(
    "background_class, ambiguity_ratio", [(0, None), (None, None), (None, 0.3)]
)
def test_bbox_rect_labels_give_each_pixel_its_smallest_covering_box(
    background_class, ambiguity_ratio
):
    # Brute force, pixel by pixel: the class of the smallest box holding the pixel (the first
    # such box on a tie), the background or the ignore label outside every box; with a ratio,
    # the ignore label where a box of another class is not more than 1/ratio times larger.
    rng = np.random.default_rng(21)
    height, width, num_classes = 9, 11, 4
    outside = 255 if background_class is None else background_class
    for _ in range(25):
        boxes = _random_boxes(rng, rng.integers(0, 6), height, width)
        classes = rng.integers(1, num_classes, size=len(boxes))
        labels = bbox_rect_labels(
            boxes,
            classes,
            height,
            width,
            num_classes,
            background_class=background_class,
            ambiguity_ratio=ambiguity_ratio,
        )
        assert labels.dtype == np.uint8
        for i in range(height):
            for j in range(width):
                holding = [
                    ((b[2] - b[0]) * (b[3] - b[1]), index)
                    for index, b in enumerate(boxes)
                    if b[0] <= i < b[2] and b[1] <= j < b[3]
                ]
                expected = classes[min(holding)[1]] if holding else outside
                if holding and ambiguity_ratio is not None:
                    rivals = [a for a, k in holding if classes[k] != expected]
                    if rivals and min(holding)[0] >= ambiguity_ratio * min(rivals):
                        expected = 255
                assert labels[i, j] == expected, (boxes, classes, i, j)


def test_bbox_rect_labels_keep_a_small_object_inside_a_large_region():
    # A car box on a road box, CamVid style: no background, both boxed.
    labels = bbox_rect_labels(
        [[4, 0, 10, 12], [5, 3, 8, 6]], [3, 8], 10, 12, num_classes=11, background_class=None
    )
    assert np.all(labels[:4] == 255)
    assert np.all(labels[5:8, 3:6] == 8)
    assert np.sum(labels == 3) == 6 * 12 - 9


def test_bbox_rect_labels_clip_boxes_and_name_a_bad_one():
    np.testing.assert_array_equal(
        bbox_rect_labels([[-3, -1, 4, 30]], [2], 6, 8, num_classes=3),
        bbox_rect_labels([[0, 0, 4, 8]], [2], 6, 8, num_classes=3),
    )
    with pytest.raises(ValueError, match="box 1 lies entirely outside the 6x8 image"):
        bbox_rect_labels([[0, 0, 2, 2], [7, 0, 9, 3]], [1, 2], 6, 8, num_classes=3)
    with pytest.raises(ValueError, match="box 0 has class 5, outside the model's classes"):
        bbox_rect_labels([[0, 0, 2, 2]], [5], 6, 8, num_classes=3)
    with pytest.raises(ValueError, match="ambiguity_ratio"):
        bbox_rect_labels([[0, 0, 2, 2]], [1], 6, 8, num_classes=3, ambiguity_ratio=0)


def test_bbox_rect_ambiguity_ratio_keeps_objects_and_drops_side_by_side_overlaps():
    # A 3x3 sign inside a 6x12 building box, and a 6x10 tree box overlapping the building.
    boxes = [[0, 0, 6, 12], [1, 1, 4, 4], [0, 8, 6, 18]]
    labels = bbox_rect_labels(
        boxes, [1, 6, 5], 6, 18, num_classes=11, background_class=None, ambiguity_ratio=0.5
    )
    assert np.all(labels[1:4, 1:4] == 6)  # 9 / 72 of the building box: kept
    assert np.all(labels[:, 8:12] == 255)  # 60 / 72: the two regions are alike in size
    assert np.all(labels[:, 12:] == 5) and labels[0, 0] == 1


@pytest.mark.parametrize("background_class", [0, None])
def test_box_label_map_marks_the_smallest_covering_box_in_front(background_class):
    rng = np.random.default_rng(8)
    height, width, num_classes = 9, 11, 4
    for _ in range(15):
        boxes = _random_boxes(rng, rng.integers(1, 6), height, width)
        classes = rng.integers(1, num_classes, size=len(boxes))
        options = {"background_class": background_class}
        plain = box_label_map(boxes, classes, height, width, num_classes, **options)
        marked = box_label_map(
            boxes, classes, height, width, num_classes, mark_front=True, **options
        )
        np.testing.assert_array_equal(marked > 0, plain > 0)
        rect = bbox_rect_labels(boxes, classes, height, width, num_classes, **options)
        front = np.where(np.any(marked == 2, axis=-1), np.argmax(marked == 2, axis=-1), -1)
        assert np.all(np.sum(marked == 2, axis=-1) <= 1)
        outside = 255 if background_class is None else background_class
        np.testing.assert_array_equal(np.where(front >= 0, front, outside), rect)


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


def test_tags_naming_a_class_beyond_the_model_are_refused():
    logits = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="indices up to 4.*model predicts 3"):
        EMAdaptCrossEntropy()(np.array([[1, 0, 0, 0, 1]], np.float32), logits)
    with pytest.raises(ValueError, match="model lacks"):
        EMFixedCrossEntropy()(np.ones((1, 4, 4, 5), np.uint8), logits)


def _synthetic_boxes_image():
    """Two flat objects of distinct colours inside larger boxes, on a third colour, plus noise."""
    height, width = 48, 64
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (40, 90, 60)
    rows, columns = np.mgrid[:height, :width]
    disc = (rows - 22) ** 2 + (columns - 18) ** 2 <= 10**2
    square = (rows >= 14) & (rows < 34) & (columns >= 40) & (columns < 58)
    image[disc] = (220, 200, 40)
    image[square] = (180, 40, 200)
    noise = np.random.default_rng(10).normal(0, 10, image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    boxes = np.array([[8, 4, 37, 33], [9, 36, 40, 62]], np.float32)
    return image, boxes, np.array([1, 2]), {1: disc, 2: square}


def test_bbox_seg_labels_recover_objects_and_nothing_outside_their_boxes():
    image, boxes, classes, objects = _synthetic_boxes_image()
    labels = bbox_seg_labels(image, boxes, classes, num_classes=3)
    assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
    for index, label in enumerate(classes):
        predicted = labels == label
        intersection = np.sum(predicted & objects[label])
        union = np.sum(predicted | objects[label])
        assert intersection / union > 0.8, (label, intersection / union)
        y1, x1, y2, x2 = boxes[index].astype(int)
        in_box = np.zeros_like(predicted)
        in_box[y1:y2, x1:x2] = True
        assert not np.any(predicted & ~in_box)

    uncertain = bbox_seg_labels(image, boxes, classes, num_classes=3, uncertain_below=0.999)
    in_any_box = np.asarray(box_label_map(boxes, classes, 48, 64, 3)[..., 1:].any(axis=-1))
    assert np.any(uncertain == 255)
    assert not np.any((uncertain == 255) & ~in_any_box)


def _fit_two_steps(loss, x, y):
    model = kseg.testing.build_small_model("fcn8s", num_classes=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert any(changed)


def _loss_and_gradient(loss, y_true, logits):
    logits = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss(y_true, logits)
    return float(value), tape.gradient(value, logits).numpy()


@pytest.mark.parametrize("kind", ["adapt", "fixed"])
def test_losses_are_cross_entropy_on_the_latent_labels(kind):
    logits = _shifted_logits(6, 2, 8, 10, [-1.0, 0.5, 0.0])
    if kind == "adapt":
        loss, y_true = EMAdaptCrossEntropy(), np.array([[1, 1, 0], [1, 0, 1]], np.float32)
        latent = np.asarray(em_adapt_latent_labels(y_true, logits))
    else:
        loss = EMFixedCrossEntropy()
        y_true = np.stack([box_label_map([[1, 2, 6, 9]], [2], 8, 10, 3)] * 2)
        y_true[1, :2] = 0  # two rows allowing no class: ignored
        latent = np.asarray(em_fixed_latent_labels(y_true, logits))
    value, gradient = _loss_and_gradient(loss, y_true, logits)
    function = em_adapt_cross_entropy if kind == "adapt" else em_fixed_cross_entropy
    per_pixel = np.asarray(function(y_true, logits))

    counted = latent != 255
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    safe = np.where(counted, latent, 0)
    picked = np.take_along_axis(log_softmax, safe[..., None], -1)[..., 0]
    np.testing.assert_allclose(value, -picked[counted].mean(), rtol=1e-5)
    np.testing.assert_allclose(per_pixel, np.where(counted, -picked, 0.0), rtol=1e-5, atol=1e-6)
    # The E-step carries no gradient: d loss / d logits = (softmax - onehot) / counted pixels.
    expected = (np.exp(log_softmax) - np.eye(3)[safe]) * counted[..., None] / counted.sum()
    np.testing.assert_allclose(gradient, expected, atol=1e-6)


def test_losses_round_trip_through_keras_serialisation():
    for loss in (
        EMAdaptCrossEntropy(foreground_fraction=0.3, background_fraction=0.5, max_iterations=7),
        EMFixedCrossEntropy(foreground_bias=2.0, background_bias=1.0, background_class=None),
    ):
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()


def test_em_adapt_trains_a_kseg_model_on_tags():
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32)
    tags = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 0]], np.float32)
    _fit_two_steps(EMAdaptCrossEntropy(), images, tags)


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
    logits = _shifted_logits(9, 2, 32, 32, [4.0, -4.0, 0.0])
    np.testing.assert_array_equal(em_fixed_latent_labels(strong_maps, logits), masks)
    np.testing.assert_array_equal(mixed[2][1], weak_maps[0])

    sampled = mixed_supervision_dataset(strong, weak, num_classes=3, strong_fraction=0.5, seed=1)
    assert all(allowed.shape == (32, 32, 3) for _, allowed in sampled.as_numpy_iterator())
    x = np.stack([image for image, _ in mixed])
    y = np.stack([allowed for _, allowed in mixed])
    _fit_two_steps(EMFixedCrossEntropy(), x, y)
