"""Palettes, colour-coded masks, overlays, instance drawings and training curves.

Everything works on numpy arrays (tensors are converted) and writes PNGs headless: masks go
through Pillow, plots through a bare `matplotlib.figure.Figure`, which renders with Agg and never
touches pyplot's global backend.
"""

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from kseg.data.camvid import CAMVID_CLASS_NAMES
from kseg.data.camvid import CAMVID_PALETTE as _CAMVID_PALETTE
from kseg.data.voc import VOC_CLASS_NAMES, voc_colormap
from kseg.summary import plot_model_diagram  # noqa: F401  (the diagram belongs with the plots)
from kseg.validation import IGNORE_LABEL

VOC_CLASSES = VOC_CLASS_NAMES
"""The 21 PASCAL VOC class names, background first (the same tuple as kseg.data)."""

CAMVID_CLASSES = CAMVID_CLASS_NAMES
"""The 11 CamVid class names of the SegNet tutorial (the same tuple as kseg.data)."""

VOC_PALETTE = voc_colormap(256)
"""The PASCAL VOC colormap, (256, 3) uint8: 0 background black, 1 aeroplane (128, 0, 0), ...,
15 person (192, 128, 128), and 255 (the "void"/ignore border) (224, 224, 192)."""

CAMVID_PALETTE = _CAMVID_PALETTE
"""The 11 CamVid class colours of the SegNet tutorial (Badrinarayanan et al., 2017), in the order
of CAMVID_CLASSES; label 11 (void) is drawn with the ignore colour."""

IGNORE_COLOR = (224, 224, 192)
"""Colour of ignored pixels: VOC's own colour for label 255, absent from the first 255 entries."""


def palette(num_classes):
    """Return `num_classes` distinct colours from the VOC bit-interleaving rule.

    The first 21 are the PASCAL VOC class colours (Everingham et al., "The PASCAL Visual Object
    Classes Challenge", IJCV 2010); the rule extends to any number of classes, every colour
    distinct (up to 2**24).

    Args:
        num_classes: number of colours, positive.

    Returns:
        A (num_classes, 3) uint8 array.

    Example:
        >>> kseg.viz.palette(3).tolist()
        [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    """
    if not isinstance(num_classes, (int, np.integer)) or not 0 < num_classes <= 2**24:
        raise ValueError(
            f"`num_classes` must be an int in [1, 2**24]. Received: num_classes={num_classes!r}"
        )
    if num_classes <= len(VOC_PALETTE):
        return VOC_PALETTE[:num_classes].copy()
    return voc_colormap(int(num_classes))


def _as_mask(mask):
    mask = np.asarray(mask)
    if mask.ndim >= 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.dtype == bool:
        mask = mask.astype(np.int64)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"A mask must hold integer labels. Received: mask of dtype={mask.dtype}")
    return mask


def _as_palette(colors):
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3 or len(colors) == 0:
        raise ValueError(
            f"A palette must be a (num_classes, 3) array. Received: shape={colors.shape}"
        )
    return colors.astype(np.uint8)


def colorize(mask, palette=None, *, ignore_label=IGNORE_LABEL, ignore_color=IGNORE_COLOR):
    """Turn an integer label mask into an RGB image.

    Args:
        mask: integer labels, shape (..., H, W) (a trailing channel of 1 is dropped).
        palette: (num_classes, 3) colours; defaults to `VOC_PALETTE` (extended when labels
            exceed 255).
        ignore_label: label drawn with `ignore_color`, or None.
        ignore_color: RGB colour of ignored pixels.

    Returns:
        A uint8 array of shape mask.shape + (3,).

    Raises:
        ValueError: when a label (other than `ignore_label`) has no colour in the palette.

    Example:
        >>> kseg.viz.colorize([[0, 15], [255, 1]])[0, 1].tolist()
        [192, 128, 128]
    """
    mask = _as_mask(mask)
    if palette is None:
        highest = int(mask.max(initial=0))
        palette = VOC_PALETTE if highest < len(VOC_PALETTE) else voc_colormap(highest + 1)
    colors = _as_palette(palette)
    ignored = mask == ignore_label if ignore_label is not None else np.zeros(mask.shape, bool)
    labels = mask[~ignored]
    if labels.size and (labels.min() < 0 or labels.max() >= len(colors)):
        bad = labels[(labels < 0) | (labels >= len(colors))][0]
        raise ValueError(
            f"Label value {int(bad)} has no colour in a palette of {len(colors)} colours "
            f"(ignore_label={ignore_label})."
        )
    rgb = colors[np.where(ignored, 0, mask)]
    rgb[ignored] = np.asarray(ignore_color, dtype=np.uint8)
    return rgb


def decolorize(rgb, palette, *, ignore_label=IGNORE_LABEL, ignore_color=IGNORE_COLOR):
    """Turn a colour-coded label image back into integer labels (the inverse of `colorize`).

    Useful for datasets shipped with RGB-coded annotations.

    Args:
        rgb: uint8 array (..., H, W, 3).
        palette: (num_classes, 3) colours, all distinct.
        ignore_label: label given to pixels of `ignore_color`.
        ignore_color: RGB colour of ignored pixels.

    Returns:
        An int32 array of shape rgb.shape[:-1].

    Raises:
        ValueError: when a pixel colour is neither in the palette nor the ignore colour.

    Example:
        >>> kseg.viz.decolorize(kseg.viz.colorize([[3, 255]]), kseg.viz.VOC_PALETTE[:21]).tolist()
        [[3, 255]]
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"Expected an RGB image (..., H, W, 3). Received: shape={rgb.shape}")
    colors = _as_palette(palette).astype(np.int64)
    keys = (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]
    if len(np.unique(keys)) != len(keys):
        raise ValueError(
            "The palette has repeated colours, so labels cannot be recovered from them."
        )
    pixels = rgb.astype(np.int64)
    pixel_keys = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    order = np.argsort(keys)
    position = np.clip(np.searchsorted(keys[order], pixel_keys), 0, len(keys) - 1)
    found = keys[order][position] == pixel_keys
    labels = order[position].astype(np.int32)
    if ignore_label is not None:
        r, g, b = ignore_color
        ignored = pixel_keys == ((r << 16) | (g << 8) | b)
        labels[ignored & ~found] = ignore_label
        found |= ignored
    if not found.all():
        bad = pixels[~found][0]
        raise ValueError(f"Pixel colour {tuple(int(v) for v in bad)} is not in the palette.")
    return labels


def _as_rgb_image(image):
    image = np.asarray(image)
    if image.ndim >= 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim >= 3 and image.shape[-1] == 3:
        rgb = image
    elif image.ndim >= 2:
        rgb = np.repeat(image[..., None], 3, axis=-1)
    else:
        raise ValueError(
            f"Expected an image (H, W), (H, W, 1) or (H, W, 3). Received: shape={image.shape}"
        )
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.rint(rgb.astype(np.float64)), 0, 255).astype(np.uint8)
    return rgb


def overlay(image, mask, palette=None, alpha=0.5, *, ignore_label=IGNORE_LABEL):
    """Blend a colour-coded mask over an image.

    Args:
        image: RGB (H, W, 3) or grayscale (H, W) / (H, W, 1), uint8 or float in [0, 255]
            (leading batch axes allowed, matching the mask's).
        mask: integer labels (H, W), same spatial size as the image.
        palette: colours for `colorize`; defaults to the VOC palette.
        alpha: weight of the mask colours, in [0, 1]; 0 returns the image.
        ignore_label: label drawn in the ignore colour.

    Returns:
        A uint8 RGB array of the image's shape.

    Example:
        >>> image = np.full((2, 2, 3), 200, np.uint8)
        >>> kseg.viz.overlay(image, np.ones((2, 2), int), alpha=0.5)[0, 0].tolist()
        [164, 100, 100]
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
    rgb = _as_rgb_image(image)
    mask = _as_mask(mask)
    if rgb.shape[:-1] != mask.shape:
        raise ValueError(
            "Image and mask sizes differ. "
            f"Received: image shape={rgb.shape[:-1]}, mask shape={mask.shape}"
        )
    colors = colorize(mask, palette, ignore_label=ignore_label).astype(np.float64)
    blended = (1.0 - alpha) * rgb.astype(np.float64) + alpha * colors
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_overlay(
    path, image, mask, *, ground_truth=None, palette=None, alpha=0.5, ignore_label=IGNORE_LABEL
):
    """Write a PNG of the mask blended over the image, optionally beside the ground truth.

    Args:
        path: output PNG file.
        image: RGB or grayscale image (H, W[, C]), uint8 or float in [0, 255].
        mask: predicted integer labels (H, W).
        ground_truth: optional integer labels (H, W); when given, the PNG is (H, 2W) with the
            prediction overlay on the left and the ground-truth overlay on the right.
        palette: colours for `colorize`; defaults to the VOC palette.
        alpha: weight of the mask colours.
        ignore_label: label drawn in the ignore colour.

    Returns:
        The path written, as a `pathlib.Path`.

    Example:
        >>> image, mask = np.zeros((4, 6, 3)), np.ones((4, 6), int)
        >>> kseg.viz.save_overlay("/tmp/kseg_overlay.png", image, mask).name
        'kseg_overlay.png'
    """
    panels = [overlay(image, mask, palette, alpha, ignore_label=ignore_label)]
    if ground_truth is not None:
        panels.append(overlay(image, ground_truth, palette, alpha, ignore_label=ignore_label))
    if panels[0].ndim != 3:
        raise ValueError(
            f"save_overlay writes one image (H, W). Received: image shape={panels[0].shape[:-1]}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(panels, axis=1)).save(path, format="PNG")
    return path


def draw_instances(image, masks, boxes, captions=None, *, alpha=0.5):
    """Draw detected instances: each mask blended in its own colour, its box outlined.

    Masks arrive best first; they are painted in reverse so that a better detection covers a
    weaker one where they overlap. Instance i gets colour i + 1 of `palette`; pixels outside
    every mask and box keep the image's values.

    Args:
        image: RGB image (H, W, 3), uint8 or float in [0, 255].
        masks: (N, H, W) binary masks, one per detection.
        boxes: (N, 4) boxes `[y1, x1, y2, x2]` in pixels, max exclusive.
        captions: optional N texts (e.g. "dog 0.93") written at each box's top-left corner.
        alpha: weight of the mask colours, in [0, 1].

    Returns:
        A uint8 array (H, W, 3).

    Example:
        >>> image = np.zeros((8, 8, 3), np.uint8)
        >>> masks = np.zeros((1, 8, 8), bool)
        >>> masks[0, 2:6, 2:6] = True
        >>> drawn = kseg.viz.draw_instances(image, masks, [[2, 2, 6, 6]])
        >>> drawn[2, 2].tolist(), drawn[3, 3].tolist(), drawn[7, 7].tolist()
        ([128, 0, 0], [64, 0, 0], [0, 0, 0])
    """
    from PIL import ImageDraw

    rgb = _as_rgb_image(image)
    masks = np.asarray(masks)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if masks.shape[1:] != rgb.shape[:2] or len(masks) != len(boxes):
        raise ValueError(
            "Expected masks (N, H, W) of the image's size and N boxes. Received: image shape="
            f"{rgb.shape}, masks shape={masks.shape}, boxes shape={boxes.shape}"
        )
    if captions is not None and len(captions) != len(boxes):
        raise ValueError(
            f"Expected one caption per box. Received: {len(captions)} captions, {len(boxes)} boxes"
        )
    colours = palette(len(masks) + 1)
    labels = np.zeros(rgb.shape[:2], np.int32)
    for index in reversed(range(len(masks))):
        labels[masks[index] > 0] = index + 1
    blended = overlay(rgb, labels, colours, alpha=alpha)
    drawn = Image.fromarray(np.where(labels[..., None] > 0, blended, rgb).astype(np.uint8))
    pen = ImageDraw.Draw(drawn)
    for index, (y1, x1, y2, x2) in enumerate(boxes):
        colour = tuple(int(c) for c in colours[index + 1])
        # Boxes are continuous with an exclusive max; PIL's rectangle includes its last pixel.
        pen.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour)
        if captions is not None:
            pen.text((x1 + 2, y1 + 1), str(captions[index]), fill=colour)
    return np.asarray(drawn)


def _history_from_csv(path):
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            # A resumed run appends to the same file; the last row of an epoch wins.
            rows[int(float(row.pop("epoch")))] = row
    epochs = np.array(sorted(rows), dtype=np.int64)
    names = sorted({name for row in rows.values() for name in row})
    history = {}
    for name in names:
        values = [rows[e].get(name) for e in epochs]
        # Keras's CSVLogger writes "NA" for a metric an epoch did not log (e.g. val_* columns
        # of a run without validation data).
        keep = [i for i, v in enumerate(values) if v not in (None, "", "NA")]
        if keep:
            history[name] = (epochs[keep], np.array([float(values[i]) for i in keep]))
    return history


def read_tensorboard_scalars(logdir):
    """Read the epoch-level scalars a `keras.callbacks.TensorBoard` wrote under `logdir`.

    Event files are parsed with TensorFlow's record reader and `Event` protos, so the
    `tensorboard` package is not needed. Tags `epoch_<name>` become `<name>` for the "train"
    folder and `val_<name>` for the "validation" folder; several event files (a resumed run) are
    merged, the latest write of a step winning.

    Args:
        logdir: directory searched recursively for `events.out.tfevents.*` files.

    Returns:
        A dict name -> (epochs, values) of numpy arrays sorted by epoch.

    Example:
        >>> sorted(kseg.viz.read_tensorboard_scalars("runs/camvid/logs"))  # doctest: +SKIP
        ['loss', 'mean_iou', 'val_loss', 'val_mean_iou']
    """
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    logdir = Path(logdir)
    points = {}
    for event_file in sorted(logdir.rglob("events.out.tfevents.*")):
        prefix = "val_" if event_file.parent.name == "validation" else ""
        for record in tf.data.TFRecordDataset(str(event_file)):
            event = event_pb2.Event.FromString(record.numpy())
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if not value.tag.startswith("epoch_"):
                    continue
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    number = float(value.simple_value)
                else:
                    continue
                name = prefix + value.tag[len("epoch_") :]
                series = points.setdefault(name, {})
                previous = series.get(event.step)
                if previous is None or event.wall_time >= previous[0]:
                    series[event.step] = (event.wall_time, number)
    return {
        name: (
            np.array(sorted(series), dtype=np.int64),
            np.array([series[step][1] for step in sorted(series)]),
        )
        for name, series in points.items()
    }


def load_history(source):
    """Collect per-epoch training curves from any of the places kseg training leaves them.

    Args:
        source: a `keras.callbacks.History`, its `.history` dict (name -> list of values), a
            `history.csv` written by `keras.callbacks.CSVLogger`, a TensorBoard log directory,
            or a run directory of `kseg.training.fit` (its TensorBoard logs, else its
            history.csv).

    Returns:
        A dict name -> (epochs, values) of numpy arrays, epochs counted from 0.

    Example:
        >>> kseg.viz.load_history({"loss": [1.0, 0.5]})["loss"][0].tolist()
        [0, 1]
    """
    if hasattr(source, "history") and isinstance(source.history, dict):
        epochs = np.asarray(getattr(source, "epoch", None) or [], dtype=np.int64)
        history = {}
        for name, values in source.history.items():
            x = epochs if len(epochs) == len(values) else np.arange(len(values))
            history[name] = (x, np.asarray(values, dtype=np.float64))
        return history
    if isinstance(source, dict):
        return {
            name: (np.arange(len(values)), np.asarray(values, dtype=np.float64))
            for name, values in source.items()
        }
    path = Path(source)
    if path.is_file() and path.suffix == ".csv":
        return _history_from_csv(path)
    if path.is_dir():
        history = read_tensorboard_scalars(path)
        if history:
            return history
        if (path / "history.csv").is_file():
            return _history_from_csv(path / "history.csv")
    raise ValueError(
        "No training history found: expected a History, a dict, a CSVLogger file, or a directory "
        f"with TensorBoard event files or history.csv. Received: source={source!r}"
    )


def plot_history(history_or_logdir, path=None, *, metrics=None, figsize=(10.0, 4.0), dpi=100):
    """Plot training curves, one panel per quantity, training solid and validation dashed.

    Args:
        history_or_logdir: anything `load_history` accepts (History, dict, CSV file, TensorBoard
            log directory, run directory).
        path: optional PNG file to write.
        metrics: names of the quantities to plot (without "val_"), default all of them.
        figsize: figure size in inches; the PNG is figsize * dpi pixels.
        dpi: resolution of the PNG.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:
        >>> logs = {"loss": [1.0, 0.6], "val_loss": [1.1, 0.8]}
        >>> figure = kseg.viz.plot_history(logs, "/tmp/curves.png")
        >>> [axis.get_title() for axis in figure.axes]
        ['loss']
    """
    history = load_history(history_or_logdir)
    names = []
    for name in history:
        base = name.removeprefix("val_")
        if base not in names:
            names.append(base)
    if metrics is not None:
        missing = [m for m in metrics if m not in names]
        if missing:
            raise ValueError(
                f"Unknown metrics {missing}; the history has {names}. Received: metrics={metrics}"
            )
        names = list(metrics)
    else:
        names.sort(key=lambda n: (n != "loss", n))
    if not names:
        raise ValueError(f"The history is empty. Received: {history_or_logdir!r}")

    figure = Figure(figsize=figsize, dpi=dpi)
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    for i, name in enumerate(names):
        axis = figure.add_subplot(rows, columns, i + 1)
        for key, style, label in ((name, "-", "train"), ("val_" + name, "--", "validation")):
            if key in history:
                epochs, values = history[key]
                axis.plot(epochs + 1, values, style, marker="o", markersize=3, label=label)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi, format="png")
    return figure
