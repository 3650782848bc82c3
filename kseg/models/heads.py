"""Heads shared by the segmentation architectures."""

import keras

from kseg.layers import ResizeToMatch


def logits_head(features, num_classes, image, *, name):
    """A 1x1 classifier followed by bilinear upsampling to the image size.

    The classifier keeps the compute dtype; the resize and therefore the
    model's output are float32 under any mixed policy, so losses and softmax
    see full-precision logits.

    Args:
        features: the decoder's last feature map `(B, h, w, C)`.
        num_classes: number of output channels.
        image: the model's input, whose height and width the logits take.
        name: prefix of the layer names (`{name}_classifier`, `{name}_upsample`).

    Returns:
        Logits `(B, H, W, num_classes)`, float32.

    Example:
        >>> import keras, kseg
        >>> image = keras.Input((None, None, 3))
        >>> feats = keras.layers.Conv2D(8, 3, strides=4, padding="same")(image)
        >>> kseg.models.heads.logits_head(feats, 5, image, name="demo").shape
        (None, None, None, 5)
    """
    if int(num_classes) <= 0:
        raise ValueError(f"num_classes must be a positive integer. Received: num_classes={num_classes}")
    logits = keras.layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(features)
    return ResizeToMatch(name=f"{name}_upsample", dtype="float32")([logits, image])
