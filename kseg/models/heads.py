"""Heads shared by the segmentation architectures."""

import keras

from kseg.layers import ConvBNReLU, ResizeToMatch


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
        raise ValueError(
            f"num_classes must be a positive integer. Received: num_classes={num_classes}"
        )
    logits = keras.layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(features)
    return ResizeToMatch(name=f"{name}_upsample", dtype="float32")([logits, image])


def auxiliary_head(features, num_classes, image, *, filters=256, dropout=0.1, name):
    """A deep-supervision head: 3x3 conv + BN + ReLU, spatial dropout, then `logits_head`.

    PSPNet (Zhao et al. 2017, "Pyramid Scene Parsing Network", Sec. 3.4) supervises an
    intermediate stage (res4b22 of ResNet-101) with its own classifier during training, its
    loss weighted 0.4 against the main one; the public code sizes it as a 3x3 convolution to
    256 channels with batch normalisation and ReLU, dropout 0.1 and a 1x1 classifier. The
    head is dropped at inference.

    Args:
        features: the intermediate feature map `(B, h, w, C)`.
        num_classes: number of output channels.
        image: the model's input, whose height and width the logits take.
        filters: channels of the 3x3 convolution.
        dropout: spatial dropout rate before the classifier.
        name: prefix of the layer names (`{name}_conv`, `{name}_dropout`,
            `{name}_classifier`, `{name}_upsample`).

    Returns:
        Logits `(B, H, W, num_classes)`, float32.

    Example:
        >>> import keras, kseg
        >>> image = keras.Input((None, None, 3))
        >>> feats = keras.layers.Conv2D(8, 3, strides=8, padding="same")(image)
        >>> kseg.models.heads.auxiliary_head(feats, 5, image, filters=4, name="aux").shape
        (None, None, None, 5)
    """
    if int(filters) <= 0:
        raise ValueError(f"filters must be a positive integer. Received: filters={filters}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    x = ConvBNReLU(int(filters), 3, name=f"{name}_conv")(features)
    x = keras.layers.SpatialDropout2D(float(dropout), name=f"{name}_dropout")(x)
    return logits_head(x, num_classes, image, name=name)
