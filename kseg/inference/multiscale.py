"""Multi-scale and left-right flip test-time averaging of a segmentation model's probabilities."""

import weakref

import numpy as np
import tensorflow as tf

DEEPLAB_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
OUTPUTS = ("probabilities", "logits", "labels")

# One compiled core per (model, flip, channels). Keyed weakly so a dropped model frees its graph;
# the core reaches the model through a weak reference, so the cache never keeps it alive.
_CORES = weakref.WeakKeyDictionary()


def _scale_core(model, flip, channels):
    cores = _CORES.setdefault(model, {})
    key = (bool(flip), int(channels))
    if key not in cores:
        model_ref = weakref.ref(model)

        # Unknown batch, height and width in the signature: one trace serves every image size
        # and scale.
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None, None, channels], tf.float32),
                tf.TensorSpec([], tf.float32),
            ]
        )
        def core(images, scale):
            shape = tf.shape(images)
            count, size = shape[0], shape[1:3]
            # Round half up (tf.round rounds half to even), never below one pixel.
            scaled_size = tf.maximum(
                tf.cast(tf.floor(tf.cast(size, tf.float32) * scale + 0.5), tf.int32), 1
            )
            scaled = tf.image.resize(images, scaled_size, method="bilinear")
            if flip:
                scaled = tf.concat([scaled, tf.reverse(scaled, axis=[2])], axis=0)
            probabilities = tf.nn.softmax(
                tf.cast(model_ref()(scaled, training=False), tf.float32), axis=-1
            )
            if flip:
                probabilities = 0.5 * (
                    probabilities[:count] + tf.reverse(probabilities[count:], axis=[2])
                )
            return tf.image.resize(probabilities, size, method="bilinear")

        cores[key] = core
    return cores[key]


def probabilities_to_output(probabilities, output):
    """Turns averaged class probabilities `(..., K)` into the requested `output` (see OUTPUTS)."""
    if output == "probabilities":
        return probabilities
    if output == "labels":
        return np.argmax(probabilities, axis=-1).astype(np.int32)
    # log of the averaged probabilities: valid logits whose softmax gives the average back.
    return np.log(np.maximum(probabilities, np.finfo(np.float32).tiny))


def multiscale_predict(
    model, images, scales=DEEPLAB_SCALES, flip=True, batch_size=1, output="probabilities"
):
    """Averages a model's class probabilities over rescaled and left-right flipped inputs.

    The evaluation protocol of DeepLab v3 (Chen et al. 2017, "Rethinking Atrous Convolution for
    Semantic Image Segmentation", section 4.1 "Inference strategy on val set"): the image is
    resized bilinearly by each factor of `scales` (0.5 to 1.75 in the paper), the model runs on
    it and, with `flip=True`, also on its left-right mirror, whose output is mirrored back; every
    output's softmax probabilities are resized bilinearly to the input size and all of them are
    averaged with equal weight. Scaled sizes are `floor(size * scale + 0.5)` pixels, computed at
    run time, so any input size works. One compiled graph per model serves every size and scale.

    Args:
        model: a segmentation model mapping `(B, h, w, C)` images of any size to logits
            `(B, h, w, K)` (e.g. `kseg.models.DeepLabV3Plus`).
        images: `(B, H, W, C)` or `(H, W, C)` numpy array or tensor, float or uint8, with the
            values the model expects (kseg models take [0, 255] RGB).
        scales: positive resize factors.
        flip: also average over the left-right flipped image.
        batch_size: images per model call; with `flip` each call sees twice as many inputs.
        output: "probabilities" (the average), "logits" (its logarithm, clamped away from
            -inf, so softmax returns the average) or "labels" (its argmax, int32).

    Returns:
        float32 `(B, H, W, K)` probabilities or logits, or int32 `(B, H, W)` labels; without the
        batch axis when `images` had none.

    Example:
        >>> import numpy as np, kseg
        >>> from kseg.inference.multiscale import multiscale_predict
        >>> model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny")
        >>> multiscale_predict(model, np.zeros((1, 40, 56, 3), np.uint8), scales=(0.75, 1.0)).shape
        (1, 40, 56, 3)
    """
    scales = tuple(float(s) for s in np.atleast_1d(scales))
    if not scales or not all(np.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"scales must be one or more positive factors. Received: scales={scales}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}. Received: output={output!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1. Received: batch_size={batch_size}")
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    single = images.shape.rank == 3
    if single:
        images = images[None]
    if images.shape.rank != 4:
        raise ValueError(
            f"images must be (B, H, W, C) or (H, W, C). Received: shape={tuple(images.shape)}"
        )
    if 0 in images.shape[1:]:
        raise ValueError(
            "images must have non-zero height, width and channels. "
            f"Received: shape={tuple(images.shape)}"
        )
    core = _scale_core(model, flip, images.shape[-1])

    chunks = []
    for start in range(0, images.shape[0], int(batch_size)):
        batch = images[start : start + int(batch_size)]
        total = None
        for scale in scales:
            # Summed as float64 on the host: the per-scale maps are small beside the model's work.
            probabilities = core(batch, tf.constant(scale, tf.float32)).numpy().astype(np.float64)
            total = probabilities if total is None else total + probabilities
        chunks.append(probabilities_to_output((total / len(scales)).astype(np.float32), output))
    result = np.concatenate(chunks, axis=0)
    return result[0] if single else result
