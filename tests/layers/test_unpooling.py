"""MaxPoolingWithArgmax2D and MaxUnpooling2D against PyTorch's vectors and the unpooling property."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.testing import run_layer_test

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "maxpool_unpool.npz"
with np.load(FIXTURE) as _fixture:
    TORCH_CASES = [str(case) for case in _fixture["cases"]]


@pytest.fixture(scope="module")
def torch_vectors():
    """PyTorch max_pool2d(return_indices=True) + MaxUnpool2d, made by tests/fixtures/make_maxpool_unpool.py."""
    with np.load(FIXTURE) as vectors:
        return dict(vectors)


def pool_and_unpool(x, padding="valid"):
    pooled, argmax = kseg.layers.MaxPoolingWithArgmax2D(padding=padding)(x)
    return pooled, argmax, kseg.layers.MaxUnpooling2D()([pooled, argmax, x])


@pytest.mark.parametrize("case", TORCH_CASES)
def test_matches_torch_max_pool2d_and_max_unpool2d(torch_vectors, case):
    x = torch_vectors[f"{case}_x"]
    # PyTorch's ceil_mode keeps a trailing odd row as a one-pixel window, as "same" padding does
    # for a 2x2 window with stride 2; floor mode drops it, as "valid" padding does.
    padding = "same" if torch_vectors[f"{case}_ceil_mode"] else "valid"
    batch, height, width, channels = x.shape
    pooled, argmax, unpooled = (np.asarray(t) for t in pool_and_unpool(x, padding))

    np.testing.assert_array_equal(pooled, torch_vectors[f"{case}_pooled"])
    # PyTorch counts h * W + w within one plane; the layer folds the batch and channel in.
    plane = torch_vectors[f"{case}_plane_indices"]
    expected_argmax = (
        np.arange(batch)[:, None, None, None] * height * width * channels
        + plane * channels
        + np.arange(channels)
    )
    np.testing.assert_array_equal(argmax, expected_argmax)
    np.testing.assert_array_equal(unpooled, torch_vectors[f"{case}_unpooled"])


def test_fixture_covers_odd_sizes_batches_and_channel_counts(torch_vectors):
    shapes = [torch_vectors[f"{case}_x"].shape for case in TORCH_CASES]
    assert any(h % 2 or w % 2 for _, h, w, _ in shapes)
    assert {n for n, *_ in shapes} >= {1, 2, 3}
    assert len({c for *_, c in shapes}) >= 3
    assert {bool(torch_vectors[f"{case}_ceil_mode"]) for case in TORCH_CASES} == {True, False}


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("shape", [(3, 7, 9, 2), (1, 6, 4, 5), (2, 5, 5, 1)])
def test_each_maximum_returns_to_its_window_argmax_and_zeros_fill_the_rest(shape, padding):
    x = (
        np.random.default_rng(sum(shape))
        .permutation(np.prod(shape))
        .reshape(shape)
        .astype("float32")
        + 1
    )
    unpooled = np.asarray(pool_and_unpool(x, padding)[2])
    expected = np.zeros_like(x)
    rows = -(-shape[1] // 2) if padding == "same" else shape[1] // 2
    cols = -(-shape[2] // 2) if padding == "same" else shape[2] // 2
    for b in range(shape[0]):
        for c in range(shape[3]):
            for i in range(rows):
                for j in range(cols):
                    window = x[b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c]
                    y, w = np.unravel_index(np.argmax(window), window.shape)
                    expected[b, 2 * i + y, 2 * j + w, c] = window[y, w]
    np.testing.assert_array_equal(unpooled, expected)


def test_gradient_flows_to_the_maxima_only():
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 5, 7, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        unpooled = pool_and_unpool(x)[2]
        loss = tf.reduce_sum(unpooled * 2.0)
    grad = tape.gradient(loss, x).numpy()
    np.testing.assert_array_equal(grad, np.where(unpooled.numpy() != 0, 2.0, 0.0))


def test_dynamic_shapes_inside_tf_function_and_saved_model(tmp_path):
    image = keras.Input((None, None, 4))
    model = keras.Model(image, pool_and_unpool(image, "same")[2])
    serve = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 4), tf.float32)])
    rng = np.random.default_rng(4)
    inputs = [rng.normal(size=s).astype("float32") for s in [(1, 6, 8, 4), (3, 9, 5, 4)]]
    for x in inputs:
        assert tuple(serve(x).shape) == x.shape

    path = str(tmp_path / "saved")
    model.export(path, format="tf_saved_model", verbose=False)
    restored = tf.saved_model.load(path)
    for x in inputs:
        np.testing.assert_array_equal(restored.serve(x).numpy(), np.asarray(model(x)))


def test_mixed_bfloat16_keeps_values_and_int64_indices():
    keras.config.set_dtype_policy("mixed_bfloat16")
    x = np.random.default_rng(5).normal(size=(2, 7, 9, 3)).astype("float32")
    pooled, argmax, unpooled = pool_and_unpool(x)
    assert keras.backend.standardize_dtype(pooled.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(argmax.dtype) == "int64"
    assert keras.backend.standardize_dtype(unpooled.dtype) == "bfloat16"
    rounded = np.asarray(tf.cast(tf.cast(x, tf.bfloat16), tf.float32))
    keras.config.set_dtype_policy("float32")
    np.testing.assert_array_equal(
        np.asarray(tf.cast(unpooled, tf.float32)), np.asarray(pool_and_unpool(rounded)[2])
    )


def test_mismatched_indices_and_values_raise_a_clear_error():
    pooled = keras.Input((None, None, 4))
    argmax = keras.Input((None, None, 3), dtype="int64")
    reference = keras.Input((None, None, 4))
    with pytest.raises(ValueError, match="same shape"):
        kseg.layers.MaxUnpooling2D()([pooled, argmax, reference])
    x = np.zeros((1, 4, 4, 2), "float32")
    with pytest.raises(ValueError, match="same shape"):
        kseg.layers.MaxUnpooling2D()([tf.zeros((1, 2, 2, 2)), tf.zeros((1, 2, 3, 2), tf.int64), x])
    # With dynamic shapes the mismatch only shows at run time.
    dynamic = keras.Input((None, None, 2))
    dynamic_argmax = keras.Input((None, None, 2), dtype="int64")
    model = keras.Model(
        [dynamic, dynamic_argmax, reference],
        kseg.layers.MaxUnpooling2D()([dynamic, dynamic_argmax, reference]),
    )
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"same shape.*\[1 2 2 2\].*argmax shape=\] \[1 2 3 2\]",
    ):
        model([tf.zeros((1, 2, 2, 2)), tf.zeros((1, 2, 3, 2), tf.int64), tf.zeros((1, 4, 4, 4))])
    with pytest.raises(TypeError, match="integer"):
        kseg.layers.MaxUnpooling2D()([tf.zeros((1, 2, 2, 2)), tf.zeros((1, 2, 2, 2)), x])


def test_an_output_smaller_than_the_indices_imply_raises_a_clear_error():
    x = np.random.default_rng(8).normal(size=(2, 7, 9, 3)).astype("float32")
    pooled, argmax = kseg.layers.MaxPoolingWithArgmax2D()(x)
    # Known sizes: a reference with fewer rows than the pooled map is refused when built.
    with pytest.raises(ValueError, match=r"shape=\(2, 2, 9, 3\), argmax shape=\(2, 3, 4, 3\)"):
        kseg.layers.MaxUnpooling2D()([pooled, argmax, np.zeros((2, 2, 9, 3), "float32")])
    # 5x9 holds the 3x4 pooled map but not the indices into 7x9 (largest 2*7*9*3 - 1 or below).
    smallest, largest = int(np.min(argmax)), int(np.max(argmax))
    assert largest >= 2 * 5 * 9 * 3
    message = rf"do not fit.*output shape=\] \[2 5 9 3\].*argmax shape=\] \[2 3 4 3\].*\[{smallest} {largest}\]"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        kseg.layers.MaxUnpooling2D()([pooled, argmax, tf.constant([5, 9])])
    # Dynamic sizes: the same check runs inside the graph.
    values = keras.Input((None, None, 3))
    indices = keras.Input((None, None, 3), dtype="int64")
    reference = keras.Input((None, None, 3))
    model = keras.Model(
        [values, indices, reference], kseg.layers.MaxUnpooling2D()([values, indices, reference])
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        model.predict([pooled, argmax, np.zeros((2, 5, 9, 3), "float32")], verbose=0)


def test_unpooling_to_an_explicit_output_size():
    x = np.random.default_rng(6).normal(size=(2, 7, 9, 3)).astype("float32")
    pooled, argmax, by_reference = pool_and_unpool(x)
    by_size = kseg.layers.MaxUnpooling2D()([pooled, argmax, tf.constant([7, 9])])
    np.testing.assert_array_equal(np.asarray(by_size), np.asarray(by_reference))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="padding"):
        kseg.layers.MaxPoolingWithArgmax2D(padding="full")
    with pytest.raises(ValueError, match="pool_size"):
        kseg.layers.MaxPoolingWithArgmax2D(pool_size=0)


@keras.saving.register_keras_serializable(package="kseg_tests")
class _PoolUnpool(keras.layers.Layer):
    """Both layers in sequence, so the shared layer checks see a single tensor in and out."""

    def __init__(self, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.padding = padding
        self.pool = kseg.layers.MaxPoolingWithArgmax2D(padding=padding, dtype=self.dtype_policy)
        self.unpool = kseg.layers.MaxUnpooling2D(dtype=self.dtype_policy)

    def call(self, inputs):
        pooled, argmax = self.pool(inputs)
        return self.unpool([pooled, argmax, inputs])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_shared_layer_checks_pass_for_pooling_and_unpooling_together(padding):
    out = run_layer_test(_PoolUnpool, {"padding": padding}, (2, 7, 9, 3))
    assert out.shape == (2, 7, 9, 3)


def test_functional_model_with_both_layers_reloads_in_safe_mode(tmp_path):
    pool = kseg.layers.MaxPoolingWithArgmax2D(pool_size=3, strides=2, padding="same", name="pool")
    unpool = kseg.layers.MaxUnpooling2D(name="unpool")
    for layer in (pool, unpool):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
    image = keras.Input((None, None, 2))
    pooled, argmax = pool(image)
    model = keras.Model(image, unpool([pooled, argmax, image]))
    x = np.random.default_rng(7).normal(size=(2, 7, 8, 2)).astype("float32")
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(model(x)))


GRAPPLER_PROBE = """
import numpy as np, keras
from kseg.layers.unpooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

image = keras.Input((None, None, 3))
x = keras.layers.Conv2D(2, 3, padding="same", use_bias=False)(image)
x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
pooled, argmax = MaxPoolingWithArgmax2D(padding="same")(x)
logits = keras.layers.Conv2D(3, 1)(MaxUnpooling2D()([pooled, argmax, x]))
model = keras.Model(image, logits)
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (2, 12, 10, 3)).astype("float32")
model.fit(images, rng.integers(0, 3, (2, 12, 10)), epochs=1, verbose=0)
model.predict(images, verbose=0)
print("finished")
"""


def test_fit_and_predict_log_no_graph_optimization_failure():
    # BN -> ReLU -> pooling with indices once made grappler give up on the whole function
    # ("Ignoring multi-device function optimization failure ... expected int64"), in training
    # and inference graphs alike; TensorFlow logs that in C++, so it is read from a subprocess.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    result = subprocess.run(
        [sys.executable, "-c", GRAPPLER_PROBE],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "finished" in result.stdout, result.stderr[-2000:]
    assert "optimization failure" not in result.stderr, result.stderr[-2000:]
