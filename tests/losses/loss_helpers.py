"""Random batches, numpy references and one instance of each loss, shared by the loss tests."""

import keras
import numpy as np

from kseg.losses import CombinedLoss, DiceLoss, FocalLoss, SegmentationCrossEntropy

NUM_CLASSES = 4
IGNORE = 255


def random_batch(seed=0, shape=(2, 6, 7), ignored_fraction=0.3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=shape).astype("int32")
    labels[rng.random(shape) < ignored_fraction] = IGNORE
    logits = (3.0 * rng.normal(size=shape + (NUM_CLASSES,))).astype("float32")
    return labels, logits


def np_log_softmax(logits):
    logits = logits.astype("float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_true_class(values, labels):
    """values[..., labels] for valid pixels, flattened."""
    valid = labels != IGNORE
    return values[valid][np.arange(valid.sum()), labels[valid]], valid


def np_cross_entropy(labels, logits, class_weights=None):
    """PyTorch CrossEntropyLoss(weight=w, ignore_index=255) semantics, in numpy."""
    log_p, valid = np_true_class(np_log_softmax(logits), labels)
    weights = (
        np.ones(valid.sum()) if class_weights is None else np.asarray(class_weights)[labels[valid]]
    )
    return np.sum(-log_p * weights) / np.sum(weights)


def np_focal(labels, logits, gamma, alpha=None):
    log_p, valid = np_true_class(np_log_softmax(logits), labels)
    losses = -((1.0 - np.exp(log_p)) ** gamma) * log_p
    if alpha is not None:
        losses = losses * np.asarray(alpha)[labels[valid]]
    return losses.mean()


def np_dice(labels, logits, smooth):
    valid = labels != IGNORE
    probabilities = np.exp(np_log_softmax(logits))[valid]
    one_hot = np.eye(NUM_CLASSES)[labels[valid]]
    intersection = (probabilities * one_hot).sum(axis=0)
    total = probabilities.sum(axis=0) + one_hot.sum(axis=0)
    return 1.0 - np.mean((2 * intersection + smooth) / (total + smooth))


ALL_LOSSES = {
    "cross_entropy": lambda: SegmentationCrossEntropy(),
    "weighted_cross_entropy": lambda: SegmentationCrossEntropy(
        class_weights=[0.5, 1.0, 2.0, 4.0], label_smoothing=0.1
    ),
    "focal": lambda: FocalLoss(gamma=2.0, alpha=[0.25, 0.5, 0.75, 1.0]),
    "dice": lambda: DiceLoss(num_classes=NUM_CLASSES),
    "combined": lambda: CombinedLoss(
        [SegmentationCrossEntropy(), DiceLoss(NUM_CLASSES)], [1.0, 0.5]
    ),
}


def tiny_model():
    inputs = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    logits = keras.layers.Conv2D(NUM_CLASSES, 1)(hidden)
    return keras.Model(inputs, logits)
