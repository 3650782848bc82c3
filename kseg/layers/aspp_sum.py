"""DeepLab v2's ASPP-L: parallel atrous classifiers whose class scores are summed."""

import keras
from keras import ops

from kseg.layers.fast_equivalents import conv2d
from kseg.validation import validate_num_classes


@keras.saving.register_keras_serializable(package="kseg")
class ASPPSum(keras.layers.Layer):
    """Atrous spatial pyramid pooling of DeepLab v2: one atrous classifier per rate, summed.

    Chen et al. 2017, "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets,
    Atrous Convolution, and Fully Connected CRFs" (TPAMI), Sec. 3.1 and Fig. 4: each branch
    is a 3x3 convolution with its own atrous rate that predicts class scores directly from the
    backbone's features, and the scores of all branches are added. ASPP-L, the paper's best
    ResNet-101 setting, uses rates 6, 12, 18 and 24 on stride-8 features. Unlike the DeepLab
    v3 module (`kseg.layers.ASPP`) there is no image pooling, no batch normalisation and no
    projection: the sum is the output. Kernels start from a zero-mean Gaussian with standard
    deviation 0.01 and biases from zero, as the released DeepLab v2 models are initialised.

    Args:
        num_classes: number of class scores every branch predicts.
        dilation_rates: atrous rates of the branches, (6, 12, 18, 24) for ASPP-L.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        Class scores `(B, H, W, num_classes)`, the sum over branches.

    Example:
        >>> import keras, kseg
        >>> from kseg.layers.aspp_sum import ASPPSum
        >>> features = keras.Input((None, None, 64))
        >>> ASPPSum(num_classes=21)(features).shape
        (None, None, None, 21)
    """

    def __init__(self, num_classes, dilation_rates=(6, 12, 18, 24), **kwargs):
        super().__init__(**kwargs)
        num_classes = validate_num_classes(num_classes)
        rates = tuple(dilation_rates)
        if not rates or not all(isinstance(rate, int) and rate > 0 for rate in rates):
            raise ValueError(
                "dilation_rates must be a non-empty sequence of positive integers. "
                f"Received: dilation_rates={dilation_rates!r}"
            )
        self.num_classes = num_classes
        self.dilation_rates = rates
        self.branches = [
            conv2d(
                num_classes,
                3,
                padding="same",
                dilation_rate=rate,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                name=f"aspp_sum_conv_{index}",
                dtype=self.dtype_policy,
            )
            for index, rate in enumerate(rates)
        ]

    def build(self, input_shape):
        for branch in self.branches:
            branch.build(tuple(input_shape))
        self.built = True

    def call(self, inputs):
        scores = self.branches[0](inputs)
        for branch in self.branches[1:]:
            scores = ops.add(scores, branch(inputs))
        return scores

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_classes": self.num_classes, "dilation_rates": list(self.dilation_rates)}
        )
        return config
