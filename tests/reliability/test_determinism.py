"""Two seeded CPU training runs of a kseg model give bit-identical weights.

Only `keras.utils.set_random_seed` is called (it seeds Python, NumPy and TensorFlow);
`tf.config.experimental.enable_op_determinism` is not needed on CPU for kseg's ops, so kseg does
not set it. The data go through `kseg.data.make_pipeline` with a seed, so shuffling and every
random augmentation are part of what must replay exactly.
"""

import keras
import numpy as np
import tensorflow as tf

import kseg
from kseg import training

NUM_CLASSES = 3


def _seeded_model(seed):
    keras.utils.set_random_seed(seed)
    # FCN-8s brings dropout (fc6/fc7), transposed convolutions and crops.
    return kseg.models.get_model("fcn8s", num_classes=NUM_CLASSES, backbone="tiny", num_filters=8)


def _seeded_run(seed):
    model = _seeded_model(seed)
    training.compile_model(model, num_classes=NUM_CLASSES, optimizer="adam", learning_rate=0.01)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 40, 40, 3)).astype("float32")
    masks = rng.integers(0, NUM_CLASSES, (4, 40, 40)).astype("int32")
    pairs = tf.data.Dataset.from_tensor_slices((images, masks))
    train = kseg.data.make_pipeline(pairs, 2, crop_size=32, shuffle=4, seed=seed)
    model.fit(train, epochs=2, shuffle=False, verbose=0)
    return model.get_weights()


def test_two_seeded_runs_are_bit_identical():
    first, second = _seeded_run(5), _seeded_run(5)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # Identical because training moved both the same way, not because it moved nothing.
    initial = _seeded_model(5).get_weights()
    assert any(not np.array_equal(a, w) for a, w in zip(first, initial))
