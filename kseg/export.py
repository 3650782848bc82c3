"""Export a segmentation model for serving: a SavedModel, TFLite or ONNX file taking uint8 images.

The exported function is the whole inference path, so a client sends raw pixels and gets labels
back: uint8 RGB (B, H, W, 3) of any H and W -> float32 in [0, 255] (the kseg model input
convention; the model does its own normalisation) -> optional resize to a fixed network size or
padding to a size divisor -> model logits -> resize or crop back to (H, W) -> softmax and argmax.
It is written with Keras 3's own `keras.export.ExportArchive`, the machinery behind
`Model.export(format="tf_saved_model")`, with one endpoint `serve` that is also the
`serving_default` signature TF-Serving looks for. `tflite` converts that same signature with
`tf.lite.TFLiteConverter` (float32, float16 weights, or int8), and `onnx` converts the same
function with `tf2onnx` (the optional `kseg[onnx]` extra).

Which models convert to TFLite built-in ops only: with a dynamic image size, DeepLab v2 (its
scale branches compute their size in float64) and U-Net (its padding loses the static channel
count, so the first convolution cannot be lowered) need `image_size=(H, W)`, which fixes the
signature's height and width and lets the converter fold those shape computations away. SegNet
and SegNet-Basic convert with built-in ops in their default `index_format="window"`; built with
`index_format="flat"` they use `tf.nn.max_pool_with_argmax`, which has no TFLite built-in, and
then need `allow_select_tf_ops=True` and an interpreter linked with the Flex delegate.
"""

import re
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kseg import validation
from kseg.inference.batchnorm_folding import fold_batch_norm_if_exact
from kseg.utils import padding

__all__ = [
    "IMAGE_INPUT_NAME",
    "QUANTIZATIONS",
    "SERVING_ENDPOINT",
    "onnx",
    "saved_model",
    "serving_function",
    "tflite",
    "tflite_from_saved_model",
]

SERVING_ENDPOINT = "serve"
IMAGE_INPUT_NAME = "images"
QUANTIZATIONS = ("none", "float16", "int8")


def serving_function(
    model, *, include_probabilities=True, include_logits=False, input_size=None, size_divisor=None
):
    """Build the uint8-in, labels-out inference function that `saved_model` exports.

    Args:
        model: a Keras segmentation model mapping float RGB in [0, 255], shape (B, H, W, 3), to
            per-pixel logits (B, h, w, C); h, w may differ from H, W (the logits are resized back).
        include_probabilities: also return the softmax probabilities.
        include_logits: also return the logits, resized to the image size (for ensembling, or
            to compare an exported artifact with the Keras model).
        input_size: optional (height, width) the images are resized to before the model (for
            models built for a fixed size); the logits are resized back to the original size.
        size_divisor: optional int; images are zero-padded at the bottom and right to a multiple
            of it (for encoder-decoders such as U-Net or SegNet) and the logits cropped back.

    Returns:
        A function of one uint8 tensor (B, H, W, 3) returning a dict with "labels" (int32
        (B, H, W)) and, if asked, "probabilities" and "logits" (float32 (B, H, W, C)).

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1, dtype="float32")(inputs))
        >>> serve = kseg.export.serving_function(model)
        >>> serve(tf.zeros((1, 5, 7, 3), tf.uint8))["labels"].shape
        TensorShape([1, 5, 7])
    """
    input_size = None if input_size is None else validation.validate_size(input_size, "input_size")
    if size_divisor is not None:
        validation.validate_positive_int(size_divisor, "size_divisor")
    if input_size is not None and size_divisor is not None:
        raise ValueError(
            "Give either `input_size` or `size_divisor`, not both. "
            f"Received: input_size={input_size}, size_divisor={size_divisor}"
        )

    def serve(images):
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            raise ValueError(
                f"The serving function takes uint8 images. Received: dtype={images.dtype.name}"
            )
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        x = tf.cast(images, tf.float32)
        if input_size is not None:
            x = tf.image.resize(x, input_size, method="bilinear")
        elif size_divisor is not None:
            x = padding.pad_bottom_right_to_multiple(x, size_divisor)
        logits = tf.cast(model(x, training=False), tf.float32)
        if size_divisor is not None:
            logits = logits[:, :height, :width, :]
        # Bilinear resize to the same size is the identity, so this only acts when the model's
        # output stride or a fixed input size made the logits smaller or larger than the image.
        logits = tf.image.resize(logits, tf.stack([height, width]), method="bilinear")
        outputs = {"labels": tf.argmax(logits, axis=-1, output_type=tf.int32)}
        if include_probabilities:
            outputs["probabilities"] = tf.nn.softmax(logits, axis=-1)
        if include_logits:
            outputs["logits"] = logits
        return outputs

    return serve


def _image_signature(image_size):
    image_size = None if image_size is None else validation.validate_size(image_size, "image_size")
    height, width = image_size if image_size is not None else (None, None)
    return tf.TensorSpec((None, height, width, 3), tf.uint8, name=IMAGE_INPUT_NAME)


def saved_model(
    model,
    path,
    *,
    include_probabilities=True,
    include_logits=False,
    input_size=None,
    size_divisor=None,
    image_size=None,
    verbose=False,
    fold_batchnorm=True,
):
    """Write a SavedModel whose "serving_default" signature maps uint8 images to labels.

    Built on `keras.export.ExportArchive` (what `Model.export(format="tf_saved_model")` uses),
    so the model's variables are tracked the Keras way and the artifact reloads with
    `tf.saved_model.load` without kseg or Keras installed. The signature takes one input named
    "images", uint8 (batch, height, width, 3) with every dimension dynamic unless `image_size`
    fixes height and width, and returns "labels" (int32 (B, H, W), the argmax),
    "probabilities" (float32 (B, H, W, C), the softmax of the logits) and, if asked, "logits".

    Args:
        model: a Keras segmentation model (float RGB in [0, 255] in, logits out).
        path: directory to write.
        include_probabilities: also return "probabilities".
        include_logits: also return "logits", resized to the image size.
        input_size: optional fixed (height, width) for the network; see `serving_function`.
        size_divisor: optional pad-to-multiple for the network input; see `serving_function`.
        image_size: optional (height, width) the signature accepts; None keeps both dynamic.
            A fixed size lets graph converters fold the model's shape arithmetic into
            constants (TFLite needs that for DeepLab v2 and U-Net).
        verbose: print the exported endpoints.
        fold_batchnorm: export a copy of the model with its batch normalisation folded into
            the convolutions (`kseg.inference.fold_batch_norm_if_exact`: same outputs up to
            float32 rounding, fewer ops); False exports `model` as it is.

    Returns:
        The path written, as a `pathlib.Path`.

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1, dtype="float32")(inputs))
        >>> path = kseg.export.saved_model(model, "/tmp/kseg_export_example")
        >>> serving = tf.saved_model.load(str(path)).signatures["serving_default"]
        >>> sorted(serving(images=tf.zeros((1, 5, 7, 3), tf.uint8)))
        ['labels', 'probabilities']

    A `kseg.models.MaskRCNN` gets the instance signature of
    `kseg.detection.export_instance_saved_model` instead (one uint8 image in; boxes, scores,
    classes, full-image masks out); the semantic options do not apply to it.
    """
    from kseg.models.mask_rcnn import MaskRCNN

    if isinstance(model, MaskRCNN):
        semantic = {
            "include_logits": include_logits,
            "input_size": input_size,
            "size_divisor": size_divisor,
            "image_size": image_size,
        }
        given = sorted(name for name, value in semantic.items() if value)
        if given:
            raise ValueError(
                f"{given} apply to semantic models; a MaskRCNN export takes one image of any "
                "size and returns detections."
            )
        from kseg.detection.serving import export_instance_saved_model

        return export_instance_saved_model(model, path, verbose=verbose)
    if fold_batchnorm:
        model = fold_batch_norm_if_exact(model)
    serve = serving_function(
        model,
        include_probabilities=include_probabilities,
        include_logits=include_logits,
        input_size=input_size,
        size_divisor=size_divisor,
    )
    signature = _image_signature(image_size)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_ENDPOINT, serve, input_signature=[signature])
    path = Path(path)
    archive.write_out(str(path), verbose=verbose)
    return path


def _representative_batches(representative_images):
    """Yields uint8 (B, H, W, 3) numpy batches of images.

    The source is an iterable, a generator function or a `tf.data.Dataset` of images or of
    (images, labels) pairs.
    """
    source = representative_images() if callable(representative_images) else representative_images
    count = 0
    for element in source:
        if isinstance(element, (tuple, list)):
            element = element[0]
        if isinstance(element, dict):
            element = element[IMAGE_INPUT_NAME]
        images = np.asarray(element)
        if images.ndim not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(
                "Representative images must be RGB, shaped (H, W, 3) or (B, H, W, 3). "
                f"Received: shape={images.shape}"
            )
        if images.ndim == 3:
            images = images[None]
        if images.dtype != np.uint8:
            if images.min() < 0 or images.max() > 255:
                raise ValueError(
                    "Representative images must be uint8 or hold values in [0, 255]. "
                    f"Received: dtype={images.dtype}, range=[{images.min()}, {images.max()}]"
                )
            images = images.astype(np.uint8)
        count += 1
        yield [images]
    if count == 0:
        raise ValueError("`representative_images` yielded no images; give at least one batch.")


def _select_ops_error(error):
    ops = re.findall(r"TF Select ops: ([^\n]+)", str(error))
    if not ops:
        return None
    return ValueError(
        f"The model uses TensorFlow ops with no TFLite built-in kernel: {ops[0].strip()}. "
        "Pass `allow_select_tf_ops=True` to keep them as TF Select (Flex) ops, which needs an "
        "interpreter linked with the Flex delegate; for ops that only come from shape "
        "arithmetic on a dynamic size, a fixed `image_size=(H, W)` may remove them instead."
    )


def tflite_from_saved_model(
    saved_model_path,
    path,
    *,
    quantization="none",
    representative_images=None,
    allow_select_tf_ops=False,
):
    """Convert the "serving_default" signature of a SavedModel from `saved_model` to TFLite.

    The conversion uses `tf.lite.TFLiteConverter.from_saved_model`, keeping the signature's
    name, its "images" input (uint8) and its outputs (int32 labels, float32 probabilities and
    logits) whatever the quantisation, so a client is the same for every variant:

    - "none": float32 throughout.
    - "float16": weights stored as float16 and dequantised to float32 at load time (half the
      file size, float32 arithmetic on CPU).
    - "int8" without `representative_images`: dynamic-range quantisation; weights are int8,
      activations stay float and are quantised on the fly for the ops with hybrid kernels
      (convolutions, fully connected), about 4x smaller.
    - "int8" with `representative_images`: full-integer quantisation; activations are
      calibrated on those images (Jacob et al., 2018) and every op with an int8 kernel runs in
      int8, falling back to float for any without one. For every kseg model that converts to
      built-ins, only the input CAST (uint8 to float) and the output DEQUANTIZE ops produce
      float32: convolutions, resizes, softmax and argmax all run in int8
      (benchmarks/export_parity.py lists them). The interface stays uint8 in and
      float32/int32 out.

    Args:
        saved_model_path: a SavedModel directory written by `saved_model`.
        path: output file, ending in ".tflite".
        quantization: one of "none", "float16", "int8".
        representative_images: for "int8" only: an iterable, a generator function or a
            `tf.data.Dataset` yielding uint8 RGB images (H, W, 3) or batches (B, H, W, 3), or
            (images, labels) pairs; a few dozen images from the training set are enough.
        allow_select_tf_ops: let ops with no TFLite built-in kernel fall back to TensorFlow
            ops (`max_pool_with_argmax` of a SegNet built with `index_format="flat"`); the
            file then needs the Flex delegate.

    Returns:
        The path written, as a `pathlib.Path`.

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1, dtype="float32")(inputs))
        >>> saved = kseg.export.saved_model(model, "/tmp/kseg_export_example")
        >>> kseg.export.tflite_from_saved_model(saved, "/tmp/kseg_f16.tflite",
        ...                                     quantization="float16").name
        'kseg_f16.tflite'
    """
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(
            f"The TFLite file name must end in '.tflite'. Received: path={str(path)!r}"
        )
    validation.validate_choice(quantization, "quantization", QUANTIZATIONS)
    if representative_images is not None and quantization != "int8":
        raise ValueError(
            "`representative_images` calibrates full-integer quantisation and needs "
            f"quantization='int8'. Received: quantization={quantization!r}"
        )
    if not (Path(saved_model_path) / "saved_model.pb").is_file():
        raise FileNotFoundError(
            f"No SavedModel (saved_model.pb) in {str(saved_model_path)!r}; write one with "
            "`kseg.export.saved_model` first."
        )
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_path), signature_keys=["serving_default"]
    )
    supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8" and representative_images is not None:
        converter.representative_dataset = lambda: _representative_batches(representative_images)
        # int8 kernels first; ops without one stay float rather than failing the conversion.
        supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_select_tf_ops:
        supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = supported_ops
    try:
        flatbuffer = converter.convert()
    except RuntimeError as error:
        if representative_images is None or "Flex delegate" not in str(error):
            raise
        raise ValueError(
            "Full-integer calibration runs the model in the TFLite interpreter, which here has "
            "no Flex delegate for its TF Select ops; use quantization='int8' without "
            "`representative_images` (dynamic range) or 'float16' for this model."
        ) from error
    except Exception as error:
        friendly = _select_ops_error(error)
        if friendly is None:
            raise
        raise friendly from error
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return path


def tflite(
    model,
    path,
    *,
    include_probabilities=True,
    include_logits=False,
    input_size=None,
    size_divisor=None,
    image_size=None,
    quantization="none",
    representative_images=None,
    allow_select_tf_ops=False,
    fold_batchnorm=True,
):
    """Write a TFLite (LiteRT) file with the uint8-in, labels-out signature of `saved_model`.

    The model is written as a SavedModel by `saved_model` and converted by
    `tflite_from_saved_model`; the "serving_default" signature keeps its dynamic batch (and
    height and width unless `image_size` fixes them; an interpreter resizes its input tensor per
    call) and its "images" / "labels" / "probabilities" names. Keras's own
    `Model.export(format="litert")` converts only the model's float forward pass, so it is not
    used here.

    Args:
        model: a Keras segmentation model (float RGB in [0, 255] in, logits out).
        path: output file, ending in ".tflite".
        include_probabilities: also return "probabilities".
        include_logits: also return "logits", resized to the image size.
        input_size: optional fixed (height, width) for the network; see `serving_function`.
        size_divisor: optional pad-to-multiple for the network input; see `serving_function`.
        image_size: optional (height, width) the signature accepts; see `saved_model`.
        quantization: "none", "float16" or "int8"; see `tflite_from_saved_model`.
        representative_images: calibration images for full-integer "int8"; see
            `tflite_from_saved_model`.
        allow_select_tf_ops: keep ops with no TFLite built-in as TF Select (Flex) ops.
        fold_batchnorm: fold batch normalisation into the convolutions first; see
            `saved_model`.

    Returns:
        The path written, as a `pathlib.Path`.

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1, dtype="float32")(inputs))
        >>> kseg.export.tflite(model, "/tmp/kseg_example.tflite", quantization="int8").suffix
        '.tflite'
    """
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(
            f"The TFLite file name must end in '.tflite'. Received: path={str(path)!r}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        saved = saved_model(
            model,
            Path(tmp) / "saved_model",
            include_probabilities=include_probabilities,
            include_logits=include_logits,
            input_size=input_size,
            size_divisor=size_divisor,
            image_size=image_size,
            fold_batchnorm=fold_batchnorm,
        )
        return tflite_from_saved_model(
            saved,
            path,
            quantization=quantization,
            representative_images=representative_images,
            allow_select_tf_ops=allow_select_tf_ops,
        )


def onnx(
    model,
    path,
    *,
    opset=None,
    include_probabilities=True,
    include_logits=False,
    input_size=None,
    size_divisor=None,
    image_size=None,
    fold_batchnorm=True,
):
    """Write an ONNX file with the uint8-in, labels-out function of `saved_model`.

    The serving function is traced with the same signature as the SavedModel's and converted
    by `tf2onnx` (the converter Keras's `Model.export(format="onnx")` uses on TensorFlow), so
    the graph takes "images" (uint8 (B, H, W, 3), dynamic unless `image_size` fixes H and W)
    and returns "labels", "probabilities" and, if asked, "logits", ready for onnxruntime.
    Needs the optional extra: `pip install "kseg[onnx]"`.

    Checked against onnxruntime for every registered model (logits within 1e-4) with two
    exceptions: U-Net needs `image_size` (with a dynamic size tf2onnx 1.17's graph computes
    different logits), and grouped convolutions (FCN-AlexNet's default `groups=2`) are left
    as TF function calls, which this function reports as an error.

    Args:
        model: a Keras segmentation model (float RGB in [0, 255] in, logits out).
        path: output file, ending in ".onnx".
        opset: ONNX opset version; None takes tf2onnx's default.
        include_probabilities: also return "probabilities".
        include_logits: also return "logits", resized to the image size.
        input_size: optional fixed (height, width) for the network; see `serving_function`.
        size_divisor: optional pad-to-multiple for the network input; see `serving_function`.
        image_size: optional (height, width) the graph accepts; see `saved_model`.
        fold_batchnorm: fold batch normalisation into the convolutions first; see
            `saved_model`.

    Returns:
        The path written, as a `pathlib.Path`.

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1, dtype="float32")(inputs))
        >>> kseg.export.onnx(model, "/tmp/kseg_example.onnx").suffix
        '.onnx'
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"The ONNX file name must end in '.onnx'. Received: path={str(path)!r}")
    if opset is not None:
        validation.validate_positive_int(opset, "opset")
    from kseg.models.mask_rcnn import MaskRCNN

    if isinstance(model, MaskRCNN):
        raise TypeError(
            "ONNX export covers semantic segmentation models; a MaskRCNN's proposal and NMS "
            "stages have no ONNX export in kseg (use kseg.export.saved_model). "
            f"Received: model={model.name!r} (MaskRCNN)"
        )
    try:
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "ONNX export needs tf2onnx, which kseg does not install by default: "
            'pip install "kseg[onnx]" (tf2onnx and onnxruntime).'
        ) from error
    if fold_batchnorm:
        model = fold_batch_norm_if_exact(model)
    serve = serving_function(
        model,
        include_probabilities=include_probabilities,
        include_logits=include_logits,
        input_size=input_size,
        size_divisor=size_divisor,
    )
    signature = [_image_signature(image_size)]
    function = tf.function(serve, input_signature=signature)
    model_proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
    # tf2onnx keeps a TF function call it cannot inline as an opaque node that no ONNX runtime
    # can execute; Keras compiles grouped convolutions with XLA on CPU, which is one source.
    opaque = [
        node.name
        for node in model_proto.graph.node
        if node.op_type in ("StatefulPartitionedCall", "PartitionedCall")
    ]
    if opaque:
        raise ValueError(
            "tf2onnx could not convert these TensorFlow function calls to ONNX ops (grouped "
            "convolutions, which Keras compiles with XLA on CPU, are a known cause, e.g. "
            f"FCN-AlexNet with groups=2): {opaque}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model_proto.SerializeToString())
    return path
