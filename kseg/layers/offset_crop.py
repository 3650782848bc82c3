"""Crop one feature map to another's size at a fixed or centred offset."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kseg")
class OffsetCrop(keras.layers.Layer):
    """Crops `inputs[0]` to the height and width of `inputs[1]`, starting at `offset`.

    FCN (Long, Shelhamer & Darrell 2015) aligns its upsampled scores with skip
    features and with the image by cropping at offsets fixed by the network's
    geometry (Caffe's `Crop` layer: 5 and 9 for the skips, 19, 27 or 31 for
    FCN-32s/16s/8s at the image). With `offset=None` the crop is centred.

    Args:
        offset: `(top, left)` in pixels, one integer for both, or None (centre).
        **kwargs: standard layer arguments.

    Returns:
        `inputs[0][:, top:top + H_ref, left:left + W_ref, :]`.

    Example:
        >>> import numpy as np, kseg
        >>> crop = kseg.layers.offset_crop.OffsetCrop(offset=(1, 2))
        >>> tuple(crop([np.zeros((1, 9, 9, 4)), np.zeros((1, 5, 6, 1))]).shape)
        (1, 5, 6, 4)
    """

    def __init__(self, offset=None, **kwargs):
        super().__init__(**kwargs)
        if offset is not None:
            pair = (offset, offset) if isinstance(offset, int) else tuple(offset)
            if len(pair) != 2 or any(not isinstance(v, int) or v < 0 for v in pair):
                raise ValueError(
                    "offset must be None or one or two non-negative integers. "
                    f"Received: offset={offset!r}"
                )
            offset = pair
        self.offset = offset

    def call(self, inputs):
        source, reference = inputs
        source_size = ops.shape(source)[1:3]
        target_size = ops.shape(reference)[1:3]
        if self.offset is None:
            top = (source_size[0] - target_size[0]) // 2
            left = (source_size[1] - target_size[1]) // 2
        else:
            top, left = self.offset
        return source[:, top : top + target_size[0], left : left + target_size[1], :]

    def compute_output_shape(self, input_shape):
        source_shape, reference_shape = input_shape
        return (source_shape[0], reference_shape[1], reference_shape[2], source_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"offset": None if self.offset is None else list(self.offset)})
        return config
