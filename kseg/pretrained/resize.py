"""A published checkpoint's resize policy (`PretrainedEntry.resize`) as a callable."""

import dataclasses
import re

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class MinSideResize:
    """Resize policy: scale each image so its shorter side is `side` pixels, keeping the aspect.

    The longer side becomes `int(side * long / short)`, torchvision's rounding for `Resize(side)`.
    Calling the policy on an image's height and width (ints or scalar tensors) gives the
    `(height, width)` to resize it to, as int32 tensors.

    Example:
        >>> policy = kseg.pretrained.resize.MinSideResize(520)
        >>> [int(v) for v in policy(375, 500)], str(policy)
        ([520, 693], 'min_side 520')
    """

    side: int

    def __call__(self, height, width):
        height = tf.cast(height, tf.int32)
        width = tf.cast(width, tf.int32)
        shorter = tf.minimum(height, width)
        return self.side * height // shorter, self.side * width // shorter

    def __str__(self):
        return f"min_side {self.side}"


def resize_policy(text):
    """The resize of a `PretrainedEntry.resize` text: "min_side N" as a `MinSideResize`.

    Raises:
        ValueError: for any other policy (naming it), which predict and evaluate do not run.

    Example:
        >>> kseg.pretrained.resize.resize_policy("min_side 520")
        MinSideResize(side=520)
    """
    match = re.fullmatch(r"min_side (\d+)", text.strip())
    if match is None:
        raise ValueError(f"unsupported resize policy {text!r}; expected 'min_side N'")
    return MinSideResize(int(match.group(1)))
