"""SegNet and SegNet-Basic: encoder-decoders upsampling with the encoder's max-pooling indices."""

import os

import keras

from kseg.backbones.preprocessing import ImagePreprocessing
from kseg.backbones.vgg16 import load_vgg16_convolutions
from kseg.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kseg.layers.batch_normalization import BatchNormalization
from kseg.models.registry import register_model

# VGG16's five convolution stages as (width multiple of num_filters, number of 3x3 convolutions).
_VGG16_STAGES = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))


def _conv_bn(x, filters, kernel_size, name, activation=True):
    x = keras.layers.Conv2D(filters, kernel_size, padding="same", name=name)(x)
    x = BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if activation else x


def _check_common(num_classes, num_filters, input_shape, index_format):
    if index_format not in ("flat", "window"):
        raise ValueError(
            f"index_format must be 'window' or 'flat'. Received: index_format={index_format!r}"
        )
    if int(num_classes) <= 0:
        raise ValueError(
            f"num_classes must be a positive integer. Received: num_classes={num_classes}"
        )
    if int(num_filters) <= 0:
        raise ValueError(
            f"num_filters must be a positive integer. Received: num_filters={num_filters}"
        )
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C). Received: input_shape={input_shape}")


@register_model("segnet")
def SegNet(
    num_classes,
    input_shape=(None, None, 3),
    backbone_weights=None,
    num_filters=64,
    backbone="vgg16_bn",
    index_format="window",
    name="segnet",
):
    """SegNet: VGG16's 13 convolutions with BN as encoder, a mirrored decoder fed by pool indices.

    Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional
    Encoder-Decoder Architecture for Image Segmentation" (TPAMI 2017). Each of
    the five encoder stages ends in a 2x2 max pooling that keeps its argmax
    indices; the matching decoder stage unpools with them
    (`kseg.layers.MaxUnpooling2D`), then applies 3x3 convolutions with batch
    normalisation and ReLU, 3, 3, 3, 2, 2 of them from the deepest stage up.
    The last convolution of each decoder stage reduces the width to that of
    the next shallower stage, and the very last one, a 3x3 convolution, is
    the classifier (the authors' `conv1_1_D`). The encoder alone holds VGG16's
    14.7M parameters, as the paper states.

    Any input size works, down to 1x1, so no size is refused and none is
    padded: the poolings use "same" padding, so an odd row or column is
    pooled with an implicit -inf border rather than dropped, and each
    unpooling restores the exact size of the tensor its stage pooled. No
    cropping is needed and the logits have the input's height and width.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, 3)`; H and W may be None.
        backbone_weights: None, `"imagenet"` (keras.applications VGG16, which
            has no BN: the BN layers start as the identity) or the path of a
            VGG16 weights file saved without its classifier
            (`include_top=False`).
        num_filters: width of the first stage; later stages use 2x, 4x, 8x
            and 8x. VGG16's weights need the paper's 64.
        backbone: only `"vgg16_bn"`, the paper's encoder; accepted so every
            registered model takes a `backbone` argument.
        index_format: how the pooling indices are kept. `"window"` (default):
            the position of each maximum inside its 2x2 window, the paper's
            "2 bits for each 2x2 pooling window", computed with ops TFLite
            has built-in kernels for. `"flat"`: `tf.nn.max_pool_with_argmax`'s
            flat indices, which TFLite runs only as a TF Select (Flex) op.
            Both give the same logits and the same weights, so either can
            load the other's weights.
        name: model name.

    Returns:
        A `keras.Model` mapping RGB images in [0, 255] to float32 logits
        `(B, H, W, num_classes)`.

    Example:
        >>> import numpy as np, kseg
        >>> model = kseg.models.SegNet(11, num_filters=8)
        >>> model(np.zeros((1, 45, 60, 3), "float32")).shape
        TensorShape([1, 45, 60, 11])
    """
    _check_common(num_classes, num_filters, input_shape, index_format)
    if backbone != "vgg16_bn":
        raise ValueError(f"SegNet's encoder is VGG16 with BN. Received: backbone={backbone!r}")
    if backbone_weights is not None and int(num_filters) != 64:
        raise ValueError(
            "VGG16 weights need num_filters=64. "
            f"Received: num_filters={num_filters}, backbone_weights={backbone_weights!r}"
        )
    if backbone_weights not in (None, "imagenet") and not os.path.isfile(backbone_weights):
        raise ValueError(
            f"VGG16 weights file not found. Received: backbone_weights={backbone_weights!r}"
        )
    widths = [int(num_filters) * multiple for multiple, _ in _VGG16_STAGES]

    image = keras.Input(input_shape, name="image")
    x = ImagePreprocessing("caffe", name="preprocessing")(image)
    skips = []
    for stage, (width, (_, depth)) in enumerate(zip(widths, _VGG16_STAGES), start=1):
        for index in range(1, depth + 1):
            x = _conv_bn(x, width, 3, f"block{stage}_conv{index}")
        pooled, argmax = MaxPoolingWithArgmax2D(
            padding="same", index_format=index_format, name=f"block{stage}_pool"
        )(x)
        skips.append((x, argmax))
        x = pooled

    for stage in range(len(_VGG16_STAGES), 0, -1):
        before_pool, argmax = skips[stage - 1]
        x = MaxUnpooling2D(index_format=index_format, name=f"decoder{stage}_unpool")(
            [x, argmax, before_pool]
        )
        depth = _VGG16_STAGES[stage - 1][1]
        for index in range(depth, 0, -1):
            if stage == 1 and index == 1:
                break
            width = widths[stage - 2] if index == 1 else widths[stage - 1]
            x = _conv_bn(x, width, 3, f"decoder{stage}_conv{index}")
    logits = keras.layers.Conv2D(
        num_classes, 3, padding="same", name="classifier", dtype="float32"
    )(x)

    model = keras.Model(image, logits, name=name)
    if backbone_weights is not None:
        load_vgg16_convolutions(model, backbone_weights)
    return model


@register_model("segnet_basic")
def SegNetBasic(
    num_classes,
    input_shape=(None, None, 3),
    num_filters=64,
    kernel_size=7,
    backbone=None,
    index_format="window",
    name="segnet_basic",
):
    """SegNet-Basic: four 7x7 encoder stages with pool indices and a mirrored, ReLU-free decoder.

    The smaller network of Badrinarayanan, Kendall & Cipolla (TPAMI 2017,
    Section 4.1): four encoder stages of a 7x7 convolution with 64 filters,
    batch normalisation, ReLU and 2x2 max pooling with indices; four decoder
    stages of index unpooling then a 7x7 convolution with 64 filters and batch
    normalisation, without ReLU as in the paper; a 1x1 classifier. Pixels
    are standardised with ImageNet's mean and deviation, standing in for the
    paper's local contrast normalisation. Poolings use "same" padding and
    unpoolings restore each stage's exact size, so any input size, down to
    1x1, keeps it: no size is refused and none is padded.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, C)`; H and W may be None.
        num_filters: width of every stage (the paper's 64).
        kernel_size: convolution size (the paper's 7).
        backbone: only None: SegNet-Basic has its own encoder; accepted so
            every registered model takes a `backbone` argument.
        index_format: `"window"` (default) or `"flat"` pooling indices, as in
            `kseg.models.SegNet`.
        name: model name.

    Returns:
        A `keras.Model` with SegNet's input and output conventions.

    Example:
        >>> model = kseg.models.SegNetBasic(11, num_filters=8)
        >>> sum(isinstance(layer, kseg.layers.MaxUnpooling2D) for layer in model.layers)
        4
    """
    _check_common(num_classes, num_filters, input_shape, index_format)
    if backbone is not None:
        raise ValueError(f"SegNet-Basic has its own encoder. Received: backbone={backbone!r}")
    if int(kernel_size) <= 0:
        raise ValueError(
            f"kernel_size must be a positive integer. Received: kernel_size={kernel_size}"
        )

    image = keras.Input(input_shape, name="image")
    x = ImagePreprocessing("torch", name="preprocessing")(image)
    skips = []
    for stage in range(1, 5):
        x = _conv_bn(x, num_filters, kernel_size, f"encoder{stage}_conv")
        pooled, argmax = MaxPoolingWithArgmax2D(
            padding="same", index_format=index_format, name=f"encoder{stage}_pool"
        )(x)
        skips.append((x, argmax))
        x = pooled
    for stage in range(4, 0, -1):
        before_pool, argmax = skips[stage - 1]
        x = MaxUnpooling2D(index_format=index_format, name=f"decoder{stage}_unpool")(
            [x, argmax, before_pool]
        )
        x = _conv_bn(x, num_filters, kernel_size, f"decoder{stage}_conv", activation=False)
    logits = keras.layers.Conv2D(num_classes, 1, name="classifier", dtype="float32")(x)
    return keras.Model(image, logits, name=name)
