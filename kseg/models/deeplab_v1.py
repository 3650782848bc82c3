"""DeepLab v1: VGG16-LargeFOV and its multi-scale (MSc) variant."""

import keras

from kseg.backbones.preprocessing import ImagePreprocessing
from kseg.backbones.vgg16 import (
    atrous_front_end,
    decimation_steps,
    holds_vgg16_classifier,
    is_vgg16,
    load_vgg16_classifier,
    load_vgg16_convolutions,
)
from kseg.layers.fast_equivalents import conv2d
from kseg.models.backbone_input import feature_stride, resolve_backbone
from kseg.models.heads import logits_head
from kseg.models.registry import register_model

_VARIANTS = ("largefov", "msc-largefov")
_MSC_FILTERS = 128
_OUTPUT_STRIDE = 8


def _msc_branch(tap, stride, index, dropout):
    """Two layers (128 3x3, 128 1x1) bringing one tap to stride 8."""
    x = keras.layers.Conv2D(
        _MSC_FILTERS,
        3,
        strides=_OUTPUT_STRIDE // stride,
        padding="same",
        activation="relu",
        name=f"msc_{index}_conv1",
    )(tap)
    x = keras.layers.Dropout(dropout, name=f"msc_{index}_drop1")(x)
    x = keras.layers.Conv2D(_MSC_FILTERS, 1, activation="relu", name=f"msc_{index}_conv2")(x)
    return keras.layers.Dropout(dropout, name=f"msc_{index}_drop2")(x)


@register_model("deeplabv1")
def DeepLabV1(
    num_classes=21,
    backbone="vgg16",
    variant="largefov",
    input_shape=(None, None, 3),
    backbone_weights=None,
    num_filters=1024,
    fc6_dilation=12,
    fc6_kernel_size=3,
    dropout=0.5,
    name="deeplabv1",
    **backbone_kwargs,
):
    """DeepLab v1 (DeepLab-LargeFOV, DeepLab-MSc-LargeFOV): atrous VGG16 at output stride 8.

    Chen, Papandreou, Kokkinos, Murphy & Yuille 2015, "Semantic Image Segmentation with Deep
    Convolutional Nets and Fully Connected CRFs" (ICLR). VGG16's pool1-3 become 3x3 stride-2
    poolings ("same" padding), pool4 and pool5 3x3 stride-1 poolings, so the features stay
    at stride 8; conv5_1-3 use dilation 2 (Sec. 3.1, the "hole" algorithm). LargeFOV
    (Sec. 4, Table 2: 3x3 fc6 with input stride 12, 1024 channels, 20.5M parameters) follows
    with fc6 (3x3, dilation 12, 1024), fc7 (1x1, 1024), dropout after each and the fc8
    classifier; the stride-8 scores are bilinearly upsampled to the input size. The
    MSc variant (Sec. 3.3) attaches a two-layer branch (128 3x3 then 128 1x1, ReLU) to the
    input and to each of pool1-pool4 and concatenates the five 128-channel maps with fc7,
    5 x 128 = 640 extra channels before the classifier. Every branch meets the others at
    stride 8 through the stride of its 3x3 layer: 8 on the input, 4 on pool1, 2 on pool2 and
    1 on pool3 and pool4, as in the authors' DeepLab-MSc-LargeFOV train.prototxt (whose
    branch layers are also followed by dropout 0.5, kept here). That prototxt gives each
    branch its own 1x1 score layer and sums the scores; one 1x1 classifier over the
    concatenation, as the paper describes it, is the same linear map. The prototxts also
    average-pool pool5 (3x3, stride 1, layer "pool5a") before fc6, which this model keeps.
    The paper trains the branches with the rest frozen; a single Keras model leaves that
    choice to the caller (set `trainable` on the VGG layers).

    With `backbone="vgg16"` the VGG16 convolutions are built here with keras.applications
    layer names. `backbone_weights="imagenet"`, or a file of
    `keras.applications.VGG16(include_top=True)` weights, gives the paper's initialisation:
    the convolutions are copied and fc6/fc7 are VGG16's first two FC layers
    (keras.applications' fc1/fc2) subsampled "by simple
    decimation" (Sec. 3.1: the 7x7 first FC layer is subsampled "to 4x4 (or 3x3) spatial
    size"). fc1 is first rewritten as its 7x7x512x4096 convolution by
    `kseg.backbones.surgery.convolutionalize`; fc6 then keeps the evenly spaced taps that
    include both corners, every `6 // (fc6_kernel_size - 1)`-th one (indices 0, 3, 6 for
    3x3; 0, 2, 4, 6 for 4x4), and every `4096 // num_filters`-th output unit (0, 4, 8, ...,
    4092 for LargeFOV's 1024, Sec. 4.1 and Table 2: "4096 to 1024" channels); fc7 keeps the
    same every 4th input rows and output columns of fc2, biases following their units. W.
    Liu's SSD re-does this reduction "following what DeepLab did" (weiliu89/caffe issue
    #258), and the pycaffe script that produces its `VGG_ILSVRC_16_layers_fc_reduced` model
    slices fc6 as `[::4, :, ::3, ::3]` and fc7 as `[::4, ::4]` (Caffe's out, in, h, w
    order). The steps agree with Table 2's geometry: taps 3 apart at pool5's stride 32 are
    96 pixels apart, which fc6 at stride 8 reaches with dilation 12 (LargeFOV's "input
    stride 12"); taps 2 apart give dilation 8 (DeepLab-CRF-4x4: `fc6_kernel_size=4,
    fc6_dilation=8, num_filters=4096`, 65.1M parameters), and the paper's plain
    DeepLab-CRF (receptive field 128) reads the 4x4 kernel with dilation 4.
    A file of `include_top=False` weights (keras.applications'
    `..._notop.h5` or any VGG16 without Dense layers) fills the convolutions only and
    leaves fc6/fc7 random, in which case any `fc6_kernel_size` and `num_filters` work.
    fc8 is always trained from scratch and starts from the Keras defaults (Glorot-uniform
    kernel, zero bias). Any other registry backbone (e.g. "tiny") is built at output stride
    8 by `kseg.backbones.get_backbone` and fc6/fc7 sit on its stride-8 feature; MSc
    branches then read the input and the backbone's stride-2, -4 and -8 features
    (4 x 128 channels, the backbone having no pool4).

    Args:
        num_classes: number of classes (21 for PASCAL VOC).
        backbone: "vgg16" (the paper's), another name from
            `kseg.backbones.list_backbones()` or a model from `get_backbone` built at
            output stride 8.
        variant: "largefov" or "msc-largefov".
        input_shape: `(H, W, 3)`; H and W may be None.
        backbone_weights: None, "imagenet" or a weights path. For "vgg16", "imagenet"
            and files of `keras.applications.VGG16(include_top=True)` weights also
            initialise fc6/fc7 by decimation; files of `include_top=False` weights fill
            the convolutions only.
        num_filters: width of fc6 and fc7 (1024); with VGG16 classifier weights it must
            divide 4096.
        fc6_dilation: atrous rate of fc6 (12).
        fc6_kernel_size: spatial size of fc6 (3; 4 for the paper's 4x4 models); with VGG16
            classifier weights one of 2, 3, 4 or 7.
        dropout: dropout rate after fc6, fc7 and the MSc layers (0.5).
        name: model name.
        **backbone_kwargs: forwarded to `kseg.backbones.get_backbone` for non-VGG16 names.

    Returns:
        A `keras.Model` mapping `(B, H, W, 3)` RGB images in [0, 255] to float32
        `(B, H, W, num_classes)` logits.

    Example:
        >>> import numpy as np, kseg
        >>> from kseg.models.deeplab_v1 import DeepLabV1
        >>> model = DeepLabV1(num_classes=3, backbone="tiny", num_filters=16)
        >>> tuple(model(np.zeros((1, 65, 97, 3))).shape)
        (1, 65, 97, 3)
    """
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}. Received: variant={variant!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    if int(fc6_kernel_size) < 1:
        raise ValueError(
            "fc6_kernel_size must be a positive integer. "
            f"Received: fc6_kernel_size={fc6_kernel_size}"
        )
    image = keras.Input(shape=input_shape, name="image")
    vgg16 = is_vgg16(backbone)
    if vgg16:
        if backbone_kwargs:
            raise ValueError(
                f"DeepLab v1 builds VGG16 itself and takes no backbone options. "
                f"Received: {sorted(backbone_kwargs)}"
            )
        load_classifier = backbone_weights is not None and holds_vgg16_classifier(backbone_weights)
        if load_classifier:
            # Checked before building so a bad width fails before any weights are fetched.
            decimation = decimation_steps(int(fc6_kernel_size), int(num_filters))
        normalised = ImagePreprocessing("caffe", name="preprocessing")(image)
        # DeepLab's 3x3 poolings; pool4 and pool5 keep stride 1 (Sec. 3.1).
        x, taps = atrous_front_end(normalised, pool_size=3, stride_1_late_pools=True)
        # The authors' LargeFOV prototxt smooths pool5 with a 3x3 stride-1 average pool.
        x = keras.layers.AveragePooling2D(3, strides=1, padding="same", name="pool5a")(x)
    else:
        encoder = resolve_backbone(
            backbone,
            input_shape=input_shape,
            weights=backbone_weights,
            output_stride=_OUTPUT_STRIDE,
            **backbone_kwargs,
        )
        strides = {info["key"]: info["stride"] for info in encoder.feature_info}
        if strides.get("P3") != _OUTPUT_STRIDE or max(strides.values()) != _OUTPUT_STRIDE:
            raise ValueError(
                f"DeepLab v1 needs a backbone whose deepest feature 'P3' is at stride 8. "
                f"Received feature strides: {strides}"
            )
        features = encoder(image)
        x = features["P3"]
        taps = [(image, 1)] + [(features[key], feature_stride(encoder, key)) for key in strides]

    x = conv2d(
        num_filters,
        int(fc6_kernel_size),
        padding="same",
        dilation_rate=fc6_dilation,
        activation="relu",
        name="fc6",
    )(x)
    x = keras.layers.Dropout(dropout, name="drop6")(x)
    x = keras.layers.Conv2D(num_filters, 1, activation="relu", name="fc7")(x)
    x = keras.layers.Dropout(dropout, name="drop7")(x)
    if variant == "msc-largefov":
        branches = [
            _msc_branch(tap, stride, index, dropout) for index, (tap, stride) in enumerate(taps)
        ]
        x = keras.layers.Concatenate(name="msc_concat")([x, *branches])
    logits = logits_head(x, num_classes, image, name="fc8")
    model = keras.Model(image, logits, name=name)
    if vgg16 and backbone_weights is not None:
        if load_classifier:
            fc6, fc7 = model.get_layer("fc6"), model.get_layer("fc7")
            load_vgg16_classifier(model, fc6, fc7, backbone_weights, *decimation)
        else:
            load_vgg16_convolutions(model, backbone_weights)
    return model
