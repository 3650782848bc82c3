"""Sliding-window inference: overlapping tiles of an image, stitched into one probability map."""

import weakref

import numpy as np
import tensorflow as tf

from kseg.inference.multiscale import OUTPUTS, probabilities_to_output
from kseg.validation import validate_size

WEIGHTINGS = ("uniform", "gaussian")
PADDINGS = ("reflect", "constant")

# nnU-Net's choice (Isensee et al. 2021): a Gaussian with sigma = 1/8 of the window side.
GAUSSIAN_SIGMA_FRACTION = 1 / 8

_CORES = weakref.WeakKeyDictionary()


def _softmax_core(model, channels):
    cores = _CORES.setdefault(model, {})
    if channels not in cores:
        model_ref = weakref.ref(model)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)])
        def core(windows):
            return tf.nn.softmax(tf.cast(model_ref()(windows, training=False), tf.float32), axis=-1)

        cores[channels] = core
    return cores[channels]


def window_starts(length, window, overlap):
    """Offsets of the windows that tile one axis of `length` pixels.

    Windows advance by `round(window * (1 - overlap))` pixels (at least one); the last window is
    moved back to end flush with the border rather than running past it, so every window lies
    inside the image and every pixel is covered. An axis no longer than the window gets one
    window at 0 (the image is padded to the window size).

    Args:
        length: pixels along the axis.
        window: window size along the axis.
        overlap: fraction of the window shared by neighbours, in [0, 1).

    Returns:
        A list of increasing start offsets.

    Example:
        >>> from kseg.inference.sliding_window import window_starts
        >>> window_starts(100, 40, 0.5)
        [0, 20, 40, 60]
    """
    if length <= window:
        return [0]
    stride = max(1, round(window * (1 - overlap)))
    return list(range(0, length - window, stride)) + [length - window]


def window_weights(window, weighting):
    """The `(h, w)` weight of each window pixel in the stitched average.

    "uniform" averages overlapping predictions equally. "gaussian" trusts a window's centre more
    than its border, where the model saw less context (Isensee et al. 2021, nnU-Net: a Gaussian
    with sigma = 1/8 of the window side, peak 1); it never reaches zero, so every pixel keeps a
    positive total weight.

    Args:
        window: `(h, w)` window size.
        weighting: "uniform" or "gaussian".

    Returns:
        A float32 `(h, w)` array.

    Example:
        >>> from kseg.inference.sliding_window import window_weights
        >>> float(window_weights((5, 5), "gaussian").max())
        1.0
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"weighting must be one of {WEIGHTINGS}. Received: weighting={weighting!r}"
        )
    if weighting == "uniform":
        return np.ones(window, np.float32)
    profiles = []
    for size in window:
        offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
        sigma = max(size * GAUSSIAN_SIGMA_FRACTION, 1e-3)
        profiles.append(np.exp(-0.5 * (offsets / sigma) ** 2))
    weights = np.outer(*profiles)
    return (weights / weights.max()).astype(np.float32)


def _stitch(core, image, window, overlap, batch_size, weights, padding):
    """Weighted average of the softmax outputs of the windows tiling one (H, W, C) image."""
    height, width = image.shape[:2]
    pad = ((0, max(window[0] - height, 0)), (0, max(window[1] - width, 0)), (0, 0))
    if any(p[1] for p in pad):
        image = np.pad(image, pad, mode=padding)
    padded_height, padded_width = image.shape[:2]
    corners = [
        (top, left)
        for top in window_starts(padded_height, window[0], overlap)
        for left in window_starts(padded_width, window[1], overlap)
    ]
    totals = None
    weight_sums = np.zeros((padded_height, padded_width), np.float32)
    for start in range(0, len(corners), batch_size):
        batch = corners[start : start + batch_size]
        windows = np.stack(
            [image[top : top + window[0], left : left + window[1]] for top, left in batch]
        )
        probabilities = core(tf.constant(windows)).numpy()
        if probabilities.shape[1:3] != window:
            raise ValueError(
                "the model must return outputs the size of its input window; for an unpadded "
                "U-Net use kseg.inference.overlap_tile_predict. "
                f"Received: window={window} giving outputs {probabilities.shape[1:3]}"
            )
        if totals is None:
            totals = np.zeros((padded_height, padded_width, probabilities.shape[-1]), np.float32)
        probabilities *= weights[None, :, :, None]
        for (top, left), weighted in zip(batch, probabilities):
            totals[top : top + window[0], left : left + window[1]] += weighted
            weight_sums[top : top + window[0], left : left + window[1]] += weights
    # In place: on a large image a second (H, W, K) array would double the peak memory.
    averaged = totals[:height, :width]
    averaged /= weight_sums[:height, :width, None]
    return averaged


def sliding_window_predict(
    model,
    image,
    window=(512, 512),
    overlap=1 / 3,
    batch_size=4,
    weighting="uniform",
    padding="reflect",
    scales=(1.0,),
    flip=False,
    output="probabilities",
):
    """Segments an image of any size by stitching a model's predictions on overlapping windows.

    For images larger than the crops a model was trained on, as in the "slide" test mode of
    PSPNet (Zhao et al. 2017) and later toolkits: windows of the training size step over the
    image with the given overlap, the last one in each row and column set flush with the border
    (`window_starts`), and each pixel's class probabilities are the weighted average of the
    softmax outputs of the windows that contain it (`window_weights`). An image smaller than the
    window along an axis is padded at the bottom/right to the window size, by mirroring
    ("reflect") or with zeros ("constant"), and the padding is cropped from the result. Windows
    run `batch_size` at a time and their probabilities are added into a running `(H, W, K)` sum,
    so memory is bounded by the image, that sum and one batch of windows, whatever the image
    size. The model must return outputs the size of its input; for the unpadded U-Net use
    `kseg.inference.overlap_tile_predict`.

    With several `scales` and/or `flip`, the DeepLab v3 averaging of
    `kseg.inference.multiscale.multiscale_predict` is applied at the image level: the whole
    image is resized bilinearly to `floor(size * scale + 0.5)` (and mirrored), tiled with the
    same window, and the stitched probabilities are resized back and averaged with equal weight.

    Args:
        model: a segmentation model mapping `(B, h, w, C)` images to logits `(B, h, w, K)`.
        image: `(H, W, C)` numpy array or tensor, float or uint8, values as the model expects.
        window: window size, an int or `(height, width)`.
        overlap: fraction of the window shared by neighbouring windows, in [0, 1).
        batch_size: windows per model call.
        weighting: "uniform" or "gaussian" (see `window_weights`).
        padding: "reflect" or "constant" (zeros), for images smaller than the window.
        scales: positive image resize factors averaged over; `(1.0,)` for plain tiling.
        flip: also average over the left-right mirrored image.
        output: "probabilities", "logits" (log-probabilities) or "labels" (argmax, int32).

    Returns:
        float32 `(H, W, K)` probabilities or logits, or int32 `(H, W)` labels.

    Example:
        >>> import numpy as np, kseg
        >>> from kseg.inference.sliding_window import sliding_window_predict
        >>> model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny")
        >>> image = np.zeros((100, 70, 3), np.uint8)
        >>> sliding_window_predict(model, image, window=64, overlap=0.25, output="labels").shape
        (100, 70)
    """
    window = validate_size(window, "window")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1). Received: overlap={overlap}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1. Received: batch_size={batch_size}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}. Received: padding={padding!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}. Received: output={output!r}")
    scales = tuple(float(s) for s in np.atleast_1d(scales))
    if not scales or not all(np.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"scales must be one or more positive factors. Received: scales={scales}")
    weights = window_weights(window, weighting)
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or 0 in image.shape:
        raise ValueError(f"image must be one (H, W, C) image. Received: shape={image.shape}")
    height, width, channels = image.shape
    core = _softmax_core(model, channels)

    total = None
    for scale in scales:
        size = tuple(max(int(np.floor(n * scale + 0.5)), 1) for n in (height, width))
        scaled = image if size == (height, width) else tf.image.resize(image, size).numpy()
        for mirrored in (False, True) if flip else (False,):
            source = scaled[:, ::-1] if mirrored else scaled
            probabilities = _stitch(
                core, source, window, overlap, int(batch_size), weights, padding
            )
            if mirrored:
                probabilities = probabilities[:, ::-1]
            if size != (height, width):
                probabilities = tf.image.resize(probabilities, (height, width)).numpy()
            if total is None:
                total = np.ascontiguousarray(probabilities)
            else:
                total += probabilities
    passes = len(scales) * (2 if flip else 1)
    if passes > 1:
        total /= passes
    return probabilities_to_output(total, output)
