"""MaxPoolingWithArgmax2D and MaxUnpooling2D against PyTorch's vectors and the unpooling rule."""

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
OVERLAP_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "maxunpool_overlap.npz"
with np.load(FIXTURE) as _fixture:
    TORCH_CASES = [str(case) for case in _fixture["cases"]]


@pytest.fixture(scope="module")
def torch_vectors():
    """PyTorch max_pool2d(return_indices=True) + MaxUnpool2d.

    Made by tests/fixtures/make_maxpool_unpool.py.
    """
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


@pytest.mark.parametrize("case", ["square", "odd", "tall"])
def test_overlapping_windows_write_a_shared_maximum_once_as_torch_does(case):
    """Kernel 3, stride 2: a pixel that wins two windows comes back once (MaxUnpool2d)."""
    with np.load(OVERLAP_FIXTURE) as vectors:
        x, pooled_ref, unpooled_ref = (vectors[f"{case}_{k}"] for k in ("x", "pooled", "unpooled"))
        assert int(vectors[f"{case}_shared_maxima"]) > 0
    pooled, argmax = kseg.layers.MaxPoolingWithArgmax2D(3, 2, padding="valid")(x)
    np.testing.assert_array_equal(np.asarray(pooled), pooled_ref)
    unpooled = kseg.layers.MaxUnpooling2D()([pooled, argmax, x])
    np.testing.assert_array_equal(np.asarray(unpooled), unpooled_ref)


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
    message = (
        r"do not fit.*output shape=\] \[2 5 9 3\].*argmax shape=\] \[2 3 4 3\]"
        rf".*\[{smallest} {largest}\]"
    )
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


# ---- index_format="window": the position inside each non-overlapping window ----

SHARED_REFS = Path(__file__).resolve().parents[2] / ".." / "shared" / "refs"


def distinct_values(shape, seed):
    """A random permutation, so no window holds a tie and every argmax is unambiguous."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape).astype("float32") - 40.0


def flat_to_window(flat, input_shape, pool_size, padding):
    """Window positions from TF's flat indices: the row and column inside the window, row-major.

    TensorFlow's "same" padding puts the smaller half of the padding above and left of the
    input, so the window grid starts that many pixels before the input.
    """
    _, height, width, channels = input_shape
    rows, cols = flat.shape[1:3]
    y = flat // channels // width % height
    x = flat // channels % width
    top = (rows * pool_size - height) // 2 if padding == "same" else 0
    left = (cols * pool_size - width) // 2 if padding == "same" else 0
    dy = y - (np.arange(rows)[:, None, None] * pool_size - top)
    dx = x - (np.arange(cols)[None, :, None] * pool_size - left)
    assert dy.min() >= 0 and dy.max() < pool_size and dx.min() >= 0 and dx.max() < pool_size
    return dy * pool_size + dx


def pool_and_unpool_windows(x, padding="valid", pool_size=2):
    pooled, positions = kseg.layers.MaxPoolingWithArgmax2D(
        pool_size, pool_size, padding, index_format="window"
    )(x)
    unpool = kseg.layers.MaxUnpooling2D(index_format="window", pool_size=pool_size)
    return pooled, positions, unpool([pooled, positions, x])


WINDOW_SHAPES = [(2, 7, 9, 3), (1, 6, 4, 5), (3, 5, 5, 1), (2, 11, 8, 4), (1, 3, 3, 2)]


@pytest.mark.parametrize("pool_size", [2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("shape", WINDOW_SHAPES)
def test_window_indices_unpool_exactly_as_flat_indices(shape, padding, pool_size):
    x = distinct_values(shape, seed=sum(shape) + pool_size)
    flat_pooled, flat_argmax = kseg.layers.MaxPoolingWithArgmax2D(pool_size, pool_size, padding)(x)
    flat_unpooled = kseg.layers.MaxUnpooling2D()([flat_pooled, flat_argmax, x])
    pooled, positions, unpooled = pool_and_unpool_windows(x, padding, pool_size)

    assert keras.backend.standardize_dtype(positions.dtype) == "int32"
    np.testing.assert_array_equal(np.asarray(pooled), np.asarray(flat_pooled))
    np.testing.assert_array_equal(
        np.asarray(positions), flat_to_window(np.asarray(flat_argmax), shape, pool_size, padding)
    )
    np.testing.assert_array_equal(np.asarray(unpooled), np.asarray(flat_unpooled))


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_window_indices_take_the_first_maximum_on_ties_as_max_pool_with_argmax(padding):
    shape = (2, 9, 7, 3)
    # Three levels over 3x3 windows: most windows hold several maxima.
    x = np.random.default_rng(11).integers(0, 3, shape).astype("float32")
    _, flat_argmax = kseg.layers.MaxPoolingWithArgmax2D(3, 3, padding)(x)
    _, positions, _ = pool_and_unpool_windows(x, padding, pool_size=3)
    np.testing.assert_array_equal(
        np.asarray(positions), flat_to_window(np.asarray(flat_argmax), shape, 3, padding)
    )


def _torch_window_cases():
    """(name, x, pooled, window positions, unpooled, padding) from both PyTorch vector files."""
    cases = []
    with np.load(FIXTURE) as vectors:
        for case in TORCH_CASES:
            padding = "same" if vectors[f"{case}_ceil_mode"] else "valid"
            cases.append(
                (case, vectors[f"{case}_x"], vectors[f"{case}_pooled"],
                 vectors[f"{case}_plane_indices"], vectors[f"{case}_unpooled"], padding)
            )  # fmt: skip
    shared = SHARED_REFS / "maxpool_unpool.npz"
    if shared.is_file():
        with np.load(shared) as vectors:
            for case in ("even", "odd"):
                # NCHW plane indices h * W + w, moved to NHWC; kernel 2, stride 2, floor mode.
                cases.append(
                    (f"shared_{case}", vectors[f"{case}_x_nhwc"], vectors[f"{case}_pooled_nhwc"],
                     np.transpose(vectors[f"{case}_indices"], (0, 2, 3, 1)),
                     vectors[f"{case}_unpooled_nhwc"], "valid")
                )  # fmt: skip
    return cases


def test_shared_reference_vectors_are_present():
    if not (SHARED_REFS / "maxpool_unpool.npz").is_file():
        pytest.skip(f"shared PyTorch vectors not found at {SHARED_REFS / 'maxpool_unpool.npz'}")
    assert sum(name.startswith("shared_") for name, *_ in _torch_window_cases()) == 2


@pytest.mark.parametrize("case", _torch_window_cases(), ids=lambda case: case[0])
def test_torch_indices_as_window_positions_reproduce_torch_unpooling(case):
    _, x, pooled, plane, torch_unpooled, padding = case
    batch, height, width, channels = x.shape
    # PyTorch's plane index h * W + w is TF's flat index with the batch and channel taken out.
    flat = (
        np.arange(batch)[:, None, None, None] * height * width * channels
        + plane * channels
        + np.arange(channels)
    )
    positions = flat_to_window(flat, x.shape, 2, padding)
    unpooled = kseg.layers.MaxUnpooling2D(index_format="window")([pooled, positions, x])
    np.testing.assert_array_equal(np.asarray(unpooled), torch_unpooled)
    ours_pooled, ours_positions, _ = pool_and_unpool_windows(x, padding)
    np.testing.assert_array_equal(np.asarray(ours_pooled), pooled)
    np.testing.assert_array_equal(np.asarray(ours_positions), positions)


def test_window_unpooling_gradient_flows_to_the_maxima_only():
    x = tf.constant(distinct_values((2, 5, 7, 3), seed=12))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        pooled, positions = kseg.layers.MaxPoolingWithArgmax2D(index_format="window")(x)
        tape.watch(pooled)
        unpooled = kseg.layers.MaxUnpooling2D(index_format="window")([pooled, positions, x])
        loss = tf.reduce_sum(unpooled * 2.0)
    np.testing.assert_array_equal(
        tape.gradient(loss, x).numpy(), np.where(unpooled.numpy() != 0, 2.0, 0.0)
    )
    np.testing.assert_array_equal(tape.gradient(loss, pooled).numpy(), 2.0)


def test_window_format_dynamic_sizes_empty_batches_and_saved_model(tmp_path):
    image = keras.Input((None, None, 4))
    model = keras.Model(image, pool_and_unpool_windows(image, "same", pool_size=3)[2])
    serve = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 4), tf.float32)])
    sizes = [(1, 6, 8, 4), (3, 9, 5, 4), (2, 1, 1, 4), (0, 7, 5, 4)]
    inputs = [distinct_values(size, seed=13) for size in sizes]
    for x in inputs:
        unpooled = serve(x).numpy()
        assert unpooled.shape == x.shape
        # Each kept value is its own input pixel: a window maximum.
        np.testing.assert_array_equal(unpooled[unpooled != 0], x[unpooled != 0])

    path = str(tmp_path / "saved")
    model.export(path, format="tf_saved_model", verbose=False)
    restored = tf.saved_model.load(path)
    for x in inputs:
        np.testing.assert_array_equal(restored.serve(x).numpy(), np.asarray(model(x)))


def test_window_format_under_mixed_bfloat16_keeps_values_and_int32_indices():
    x = distinct_values((2, 7, 9, 3), seed=14) / 7.0
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        pooled, positions, unpooled = pool_and_unpool_windows(x, "same")
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(pooled.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(positions.dtype) == "int32"
    assert keras.backend.standardize_dtype(unpooled.dtype) == "bfloat16"
    rounded = np.asarray(tf.cast(tf.cast(x, tf.bfloat16), tf.float32))
    np.testing.assert_array_equal(
        np.asarray(tf.cast(unpooled, tf.float32)),
        np.asarray(pool_and_unpool_windows(rounded, "same")[2]),
    )


def test_window_format_converts_to_tflite_builtins_and_matches(tmp_path):
    image = keras.Input((None, None, 2))
    model = keras.Model(image, pool_and_unpool_windows(image, "valid", pool_size=3)[2])
    serve = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 2), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    assert not any(op["op_name"].startswith("Flex") for op in interpreter._get_ops_details())
    runner = interpreter.get_signature_runner()
    for size in [(1, 7, 11, 2), (2, 9, 4, 2)]:
        x = distinct_values(size, seed=15)
        (unpooled,) = runner(**{runner.get_input_details().popitem()[0]: x}).values()
        np.testing.assert_array_equal(unpooled, np.asarray(model(x)))


def test_window_format_refuses_overlapping_windows_and_unknown_formats():
    with pytest.raises(ValueError, match=r"pool_size == strides.*pool_size=3, strides=2"):
        kseg.layers.MaxPoolingWithArgmax2D(pool_size=3, strides=2, index_format="window")
    with pytest.raises(ValueError, match="index_format='linear'"):
        kseg.layers.MaxPoolingWithArgmax2D(index_format="linear")
    with pytest.raises(ValueError, match="index_format='linear'"):
        kseg.layers.MaxUnpooling2D(index_format="linear")
    with pytest.raises(ValueError, match="pool_size=0"):
        kseg.layers.MaxUnpooling2D(index_format="window", pool_size=0)


def test_window_positions_out_of_range_or_too_small_outputs_raise_clear_errors():
    x = distinct_values((1, 6, 6, 2), seed=16)
    pooled, positions = kseg.layers.MaxPoolingWithArgmax2D(index_format="window")(x)
    unpool = kseg.layers.MaxUnpooling2D(index_format="window")
    bad = np.asarray(positions).copy()
    bad[0, 0, 0, 0] = 4
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 4\).*index range=\] \[0 4\]"):
        unpool([pooled, bad, x])
    # A 3x3 map of 2x2 windows needs more than 4 rows: 4 would crop the last window away.
    with pytest.raises(ValueError, match=r"crop away whole pooling windows.*\(1, 4, 6, 2\)"):
        kseg.layers.MaxUnpooling2D(index_format="window")(
            [pooled, positions, np.zeros((1, 4, 6, 2), "float32")]
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"output size=\] \[4 6\]"):
        kseg.layers.MaxUnpooling2D(index_format="window")([pooled, positions, tf.constant([4, 6])])


def test_configs_carry_the_index_format_and_old_configs_mean_flat():
    pool = kseg.layers.MaxPoolingWithArgmax2D(padding="same", index_format="window")
    unpool = kseg.layers.MaxUnpooling2D(index_format="window", pool_size=2)
    assert pool.get_config()["index_format"] == unpool.get_config()["index_format"] == "window"
    old_pool = {k: v for k, v in pool.get_config().items() if k != "index_format"}
    old_unpool = {
        k: v for k, v in unpool.get_config().items() if k not in ("index_format", "pool_size")
    }
    assert kseg.layers.MaxPoolingWithArgmax2D.from_config(old_pool).index_format == "flat"
    assert kseg.layers.MaxUnpooling2D.from_config(old_unpool).index_format == "flat"


@keras.saving.register_keras_serializable(package="kseg_tests")
class _PoolUnpoolWindows(keras.layers.Layer):
    """Window-format pooling and unpooling in sequence, for the shared layer checks."""

    def __init__(self, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.padding = padding
        self.pool = kseg.layers.MaxPoolingWithArgmax2D(
            padding=padding, index_format="window", dtype=self.dtype_policy
        )
        self.unpool = kseg.layers.MaxUnpooling2D(index_format="window", dtype=self.dtype_policy)

    def call(self, inputs):
        pooled, positions = self.pool(inputs)
        return self.unpool([pooled, positions, inputs])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_shared_layer_checks_pass_for_window_pooling_and_unpooling(padding):
    out = run_layer_test(_PoolUnpoolWindows, {"padding": padding}, (2, 7, 9, 3))
    assert out.shape == (2, 7, 9, 3)
