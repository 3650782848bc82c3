"""What a user points kseg at: one split of a labelled source, or images to predict on."""

from pathlib import Path

import tensorflow as tf

from kseg.data.augment import resize_pair
from kseg.data.load import describe_source, load_dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
"""The file suffixes `image_files` takes from a folder."""


def load_split(source, split, *, num_classes=None, resize=None, **options):
    """Loads one split of any source `kseg.data.load_dataset` reads, with its `DatasetInfo`.

    Plain image/mask folders declare no class count, so `num_classes` is passed to the loader
    only for them (which then checks every label against it); other sources know their own.

    Args:
        source: "shapes", a VOC or CamVid folder, image/mask folders, "tfds:NAME", ...
        split: the split name, e.g. "train" or "val".
        num_classes: the class count of plain folders; ignored for other sources.
        resize: optional `(height, width)` every pair is resized to, or a function of an
            image's height and width (scalar tensors) giving its size, such as a shorter-side
            policy (`kseg.pretrained.resize.MinSideResize`).
        **options: passed to the loader, e.g. `num_samples=`, `image_size=` for "shapes",
            `mask_values=` for image/mask folders (`"binary"` for 0/255 masks, see
            `kseg.data.folder_dataset`).

    Returns:
        `(dataset, info)`: the `tf.data.Dataset` of `(image, mask)` pairs and its `DatasetInfo`.

    Example:
        >>> dataset, info = kseg.data.load_split("shapes", "val", num_samples=4, image_size=48)
        >>> info.num_classes
        5
    """
    kwargs = dict(options)
    if num_classes is not None and describe_source(source) == "folders":
        # Plain folders declare no class count: given one, the loader checks every label.
        kwargs["num_classes"] = num_classes
    dataset, info = load_dataset(source, split, with_info=True, **kwargs)
    if resize is not None:

        def resized(image, mask):
            size = resize(tf.shape(image)[0], tf.shape(image)[1]) if callable(resize) else resize
            return resize_pair(image, mask, size)

        dataset = dataset.map(resized)
    return dataset, info


def image_files(inputs):
    """Lists the image files named by `inputs`: files as given, folders' images in name order.

    Args:
        inputs: paths of image files (any format PIL reads) or of folders, whose `.png`,
            `.jpg`, `.jpeg` and `.bmp` files are taken.

    Returns:
        A list of `pathlib.Path`.

    Raises:
        FileNotFoundError: naming an input that does not exist, or when no image is found.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("b.png", "a.jpg", "notes.txt"):
        ...     _ = (folder / name).write_bytes(b"")
        >>> [path.name for path in kseg.data.image_files([folder])]
        ['a.jpg', 'b.png']
    """
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"input not found: {item}")
    if not files:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, inputs))}")
    return files
