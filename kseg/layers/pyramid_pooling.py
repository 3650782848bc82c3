"""Pyramid pooling module (PSPNet) and the adaptive average pooling it is built on."""

import keras
import tensorflow as tf
from keras import ops

from kseg.layers.conv_block import ConvBNReLU
from kseg.validation import validate_size


def _pooling_matrix(length, bins):
    """A `(bins, length)` matrix whose row i averages PyTorch's adaptive window i."""
    index = ops.arange(bins, dtype="int32")
    start = ops.floor_divide(index * length, bins)
    # Integer ceil((i + 1) * L / b), exact where a float division could round the wrong way.
    end = ops.floor_divide((index + 1) * length + bins - 1, bins)
    position = ops.arange(length, dtype="int32")
    inside = ops.logical_and(position[None, :] >= start[:, None], position[None, :] < end[:, None])
    width = ops.cast(end - start, "float32")
    return ops.cast(inside, "float32") / width[:, None]


def adaptive_average_pooling_2d(inputs, bins):
    """Averages each window of an output grid, as PyTorch's `adaptive_avg_pool2d`.

    Window `i` along an axis of length L covers `[floor(i L / b), ceil((i + 1) L / b))`,
    so windows overlap when b does not divide L and repeat pixels when L < b; a fixed
    `AveragePooling2D` agrees only when b divides L. The averages are two products with
    pooling matrices built from the run-time size, in float32.

    Args:
        inputs: a tensor `(B, H, W, C)`; H and W may be unknown until run time.
        bins: the output size: an int for a square grid, or `(height, width)` as PyTorch
            takes it.

    Returns:
        A float32 tensor `(B, height, width, C)` of the output size.

    Example:
        >>> import numpy as np, kseg
        >>> from kseg.layers.pyramid_pooling import adaptive_average_pooling_2d
        >>> x = np.arange(5.0, dtype="float32").reshape(1, 5, 1, 1)
        >>> adaptive_average_pooling_2d(x, 2)[0, :, 0, 0].numpy().tolist()
        [1.0, 3.0]
        >>> tuple(kseg.layers.adaptive_average_pooling_2d(np.ones((1, 7, 9, 2)), (3, 5)).shape)
        (1, 3, 5, 2)
    """
    out_height, out_width = validate_size(bins, "bins")
    x = ops.cast(inputs, "float32")
    shape = ops.shape(x)
    rows = _pooling_matrix(shape[1], out_height)
    cols = _pooling_matrix(shape[2], out_width)
    x = ops.einsum("ih,bhwc->biwc", rows, x)
    return ops.einsum("jw,biwc->bijc", cols, x)


@keras.saving.register_keras_serializable(package="kseg")
class PyramidPooling(keras.layers.Layer):
    """PSPNet's pyramid pooling module: multi-bin context concatenated with the input.

    Zhao et al. 2017, "Pyramid Scene Parsing Network", Sec. 3.3: the feature map is
    average-pooled to b x b for each bin b (1, 2, 3, 6), each pooled map goes through a
    1x1 convolution to C / len(bins) channels (C/4 for four bins) with batch normalisation
    and ReLU, is upsampled bilinearly back to the feature size, and the input and the
    upsampled maps are concatenated (C + len(bins) * filters channels). The pooling
    windows are PyTorch's `adaptive_avg_pool2d` windows, so any input size works,
    including sizes the bins do not divide and sizes smaller than a bin.

    With `align_corners=True` (the default) the upsampling matches the public PSPNet code
    (Caffe `Interp` and `F.interpolate(..., align_corners=True)` in hszhao/semseg); False
    gives the half-pixel convention of `tf.image.resize`. Pooling and resizing run in
    float32 and cast back, so mixed precision does not degrade them.

    Args:
        bins: output sizes of the pooling levels.
        filters: channels of each level's 1x1 convolution; None takes C / len(bins).
        align_corners: bilinear upsampling with corner pixels aligned.
        batchnorm_momentum: momentum of the levels' batch normalisation.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tensor `(B, H, W, C + len(bins) * filters)`: the input first, then the levels
        in the order of `bins`.

    Example:
        >>> import keras, kseg
        >>> features = keras.Input((None, None, 64))
        >>> kseg.layers.PyramidPooling(bins=(1, 2, 3, 6))(features).shape
        (None, None, None, 128)
    """

    def __init__(
        self,
        bins=(1, 2, 3, 6),
        filters=None,
        align_corners=True,
        batchnorm_momentum=0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(bins, int) or len(tuple(bins)) == 0:
            raise ValueError(
                f"bins must be a non-empty sequence of positive integers. Received: bins={bins}"
            )
        bins = tuple(bins)
        if not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in bins):
            raise ValueError(f"bins must be positive integers. Received: bins={bins}")
        if filters is not None and (not isinstance(filters, int) or filters <= 0):
            raise ValueError(
                f"filters must be None or a positive integer. Received: filters={filters}"
            )
        self.bins = bins
        self.filters = filters
        self.align_corners = bool(align_corners)
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.levels = None
        if filters is not None:
            self.levels = self._make_levels(filters)

    def _make_levels(self, filters):
        return [
            ConvBNReLU(
                filters,
                1,
                batchnorm_momentum=self.batchnorm_momentum,
                name=f"level_{index}",
                dtype=self.dtype_policy,
            )
            for index in range(len(self.bins))
        ]

    def _level_filters(self, channels):
        if self.filters is not None:
            return self.filters
        if channels is None or channels < len(self.bins):
            raise ValueError(
                f"PyramidPooling needs at least len(bins)={len(self.bins)} known input channels to "
                f"derive filters. Received: channels={channels}"
            )
        return channels // len(self.bins)

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.levels is None:
            # The default width follows the input channels, which only build knows.
            self.levels = self._make_levels(self._level_filters(channels))
        for bins, level in zip(self.bins, self.levels):
            level.build((input_shape[0], bins, bins, channels))
        self.built = True

    def _upsample(self, pooled, size):
        if self.align_corners:
            # tf.image.resize has no align_corners; the raw op keeps the Caffe/PyTorch convention.
            return tf.raw_ops.ResizeBilinear(
                images=pooled, size=size, align_corners=True, half_pixel_centers=False
            )
        return tf.image.resize(pooled, size, method="bilinear")

    def call(self, inputs, training=None):
        size = tf.shape(inputs)[1:3]
        outputs = [ops.cast(inputs, self.compute_dtype)]
        for bins, level in zip(self.bins, self.levels):
            pooled = adaptive_average_pooling_2d(inputs, bins)
            x = level(ops.cast(pooled, self.compute_dtype), training=training)
            x = self._upsample(ops.cast(x, "float32"), size)
            outputs.append(ops.cast(x, self.compute_dtype))
        return ops.concatenate(outputs, axis=-1)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            return tuple(input_shape)
        return tuple(input_shape[:-1]) + (
            channels + len(self.bins) * self._level_filters(channels),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "bins": self.bins,
                "filters": self.filters,
                "align_corners": self.align_corners,
                # Read back from the levels, which kseg.training.set_batchnorm_momentum may change.
                "batchnorm_momentum": (
                    self.levels[0].bn.momentum if self.levels else self.batchnorm_momentum
                ),
            }
        )
        return config
