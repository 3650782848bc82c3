"""Palettes, colour-coded masks, overlays, legends, panel grids, instance drawings and curves.

Everything works on numpy arrays (tensors are converted) and writes PNGs headless through
Pillow. Training curves (`load_history`, `plot_history`, `read_tensorboard_scalars`) live in
`kseg.curves` and are exported here too.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from kseg.curves import load_history, plot_history, read_tensorboard_scalars  # noqa: F401
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
    path,
    image,
    mask,
    *,
    ground_truth=None,
    palette=None,
    alpha=0.5,
    ignore_label=IGNORE_LABEL,
    class_names=None,
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
        class_names: when given, a legend of these names and their colours (`draw_legend`)
            goes under the picture.

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
    picture = np.concatenate(panels, axis=1)
    if class_names is not None:
        picture = draw_legend(picture, class_names, VOC_PALETTE if palette is None else palette)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path, format="PNG")
    return path


LEGEND_BACKGROUND = (255, 255, 255)
"""Colour of the legend strip behind the class names."""

SWATCH_OUTLINE = (96, 96, 96)
"""Outline of each legend swatch, so black and white classes stay visible on the strip."""


def _legend_font(font_size):
    from PIL import ImageFont

    return ImageFont.load_default(size=font_size)


def legend(class_names, palette, width, *, classes=None, font_size=None):
    """Draw a legend strip: one colour swatch and name per class, wrapped into rows.

    Args:
        class_names: the class names, in label order.
        palette: (num_classes, 3) colours, at least one per name.
        width: width of the strip in pixels; it is widened when one entry needs more.
        classes: labels to list (e.g. those present in an image); default all.
        font_size: text height in pixels; default from `width` (10 to 24), legible when
            the strip sits under an image of 64 pixels.

    Returns:
        A uint8 (height, max(width, widest entry), 3) array on a white background.

    Example:
        >>> strip = kseg.viz.legend(["background", "cat"], kseg.viz.palette(2), 128)
        >>> strip.shape[1], (strip == [128, 0, 0]).all(-1).any()
        (128, np.True_)
    """
    from PIL import ImageDraw

    colors = _as_palette(palette)
    if len(colors) < len(class_names):
        raise ValueError(
            f"The palette has {len(colors)} colours for {len(class_names)} class names."
        )
    labels = range(len(class_names)) if classes is None else [int(c) for c in classes]
    font = _legend_font(font_size or int(np.clip(width // 40, 10, 24)))
    ascent, descent = font.getmetrics()
    line = ascent + descent
    pad = max(2, line // 4)
    entries = [
        (label, pad + line + pad + int(font.getlength(str(class_names[label]))) + pad)
        for label in labels
    ]
    strip_width = max([int(width)] + [size + pad for _, size in entries])
    rows, row, used = [], [], pad
    for label, size in entries:
        if row and used + size > strip_width:
            rows.append(row)
            row, used = [], pad
        row.append((label, used))
        used += size
    rows.append(row)
    height = len(rows) * (line + pad) + pad
    strip = Image.new("RGB", (strip_width, height), LEGEND_BACKGROUND)
    pen = ImageDraw.Draw(strip)
    for index, row in enumerate(rows):
        top = pad + index * (line + pad)
        for label, left in row:
            swatch = [left + pad, top, left + pad + line - 1, top + line - 1]
            pen.rectangle(swatch, fill=tuple(int(c) for c in colors[label]), outline=SWATCH_OUTLINE)
            text_left = left + 2 * pad + line
            pen.text((text_left, top), str(class_names[label]), fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def _stack_with_legend(picture, strip):
    """`picture` above `strip`, both padded on the right with the legend background."""
    width = max(picture.shape[1], strip.shape[1])
    parts = []
    for part in (picture, strip):
        padded = np.empty((part.shape[0], width, 3), np.uint8)
        padded[...] = LEGEND_BACKGROUND
        padded[:, : part.shape[1]] = part
        parts.append(padded)
    return np.concatenate(parts, axis=0)


def draw_legend(image, class_names, palette, *, classes=None, font_size=None):
    """Append a legend of class names and colours under an image.

    Args:
        image: RGB (H, W, 3) or grayscale (H, W) / (H, W, 1), uint8 or float in [0, 255].
        class_names: the class names, in label order.
        palette: (num_classes, 3) colours, as used to draw the image.
        classes: labels to list; default all.
        font_size: text height in pixels; default from the image width.

    Returns:
        A uint8 (H + legend height, W', 3) array: the image on top, unchanged, and the legend
        strip of `legend(class_names, palette, W)` under it (W' > W only when one entry is
        wider than the image).

    Example:
        >>> image = np.zeros((32, 48, 3), np.uint8)
        >>> drawn = kseg.viz.draw_legend(image, ["road", "car"], [[128, 64, 128], [64, 0, 128]])
        >>> drawn.shape[0] > 32, (drawn[:32, :48] == image).all()
        (True, np.True_)
    """
    picture = _as_rgb_image(image)
    if picture.ndim != 3:
        raise ValueError(f"draw_legend takes one image (H, W). Received: shape={picture.shape}")
    strip = legend(class_names, palette, picture.shape[1], classes=classes, font_size=font_size)
    return _stack_with_legend(picture, strip)


def compose_panels(
    rows, class_names=None, palette=None, *, titles=None, classes=None, gap=2, font_size=None
):
    """Lay out panels in a grid, with optional column titles and a legend underneath.

    Each row holds RGB panels (for instance image | prediction | ground truth, the latter two
    from `overlay` or `colorize`); a cell is as tall as its row's tallest panel and as wide as
    its column's widest panel (or title), panels placed at its top-left corner.

    Args:
        rows: a sequence of rows, each a sequence of (H, W, 3) or grayscale images.
        class_names: class names for a legend under the grid; None draws none.
        palette: (num_classes, 3) colours of the legend (needed with `class_names`).
        titles: optional column titles written above the first row.
        classes: labels the legend lists; default all.
        gap: white pixels between cells.
        font_size: text height of the titles and legend; default from the grid width.

    Returns:
        A uint8 (height, width, 3) array.

    Example:
        >>> image = np.zeros((16, 24, 3), np.uint8)
        >>> kseg.viz.compose_panels([[image, image], [image, image]], gap=2).shape
        (34, 50, 3)
    """
    from PIL import ImageDraw

    grid = [[_as_rgb_image(panel) for panel in row] for row in rows]
    if not grid or not all(grid):
        raise ValueError("compose_panels needs at least one row, each with at least one panel.")
    columns = max(len(row) for row in grid)
    heights = [max(panel.shape[0] for panel in row) for row in grid]
    widths = [max(row[j].shape[1] for row in grid if j < len(row)) for j in range(columns)]
    size = font_size or int(np.clip(sum(widths) // (40 * columns), 10, 24))
    font = _legend_font(size)
    title_height = 0
    if titles is not None:
        titles = [str(title) for title in titles][:columns]
        ascent, descent = font.getmetrics()
        title_height = ascent + descent + 2 * gap
        # A column is widened to its title rather than the title cut.
        for j, title in enumerate(titles):
            widths[j] = max(widths[j], int(np.ceil(font.getlength(title))) + 2 * gap)
    lefts = np.cumsum([0] + [w + gap for w in widths])
    total_width = int(lefts[-1] - gap)
    tops = np.cumsum([title_height] + [h + gap for h in heights])
    canvas = np.empty((int(tops[-1] - gap), total_width, 3), np.uint8)
    canvas[...] = LEGEND_BACKGROUND
    for i, row in enumerate(grid):
        for j, panel in enumerate(row):
            top, left = int(tops[i]), int(lefts[j])
            canvas[top : top + panel.shape[0], left : left + panel.shape[1]] = panel
    if titles is not None:
        drawn = Image.fromarray(canvas)
        pen = ImageDraw.Draw(drawn)
        for j, title in enumerate(titles):
            pen.text((int(lefts[j]) + gap, gap), title, fill=(0, 0, 0), font=font)
        canvas = np.asarray(drawn)
    if class_names is None:
        return canvas
    if palette is None:
        raise ValueError("compose_panels draws a legend from class_names and a palette.")
    strip = legend(class_names, palette, total_width, classes=classes, font_size=size)
    return _stack_with_legend(canvas, strip)


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
