"""Atrous spatial pyramid pooling (DeepLab v2/v3/v3+)."""

import keras
from keras import ops

from kseg.layers.conv_block import ConvBNReLU

ASPP_RATES_AT_STRIDE_16 = (6, 12, 18)
"""DeepLabv3's atrous rates of the 3x3 ASPP branches at output stride 16 (Sec. 3.3)."""

ASPP_OUTPUT_STRIDES = (8, 16, 32)


def aspp_rates(output_stride, dilation_rates=None):
    """The atrous rates of a DeepLab ASPP on features at `output_stride`.

    The one rule of the DeepLab family (Chen et al. 2017, "Rethinking Atrous Convolution for
    Semantic Image Segmentation", Sec. 3.3 and 4.1): an atrous rate is a spacing in feature
    cells, so the rates that give a field of view in pixels scale as `16 / output_stride`:
    (6, 12, 18) at output stride 16, (12, 24, 36) at 8 and (3, 6, 9) at 32. Rates given
    explicitly are taken as they are (DeepLab v2's ASPP-L, (6, 12, 18, 24), is given at
    output stride 8).

    Args:
        output_stride: stride of the features the ASPP reads: 8, 16 or 32.
        dilation_rates: explicit rates, or None for `ASPP_RATES_AT_STRIDE_16` scaled.

    Returns:
        A tuple of rates (the layers that take them check them).

    Example:
        >>> kseg.layers.aspp.aspp_rates(8)
        (12, 24, 36)
        >>> kseg.layers.aspp.aspp_rates(8, dilation_rates=[6, 12, 18, 24])
        (6, 12, 18, 24)
    """
    if output_stride not in ASPP_OUTPUT_STRIDES:
        raise ValueError(
            f"output_stride must be 8, 16 or 32. Received: output_stride={output_stride}"
        )
    if dilation_rates is None:
        return tuple(rate * 16 // output_stride for rate in ASPP_RATES_AT_STRIDE_16)
    return tuple(dilation_rates)


@keras.saving.register_keras_serializable(package="kseg")
class ASPP(keras.layers.Layer):
    """Atrous spatial pyramid pooling with an image-level pooling branch.

    DeepLabv3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic
    Image Segmentation", Sec. 3.3) probes the deepest feature map with parallel
    branches: one 1x1 convolution, three 3x3 atrous convolutions (rates 6, 12,
    18 at output stride 16, doubled at output stride 8) and global average
    pooling followed by a 1x1 convolution and upsampling back to the feature
    size. Each branch has batch normalisation and ReLU; the branches are
    concatenated and projected by a 1x1 convolution. DeepLabV3+ makes the 3x3
    branches depthwise-separable (`separable=True`).

    The pooled branch is 1x1, so its bilinear upsampling is a broadcast over
    the feature map: no resize, and any input size (513x513 included) works.

    Args:
        filters: channels of every branch and of the projection (256 in the papers).
        dilation_rates: atrous rates of the 3x3 branches.
        image_pooling: include the image-level pooling branch.
        separable: depthwise-separable 3x3 branches (DeepLabV3+).
        dropout: dropout rate after the projection (0.1 in DeepLabv3+).
        batchnorm_momentum: momentum of every branch's batch normalisation.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tensor `(B, H, W, filters)`.

    Example:
        >>> import keras, kseg
        >>> features = keras.Input((None, None, 64))
        >>> kseg.layers.ASPP(filters=32, dilation_rates=(6, 12, 18))(features).shape
        (None, None, None, 32)
    """

    def __init__(
        self,
        filters=256,
        dilation_rates=(6, 12, 18),
        image_pooling=True,
        separable=False,
        dropout=0.1,
        batchnorm_momentum=0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) <= 0:
            raise ValueError(f"filters must be a positive integer. Received: filters={filters}")
        rates = tuple(int(rate) for rate in dilation_rates)
        if any(rate <= 0 for rate in rates):
            raise ValueError(
                "dilation_rates must be positive integers. "
                f"Received: dilation_rates={dilation_rates}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
        self.filters = int(filters)
        self.dilation_rates = rates
        self.image_pooling = bool(image_pooling)
        self.separable = bool(separable)
        self.dropout = float(dropout)

        policy = self.dtype_policy
        momentum = float(batchnorm_momentum)
        self.branches = [
            ConvBNReLU(
                self.filters, 1, batchnorm_momentum=momentum, name="aspp_conv_0", dtype=policy
            )
        ]
        for index, rate in enumerate(self.dilation_rates, start=1):
            self.branches.append(
                ConvBNReLU(
                    self.filters,
                    3,
                    dilation_rate=rate,
                    separable=self.separable,
                    batchnorm_momentum=momentum,
                    name=f"aspp_conv_{index}",
                    dtype=policy,
                )
            )
        if self.image_pooling:
            self.pooling_conv = ConvBNReLU(
                self.filters, 1, batchnorm_momentum=momentum, name="aspp_pooling", dtype=policy
            )
        self.projection = ConvBNReLU(
            self.filters, 1, batchnorm_momentum=momentum, name="aspp_projection", dtype=policy
        )
        self.projection_dropout = keras.layers.Dropout(self.dropout, dtype=policy)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        for branch in self.branches:
            branch.build(input_shape)
        num_branches = len(self.branches)
        if self.image_pooling:
            self.pooling_conv.build((input_shape[0], 1, 1, input_shape[-1]))
            num_branches += 1
        self.projection.build(input_shape[:-1] + (self.filters * num_branches,))
        self.built = True

    def call(self, inputs, training=None):
        outputs = [branch(inputs, training=training) for branch in self.branches]
        if self.image_pooling:
            # A bf16/fp16 mean over a large map loses precision: average in float32.
            pooled = ops.mean(ops.cast(inputs, "float32"), axis=(1, 2), keepdims=True)
            pooled = ops.cast(pooled, self.compute_dtype)
            pooled = self.pooling_conv(pooled, training=training)
            outputs.append(pooled * ops.ones_like(outputs[0][..., :1]))
        x = ops.concatenate(outputs, axis=-1)
        x = self.projection(x, training=training)
        return self.projection_dropout(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "dilation_rates": list(self.dilation_rates),
                "image_pooling": self.image_pooling,
                "separable": self.separable,
                "dropout": self.dropout,
                # Read back from a sublayer, which kseg.training.set_batchnorm_momentum may change.
                "batchnorm_momentum": self.projection.bn.momentum,
            }
        )
        return config
