"""A tiny segmentation model and dataset shared by the kseg.training tests."""

import keras
import numpy as np
import tensorflow as tf

NUM_CLASSES = 3


def tiny_model(seed=0):
    """A two-convolution segmentation net: RGB [0, 255] in, float32 logits (B, H, W, 3) out."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(
        4,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
    )(x)
    logits = keras.layers.Conv2D(
        NUM_CLASSES,
        1,
        dtype="float32",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
    )(x)
    return keras.Model(inputs, logits)


def tiny_dataset(num_images=6, size=16, batch_size=2):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (num_images, size, size, 3)).astype("float32")
    masks = (images[..., 0] > 127).astype("int32") + (images[..., 1] > 200).astype("int32")
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch_size)


def one_step_loss(model):
    images = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    masks = np.random.default_rng(2).integers(0, NUM_CLASSES, (2, 16, 16))
    history = model.fit(images, masks, epochs=1, batch_size=2, verbose=0)
    return history.history["loss"][0]
