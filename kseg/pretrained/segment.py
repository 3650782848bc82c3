"""A published semantic model on a photo: its own resize in, labels at the photo's size out.

`segment` runs what `kseg.pretrained.load` returns the way the publisher evaluated it: the
image is resized by the entry's policy (torchvision's segmentation checkpoints: shorter side
520, bilinear with antialiasing), the model's logits are resized back to the photo's size
(bilinear) and the label map is their argmax. `draw` blends those labels over the photo in
the entry's palette with a legend of the classes present.

    >>> labels = kseg.pretrained.segment("deeplabv3_resnet50", "photo.jpg")   # doctest: +SKIP
    >>> picture = kseg.pretrained.draw("deeplabv3_resnet50", "photo.jpg", labels)  # doctest: +SKIP
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from kseg.pretrained.resize import resize_policy


def read_photo(image):
    """An RGB uint8 `(H, W, 3)` array from a path or an array.

    Raises:
        ValueError: for a file that is not an image (naming it) or an array that is not one
            RGB image.

    Example:
        >>> kseg.pretrained.read_photo(np.zeros((4, 6, 3), np.uint8)).shape
        (4, 6, 3)
    """
    if isinstance(image, (str, Path)):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as opened:
                return np.asarray(opened.convert("RGB"))
        except UnidentifiedImageError:
            raise ValueError(f"{image}: not an image file PIL can read") from None
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"segment takes one RGB image (H, W, 3) or a file path. Received: shape={array.shape}"
        )
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return array


def _semantic_entry(name):
    import kseg.pretrained

    entry = kseg.pretrained.get(name)
    if entry.task != "semantic":
        semantic = ", ".join(kseg.pretrained.list_pretrained(task="semantic"))
        raise ValueError(
            f"{name!r} is not a semantic segmentation checkpoint (task {entry.task!r}); "
            f"segment and draw take the semantic ones: {semantic}"
        )
    return entry


def segment(name, image, *, model=None, cache_dir=None):
    """Labels a photo with the published semantic model `name`.

    Args:
        name: a semantic name of `kseg.pretrained.list_pretrained()`.
        image: a file path or an RGB `(H, W, 3)` array in [0, 255].
        model: the model `kseg.pretrained.load(name)` returned, to reuse it over many photos;
            None loads it (downloaded once, then from the cache).
        cache_dir: cache folder instead of the Keras one, when `model` is None.

    Returns:
        An int32 `(H, W)` label map at the photo's own size; label i is
        `kseg.pretrained.get(name).class_names[i]`.

    Raises:
        ValueError: for an instance-segmentation name, an unreadable file or a non-RGB array.

    Example:
        >>> kseg.pretrained.segment("maskrcnn_resnet50_fpn", np.zeros((8, 8, 3), np.uint8))
        Traceback (most recent call last):
        ...
        ValueError: 'maskrcnn_resnet50_fpn' is not a semantic segmentation checkpoint ...
    """
    import kseg.pretrained

    entry = _semantic_entry(name)
    photo = read_photo(image)
    if model is None:
        model = kseg.pretrained.load(name, cache_dir=cache_dir)
    height, width = photo.shape[:2]
    size = resize_policy(entry.resize)(height, width)
    resized = tf.image.resize(
        tf.cast(photo[None], tf.float32), tf.stack(size), method="bilinear", antialias=True
    )
    logits = model(resized, training=False)
    logits = tf.image.resize(tf.cast(logits, tf.float32), (height, width), method="bilinear")
    return np.asarray(tf.argmax(logits[0], axis=-1, output_type=tf.int32))


def draw(name, image, labels, *, alpha=0.5):
    """The photo with `labels` blended over it in the entry's colours, and a legend of them.

    Args:
        name: the semantic checkpoint name the labels came from.
        image: the photo (path or RGB array) `labels` belong to.
        labels: `(H, W)` labels, as `segment` returns.
        alpha: weight of the label colours.

    Returns:
        A uint8 RGB array: the overlay, with the names of the classes present under it.

    Example:
        >>> labels = np.zeros((32, 48), np.int32)
        >>> labels[8:24, 10:30] = 15
        >>> picture = kseg.pretrained.draw("deeplabv3_resnet50", np.zeros((32, 48, 3)), labels)
        >>> picture.shape[0] > 32, picture.dtype
        (True, dtype('uint8'))
    """
    from kseg.cli.pretrained_models import settings_of
    from kseg.viz import draw_legend, overlay

    settings = settings_of(_semantic_entry(name))
    photo = read_photo(image)
    labels = np.asarray(labels)
    present = [int(label) for label in np.unique(labels) if 0 <= label < len(settings.palette)]
    picture = overlay(photo, labels, settings.palette, alpha=alpha)
    return draw_legend(picture, settings.class_names, settings.palette, classes=present)
