import numpy as np
import tensorflow as tf

from kseg.detection.losses import box_head_losses, mask_loss, rpn_losses, smooth_l1


def _bce(labels, logits):
    return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


def _smooth_l1(x, beta):
    x = np.abs(x)
    return np.where(x < beta, 0.5 * x**2 / beta, x - 0.5 * beta)


def test_smooth_l1_matches_its_definition_on_both_sides_of_beta():
    x = np.linspace(-3, 3, 61).astype("float32")
    for beta in (1.0, 1.0 / 9.0):
        np.testing.assert_allclose(smooth_l1(tf.constant(x), beta), _smooth_l1(x, beta), rtol=1e-6)


def test_rpn_losses_average_over_sampled_anchors_only():
    rng = np.random.default_rng(0)
    objectness = rng.normal(size=(2, 50)).astype("float32")
    deltas = rng.normal(size=(2, 50, 4)).astype("float32")
    targets = rng.normal(size=(2, 50, 4)).astype("float32")
    labels = rng.integers(-1, 2, size=(2, 50)).astype("int32")
    cls, box = rpn_losses(objectness, deltas, labels, targets)
    sampled = labels >= 0
    expected_cls = _bce((labels > 0).astype("float32"), objectness)[sampled].sum() / sampled.sum()
    per_anchor = _smooth_l1(deltas - targets, 1 / 9).sum(-1)
    expected_box = per_anchor[labels > 0].sum() / sampled.sum()
    np.testing.assert_allclose(float(cls), expected_cls, rtol=1e-5)
    np.testing.assert_allclose(float(box), expected_box, rtol=1e-5)


def test_box_head_losses_use_the_true_class_deltas_and_skip_padding():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 6, 4)).astype("float32")
    deltas = rng.normal(size=(1, 6, 4, 4)).astype("float32")
    targets = rng.normal(size=(1, 6, 4)).astype("float32")
    classes = np.array([[2, 0, 3, -1, 1, 0]], "int32")
    cls, box = box_head_losses(logits, deltas, classes, targets)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = classes[0] >= 0
    expected_cls = -log_softmax[0, valid, classes[0, valid]].mean()
    positive = np.flatnonzero(classes[0] > 0)
    chosen = deltas[0, positive, classes[0, positive]]
    expected_box = _smooth_l1(chosen - targets[0, positive], 1.0).sum() / valid.sum()
    np.testing.assert_allclose(float(cls), expected_cls, rtol=1e-5)
    np.testing.assert_allclose(float(box), expected_box, rtol=1e-5)


def test_mask_loss_reads_only_the_ground_truth_class_channel():
    # He et al. 2017, Sec. 3: no competition among classes; other channels do not matter.
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, 3, 4, 4, 3)).astype("float32")
    targets = (rng.random((1, 3, 4, 4)) > 0.5).astype("float32")
    classes = np.array([[1, 0, 2]], "int32")
    loss = float(mask_loss(logits, classes, targets))
    expected = np.mean(
        [_bce(targets[0, i], logits[0, i, ..., classes[0, i]]).mean() for i in (0, 2)]
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    other = logits.copy()
    other[0, 0, ..., 2] += 5.0
    other[0, 2, ..., 1] -= 5.0
    other[0, 1] = 100.0
    np.testing.assert_allclose(float(mask_loss(other, classes, targets)), loss, rtol=1e-6)


def test_losses_are_zero_and_finite_without_foreground():
    cls, box = rpn_losses(
        tf.zeros((1, 3)), tf.zeros((1, 3, 4)), -tf.ones((1, 3), tf.int32), tf.zeros((1, 3, 4))
    )
    assert float(cls) == 0.0 and float(box) == 0.0
    loss = mask_loss(tf.zeros((1, 2, 4, 4, 2)), -tf.ones((1, 2), tf.int32), tf.zeros((1, 2, 4, 4)))
    assert float(loss) == 0.0
