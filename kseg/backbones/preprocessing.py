"""The input normalisation each ImageNet backbone was trained with, as a layer."""

import keras
from keras import ops

# ImageNet channel statistics used by keras.applications.imagenet_utils.
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PREPROCESSING_MODES = ("tf", "torch", "caffe", "none")


@keras.saving.register_keras_serializable(package="kseg")
class ImagePreprocessing(keras.layers.Layer):
    """Maps RGB images with values in [0, 255] to a backbone's expected input range.

    The ImageNet backbones of `keras.applications` were trained on inputs normalised in one of
    three ways, exposed there as `preprocess_input` functions. This layer reproduces them inside
    the graph, so a saved segmentation model takes plain RGB pixels:

    - `"tf"`: scale to [-1, 1] (`x / 127.5 - 1`), as for Xception, ResNetV2, MobileNet(V2) and
      the DeepLab backbones (Chen et al., 2018).
    - `"torch"`: scale to [0, 1], then subtract the ImageNet mean and divide by its standard
      deviation per channel.
    - `"caffe"`: reorder RGB to BGR and subtract the ImageNet mean pixel, without scaling, as
      for VGG16 and ResNet (He et al., 2016).
    - `"none"`: identity, for EfficientNet, whose rescaling lives inside the network.

    Args:
        mode: One of `"tf"`, `"torch"`, `"caffe"` or `"none"`.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Returns:
        A tensor of the input's shape with normalised values.

    Example:
    >>> import numpy as np
    >>> layer = kseg.backbones.preprocessing.ImagePreprocessing("tf")
    >>> np.asarray(layer(np.full((1, 2, 2, 3), 255.0, "float32")))[0, 0, 0]
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"`mode` must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}"
            )
        self.mode = mode

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.mode in ("torch", "caffe") and channels not in (None, 3):
            raise ValueError(
                f"Preprocessing mode {self.mode!r} normalises three RGB channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            x = x / 255.0 + ops.convert_to_tensor([-m for m in _TORCH_MEAN_RGB], x.dtype)
            return x / ops.convert_to_tensor(_TORCH_STD_RGB, x.dtype)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x + ops.convert_to_tensor([-m for m in _CAFFE_MEAN_BGR], x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
