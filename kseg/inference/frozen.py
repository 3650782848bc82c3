"""A model's inference call compiled once, with its weights as constants of the graph."""

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2


class FrozenModel:
    """`model(images, training=False)` as one graph whose weights are constants.

    A compiled Keras call reads every weight from a variable on each call; with the weights
    frozen into the graph as constants, TensorFlow's oneDNN convolutions can keep their filters
    in the layout they compute in (the likely reason, not traced further). Measured on 2 cores,
    batch 1, torchvision's FCN ResNet-50 layout predicts a
    389x521 image in 0.48 s instead of 0.60 s, U-Net a 508x508 one in 0.47 s instead of 0.52
    (`benchmarks/pretrained_load.py` and `benchmarks/efficiency.py` time it). Outputs are the
    model's own within float rounding. The graph has an unknown batch, height and width, so
    one trace serves every image size.

    The weights are copied at construction: later changes to the model (training) do not
    reach a `FrozenModel` made before them.

    Args:
        model: a Keras model taking one `(batch, height, width, channels)` float32 tensor.

    Example:
    >>> model = kseg.models.UNet(num_classes=2, base_filters=4, depth=2, padding="same")
    >>> frozen = kseg.inference.FrozenModel(model)
    >>> images = np.random.default_rng(0).uniform(0, 255, (1, 32, 48, 3)).astype("float32")
    >>> bool(np.allclose(frozen(images), model(images, training=False), atol=1e-4))
    True
    """

    def __init__(self, model):
        channels = model.inputs[0].shape[-1] if getattr(model, "inputs", None) else None
        self.name = model.name

        @tf.function
        def call(images):
            return model(images, training=False)

        spec = tf.TensorSpec([None, None, None, channels], tf.float32)
        traced = call.get_concrete_function(spec)
        # The frozen function returns a flat list; the trace knows the model's structure.
        self._structure = traced.structured_outputs
        self._function = convert_variables_to_constants_v2(traced)

    def __call__(self, images, training=False):
        """Runs the frozen graph on float32 `images`; `training` must be False."""
        if training:
            raise ValueError(f"A FrozenModel of {self.name!r} runs inference only: training=True")
        outputs = self._function(tf.cast(images, tf.float32))
        return tf.nest.pack_sequence_as(self._structure, tf.nest.flatten(outputs))
