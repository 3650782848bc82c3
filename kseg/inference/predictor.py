"""One callable that turns images into labels with any mix of kseg's inference modes."""

import numpy as np
import tensorflow as tf

from kseg.inference.batchnorm_folding import fold_batch_norm_if_exact
from kseg.inference.dense_crf import dense_crf
from kseg.inference.frozen import FrozenModel
from kseg.inference.multiscale import multiscale_predict
from kseg.inference.sliding_window import sliding_window_predict


def make_predictor(
    model,
    *,
    scales=(1.0,),
    flip=False,
    window=None,
    overlap=1 / 3,
    crf=False,
    crf_options=None,
    fold_batchnorm=True,
    freeze=None,
):
    """Returns `predict(images) -> labels` combining multi-scale, flip, sliding window and CRF.

    The order is the one the papers use: class probabilities are averaged over `scales` and
    the mirrored image (DeepLab v3's evaluation protocol), computed window by window when
    `window` is given (PSPNet's sliding evaluation), then optionally refined by the dense CRF
    (DeepLab v1/v2) before the argmax. With the defaults the labels are `argmax(model(images))`.

    Args:
        model: a segmentation model mapping `(B, H, W, 3)` images to logits.
        scales: image resize factors whose probabilities are averaged.
        flip: also average over left-right mirrored images.
        window: sliding-window size (int or `(height, width)`), or None for whole images.
        overlap: fraction shared by neighbouring windows.
        crf: refine the probabilities with `kseg.inference.dense_crf` (images must be RGB 0-255).
        crf_options: keyword arguments for `dense_crf` (iterations, kernel widths, weights).
        fold_batchnorm: run a copy of the model with its batch normalisation folded into
            the convolutions (`kseg.inference.fold_batch_norm_if_exact`: same outputs up to
            float32 rounding, less memory traffic); False runs `model` as it is.
        freeze: run the model as one graph with its weights as constants
            (`kseg.inference.FrozenModel`: the same outputs; on CPU up to 20% faster at batch 1,
            no faster at batch 2 on 512x512).
            None (the default) follows `fold_batchnorm`, so the predictor either is a
            snapshot of the model (folded and frozen) or follows its live weights.

    Returns:
        A function mapping images `(B, H, W, 3)` (numpy or tensor) to int32 labels `(B, H, W)`.

    Example:
        >>> import numpy as np, kseg
        >>> model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny")
        >>> predict = kseg.inference.make_predictor(model, scales=(0.5, 1.0), flip=True)
        >>> predict(np.zeros((2, 64, 48, 3), np.uint8)).shape
        (2, 64, 48)
    """
    scales = tuple(float(scale) for scale in scales)
    if not scales or any(scale <= 0 for scale in scales):
        raise ValueError(f"scales must be positive numbers. Received: scales={scales}")
    plain = scales == (1.0,) and not flip and window is None
    if fold_batchnorm:
        model = fold_batch_norm_if_exact(model)
    if fold_batchnorm if freeze is None else freeze:
        model = FrozenModel(model)
    crf_options = dict(crf_options or {})

    # Compiled, so TensorFlow fuses each convolution with its bias and activation; one graph
    # for every image size once sizes vary (a FrozenModel is one already).
    @tf.function(reduce_retracing=True)
    def plain_probabilities(images):
        return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32), -1)

    def probabilities(images):
        if plain:
            return plain_probabilities(tf.cast(images, tf.float32)).numpy()
        if window is None:
            return np.asarray(multiscale_predict(model, images, scales=scales, flip=flip))
        return np.stack(
            [
                np.asarray(
                    sliding_window_predict(
                        model, image, window=window, overlap=overlap, scales=scales, flip=flip
                    )
                )
                for image in images
            ]
        )

    def predict(images):
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"images must be a batch (B, H, W, C). Received: shape={images.shape}")
        scores = probabilities(images)
        if crf:
            scores = np.stack(
                [
                    np.asarray(dense_crf(image, score, **crf_options))
                    for image, score in zip(images, scores)
                ]
            )
        return scores.argmax(-1).astype(np.int32)

    return predict
