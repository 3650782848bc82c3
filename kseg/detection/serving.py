"""SavedModel export of instance-segmentation models: one uint8 image in, detections out."""

from pathlib import Path

import keras
import tensorflow as tf

from kseg.detection.boxes import clip_boxes
from kseg.detection.postprocess import paste_masks
from kseg.utils.padding import pad_bottom_right_to_multiple

SERVING_ENDPOINT = "serving_default"


def detections_with_masks(model, images, *, mask_threshold=0.5):
    """Runs `model` on `(B, H, W, 3)` images and pastes its masks at the images' full size.

    The shared core of `instance_serving_function` and
    `kseg.detection.evaluation.instance_predictor`: the detection dict of `model` with its
    28x28 mask probabilities replaced by uint8 `(B, D, H, W)` masks from `paste_masks`, pasted
    by the model's `mask_paste` method ("centres" when it has none).

    Example:
        >>> out = detections_with_masks(model, images)  # doctest: +SKIP
    """
    detections = model(images, training=False)
    shape = tf.shape(images)
    masks = paste_masks(
        detections["masks"],
        detections["boxes"],
        shape[1],
        shape[2],
        threshold=mask_threshold,
        method=getattr(model, "mask_paste", "centres"),
    )
    return {**detections, "masks": masks}


def instance_serving_function(model, *, mask_threshold=0.5, size_divisor=64):
    """The serving computation for one RGB image of any size.

    The image is cast to float32 in [0, 255], padded at the bottom and right to a multiple of
    `size_divisor` (as in training), run through `model`, and the detections are mapped back
    to the image: boxes clipped to its size and each detection's mask pasted at full
    resolution (`kseg.detection.paste_masks`) and cut to the image.

    Args:
        model: a `kseg.models.MaskRCNN` (or a model returning its detection dict).
        mask_threshold: probability at which a pasted mask pixel is set.
        size_divisor: padding multiple (64 for P2..P6).

    Returns:
        A function `image (H, W, 3) uint8 -> dict` with `boxes (D, 4)` float32 `[y1, x1, y2,
        x2]` pixels, `scores (D,)`, `classes (D,)` int32, `masks (D, H, W)` uint8 and
        `num_detections` int32; rows past `num_detections` are zeros.

    Example:
        >>> serve = kseg.detection.instance_serving_function(model)  # doctest: +SKIP
        >>> serve(tf.zeros((100, 130, 3), tf.uint8))["masks"].shape  # doctest: +SKIP
        TensorShape([100, 100, 130])
    """

    def serve(image):
        image = tf.convert_to_tensor(image)
        # One runtime check of rank and channels: the signature's (None, None, 3) spec makes a
        # static rank check pass even when a served tensor of another rank arrives.
        shape = tf.shape(image)
        check = tf.debugging.Assert(
            tf.logical_and(tf.equal(tf.size(shape), 3), tf.equal(shape[-1], 3)),
            ["the image must be (height, width, 3) RGB; received shape", shape],
        )
        with tf.control_dependencies([check]):
            image = tf.identity(image)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        batch = tf.cast(image, tf.float32)[None]
        # A model that resizes its input must see the image itself, not a padded one.
        if getattr(model, "resize_min_side", None) is None:
            batch = pad_bottom_right_to_multiple(batch, size_divisor)
        detections = detections_with_masks(model, batch, mask_threshold=mask_threshold)
        return {
            "boxes": clip_boxes(detections["boxes"], height, width)[0],
            "scores": detections["scores"][0],
            "classes": detections["classes"][0],
            "num_detections": detections["num_detections"][0],
            "masks": detections["masks"][0, :, :height, :width],
        }

    return serve


def export_instance_saved_model(model, path, *, mask_threshold=0.5, verbose=False):
    """Write a SavedModel whose "serving_default" signature maps one uint8 image to detections.

    The signature takes `image`: uint8 `(H, W, 3)` of any size, and returns the dict of
    `instance_serving_function`. The file needs no kseg code to load:
    `tf.saved_model.load(path).signatures["serving_default"](image=...)`.

    Args:
        model: a `kseg.models.MaskRCNN`.
        path: output directory.
        mask_threshold: probability at which a pasted mask pixel is set.
        verbose: print Keras's export summary.

    Returns:
        The `Path` written.

    Example:
        >>> kseg.detection.export_instance_saved_model(model, "exports/mask_rcnn")  # doctest: +SKIP
    """
    serve = instance_serving_function(model, mask_threshold=mask_threshold)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_ENDPOINT,
        serve,
        input_signature=[tf.TensorSpec((None, None, 3), tf.uint8, name="image")],
    )
    path = Path(path)
    archive.write_out(str(path), verbose=verbose)
    return path
