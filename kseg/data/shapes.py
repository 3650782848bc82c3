"""A procedural segmentation dataset of geometric shapes on textured backgrounds.

Nothing is downloaded: every sample is drawn from a seed with vectorised numpy. Shapes are told
apart by geometry (their colours are random), so a model has to learn shape rather than
colour, while striped, noisy, cloudy and gradient backgrounds act as distractors. Each sample
also carries an instance mask and per-instance classes and boxes for instance segmentation.
"""

from __future__ import annotations

import math
import zlib
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from kseg.data.info import DatasetInfo
from kseg.detection.boxes import numpy_boxes_from_masks
from kseg.validation import IGNORE_LABEL, validate_fraction, validate_positive_int

SHAPES_CLASS_NAMES = ("background", "circle", "square", "triangle", "star")
SHAPES_PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25]], dtype=np.uint8
)
CIRCLE, SQUARE, TRIANGLE, STAR = 1, 2, 3, 4
# Below this side the smallest shapes are a few pixels wide.
SHAPES_MIN_IMAGE_SIZE = 48
_BACKGROUNDS = ("noise", "gradient", "stripes", "clouds")
_STAR_INNER_RATIO = 0.45
# An object keeps at least this share of its own area visible under later objects.
_MIN_VISIBLE_FRACTION = 0.55
_PLACEMENT_TRIES = 20
_AREA_SCALE = {CIRCLE: 1.0, SQUARE: 1.15, TRIANGLE: 1.3, STAR: 1.3}


class ShapesSample(NamedTuple):
    """One rendered sample.

    Attributes:
        image: uint8 `(H, W, 3)`.
        semantic_mask: uint8 `(H, W)`, 0 = background, else the class id.
        instance_mask: uint8 `(H, W)`, 0 = background, instance i (1-based) elsewhere.
        classes: int32 `(N,)`, class id of instance i + 1.
        boxes: float32 `(N, 4)` as `(y_min, x_min, y_max, x_max)` in pixels around the
            *visible* pixels, max exclusive (so `y_max - y_min` is the height in rows).
    """

    image: np.ndarray
    semantic_mask: np.ndarray
    instance_mask: np.ndarray
    classes: np.ndarray
    boxes: np.ndarray


def shapes_info() -> DatasetInfo:
    """Class names and palette of the shapes dataset (5 classes, background included).

    Example:
        >>> kseg.data.shapes_info().class_names
        ('background', 'circle', 'square', 'triangle', 'star')
    """
    return DatasetInfo(len(SHAPES_CLASS_NAMES), SHAPES_CLASS_NAMES, IGNORE_LABEL, SHAPES_PALETTE)


def _image_hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        height = width = int(image_size)
    else:
        height, width = (int(s) for s in image_size)
    if min(height, width) < SHAPES_MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be at least {SHAPES_MIN_IMAGE_SIZE} pixels so shapes are not tiny. "
            f"Received: image_size={image_size!r}"
        )
    return height, width


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    # crc32 keeps the split's stream stable across processes (unlike hash()).
    split_code = zlib.crc32(str(split).encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), split_code, int(index)]))


def _random_colour(rng) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3).astype(np.float32)


def _bilinear_upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly enlarge a channels-first `(C, h, w)` grid to `(C, height, width)`."""
    # TF ops must not run inside the tf.numpy_function that renders samples, hence numpy.

    def axis_weights(cells, size):
        position = np.linspace(0.0, cells - 1.0, size, dtype=np.float32)
        low = np.minimum(position.astype(np.int64), cells - 2)
        return low, position - low

    y_low, y_frac = axis_weights(grid.shape[1], height)
    x_low, x_frac = axis_weights(grid.shape[2], width)
    rows = grid[:, y_low] * (1 - y_frac)[:, None] + grid[:, y_low + 1] * y_frac[:, None]
    return rows[:, :, x_low] * (1 - x_frac) + rows[:, :, x_low + 1] * x_frac


def _blend(first, second, t) -> np.ndarray:
    # Channels-first keeps numpy's inner loops long; (H, W, 3) layouts run several times slower.
    return first[:, None, None] + (second - first)[:, None, None] * t[None]


def _background(rng, height, width, contrast=1.0) -> np.ndarray:
    """A channels-first `(3, H, W)` float32 texture, its variation scaled by `contrast`."""
    kind = _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))]
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    first, second = _random_colour(rng), _random_colour(rng)
    if kind == "noise":
        sigma = rng.uniform(10.0, 35.0)
        image = first[:, None, None] + sigma * rng.standard_normal(
            (3, height, width), dtype=np.float32
        )
    elif kind == "gradient":
        angle = rng.uniform(0.0, 2.0 * math.pi)
        t = math.cos(angle) * xs + math.sin(angle) * ys
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        image = _blend(first, second, t)
    elif kind == "stripes":
        angle = rng.uniform(0.0, math.pi)
        period = rng.uniform(6.0, 20.0)
        phase = math.cos(angle) * xs + math.sin(angle) * ys
        t = 0.5 + 0.5 * np.sin(2.0 * math.pi * phase / period)
        if rng.random() < 0.5:
            t = np.round(t)
        image = _blend(first, second, t)
    else:  # clouds: smooth low-frequency colour noise
        cells = int(rng.integers(3, 7))
        coarse = rng.uniform(0.0, 255.0, size=(3, cells, cells)).astype(np.float32)
        image = _bilinear_upsample(coarse, height, width)
    if contrast != 1.0:
        mean = image.mean(axis=(1, 2), keepdims=True)
        image = mean + contrast * (image - mean)
    return image.astype(np.float32)


def _fan_inside(xs, ys, cx, cy, vertices) -> np.ndarray:
    """Pixels inside a polygon that is star-shaped around (cx, cy), vertices counter-clockwise.

    The polygon is the union of the triangles (centre, v_i, v_i+1); a point lies in such a
    triangle when it is left of all three of its edges.
    """
    centre = np.array([cx, cy], dtype=np.float32)
    start = vertices
    end = np.roll(vertices, -1, axis=0)
    px, py = xs[None], ys[None]

    def left_of(a, b):
        ax, ay = a[:, 0, None, None], a[:, 1, None, None]
        bx, by = b[:, 0, None, None], b[:, 1, None, None]
        return (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= 0

    centres = np.broadcast_to(centre, start.shape)
    inside = left_of(centres, start) & left_of(start, end) & left_of(end, centres)
    return inside.any(axis=0)


def _shape_vertices(kind, cx, cy, radius, angle) -> np.ndarray:
    if kind == SQUARE:
        angles = angle + np.arange(4) * (math.pi / 2)
        radii = np.full(4, radius)
    elif kind == TRIANGLE:
        angles = angle + np.arange(3) * (2 * math.pi / 3)
        radii = np.full(3, radius)
    else:
        angles = angle + np.arange(10) * (math.pi / 5)
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * _STAR_INNER_RATIO)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1).astype(
        np.float32
    )


def _shape_mask(kind, cx, cy, radius, angle, y0, y1, x0, x1) -> np.ndarray:
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    if kind == CIRCLE:
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
    ys, xs = np.broadcast_arrays(ys, xs)
    return _fan_inside(xs, ys, cx, cy, _shape_vertices(kind, cx, cy, radius, angle))


def render_shapes_sample(
    index: int,
    *,
    split: str = "train",
    seed: int = 0,
    image_size=128,
    max_objects: int = 4,
    size_range: tuple[float, float] = (0.10, 0.22),
    background_contrast: float = 1.0,
) -> ShapesSample:
    """Draw sample `index` of a split; the same arguments always give the same bytes.

    Each sample depends only on `(seed, split, index)`, never on which other samples are drawn.

    Args:
        index: sample number.
        split: split name; different names give independent streams.
        seed: global seed.
        image_size: int or `(height, width)`, at least 48.
        max_objects: at most this many shapes (at least one).
        size_range: shape radius range as a fraction of the shorter image side; the defaults
            give circles 26-56 px across in a 128 px image (13-28 px at 64 px), polygons of
            comparable area.
        background_contrast: scales the background texture's variation around its mean
            colour: 1 keeps full-strength textures, smaller values mute them (the demo uses
            0.35 so that a network trained from scratch on a CPU learns within minutes).

    Returns:
        A `ShapesSample`.

    Example:
        >>> sample = kseg.data.render_shapes_sample(0, split="val")
        >>> sample.image.shape, sample.semantic_mask.shape
        ((128, 128, 3), (128, 128))
    """
    height, width = _image_hw(image_size)
    validate_positive_int(max_objects, "max_objects")
    low, high = size_range
    if not 0 < low <= high <= 0.5:
        raise ValueError(
            f"size_range must satisfy 0 < low <= high <= 0.5. Received: size_range={size_range!r}"
        )
    validate_fraction(background_contrast, "background_contrast")
    rng = _rng(seed, split, index)
    image = _background(rng, height, width, background_contrast)
    instance = np.zeros((height, width), dtype=np.int32)
    areas, visible, classes = [], [], []
    side = min(height, width)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = int(rng.integers(1, len(SHAPES_CLASS_NAMES)))
        radius = rng.uniform(low, high) * side
        # Enlarge the polygons so their areas come closer to a circle's of the same nominal
        # size (a triangle inscribed in a circle fills only 41 % of it, a star 42 %).
        radius *= _AREA_SCALE[kind]
        angle = rng.uniform(0.0, 2.0 * math.pi)
        for _ in range(_PLACEMENT_TRIES):
            margin = 0.8 * radius
            cx = rng.uniform(margin, width - margin)
            cy = rng.uniform(margin, height - margin)
            y0, y1 = max(int(cy - radius), 0), min(math.ceil(cy + radius) + 1, height)
            x0, x1 = max(int(cx - radius), 0), min(math.ceil(cx + radius) + 1, width)
            mask = _shape_mask(kind, cx, cy, radius, angle, y0, y1, x0, x1)
            covered = np.bincount(instance[y0:y1, x0:x1][mask], minlength=len(areas) + 1)
            remaining = np.asarray(visible, dtype=np.int64) - covered[1:]
            if np.all(remaining >= _MIN_VISIBLE_FRACTION * np.asarray(areas)):
                break
        else:
            continue
        area = int(mask.sum())
        visible = list(remaining) + [area]
        areas.append(area)
        classes.append(kind)
        instance[y0:y1, x0:x1][mask] = len(areas)
        # A solid colour contrasting with the local background, with an occasional gentle
        # shading so that flat fill alone does not give the class away.
        region = image[:, y0:y1, x0:x1]
        local = region[:, mask].mean(axis=1)
        candidates = rng.uniform(0.0, 255.0, size=(6, 3)).astype(np.float32)
        colour = candidates[np.argmax(np.abs(candidates - local).sum(axis=1))]
        fill = np.broadcast_to(colour[:, None], (3, area))
        if rng.random() < 0.4:
            ys, xs = np.nonzero(mask)
            direction = rng.uniform(0.0, 2.0 * math.pi)
            ramp = math.cos(direction) * (xs + x0 - cx) + math.sin(direction) * (ys + y0 - cy)
            fill = fill * (1.0 + 0.2 * ramp / radius).astype(np.float32)
        region[:, mask] = fill
    noise = rng.standard_normal((height, width), dtype=np.float32)
    image += rng.uniform(2.0, 8.0) * noise
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    image = np.ascontiguousarray(image)

    lookup = np.asarray([0] + classes, dtype=np.uint8)
    semantic = lookup[instance]
    boxes = numpy_boxes_from_masks(instance[None] == np.arange(1, len(classes) + 1)[:, None, None])
    return ShapesSample(
        image, semantic, instance.astype(np.uint8), np.asarray(classes, np.int32), boxes
    )


def shapes_arrays(
    split: str = "train",
    num_samples: int = 1000,
    image_size=128,
    seed: int = 0,
    **render_kwargs,
) -> dict[str, np.ndarray]:
    """Render `num_samples` samples into stacked numpy arrays (images and semantic masks).

    Returns:
        `{"images": uint8 (N, H, W, 3), "masks": uint8 (N, H, W), "instance_masks": uint8
        (N, H, W)}`.

    Example:
        >>> arrays = kseg.data.shapes_arrays("val", num_samples=8, image_size=64)
    """
    samples = [
        render_shapes_sample(i, split=split, seed=seed, image_size=image_size, **render_kwargs)
        for i in range(num_samples)
    ]
    return {
        "images": np.stack([s.image for s in samples]),
        "masks": np.stack([s.semantic_mask for s in samples]),
        "instance_masks": np.stack([s.instance_mask for s in samples]),
    }


def _render_options(max_objects, size_range, background_contrast):
    return {
        "max_objects": max_objects,
        "size_range": size_range,
        "background_contrast": background_contrast,
    }


def _rendered(split, num_samples, image_size, seed, render_kwargs, cache, instances):
    validate_positive_int(num_samples, "num_samples")
    height, width = _image_hw(image_size)

    def render(index):
        s = render_shapes_sample(
            int(index), split=split, seed=seed, image_size=(height, width), **render_kwargs
        )
        if instances:
            return s.image, s.instance_mask, s.classes, s.boxes
        return s.image, s.semantic_mask

    types = (tf.uint8, tf.uint8, tf.int32, tf.float32) if instances else (tf.uint8, tf.uint8)

    def render_graph(index):
        outputs = tf.numpy_function(render, [index], types, stateful=False)
        outputs[0].set_shape([height, width, 3])
        outputs[1].set_shape([height, width])
        if instances:
            outputs[2].set_shape([None])
            outputs[3].set_shape([None, 4])
        return tuple(outputs)

    ds = tf.data.Dataset.range(num_samples).map(
        render_graph, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return ds.cache() if cache else ds


def shapes_dataset(
    split: str = "train",
    num_samples: int = 1000,
    image_size=128,
    seed: int = 0,
    *,
    cache: bool = True,
    max_objects: int = 4,
    size_range: tuple[float, float] = (0.10, 0.22),
    background_contrast: float = 1.0,
) -> tf.data.Dataset:
    """Semantic segmentation of circles, squares, triangles and stars on textured backgrounds.

    A built-in, download-free dataset in the spirit of the synthetic "shapes" sets used to
    smoke-test detection and segmentation code (e.g. the Mask R-CNN shapes demo): 1 to
    `max_objects` shapes of random colour, size, rotation and position, overlapping but each
    at least 55 % visible, on noise, gradient, stripe or cloud backgrounds. Class 0 is the
    background; see `shapes_info()`. Splits are independent streams of the same seed, and
    sample i depends only on `(seed, split, i)`.

    Args:
        split: "train", "val", "test" (or any name: each gives its own stream).
        num_samples: number of samples.
        image_size: int or `(height, width)`.
        seed: global seed.
        cache: keep the rendered uint8 samples in memory after the first pass (about
            `num_samples * 4 * H * W` bytes), so later epochs cost no rendering.
        max_objects: at most this many shapes per image.
        size_range: shape radius range as a fraction of the shorter side.
        background_contrast: strength of the background textures, in [0, 1].

    Returns:
        A `tf.data.Dataset` of `(image, mask)`: float32 `(H, W, 3)` in [0, 255] and int32
        `(H, W)` with values 0..4.

    Example:
        >>> ds = kseg.data.shapes_dataset("train", num_samples=2000, image_size=128)
    """
    options = _render_options(max_objects, size_range, background_contrast)
    ds = _rendered(split, num_samples, image_size, seed, options, cache, instances=False)
    return ds.map(
        lambda image, mask: (tf.cast(image, tf.float32), tf.cast(mask, tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def shapes_instance_dataset(
    split: str = "train",
    num_samples: int = 1000,
    image_size=128,
    seed: int = 0,
    *,
    cache: bool = True,
    max_objects: int = 4,
    size_range: tuple[float, float] = (0.10, 0.22),
    background_contrast: float = 1.0,
) -> tf.data.Dataset:
    """The shapes dataset with instance targets, for instance segmentation (Mask R-CNN).

    Same images as `shapes_dataset` with the same arguments.

    Args:
        split: split name.
        num_samples: number of samples.
        image_size: int or `(height, width)`.
        seed: global seed.
        cache: keep rendered samples in memory after the first pass.
        max_objects: at most this many shapes per image.
        size_range: shape radius range as a fraction of the shorter side.
        background_contrast: strength of the background textures, in [0, 1].

    Returns:
        A `tf.data.Dataset` of `(image, targets)`: image float32 `(H, W, 3)` in [0, 255];
        targets a dict with "instance_mask" int32 `(H, W)` (0 = background, i = instance i),
        "classes" int32 `(N,)` (class of instance i + 1) and "boxes" float32 `(N, 4)` as
        `(y_min, x_min, y_max, x_max)` in pixels, max exclusive. N varies per sample: batch
        with `padded_batch` or `ragged_batch`.

    Example:
        >>> ds = kseg.data.shapes_instance_dataset("val", num_samples=100)
    """
    options = _render_options(max_objects, size_range, background_contrast)
    ds = _rendered(split, num_samples, image_size, seed, options, cache, instances=True)

    def to_targets(image, instance, classes, boxes):
        targets = {"instance_mask": tf.cast(instance, tf.int32), "classes": classes, "boxes": boxes}
        return tf.cast(image, tf.float32), targets

    return ds.map(to_targets, num_parallel_calls=tf.data.AUTOTUNE)
