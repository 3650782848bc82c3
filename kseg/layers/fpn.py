"""Feature pyramid network: lateral 1x1 convolutions, nearest-neighbour top-down path, smoothing."""

import keras
import tensorflow as tf
from keras import ops

from kseg.layers.batch_normalization import BatchNormalization


def _batch_norm(layer, name):
    # PyTorch's BatchNorm2d: epsilon 1e-5, momentum 0.1 on the new statistics (0.9 in Keras).
    return BatchNormalization(epsilon=1e-5, momentum=0.9, dtype=layer.dtype_policy, name=name)


@keras.saving.register_keras_serializable(package="kseg")
class FeaturePyramid(keras.layers.Layer):
    """Builds P2..P6 of equal width from backbone features C2..C5.

    Lin et al. 2017, "Feature Pyramid Networks for Object Detection", Sec. 3: each backbone
    stage output C_l goes through a 1x1 lateral convolution to `channels`; starting from the
    coarsest, the running map is upsampled 2x by nearest neighbour and added to the next
    lateral; a 3x3 convolution then smooths every merged map into P_l. P6, used by the RPN
    alone (Mask R-CNN's FPN variant), is P5 subsampled with stride 2. No batch normalisation
    and no activation, as in the paper.

    The top-down upsampling resizes to the lateral's run-time size, so inputs whose sides are
    not multiples of 32 still merge (odd sizes round as the backbone's strided convolutions
    did); Mask R-CNN pads its images to a multiple of 64 so every level is exact.

    Args:
        channels: width of every pyramid level (256 in the papers).
        extra_level: add P6 (stride-2 subsampling of P5).
        num_inputs: number of backbone maps C2..C(1 + num_inputs).
        batch_norm: follow every lateral and output convolution by batch normalisation (the
            convolutions then have no bias), as torchvision's `maskrcnn_resnet50_fpn_v2`
            (Li et al. 2021, "Benchmarking Detection Transfer Learning with Vision
            Transformers") builds its FPN; still no activation.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A list `[P2, P3, P4, P5]` (and `P6` with `extra_level`), each `(B, h_l, w_l, channels)`.

    Example:
        >>> import numpy as np
        >>> from kseg.layers.fpn import FeaturePyramid
        >>> c = [np.zeros((1, 64 // s, 64 // s, 8), "float32") for s in (4, 8, 16, 32)]
        >>> [tuple(p.shape) for p in FeaturePyramid(16)(c)]
        [(1, 16, 16, 16), (1, 8, 8, 16), (1, 4, 4, 16), (1, 2, 2, 16), (1, 1, 1, 16)]
    """

    def __init__(self, channels=256, extra_level=True, num_inputs=4, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(
                f"channels must be a positive integer. Received: channels={channels!r}"
            )
        if not isinstance(num_inputs, int) or num_inputs < 2:
            raise ValueError(f"num_inputs must be at least 2. Received: num_inputs={num_inputs!r}")
        self.channels = channels
        self.extra_level = bool(extra_level)
        self.num_inputs = num_inputs
        self.batch_norm = bool(batch_norm)
        level_names = [f"p{level}" for level in range(2, 2 + num_inputs)]
        bias = not self.batch_norm
        self.laterals = [
            keras.layers.Conv2D(
                channels, 1, use_bias=bias, dtype=self.dtype_policy, name=f"{n}_lateral"
            )
            for n in level_names
        ]
        self.smoothing = [
            keras.layers.Conv2D(
                channels,
                3,
                padding="same",
                use_bias=bias,
                dtype=self.dtype_policy,
                name=f"{n}_output",
            )
            for n in level_names
        ]
        self.lateral_norms, self.smoothing_norms = [], []
        if self.batch_norm:
            self.lateral_norms = [_batch_norm(self, f"{n}_lateral_bn") for n in level_names]
            self.smoothing_norms = [_batch_norm(self, f"{n}_output_bn") for n in level_names]
        self.subsample = keras.layers.MaxPooling2D(
            1, strides=2, padding="same", dtype=self.dtype_policy, name="p6_subsample"
        )

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != self.num_inputs:
            raise ValueError(
                f"FeaturePyramid expects a list of {self.num_inputs} feature maps (C2..C"
                f"{1 + self.num_inputs}). Received input shapes: {input_shape}"
            )
        for index, (lateral, smoothing, shape) in enumerate(
            zip(self.laterals, self.smoothing, input_shape)
        ):
            lateral.build(shape)
            smoothing.build((*shape[:-1], self.channels))
            for norms in (self.lateral_norms, self.smoothing_norms):
                if norms:
                    norms[index].build((*shape[:-1], self.channels))
        self.subsample.build((*input_shape[-1][:-1], self.channels))

    def call(self, inputs, training=None):
        laterals = [lateral(c) for lateral, c in zip(self.laterals, inputs)]
        if self.lateral_norms:
            laterals = [norm(x, training=training) for norm, x in zip(self.lateral_norms, laterals)]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            coarser = merged[0]
            upsampled = tf.image.resize(coarser, tf.shape(lateral)[1:3], method="nearest")
            merged.insert(0, lateral + ops.cast(upsampled, lateral.dtype))
        outputs = [smoothing(m) for smoothing, m in zip(self.smoothing, merged)]
        if self.smoothing_norms:
            outputs = [norm(x, training=training) for norm, x in zip(self.smoothing_norms, outputs)]
        if self.extra_level:
            outputs.append(self.subsample(outputs[-1]))
        return outputs

    def compute_output_shape(self, input_shape):
        shapes = [(*shape[:-1], self.channels) for shape in input_shape]
        if self.extra_level:
            batch, height, width, _ = shapes[-1]
            half = [None if side is None else (side + 1) // 2 for side in (height, width)]
            shapes.append((batch, *half, self.channels))
        return shapes

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=self.channels,
            extra_level=self.extra_level,
            num_inputs=self.num_inputs,
            batch_norm=self.batch_norm,
        )
        return config
