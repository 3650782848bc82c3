"""Mask R-CNN's per-region heads: box classification/regression and the mask branch."""

import keras
from keras import ops

from kseg.layers.batch_normalization import BatchNormalization
from kseg.validation import validate_positive_int


def _conv_bn_relu(layer, channels, batch_norm, name):
    """A 3x3 convolution with ReLU, or without bias and followed by batch norm then ReLU."""
    conv = keras.layers.Conv2D(
        channels,
        3,
        padding="same",
        activation=None if batch_norm else "relu",
        use_bias=not batch_norm,
        kernel_initializer=keras.initializers.HeNormal(),
        dtype=layer.dtype_policy,
        name=name,
    )
    if not batch_norm:
        return conv, None
    # PyTorch's BatchNorm2d: epsilon 1e-5, momentum 0.1 on the new statistics (0.9 in Keras).
    norm = BatchNormalization(
        epsilon=1e-5, momentum=0.9, dtype=layer.dtype_policy, name=f"{name}_bn"
    )
    return conv, norm


def _run_convs(convs, norms, hidden, training):
    for conv, norm in zip(convs, norms):
        hidden = conv(hidden)
        if norm is not None:
            hidden = ops.relu(norm(hidden, training=training))
    return hidden


def _build_convs(convs, norms, shape, channels):
    for conv, norm in zip(convs, norms):
        conv.build(shape)
        shape = (*shape[:-1], channels)
        if norm is not None:
            norm.build(shape)
    return shape


@keras.saving.register_keras_serializable(package="kseg")
class BoxHead(keras.layers.Layer):
    """Class scores and class-specific box deltas for pooled regions.

    He et al. 2017, "Mask R-CNN", Fig. 4 (right, the FPN head): the 7x7 RoIAlign features are
    flattened and pass two 1024-d fully connected layers with ReLU, then a classifier over
    `num_classes` (background included) and a regressor of four deltas per class. As in
    Detectron the classifier starts at std 0.01 and the regressor at std 0.001.

    With `num_convs` the pooled features first pass that many 3x3 convolutions without bias,
    each followed by batch normalisation and ReLU, and `num_fc` sets the fully connected
    layers: torchvision's `maskrcnn_resnet50_fpn_v2` uses four convolutions and one layer
    (`FastRCNNConvFCHead`, after Wu & He 2018's "4conv1fc" head).

    Args:
        num_classes: classes including the background (81 for COCO).
        fc_units: width of the hidden fully connected layers (1024).
        num_convs: 3x3 convolution + batch norm + ReLU blocks before them (0).
        conv_channels: width of those convolutions (256).
        num_fc: number of hidden fully connected layers (2), named `box_fc1`, ...
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        `(class_logits (B, R, num_classes), box_deltas (B, R, num_classes, 4))` in float32
        for inputs `(B, R, S, S, C)`.

    Example:
        >>> import numpy as np
        >>> from kseg.layers.roi_heads import BoxHead
        >>> logits, deltas = BoxHead(3, 16)(np.zeros((2, 5, 7, 7, 8), "float32"))
        >>> tuple(logits.shape), tuple(deltas.shape)
        ((2, 5, 3), (2, 5, 3, 4))
    """

    def __init__(
        self, num_classes, fc_units=1024, num_convs=0, conv_channels=256, num_fc=2, **kwargs
    ):
        super().__init__(**kwargs)
        num_classes = validate_positive_int(num_classes, "num_classes")
        fc_units = validate_positive_int(fc_units, "fc_units")
        num_fc = validate_positive_int(num_fc, "num_fc")
        conv_channels = validate_positive_int(conv_channels, "conv_channels")
        if isinstance(num_convs, bool) or not isinstance(num_convs, int) or num_convs < 0:
            raise ValueError(
                f"num_convs must be a non-negative integer. Received: num_convs={num_convs!r}"
            )
        if num_classes < 2:
            raise ValueError(
                "num_classes counts the background and at least one object class. "
                f"Received: num_classes={num_classes}"
            )
        self.num_classes = num_classes
        self.fc_units = fc_units
        self.num_convs = num_convs
        self.conv_channels = conv_channels
        self.num_fc = num_fc
        blocks = [
            _conv_bn_relu(self, conv_channels, True, f"box_conv{i + 1}") for i in range(num_convs)
        ]
        self.convs = [conv for conv, _ in blocks]
        self.conv_norms = [norm for _, norm in blocks]
        self.hidden = [
            keras.layers.Dense(
                fc_units, activation="relu", dtype=self.dtype_policy, name=f"box_fc{i + 1}"
            )
            for i in range(num_fc)
        ]
        self.classifier = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            dtype=self.dtype_policy,
            name="box_class_logits",
        )
        self.regressor = keras.layers.Dense(
            4 * num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            dtype=self.dtype_policy,
            name="box_deltas",
        )

    def build(self, input_shape):
        shape = _build_convs(
            self.convs, self.conv_norms, (None, *input_shape[2:]), self.conv_channels
        )
        flat = shape[1] * shape[2] * shape[3]
        self.hidden[0].build((None, flat))
        for layer in self.hidden[1:]:
            layer.build((None, self.fc_units))
        self.classifier.build((None, self.fc_units))
        self.regressor.build((None, self.fc_units))

    def call(self, pooled, training=None):
        shape = ops.shape(pooled)
        hidden = pooled
        if self.convs:
            hidden = ops.reshape(pooled, (shape[0] * shape[1], shape[2], shape[3], shape[4]))
            hidden = _run_convs(self.convs, self.conv_norms, hidden, training)
        hidden = ops.reshape(hidden, (shape[0] * shape[1], -1))
        for layer in self.hidden:
            hidden = layer(hidden)
        logits = ops.reshape(ops.cast(self.classifier(hidden), "float32"), (shape[0], shape[1], -1))
        deltas = ops.reshape(
            ops.cast(self.regressor(hidden), "float32"), (shape[0], shape[1], self.num_classes, 4)
        )
        return logits, deltas

    def compute_output_shape(self, input_shape):
        batch, rois = input_shape[:2]
        return (batch, rois, self.num_classes), (batch, rois, self.num_classes, 4)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            fc_units=self.fc_units,
            num_convs=self.num_convs,
            conv_channels=self.conv_channels,
            num_fc=self.num_fc,
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class MaskHead(keras.layers.Layer):
    """One mask logit map per class for pooled regions.

    He et al. 2017, "Mask R-CNN", Fig. 4 (right): four 3x3 convolutions of 256 channels with
    ReLU on the 14x14 RoIAlign features, a 2x2 stride-2 transposed convolution with ReLU to
    28x28, and a 1x1 convolution to one mask per class. Classes do not compete: the loss
    reads only the ground-truth class's map (Sec. 3).

    Args:
        num_classes: classes including the background.
        channels: width of the convolutions (256).
        num_convs: number of 3x3 convolutions (4).
        batch_norm: the convolutions have no bias and are followed by batch normalisation
            before their ReLU (`mask_conv{i}_bn`), as in torchvision's
            `maskrcnn_resnet50_fpn_v2`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        Mask logits `(B, R, 2S, 2S, num_classes)` in float32 for inputs `(B, R, S, S, C)`.

    Example:
        >>> import numpy as np
        >>> from kseg.layers.roi_heads import MaskHead
        >>> MaskHead(3, channels=8)(np.zeros((2, 5, 14, 14, 8), "float32")).shape
        TensorShape([2, 5, 28, 28, 3])
    """

    def __init__(self, num_classes, channels=256, num_convs=4, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        num_classes = validate_positive_int(num_classes, "num_classes")
        channels = validate_positive_int(channels, "channels")
        num_convs = validate_positive_int(num_convs, "num_convs")
        self.num_classes = num_classes
        self.channels = channels
        self.num_convs = num_convs
        self.batch_norm = bool(batch_norm)
        he = keras.initializers.HeNormal()
        blocks = [
            _conv_bn_relu(self, channels, self.batch_norm, f"mask_conv{i + 1}")
            for i in range(num_convs)
        ]
        self.convs = [conv for conv, _ in blocks]
        self.conv_norms = [norm for _, norm in blocks]
        self.upsample = keras.layers.Conv2DTranspose(
            channels,
            2,
            strides=2,
            activation="relu",
            kernel_initializer=he,
            dtype=self.dtype_policy,
            name="mask_deconv",
        )
        self.predictor = keras.layers.Conv2D(
            num_classes,
            1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            dtype=self.dtype_policy,
            name="mask_logits",
        )

    def build(self, input_shape):
        size = input_shape[2:4]
        shape = _build_convs(self.convs, self.conv_norms, (None, *input_shape[2:]), self.channels)
        self.upsample.build(shape)
        doubled = [None if s is None else 2 * s for s in size]
        self.predictor.build((None, *doubled, self.channels))

    def call(self, pooled, training=None):
        shape = ops.shape(pooled)
        hidden = ops.reshape(pooled, (shape[0] * shape[1], shape[2], shape[3], shape[4]))
        hidden = _run_convs(self.convs, self.conv_norms, hidden, training)
        logits = ops.cast(self.predictor(self.upsample(hidden)), "float32")
        return ops.reshape(
            logits, (shape[0], shape[1], 2 * shape[2], 2 * shape[3], self.num_classes)
        )

    def compute_output_shape(self, input_shape):
        batch, rois, height, width = input_shape[:4]
        doubled = [None if s is None else 2 * s for s in (height, width)]
        return (batch, rois, *doubled, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            channels=self.channels,
            num_convs=self.num_convs,
            batch_norm=self.batch_norm,
        )
        return config
