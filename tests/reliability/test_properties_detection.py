"""Property-based tests of the instance-segmentation layers and of the instance data pipeline.

Expected values come from invariants: bilinear sampling reproduces an affine feature map
exactly, box order and counts survive pooling, pyramid sizes follow the strides, and padded
batches keep every instance with its mask extent.
"""

import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kseg.data.instances import instances_from_label_map, pad_instance_batch
from kseg.layers.fpn import FeaturePyramid
from kseg.layers.roi_align import MultiLevelRoIAlign, RoIAlign

FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**31 - 1)


@FEW
@given(
    height=st.integers(4, 20),
    width=st.integers(4, 20),
    output_size=st.integers(1, 7),
    sampling_ratio=st.integers(1, 3),
    seed=seeds,
)
def test_roi_align_reproduces_an_affine_feature_map_at_bin_centres(
    height, width, output_size, sampling_ratio, seed
):
    # Bilinear interpolation is exact on f(y, x) = a*y + b*x + c, and the mean of a bin's
    # symmetric sample grid is f at the bin centre (He et al. 2017, aligned coordinates: a
    # pixel's centre is at +0.5, so feature coordinate = image coordinate - 0.5).
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=3)
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    features = (a * ys + b * xs + c).astype("float32")[None, :, :, None]
    boxes = []
    for _ in range(5):
        y1, y2 = np.sort(rng.uniform(1.0, height - 1.0, 2))
        x1, x2 = np.sort(rng.uniform(1.0, width - 1.0, 2))
        boxes.append([y1, x1, y2, x2])
    boxes = np.asarray(boxes, "float32")
    pooled = RoIAlign(output_size, sampling_ratio=sampling_ratio)([features, boxes[None]])
    pooled = pooled.numpy()[0, ..., 0]
    centres = (np.arange(output_size) + 0.5) / output_size
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        cy = y1 - 0.5 + centres * (y2 - y1)
        cx = x1 - 0.5 + centres * (x2 - x1)
        expected = a * cy[:, None] + b * cx[None, :] + c
        np.testing.assert_allclose(pooled[k], expected, atol=2e-4)


@FEW
@given(count=st.integers(0, 9), seed=seeds)
def test_multilevel_roi_align_keeps_box_order_and_count(count, seed):
    # Each level holds a constant equal to its level number, so a box's output names the level
    # it was pooled from; the order must follow the input boxes whatever the level mix.
    rng = np.random.default_rng(seed)
    levels = [np.full((1, 256 // 2**k, 256 // 2**k, 1), float(k), "float32") for k in (2, 3, 4, 5)]
    sides = rng.choice([20.0, 70.0, 150.0, 250.0], size=count)
    boxes = np.zeros((1, count, 4), "float32")
    boxes[0, :, 2] = sides
    boxes[0, :, 3] = sides
    pooled = MultiLevelRoIAlign(output_size=2, canonical_size=224)([*levels, boxes]).numpy()
    assert pooled.shape == (1, count, 2, 2, 1)
    expected_level = np.clip(np.floor(4 + np.log2(sides / 224.0)), 2, 5)
    np.testing.assert_array_equal(pooled[0, :, 0, 0, 0], expected_level)


@FEW
@given(height=st.integers(1, 80), width=st.integers(1, 80), batch=st.integers(1, 2))
def test_feature_pyramid_keeps_each_level_size_and_halves_for_p6(height, width, batch):
    sizes = [(height, width)]
    for _ in range(3):
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    inputs = [np.zeros((batch, h, w, 3), "float32") for h, w in sizes]
    outputs = FeaturePyramid(4)(inputs)
    assert [tuple(o.shape[1:3]) for o in outputs[:4]] == sizes
    assert tuple(outputs[4].shape[1:3]) == (-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2))


@FEW
@given(
    counts=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    height=st.integers(5, 40),
    width=st.integers(5, 40),
    seed=seeds,
)
def test_padded_instance_batches_keep_every_instance_with_its_extent(counts, height, width, seed):
    rng = np.random.default_rng(seed)
    examples = []
    for count in counts:
        label_map = np.zeros((height, width), np.int32)
        for index in range(1, count + 1):
            y, x = rng.integers(0, height - 2), rng.integers(0, width - 2)
            label_map[y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = index
        classes = rng.integers(1, 5, size=count)
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        examples.append(instances_from_label_map(label_map, classes, image=image))
    signature = {
        "image": tf.TensorSpec((height, width, 3), tf.uint8),
        "boxes": tf.TensorSpec((None, 4), tf.float32),
        "classes": tf.TensorSpec((None,), tf.int32),
        "masks": tf.TensorSpec((None, height, width), tf.uint8),
    }
    dataset = tf.data.Dataset.from_generator(
        lambda: ({key: example[key] for key in signature} for example in examples),
        output_signature=signature,
    )
    images, targets = next(iter(pad_instance_batch(dataset, len(examples), num_classes=5)))
    padded = -(-height // 64) * 64, -(-width // 64) * 64
    assert tuple(images.shape[1:3]) == padded
    for b, example in enumerate(examples):
        n = len(example["classes"])
        classes = targets["gt_classes"].numpy()[b]
        np.testing.assert_array_equal(classes[:n], example["classes"])
        assert np.all(classes[n:] == -1)
        masks = targets["gt_masks"].numpy()[b]
        assert not masks[n:].any()
        for i in range(n):
            ys, xs = np.nonzero(masks[i])
            extent = [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]
            np.testing.assert_array_equal(targets["gt_boxes"].numpy()[b, i], extent)
