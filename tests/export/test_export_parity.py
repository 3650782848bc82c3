"""Exported artifacts agree with the Keras model, for every registered semantic model.

Each model is built small (the contract tests' configuration), its all-zero kernels and biases
(FCN's zero-initialised score layers, for one) are given random values so that the logits are
not trivially equal, and the exported "logits" output is compared with `model(images)` on
64x64 uint8 images.

Stated tolerances, on logits:
- SavedModel and float32 TFLite: max abs difference <= 1e-4.
- float16 TFLite (float16 weights): max abs difference <= 1e-2 of the largest |logit|.
- int8 dynamic-range TFLite: max abs difference <= 0.05 of the largest |logit|, labels agree on
  >= 95% of pixels.
- int8 full-integer TFLite (calibrated on 8 random images): mean abs difference <= 0.05 of the
  mean |logit|, labels agree on >= 90% of pixels.
Quantised files are checked on DeepLab v3+ only (measured there: float16 3e-4, int8 dynamic
4e-6, int8 full 4e-3 of those scales, labels 100%); benchmarks/export_parity.py measures every
model (FCN-16s, with near-tied random logits, keeps only 56% of labels under full int8).
- ONNX (onnxruntime): max abs difference <= 1e-4.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg import export

NUM_CLASSES = 3
IMAGE_SIZE = (64, 64)
MODELS = kseg.models.list_models(task="semantic")
# Their shape arithmetic on a dynamic size leaves ops TFLite has no built-in for (float64
# Mul/Floor in DeepLab v2's scale branches; U-Net's padding hides the channel count from its
# first Conv2D); a fixed image size folds it away.
NEEDS_FIXED_SIZE = {"deeplabv2", "unet"}
# Models whose TFLite file needs TF Select (Flex) ops: none. SegNet and SegNet-Basic keep
# window-position pooling indices (index_format="window"), computed with built-in ops; their
# flat-index form, tf.nn.max_pool_with_argmax, has no TFLite built-in (see the Flex test below).
NEEDS_SELECT_TF_OPS = frozenset()
# Quantisation is checked on one representative model (ASPP, separable convolutions, decoder
# with a skip) to keep the conversions within the test-time budget.
QUANTIZED_MODELS = ("deeplabv3plus",)


def build(name, **overrides):
    model = kseg.testing.build_small_model(name, NUM_CLASSES, **overrides)
    rng = np.random.default_rng(0)
    for weight in model.weights:
        value = weight.numpy()
        if weight.path.endswith(("kernel", "bias")) and not value.any():
            fan_in = int(np.prod(value.shape[:-1])) if value.ndim > 1 else 1
            weight.assign(rng.normal(0.0, fan_in**-0.5, value.shape).astype(value.dtype))
    return model


def _images(batch=2, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (batch, *IMAGE_SIZE, 3)).astype("uint8")


def _keras_logits(model, images):
    return np.asarray(model(images.astype("float32"), training=False))


def _interpreter(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(model_path=str(path))


def _tflite_outputs(path, images):
    return _interpreter(path).get_signature_runner("serving_default")(images=images)


def _op_names(path):
    return {op["op_name"] for op in _interpreter(path)._get_ops_details()}


def test_registry_and_support_tables_agree():
    assert NEEDS_FIXED_SIZE | NEEDS_SELECT_TF_OPS | set(QUANTIZED_MODELS) <= set(MODELS)
    assert set(kseg.testing.SMALL_MODEL_CONFIGS) <= set(kseg.models.list_models())


@pytest.mark.parametrize("name", MODELS)
def test_saved_model_and_float_tflite_match_keras(name, tmp_path):
    model = build(name)
    images = _images()
    expected = _keras_logits(model, images)
    assert np.abs(expected).max() > 1e-3, "trivial logits would make the comparison vacuous"

    # One SavedModel serves both checks; a fixed size only where TFLite needs it.
    image_size = IMAGE_SIZE if name in NEEDS_FIXED_SIZE else None
    saved = export.saved_model(model, tmp_path / "sm", include_logits=True, image_size=image_size)
    serving = tf.saved_model.load(str(saved)).signatures["serving_default"]
    served = serving(images=tf.constant(images))
    np.testing.assert_allclose(served["logits"].numpy(), expected, atol=1e-4, rtol=0)

    path = export.tflite_from_saved_model(saved, tmp_path / "model.tflite")
    assert not [op for op in _op_names(path) if op.startswith("Flex")]
    outputs = _tflite_outputs(path, images)
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(outputs["labels"].shape, images.shape[:3])


def test_flat_pooling_indices_need_the_flex_max_pool_with_argmax(tmp_path):
    # tensorflow's pip interpreter has no Flex delegate, so the conversion alone is checked.
    model = build("segnet_basic", index_format="flat")
    saved = export.saved_model(model, tmp_path / "sm", include_logits=True)
    with pytest.raises(ValueError, match="MaxPoolWithArgmax.*allow_select_tf_ops=True"):
        export.tflite_from_saved_model(saved, tmp_path / "builtin.tflite")
    path = export.tflite_from_saved_model(saved, tmp_path / "flex.tflite", allow_select_tf_ops=True)
    assert "FlexMaxPoolWithArgmax" in _op_names(path)


@pytest.fixture(scope="module")
def quantized_artifacts(tmp_path_factory):
    """For each QUANTIZED_MODELS entry: its Keras logits on test images and four TFLite files."""
    representative = [_images(batch=1, seed=100 + i) for i in range(8)]
    images = _images()
    artifacts = {}
    for name in QUANTIZED_MODELS:
        folder = tmp_path_factory.mktemp(name)
        model = build(name)
        saved = export.saved_model(model, folder / "sm", include_logits=True)
        files = {
            "float16": export.tflite_from_saved_model(
                saved, folder / "f16.tflite", quantization="float16"
            ),
            "int8_dynamic": export.tflite_from_saved_model(
                saved, folder / "int8_dynamic.tflite", quantization="int8"
            ),
            "int8_full": export.tflite_from_saved_model(
                saved,
                folder / "int8_full.tflite",
                quantization="int8",
                representative_images=lambda: iter(representative),
            ),
        }
        artifacts[name] = (_keras_logits(model, images), files)
    return images, artifacts


@pytest.mark.parametrize("name", QUANTIZED_MODELS)
def test_float16_tflite_is_close(name, quantized_artifacts):
    images, artifacts = quantized_artifacts
    expected, files = artifacts[name]
    logits = _tflite_outputs(files["float16"], images)["logits"]
    assert np.abs(logits - expected).max() <= 1e-2 * np.abs(expected).max()


@pytest.mark.parametrize("name", QUANTIZED_MODELS)
def test_int8_dynamic_range_tflite_keeps_the_labels(name, quantized_artifacts):
    images, artifacts = quantized_artifacts
    expected, files = artifacts[name]
    outputs = _tflite_outputs(files["int8_dynamic"], images)
    assert np.abs(outputs["logits"] - expected).max() <= 0.05 * np.abs(expected).max()
    assert (outputs["labels"] == expected.argmax(-1)).mean() >= 0.95
    assert files["int8_dynamic"].stat().st_size < files["float16"].stat().st_size


@pytest.mark.parametrize("name", QUANTIZED_MODELS)
def test_int8_full_integer_tflite_runs_convolutions_in_int8(name, quantized_artifacts):
    images, artifacts = quantized_artifacts
    expected, files = artifacts[name]
    interpreter = _interpreter(files["int8_full"])
    tensors = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    conv_outputs = [
        tensors[op["outputs"][0]]
        for op in interpreter._get_ops_details()
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")
    ]
    assert conv_outputs and all(dtype == np.int8 for dtype in conv_outputs)
    runner = interpreter.get_signature_runner("serving_default")
    outputs = runner(images=images)
    assert outputs["logits"].dtype == np.float32 and outputs["labels"].dtype == np.int32
    error = np.abs(outputs["logits"] - expected).mean()
    assert error <= 0.05 * np.abs(expected).mean()
    assert (outputs["labels"] == expected.argmax(-1)).mean() >= 0.9


def test_tflite_rejects_bad_quantization_arguments(tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, dtype="float32")(inputs))
    with pytest.raises(ValueError, match="quantization='int4'"):
        export.tflite(model, tmp_path / "m.tflite", quantization="int4")
    with pytest.raises(ValueError, match="needs quantization='int8'"):
        export.tflite(model, tmp_path / "m.tflite", representative_images=[_images()])
    with pytest.raises(ValueError, match=r"shape=\(1, 8, 8\)"):
        export.tflite(
            model,
            tmp_path / "m.tflite",
            quantization="int8",
            representative_images=[np.zeros((1, 8, 8), "uint8")],
        )
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        export.tflite_from_saved_model(tmp_path / "missing", tmp_path / "m.tflite")
    with pytest.raises(ValueError, match=r"image_size=\(0, 8\)"):
        export.saved_model(model, tmp_path / "sm", image_size=(0, 8))


def test_representative_images_accept_a_dataset_of_pairs():
    images = np.random.default_rng(3).uniform(0, 255, (3, 10, 12, 3)).astype("float32")
    masks = np.zeros((3, 10, 12), "int32")
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    batches = [batch for (batch,) in export._representative_batches(dataset)]
    assert len(batches) == 3
    for batch, image in zip(batches, images):
        assert batch.dtype == np.uint8 and batch.shape == (1, 10, 12, 3)
        np.testing.assert_array_equal(batch[0], image.astype("uint8"))
    with pytest.raises(ValueError, match="yielded no images"):
        list(export._representative_batches(dataset.take(0)))
    with pytest.raises(ValueError, match=r"range=\[-1.0"):
        list(export._representative_batches([np.full((4, 4, 3), -1.0)]))
