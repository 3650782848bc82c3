"""Region proposal head shared across pyramid levels."""

import keras
from keras import ops

from kseg.validation import validate_positive_int


@keras.saving.register_keras_serializable(package="kseg")
class RegionProposalHead(keras.layers.Layer):
    """Objectness logits and box deltas for every anchor of every pyramid level.

    Ren et al. 2015, "Faster R-CNN", Sec. 3.1: a 3x3 convolution with ReLU slides over the
    feature map and two sibling 1x1 convolutions predict, for each of the `num_anchors`
    anchors of a position, one objectness logit (the sigmoid form of Lin et al. 2017's FPN
    RPN) and four box deltas. One set of weights serves every level (FPN, Sec. 4.1). Outputs
    are flattened in the order (y, x, anchor) that `kseg.detection.anchors.generate_anchors`
    uses, and returned in float32.

    Args:
        num_anchors: anchors per position (3 aspect ratios in Mask R-CNN).
        channels: width of the shared 3x3 convolution (256 in the papers).
        num_convs: shared 3x3 convolutions with ReLU before the two predictors (1; 2 in
            torchvision's `maskrcnn_resnet50_fpn_v2`). The first is `rpn_conv`, the next
            `rpn_conv_2`, ...
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        `(objectness, deltas)`: lists over levels of `(B, h_l * w_l * num_anchors)` and
        `(B, h_l * w_l * num_anchors, 4)` float32 tensors.

    Example:
        >>> import numpy as np
        >>> from kseg.layers.rpn_head import RegionProposalHead
        >>> scores, deltas = RegionProposalHead(3, 8)([np.zeros((2, 4, 4, 8), "float32")])
        >>> tuple(scores[0].shape), tuple(deltas[0].shape)
        ((2, 48), (2, 48, 4))
    """

    def __init__(self, num_anchors=3, channels=256, num_convs=1, **kwargs):
        super().__init__(**kwargs)
        num_anchors = validate_positive_int(num_anchors, "num_anchors")
        channels = validate_positive_int(channels, "channels")
        num_convs = validate_positive_int(num_convs, "num_convs")
        self.num_anchors = num_anchors
        self.channels = channels
        self.num_convs = num_convs
        normal = keras.initializers.RandomNormal(stddev=0.01)
        self.convs = [
            keras.layers.Conv2D(
                channels,
                3,
                padding="same",
                activation="relu",
                kernel_initializer=normal,
                dtype=self.dtype_policy,
                name="rpn_conv" if index == 0 else f"rpn_conv_{index + 1}",
            )
            for index in range(num_convs)
        ]
        self.objectness = keras.layers.Conv2D(
            num_anchors,
            1,
            kernel_initializer=normal,
            dtype=self.dtype_policy,
            name="rpn_objectness",
        )
        self.box_deltas = keras.layers.Conv2D(
            4 * num_anchors,
            1,
            kernel_initializer=normal,
            dtype=self.dtype_policy,
            name="rpn_box_deltas",
        )

    @property
    def shared(self):
        """The first shared 3x3 convolution, `rpn_conv`."""
        return self.convs[0]

    def build(self, input_shape):
        shape = input_shape[0]
        for conv in self.convs:
            conv.build(shape)
            shape = (*shape[:-1], self.channels)
        self.objectness.build((*shape[:-1], self.channels))
        self.box_deltas.build((*shape[:-1], self.channels))

    def call(self, inputs):
        scores, deltas = [], []
        for feature in inputs:
            hidden = feature
            for conv in self.convs:
                hidden = conv(hidden)
            batch = ops.shape(feature)[0]
            scores.append(ops.reshape(ops.cast(self.objectness(hidden), "float32"), (batch, -1)))
            deltas.append(ops.reshape(ops.cast(self.box_deltas(hidden), "float32"), (batch, -1, 4)))
        return scores, deltas

    def compute_output_shape(self, input_shape):
        def count(shape):
            if shape[1] is None or shape[2] is None:
                return None
            return shape[1] * shape[2] * self.num_anchors

        scores = [(shape[0], count(shape)) for shape in input_shape]
        deltas = [(shape[0], count(shape), 4) for shape in input_shape]
        return scores, deltas

    def get_config(self):
        config = super().get_config()
        config.update(
            num_anchors=self.num_anchors, channels=self.channels, num_convs=self.num_convs
        )
        return config
