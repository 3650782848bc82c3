"""AlexNet as a 21-class classifier and its fully convolutional form, FCN-AlexNet."""

import keras

from kseg.backbones.surgery import convolutionalize
from kseg.layers.bilinear import BilinearConvTranspose2D
from kseg.layers.offset_crop import OffsetCrop
from kseg.models.registry import register_model

# Krizhevsky et al. 2012 widths of conv1..conv5.
ALEXNET_CONV_FILTERS = (96, 256, 384, 384, 256)
ALEXNET_PATCH_SIZE = 227
ALEXNET_STRIDE = 32
# With floor-mode pooling the last score cell can fall short of the image's bottom/right
# edge; from 113 px of padding on, even a 1x1 image gets a window and the x32
# upsampled map always covers the crop.
_MIN_INPUT_PADDING = 113


def AlexNetClassifier(
    num_classes=21,
    conv_filters=ALEXNET_CONV_FILTERS,
    num_filters=4096,
    padding="same",
    dropout=0.5,
    groups=2,
    name="alexnet",
):
    """AlexNet for `227x227` patches with a Flatten/Dense head.

    Krizhevsky, Sutskever & Hinton 2012, in the single-tower form FCN uses
    (Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for
    Semantic Segmentation", table 1: "FCN-AlexNet", 21 PASCAL VOC classes,
    stride 32, 57M parameters): conv1 11x11/4 with 96 filters, 3x3/2 max
    pooling, conv2 5x5 (256), pooling, conv3-conv5 3x3 (384, 384, 256),
    pooling, then fc6 and fc7 of 4096 units and fc8 scoring the classes;
    conv2, conv4 and conv5 are split in two groups, as on the original two
    GPUs. Local response normalisation is left out (it does not change the
    network's geometry or size). `padding="same"` pads conv2-conv5 as Caffe's AlexNet does
    (fc6 then reads a 6x6x256 map); `padding="valid"` pads nothing (fc6 reads
    2x2x256), which makes the convolutionalized network exactly equal to the
    classifier on every stride-32 crop, border effects included. Inputs are
    RGB in [0, 255], scaled to [0, 1] inside.

    Args:
        num_classes: number of classes (21).
        conv_filters: widths of conv1..conv5.
        num_filters: width of fc6 and fc7 (4096).
        groups: filter groups of conv2, conv4 and conv5 (2; 1 for none).
        padding: "same" (Caffe's AlexNet) or "valid" for conv2..conv5.
        dropout: dropout after fc6 and fc7 (0.5).
        name: model name.

    Returns:
        A `keras.Sequential` mapping `(N, 227, 227, 3)` to `(N, num_classes)`
        logits.

    Example:
        >>> import kseg.models.fcn_alexnet
        >>> model = kseg.models.fcn_alexnet.AlexNetClassifier(conv_filters=(4,) * 5, num_filters=8)
        >>> model.output_shape
        (None, 21)
    """
    if padding not in ("same", "valid"):
        raise ValueError(f'padding must be "same" or "valid". Received: padding={padding!r}')
    if len(conv_filters) != 5:
        raise ValueError(
            f"conv_filters needs 5 widths (conv1..conv5). Received: conv_filters={conv_filters!r}"
        )
    conv = keras.layers.Conv2D
    pool = keras.layers.MaxPooling2D
    return keras.Sequential(
        [
            keras.Input((ALEXNET_PATCH_SIZE, ALEXNET_PATCH_SIZE, 3), name="patch"),
            keras.layers.Rescaling(1 / 255, name="rescale"),
            conv(conv_filters[0], 11, strides=4, activation="relu", name="conv1"),
            pool(3, 2, name="pool1"),
            conv(
                conv_filters[1], 5, padding=padding, groups=groups, activation="relu", name="conv2"
            ),
            pool(3, 2, name="pool2"),
            conv(conv_filters[2], 3, padding=padding, activation="relu", name="conv3"),
            conv(
                conv_filters[3], 3, padding=padding, groups=groups, activation="relu", name="conv4"
            ),
            conv(
                conv_filters[4], 3, padding=padding, groups=groups, activation="relu", name="conv5"
            ),
            pool(3, 2, name="pool5"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(num_filters, activation="relu", name="fc6"),
            keras.layers.Dropout(dropout, name="drop6"),
            keras.layers.Dense(num_filters, activation="relu", name="fc7"),
            keras.layers.Dropout(dropout, name="drop7"),
            keras.layers.Dense(num_classes, name="fc8", dtype="float32"),
        ],
        name=name,
    )


@register_model("fcn_alexnet")
def FCNAlexNet(
    num_classes=21,
    backbone=None,
    classifier=None,
    conv_filters=ALEXNET_CONV_FILTERS,
    num_filters=4096,
    padding="same",
    input_padding=_MIN_INPUT_PADDING,
    dropout=0.5,
    name="fcn_alexnet",
):
    """FCN-AlexNet: AlexNet's classifier made fully convolutional, scores upsampled x32.

    Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic
    Segmentation", section 4.1 and table 1: AlexNet's fc6/fc7/fc8 become
    convolutions (`kseg.backbones.surgery.convolutionalize`), giving one
    21-class score vector per 227x227 window at stride 32; a frozen bilinear
    64x64 transposed convolution upsamples the scores and a crop returns them
    at the input's size. The paper pads the image by 100 px; Keras pools in
    floor mode (Caffe in ceil mode), so 113 px is the least padding for which
    the upsampled map always covers the image, and the default. Score cell
    `i` is the window centred on image pixel `32 i + 113 - input_padding`,
    which the crop offset `input_padding - 82` puts back in place.

    Args:
        num_classes: number of classes (21 for PASCAL VOC).
        backbone: must be None; the network is its own encoder (accepted so
            the model registry's shared arguments apply).
        classifier: an `AlexNetClassifier` whose weights to reuse; built from
            the next four arguments when None.
        conv_filters: widths of conv1..conv5 when building the classifier.
        num_filters: width of fc6/fc7 when building the classifier (4096).
        padding: "same" or "valid" convolutions when building the classifier.
        input_padding: zero pixels added around the image (>= 113).
        dropout: dropout after fc6 and fc7 when building the classifier.
        name: model name.

    Returns:
        A `keras.Model` mapping `(B, H, W, 3)` RGB images in [0, 255] to
        float32 `(B, H, W, num_classes)` logits.

    Example:
        >>> import numpy as np, kseg.models.fcn_alexnet
        >>> model = kseg.models.fcn_alexnet.FCNAlexNet(
        ...     num_classes=3, conv_filters=(4,) * 5, num_filters=8
        ... )
        >>> tuple(model(np.zeros((1, 65, 97, 3))).shape)
        (1, 65, 97, 3)
    """
    if backbone is not None:
        raise ValueError(
            "FCNAlexNet builds its own AlexNet encoder; pass backbone=None. "
            f"Received: backbone={backbone!r}"
        )
    if int(input_padding) != input_padding or input_padding < _MIN_INPUT_PADDING:
        raise ValueError(
            f"input_padding must be an integer >= {_MIN_INPUT_PADDING} so the upsampled scores "
            f"cover every input size. Received: input_padding={input_padding!r}"
        )
    if classifier is None:
        classifier = AlexNetClassifier(num_classes, conv_filters, num_filters, padding, dropout)
    elif classifier.output_shape[-1] != num_classes:
        raise ValueError(
            f"classifier scores {classifier.output_shape[-1]} classes. "
            f"Received: num_classes={num_classes}"
        )
    convolutional = convolutionalize(classifier, name=f"{name}_body")
    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.ZeroPadding2D(input_padding, name="input_padding")(image)
    scores = convolutional(x)
    # The paper keeps the single-step x32 upsampling fixed bilinear interpolation.
    scores = BilinearConvTranspose2D(ALEXNET_STRIDE, num_classes, trainable=False, name="upscore")(
        scores
    )
    logits = OffsetCrop(input_padding - 82, dtype="float32", name="score")([scores, image])
    return keras.Model(image, logits, name=name)
