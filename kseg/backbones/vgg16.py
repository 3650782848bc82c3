"""VGG16 as the front end of FCN, DilatedNet and DeepLab v1, and its classifier's weights.

Simonyan & Zisserman 2015, configuration D: five blocks of 3x3 convolutions (2, 2, 3, 3, 3 of
them; 64 to 512 channels), each closed by a pooling, then two 4096-unit fully connected layers.
The three architectures read VGG16 differently: FCN keeps all five poolings in Caffe's ceil
mode (`ceil_mode_pooling`), DilatedNet and DeepLab v1 keep the stride at 8 and dilate conv5
(`atrous_front_end`). All of them start from the ImageNet classifier, whose fc1/fc2 become
their fc6/fc7 convolutions (`load_vgg16_classifier`) through
`kseg.backbones.surgery.convolutionalize`. Layer names are keras.applications.VGG16's, so its
weights load by name.
"""

import os
from pathlib import Path

import h5py
import keras

from kseg.backbones.bundled import explain_failed_download
from kseg.backbones.surgery import convolutionalize
from kseg.layers.fast_equivalents import conv2d

VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
"""VGG16's five blocks as (convolutions, channels), Simonyan & Zisserman 2015, Table 1 (D)."""

VGG16_FC_WIDTH = 4096
"""Units of VGG16's fc6 and fc7 (Table 1, D)."""

VGG16_FC6_TAPS = 7
"""fc6 reads a 7x7x512 pool5 map: the spatial size of its convolutional form."""


def is_vgg16(backbone):
    """Whether a builder's `backbone` argument names VGG16.

    Example:
        >>> kseg.backbones.vgg16.is_vgg16("VGG16"), kseg.backbones.vgg16.is_vgg16("tiny")
        (True, False)
    """
    return isinstance(backbone, str) and backbone.lower() == "vgg16"


def check_classifier_width(num_filters, backbone_weights):
    """Refuses an fc6/fc7 width other than 4096 when VGG16 classifier weights will fill them.

    Args:
        num_filters: the builder's fc6/fc7 width.
        backbone_weights: the builder's VGG16 weights (None loads nothing).

    Example:
        >>> kseg.backbones.vgg16.check_classifier_width(16, None)
    """
    if backbone_weights is not None and num_filters != VGG16_FC_WIDTH:
        raise ValueError(
            "VGG16 classifier weights need fc6/fc7 of width 4096. "
            f"Received: num_filters={num_filters}, backbone_weights={backbone_weights!r}"
        )


def atrous_front_end(x, pool_size=2, stride_1_late_pools=False):
    """VGG16's 13 convolutions at output stride 8: conv5 dilated by 2, no subsampling after pool3.

    pool1-pool3 subsample by 2 with "same" padding, so odd sizes keep `ceil(H / 8)` positions.
    pool4 and pool5 are dropped (DilatedNet, Yu & Koltun 2016) or become stride-1 poolings
    (DeepLab v1, Chen et al. 2015); either way conv5 is dilated by 2 so that it keeps its
    field of view (the "hole" algorithm).

    Args:
        x: the normalised image tensor.
        pool_size: the poolings' window (2 for DilatedNet, 3 for DeepLab v1).
        stride_1_late_pools: keep pool4 and pool5 as stride-1 poolings.

    Returns:
        `(features, taps)`: the stride-8 conv5 (or pool5) map and `[(tensor, stride)]` for
        the input and each of pool1 to pool4 that exists.

    Example:
        >>> image = keras.Input((None, None, 3))
        >>> features, taps = kseg.backbones.vgg16.atrous_front_end(image)
        >>> features.shape, [stride for _, stride in taps]
        ((None, None, None, 512), [1, 2, 4, 8])
    """
    taps = [(x, 1)]
    stride = 1
    for block, (convolutions, filters) in enumerate(VGG16_BLOCKS, start=1):
        for index in range(1, convolutions + 1):
            x = conv2d(
                filters,
                3,
                padding="same",
                dilation_rate=2 if block == 5 else 1,
                activation="relu",
                name=f"block{block}_conv{index}",
            )(x)
        if block > 3 and not stride_1_late_pools:
            continue
        pool_stride = 2 if block <= 3 else 1
        stride *= pool_stride
        x = keras.layers.MaxPooling2D(
            pool_size, strides=pool_stride, padding="same", name=f"block{block}_pool"
        )(x)
        if block <= 4:
            taps.append((x, stride))
    return x, taps


def ceil_mode_pooling(encoder):
    """A copy of a VGG16 backbone whose poolings round up, as Caffe's do.

    FCN's crop offsets assume Caffe's ceil-mode pooling; Keras's "valid" pooling rounds down
    and can leave the final crop short of pixels.

    Example:
        >>> encoder = kseg.backbones.get_backbone("vgg16", include_preprocessing=False)
        >>> ceil = kseg.backbones.vgg16.ceil_mode_pooling(encoder)
        >>> ceil.get_layer("block1_pool").padding
        'same'
    """

    def clone(layer):
        if isinstance(layer, keras.layers.MaxPooling2D):
            return keras.layers.MaxPooling2D.from_config({**layer.get_config(), "padding": "same"})
        return layer

    return keras.models.clone_model(encoder, clone_function=clone)


def holds_vgg16_classifier(weights):
    """Whether VGG16 weights carry the fully connected layers ("imagenet" always does).

    Args:
        weights: "imagenet" or the path of a keras.applications VGG16 weights file (legacy
            HDF5 or Keras 3 `.weights.h5`).

    Returns:
        True for the weights of `VGG16(include_top=True)`, False for `include_top=False`.

    Example:
        >>> kseg.backbones.vgg16.holds_vgg16_classifier("imagenet")
        True
    """
    if weights == "imagenet":
        return True
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone_weights must be None, 'imagenet' or an existing VGG16 weights file. "
            f"Received: backbone_weights={weights!r}"
        )
    try:
        with h5py.File(path, "r") as handle:
            if "layer_names" in handle.attrs:
                # keras.applications' legacy HDF5 layout lists the layers by name.
                names = [
                    name.decode() if isinstance(name, bytes) else str(name)
                    for name in handle.attrs["layer_names"]
                ]
                return "fc1" in names
            # Keras 3 `.weights.h5` files name layer groups after their class.
            return any(key.startswith("dense") for key in handle.get("layers", {}))
    except OSError as error:
        raise ValueError(
            f"backbone_weights is not an HDF5 weights file. Received: backbone_weights={weights!r}"
        ) from error


def decimation_steps(fc6_kernel_size, num_filters):
    """Spatial and channel strides that subsample VGG16's fc6/fc7 to a smaller fc6/fc7.

    DeepLab v1 (Chen et al. 2015, Sec. 3.1) subsamples the 7x7 fc6 "by simple decimation" to
    evenly spaced taps that include both corners, and keeps every `4096 // num_filters`-th
    unit.

    Args:
        fc6_kernel_size: the smaller fc6's spatial size (2, 3, 4 or 7).
        num_filters: the smaller width, a divisor of 4096.

    Returns:
        `(tap_step, channel_step)` for `load_vgg16_classifier`.

    Example:
        >>> kseg.backbones.vgg16.decimation_steps(3, 1024)
        (3, 4)
    """
    spans = VGG16_FC6_TAPS - 1
    if fc6_kernel_size < 2 or spans % (fc6_kernel_size - 1):
        raise ValueError(
            "VGG16 classifier weights can only be decimated to an fc6 kernel that takes evenly "
            f"spaced taps of the 7x7 fc6 from corner to corner (2, 3, 4 or 7). "
            f"Received: fc6_kernel_size={fc6_kernel_size}"
        )
    if VGG16_FC_WIDTH % num_filters:
        raise ValueError(
            "VGG16 classifier weights can only be decimated to a width dividing 4096 "
            f"(1024 for LargeFOV, 4096 for the 4x4 models). Received: num_filters={num_filters}"
        )
    return spans // (fc6_kernel_size - 1), VGG16_FC_WIDTH // num_filters


def load_vgg16_classifier(convolutions, fc6, fc7, weights, tap_step=1, channel_step=1):
    """Copies VGG16 classifier weights: the 13 convolutions, then fc1/fc2 into fc6/fc7.

    `kseg.backbones.surgery.convolutionalize` turns fc1 into its 7x7x512x4096 convolution
    and fc2 into a 1x1 one. fc6 keeps every `tap_step`-th tap of each spatial axis and every
    `channel_step`-th output unit; fc7 keeps the same every `channel_step`-th rows (the fc6
    units that survive) and columns; biases follow their units. Steps of 1 copy fc1/fc2
    whole (FCN, DilatedNet).

    Args:
        convolutions: the model (or nested backbone) holding the `block{b}_conv{i}` layers.
        fc6: the fc6 convolution layer, built.
        fc7: the fc7 convolution layer, built.
        weights: "imagenet" or the path of `keras.applications.VGG16(include_top=True)`
            weights.
        tap_step: spatial subsampling of fc6's kernel.
        channel_step: subsampling of fc6/fc7 units.

    Example:
        >>> model = kseg.models.FCN8s(backbone_weights="imagenet")  # doctest: +SKIP
    """
    with explain_failed_download():
        vgg16 = keras.applications.VGG16(include_top=True, weights=weights)
    classifier = convolutionalize(vgg16)
    del vgg16
    for layer in classifier.layers:
        if layer.weights and layer.name.startswith("block"):
            convolutions.get_layer(layer.name).set_weights(layer.get_weights())
    fc1_kernel, fc1_bias = classifier.get_layer("fc1").get_weights()
    fc2_kernel, fc2_bias = classifier.get_layer("fc2").get_weights()
    del classifier
    fc6.set_weights(
        [fc1_kernel[::tap_step, ::tap_step, :, ::channel_step], fc1_bias[::channel_step]]
    )
    fc7.set_weights([fc2_kernel[:, :, ::channel_step, ::channel_step], fc2_bias[::channel_step]])


def load_vgg16_convolutions(model, weights):
    """Copies the 13 convolutions of VGG16 weights saved without the classifier.

    Args:
        model: a model holding layers named `block{b}_conv{i}` of VGG16's kernel shapes.
        weights: "imagenet" or the path of `keras.applications.VGG16(include_top=False)`
            weights.

    Example:
        >>> model = kseg.models.SegNet(21, backbone_weights="imagenet")  # doctest: +SKIP
    """
    weights = weights if weights == "imagenet" else os.fspath(weights)
    with explain_failed_download():
        vgg16 = keras.applications.VGG16(
            include_top=False, weights=weights, input_shape=(None, None, 3)
        )
    for layer in vgg16.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
