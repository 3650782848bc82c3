"""Pixel counts per class and the median-frequency class weights of Eigen & Fergus (2015).

Eigen & Fergus (ICCV 2015) weight each pixel of class c by `median_freq / freq(c)`, where
`freq(c)` is the number of pixels of class c divided by the total number of pixels in the
images where c is present, and `median_freq` is the median of these frequencies. SegNet
(Badrinarayanan et al., TPAMI 2017) trains CamVid with it. Rare classes get weights above 1,
frequent ones below.
"""

import numpy as np

from kseg.validation import IGNORE_LABEL


def class_pixel_counts(dataset, num_classes, ignore_label=IGNORE_LABEL):
    """Pixels of each class, and pixels of the images each class is present in.

    Pixels equal to `ignore_label` are counted in neither; other labels at or above
    `num_classes` are an error.

    Args:
        dataset: a `tf.data.Dataset` of `(image, mask)` pairs (or of masks), unbatched.
        num_classes: number of classes.
        ignore_label: mask value left out.

    Returns:
        A dict of int64 arrays of shape `(num_classes,)`: "class_pixels" (pixels labelled c)
        and "image_pixels" (labelled pixels of the images in which c occurs).

    Raises:
        ValueError: for a label outside `0..num_classes-1` other than `ignore_label`.

    Example:
        >>> masks = tf.data.Dataset.from_tensor_slices(np.array([[[0, 0], [1, 255]]], np.uint8))
        >>> counts = kseg.data.class_pixel_counts(masks, 3)
        >>> counts["class_pixels"].tolist(), counts["image_pixels"].tolist()
        ([2, 1, 0], [3, 3, 0])
    """
    class_pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for element in dataset.as_numpy_iterator():
        mask = element[1] if isinstance(element, tuple) else element
        labels = np.asarray(mask).ravel()
        labels = labels[labels != ignore_label].astype(np.int64)
        outside = labels[(labels < 0) | (labels >= num_classes)]
        if outside.size:
            raise ValueError(
                f"Mask labels must be 0..{num_classes - 1} or {ignore_label} (ignored). "
                f"Received: label {int(outside[0])}"
            )
        counts = np.bincount(labels, minlength=num_classes)
        class_pixels += counts
        # An image counts towards a class's denominator only if the class appears in it.
        image_pixels += (counts > 0) * labels.size
    return {"class_pixels": class_pixels, "image_pixels": image_pixels}


def median_frequency_weights(counts, power=1.0):
    """Median-frequency class weights `(median(freq) / freq(c)) ** power` of `class_pixel_counts`.

    `freq(c)` is class c's pixels over the pixels of the images c occurs in (Eigen & Fergus 2015,
    as SegNet uses them with `power=1`). `power=0.5` softens the weights: rare classes still
    count more, but a handful of their pixels no longer outweighs the common classes.

    Args:
        counts: the dict `class_pixel_counts` returns.
        power: exponent of the ratio; 1 is the published weighting.

    Returns:
        A float64 array of one weight per class.

    Raises:
        ValueError: when a class never occurs (its frequency is 0 and its weight undefined).

    Example:
        >>> counts = {"class_pixels": np.array([6, 2, 1]), "image_pixels": np.array([8, 8, 4])}
        >>> kseg.data.median_frequency_weights(counts).tolist()
        [0.3333333333333333, 1.0, 1.0]
        >>> kseg.data.median_frequency_weights(counts, power=0.5).round(4).tolist()
        [0.5774, 1.0, 1.0]
    """
    class_pixels = np.asarray(counts["class_pixels"], np.float64)
    image_pixels = np.asarray(counts["image_pixels"], np.float64)
    if np.any(class_pixels == 0):
        missing = np.flatnonzero(class_pixels == 0).tolist()
        raise ValueError(
            "Every class must occur in the masks to get a median-frequency weight. "
            f"Received: classes {missing} absent"
        )
    frequency = class_pixels / image_pixels
    return (np.median(frequency) / frequency) ** power
