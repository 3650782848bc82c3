"""Segmentation losses on integer masks with an ignore label: cross-entropy, soft Dice, focal.

Every loss here takes integer masks `y_true` of shape `(B, H, W)` or `(B, H, W, 1)` and
per-pixel scores `y_pred` of shape `(B, H, W, C)` (logits by default), computes in float32
whatever the scores' dtype (so `mixed_bfloat16` and `mixed_float16` models are safe), and
honours `ignore_label` (255 by default, `None` for none): an ignored pixel contributes to
neither the numerator nor the denominator of any loss, and its scores, however large, have
no effect on the value or the gradient.

Each loss comes in Keras's two forms: a function returning per-pixel values (usable as
`model.compile(loss=fn)`), and a registered `keras.losses.Loss` class with a complete
`get_config` that applies the normalisation described in its docstring.

A label that is neither in `[0, num_classes)` nor the ignore label is an error, not a silent
miscount. With `check_labels=True` (the default) a `tf.debugging.Assert` raises an
`InvalidArgumentError` naming the smallest and largest offending values and how many pixels
carry them. XLA drops assertions, and Keras compiles `fit`/`evaluate` with XLA by default
(`jit_compile="auto"`), so independently of `check_labels` every offending pixel also gets a
NaN loss: under XLA the loss turns NaN (which `keras.callbacks.TerminateOnNaN` catches)
instead of training on garbage. Compile with `jit_compile=False` to get the named error.
"""

from kseg.losses.combined import CombinedLoss
from kseg.losses.cross_entropy import SegmentationCrossEntropy, segmentation_cross_entropy
from kseg.losses.dice import DiceLoss, dice_loss
from kseg.losses.focal import FocalLoss, focal_loss
from kseg.losses.pixels import label_masks, pixel_sample_weight, squeeze_labels

__all__ = [
    "CombinedLoss",
    "DiceLoss",
    "FocalLoss",
    "SegmentationCrossEntropy",
    "dice_loss",
    "focal_loss",
    "label_masks",
    "pixel_sample_weight",
    "segmentation_cross_entropy",
    "squeeze_labels",
]
