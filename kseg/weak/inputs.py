"""The inputs the superpixel-based weak methods share: RGB images, image batches, class counts.

ScribbleSup (`kseg.weak.scribblesup`) and the unified framework (`kseg.weak.unified`) work in
NumPy on RGB images in [0, 255] and write uint8 label maps with 255 reserved for unlabelled
pixels; these checks name the argument and what was passed. SLIC and graph cuts come from the
optional `weak` extra, installed with `INSTALL_HINT`.
"""

import numpy as np

INSTALL_HINT = "pip install 'kseg[weak]'"


def validate_rgb_image(image):
    """Returns an RGB image `(H, W, 3)` with values in [0, 255] as float64.

    Args:
        image: array-like `(H, W, 3)`, uint8 or float.

    Returns:
        float64 numpy array `(H, W, 3)`.

    Example:
        >>> from kseg.weak.inputs import validate_rgb_image
        >>> validate_rgb_image(np.zeros((2, 3, 3), np.uint8)).dtype
        dtype('float64')
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"`image` must be an RGB image of shape (H, W, 3). Received: image.shape={image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"`image` must not be empty. Received: image.shape={image.shape}")
    image = image.astype(np.float64)
    if not np.isfinite(image).all():
        raise ValueError("`image` contains NaN or infinite values.")
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 255:
        raise ValueError(
            f"`image` values must be RGB in [0, 255]. Received: values from {low:g} to {high:g}"
        )
    return image


def validate_image_batch(images):
    """Returns a batch of images `(N, H, W, 3)` as a numpy array, its values unchecked.

    Args:
        images: array-like `(N, H, W, 3)`.

    Returns:
        The images as a numpy array.

    Example:
        >>> from kseg.weak.inputs import validate_image_batch
        >>> validate_image_batch(np.zeros((2, 4, 4, 3))).shape
        (2, 4, 4, 3)
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` must be (N, H, W, 3). Received: images.shape={images.shape}")
    return images


def validate_label_map_classes(num_classes):
    """Returns a class count K that fits uint8 label maps beside the label 255, as a Python int.

    Args:
        num_classes: an integer in 1..255.

    Returns:
        `int(num_classes)`.

    Example:
        >>> from kseg.weak.inputs import validate_label_map_classes
        >>> validate_label_map_classes(np.int64(21))
        21
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"`num_classes` must be an integer. Received: num_classes={num_classes!r}")
    if not 1 <= num_classes <= 255:
        raise ValueError(
            "`num_classes` must be in 1..255 (labels are uint8 with 255 reserved). "
            f"Received: num_classes={num_classes}"
        )
    return int(num_classes)
