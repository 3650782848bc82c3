"""Export a segmentation model for serving: a SavedModel or a TFLite file that takes uint8 images.

The exported function is the whole inference path, so a client sends raw pixels and gets labels
back: uint8 RGB (B, H, W, 3) of any H and W -> float32 in [0, 255] (the kseg model input
convention; the model does its own normalisation) -> optional resize to a fixed network size or
padding to a size divisor -> model logits -> resize or crop back to (H, W) -> softmax and argmax.
It is written with Keras 3's own `keras.export.ExportArchive`, the machinery behind
`Model.export(format="tf_saved_model")`, with one endpoint `serve` that is also the
`serving_default` signature TF-Serving looks for. `tflite` converts that same signature.
ONNX is left out: Keras's ONNX export needs `tf2onnx`, which kseg does not install.
"""

import tempfile
from pathlib import Path

import keras
import tensorflow as tf

SERVING_ENDPOINT = "serve"
IMAGE_INPUT_NAME = "images"


def _check_size(name, value):
    if value is None:
        return None
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(
            f"`{name}` must be a positive int or a pair of them. Received: {name}={value!r}"
        )
    return value


def serving_function(model, *, include_probabilities=True, input_size=None, size_divisor=None):
    """Build the uint8-in, labels-out inference function that `saved_model` exports.

    Args:
        model: a Keras segmentation model mapping float RGB in [0, 255], shape (B, H, W, 3), to
            per-pixel logits (B, h, w, C); h, w may differ from H, W (the logits are resized back).
        include_probabilities: also return the softmax probabilities.
        input_size: optional (height, width) the images are resized to before the model (for
            models built for a fixed size); the logits are resized back to the original size.
        size_divisor: optional int; images are zero-padded at the bottom and right to a multiple
            of it (for encoder-decoders such as U-Net or SegNet) and the logits cropped back.

    Returns:
        A function of one uint8 tensor (B, H, W, 3) returning a dict with "labels" (int32
        (B, H, W)) and, if asked, "probabilities" (float32 (B, H, W, C)).

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1, dtype="float32")(inputs))
        >>> serve = kseg.export.serving_function(model)
        >>> serve(tf.zeros((1, 5, 7, 3), tf.uint8))["labels"].shape
        TensorShape([1, 5, 7])
    """
    input_size = _check_size("input_size", input_size)
    if size_divisor is not None and (not isinstance(size_divisor, int) or size_divisor < 1):
        raise ValueError(
            f"`size_divisor` must be a positive int. Received: size_divisor={size_divisor!r}"
        )
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
            pad_h = (size_divisor - height % size_divisor) % size_divisor
            pad_w = (size_divisor - width % size_divisor) % size_divisor
            x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        logits = tf.cast(model(x, training=False), tf.float32)
        if size_divisor is not None:
            logits = logits[:, :height, :width, :]
        # Bilinear resize to the same size is the identity, so this only acts when the model's
        # output stride or a fixed input size made the logits smaller or larger than the image.
        logits = tf.image.resize(logits, tf.stack([height, width]), method="bilinear")
        outputs = {"labels": tf.argmax(logits, axis=-1, output_type=tf.int32)}
        if include_probabilities:
            outputs["probabilities"] = tf.nn.softmax(logits, axis=-1)
        return outputs

    return serve


def saved_model(
    model, path, *, include_probabilities=True, input_size=None, size_divisor=None, verbose=False
):
    """Write a SavedModel whose "serving_default" signature maps uint8 images to labels.

    Built on `keras.export.ExportArchive` (what `Model.export(format="tf_saved_model")` uses),
    so the model's variables are tracked the Keras way and the artifact reloads with
    `tf.saved_model.load` without kseg or Keras installed. The signature takes one input named
    "images", uint8 (batch, height, width, 3) with every dimension dynamic, and returns
    "labels" (int32 (B, H, W), the argmax) and "probabilities" (float32 (B, H, W, C), the
    softmax of the logits).

    Args:
        model: a Keras segmentation model (float RGB in [0, 255] in, logits out).
        path: directory to write.
        include_probabilities: also return "probabilities".
        input_size: optional fixed (height, width) for the network; see `serving_function`.
        size_divisor: optional pad-to-multiple for the network input; see `serving_function`.
        verbose: print the exported endpoints.

    Returns:
        The path written, as a `pathlib.Path`.

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1, dtype="float32")(inputs))
        >>> path = kseg.export.saved_model(model, "/tmp/kseg_export_example")
        >>> serving = tf.saved_model.load(str(path)).signatures["serving_default"]
        >>> sorted(serving(images=tf.zeros((1, 5, 7, 3), tf.uint8)))
        ['labels', 'probabilities']
    """
    serve = serving_function(
        model,
        include_probabilities=include_probabilities,
        input_size=input_size,
        size_divisor=size_divisor,
    )
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_ENDPOINT,
        serve,
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name=IMAGE_INPUT_NAME)],
    )
    path = Path(path)
    archive.write_out(str(path), verbose=verbose)
    return path


def tflite(
    model,
    path,
    *,
    include_probabilities=True,
    input_size=None,
    size_divisor=None,
    optimize=False,
):
    """Write a TFLite (LiteRT) file with the uint8-in, labels-out signature of `saved_model`.

    The SavedModel written by `saved_model` is converted with `tf.lite.TFLiteConverter`; the
    "serving_default" signature keeps its dynamic batch, height and width (an interpreter resizes
    its input tensor per call) and its "images" / "labels" / "probabilities" names. Keras's own
    `Model.export(format="litert")` converts only the model's float forward pass, so it is not used
    here.

    Args:
        model: a Keras segmentation model (float RGB in [0, 255] in, logits out).
        path: output file, ending in ".tflite".
        include_probabilities: also return "probabilities".
        input_size: optional fixed (height, width) for the network; see `serving_function`.
        size_divisor: optional pad-to-multiple for the network input; see `serving_function`.
        optimize: apply TFLite's default optimisation (dynamic-range int8 weights), which makes the
            file about 4x smaller at a small accuracy cost.

    Returns:
        The path written, as a `pathlib.Path`.

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1, dtype="float32")(inputs))
        >>> kseg.export.tflite(model, "/tmp/kseg_example.tflite").suffix
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
            input_size=input_size,
            size_divisor=size_divisor,
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved), signature_keys=["serving_default"]
        )
        if optimize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        flatbuffer = converter.convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return path
