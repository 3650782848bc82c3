"""RoIAlign: bilinear pooling of a fixed-size grid from each box, on one or several levels."""

import keras
import tensorflow as tf

from kseg.validation import validate_positive_int

_FEATURE_RANK = 4
_BOX_RANK = 3


def _output_hw(output_size):
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise ValueError(
                "output_size must be an int or a pair (height, width). "
                f"Received: output_size={output_size!r}"
            )
        pair = tuple(output_size)
    else:
        pair = (output_size, output_size)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(
            f"output_size must hold positive integers. Received: output_size={output_size!r}"
        )
    return pair


def _check_sampling_ratio(sampling_ratio):
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
        raise TypeError(
            f"sampling_ratio must be an integer >= 1. Received: sampling_ratio={sampling_ratio!r}"
        )
    if sampling_ratio == 0:
        raise ValueError(
            "sampling_ratio=0 (torchvision's adaptive ceil(roi_size / output_size) samples per "
            "bin) needs a different sample count for every box, which tf.image.crop_and_resize's "
            "single static crop size cannot express. Pass a fixed sampling_ratio >= 1 instead "
            "(2 is the usual choice). Received: sampling_ratio=0"
        )
    return validate_positive_int(sampling_ratio, "sampling_ratio")


def _check_boxes_shape(shape, name="boxes"):
    if shape.rank is not None and (shape.rank != _BOX_RANK or shape[-1] not in (None, 4)):
        raise ValueError(
            f"{name} must have shape (batch, num_boxes, 4) as [y1, x1, y2, x2]. "
            f"Received: {name}.shape={tuple(shape)}"
        )


def _check_features_shape(shape, name="features"):
    if shape.rank is not None and shape.rank != _FEATURE_RANK:
        raise ValueError(
            f"{name} must have shape (batch, height, width, channels). "
            f"Received: {name}.shape={tuple(shape)}"
        )


def roi_align_boxes(
    features, boxes, box_indices, output_size, sampling_ratio, aligned, spatial_scale
):
    """Pools an `output_size` grid from every box of a flat box list, in float32.

    Each output bin averages `sampling_ratio x sampling_ratio` bilinear samples at
    the centres of an even subdivision of the bin (He et al., "Mask R-CNN", ICCV
    2017, Sec. 3), the arithmetic of torchvision's `roi_align`. All
    `(S * sampling_ratio)^2` sample points of a box form one evenly spaced grid,
    so one `tf.image.crop_and_resize` call samples every box and a
    `sampling_ratio x sampling_ratio` average pool forms the bins.

    torchvision reads the edge value for a sample point up to one pixel outside
    the map, points exactly on -1 and on H or W included, and 0 beyond. The map
    is therefore padded by two replicated pixels on each side, so that no point
    torchvision keeps sits on the border of the image `crop_and_resize` samples
    (where the last bit of its own rounding would decide between the edge value
    and 0), and the points torchvision drops are zeroed by a mask computed from
    torchvision's own sample-coordinate formula.

    Args:
        features: `(B, H, W, C)` feature maps.
        boxes: `(K, 4)` boxes `[y1, x1, y2, x2]` in input-image pixels.
        box_indices: `(K,)` int32 image of each box in `features`.
        output_size: `(height, width)` of the pooled grid.
        sampling_ratio: samples per bin along each axis, >= 1.
        aligned: subtract half a feature pixel so a continuous box maps onto
            pixel centres (torchvision `aligned=True`); otherwise box extents
            are clamped to at least one feature pixel, as torchvision does.
        spatial_scale: feature pixels per input pixel.

    Returns:
        `(K, height, width, C)` float32 pooled features.

    Example:
        >>> import tensorflow as tf
        >>> from kseg.layers.roi_align import roi_align_boxes
        >>> pooled = roi_align_boxes(tf.ones((1, 8, 8, 3)), tf.constant([[0., 0., 8., 8.]]),
        ...                          tf.constant([0]), (7, 7), 2, True, 1.0)
        >>> tuple(pooled.shape)
        (1, 7, 7, 3)
    """
    out_h, out_w = output_size
    features = tf.cast(features, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    offset = 0.5 if aligned else 0.0
    start = boxes[:, :2] * spatial_scale - offset
    extent = boxes[:, 2:] * spatial_scale - offset - start
    if not aligned:
        extent = tf.maximum(extent, 1.0)
    samples = tf.constant([out_h * sampling_ratio, out_w * sampling_ratio], tf.float32)
    first = start + 0.5 * extent / samples
    last = start + (samples - 0.5) * extent / samples

    height_width = tf.cast(tf.shape(features)[1:3], tf.float32)
    # The border of two replicated pixels shifts sample coordinates by two; crop_and_resize
    # normalises coordinates by (size - 1) of the image it samples, here H + 3 and W + 3.
    padded_last_index = height_width + 3.0
    normalised = tf.concat([(first + 2.0) / padded_last_index, (last + 2.0) / padded_last_index], 1)
    sampled = tf.image.crop_and_resize(
        _replicate_border(features, 2),
        normalised,
        tf.cast(box_indices, tf.int32),
        [out_h * sampling_ratio, out_w * sampling_ratio],
        method="bilinear",
        extrapolation_value=0.0,
    )
    inside_y = _samples_inside(start[:, 0], extent[:, 0], out_h, sampling_ratio, height_width[0])
    inside_x = _samples_inside(start[:, 1], extent[:, 1], out_w, sampling_ratio, height_width[1])
    sampled *= (inside_y[:, :, None] * inside_x[:, None, :])[..., None]
    if sampling_ratio == 1:
        return sampled
    # A strided average pool forms the bins; on CPU it is an order of magnitude faster than
    # a mean over a (K, S, s, S, s, C) reshape.
    return tf.nn.avg_pool2d(sampled, sampling_ratio, sampling_ratio, "VALID")


def _replicate_border(features, width):
    """`features` with `width` copies of its edge rows and columns on every side."""
    for axis in (1, 2):
        first = tf.gather(features, [0], axis=axis)
        last = tf.gather(features, [tf.shape(features)[axis] - 1], axis=axis)
        features = tf.concat([first] * width + [features] + [last] * width, axis)
    return features


def _samples_inside(start, extent, bins, sampling_ratio, length):
    """1.0 where torchvision samples inside `[-1, length]` along one axis, else 0.0: `(K, n)`.

    The coordinates follow torchvision's expression and order of operations,
    `start + bin * size + (i + 0.5) * size / ratio` in float32, so a point that lands exactly on
    -1 or on `length` is decided as torchvision decides it.
    """
    size = extent / bins
    bin_index = tf.repeat(tf.range(bins, dtype=tf.float32), sampling_ratio)
    sub_index = tf.tile(tf.range(sampling_ratio, dtype=tf.float32) + 0.5, [bins])
    coordinates = (
        start[:, None]
        + bin_index[None, :] * size[:, None]
        + sub_index[None, :] * size[:, None] / float(sampling_ratio)
    )
    return tf.cast((coordinates >= -1.0) & (coordinates <= length), tf.float32)


def assign_levels(
    boxes, canonical_size=224, canonical_level=4, min_level=2, max_level=5, epsilon=None
):
    """Pyramid level of every box by the FPN rule, clamped to the available levels.

    Lin et al., "Feature Pyramid Networks for Object Detection" (CVPR 2017,
    Eq. 1) pool a box of width w and height h from level
    `k = floor(k0 + log2(sqrt(w * h) / 224))` with k0 = 4. The floor is
    evaluated without logarithms: `k >= l` exactly when
    `w * h >= (canonical_size * 2 ** (l - k0)) ** 2`, so boxes of exactly
    224, 448, ... pixels land on their level without rounding error, and empty
    or inverted boxes (no area) take `min_level` instead of a log of zero.

    Args:
        boxes: `(..., 4)` boxes `[y1, x1, y2, x2]` in input-image pixels.
        canonical_size: box size (sqrt of area) that maps to `canonical_level`.
        canonical_level: k0, the level of a `canonical_size` box.
        min_level: lowest level returned.
        max_level: highest level returned.
        epsilon: None for the exact rule above; a number evaluates the formula as
            torchvision's `LevelMapper` does instead, `floor(k0 + log2(sqrt(w * h) / 224) +
            epsilon)` in float32 (torchvision uses 1e-6), for its converted checkpoints.

    Returns:
        int32 tensor `(...)` of levels in `[min_level, max_level]`.

    Example:
        >>> from kseg.layers.roi_align import assign_levels
        >>> assign_levels([[0., 0., 224., 224.], [0., 0., 112., 112.]]).numpy().tolist()
        [4, 3]
    """
    if min_level > max_level:
        raise ValueError(
            f"min_level must not exceed max_level. Received: min_level={min_level}, "
            f"max_level={max_level}"
        )
    boxes = tf.cast(boxes, tf.float32)
    if epsilon is not None:
        sides = tf.sqrt((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))
        log2 = tf.math.log(sides / float(canonical_size)) / tf.math.log(2.0)
        levels = tf.floor(float(canonical_level) + log2 + float(epsilon))
        levels = tf.clip_by_value(levels, float(min_level), float(max_level))
        # sqrt of a negative area is NaN, which torchvision's clamp also keeps; min_level here.
        levels = tf.where(tf.math.is_nan(levels), float(min_level), levels)
        return tf.cast(levels, tf.int32)
    heights = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    widths = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    areas = heights * widths
    levels = tf.fill(tf.shape(areas), tf.constant(min_level, tf.int32))
    for level in range(min_level + 1, max_level + 1):
        threshold = (float(canonical_size) * 2.0 ** (level - canonical_level)) ** 2
        levels += tf.cast(areas >= threshold, tf.int32)
    return levels


@keras.saving.register_keras_serializable(package="kseg")
class RoIAlign(keras.layers.Layer):
    """RoIAlign of Mask R-CNN: a fixed grid of bilinear samples averaged per bin for each box.

    He, Gkioxari, Dollar & Girshick ("Mask R-CNN", ICCV 2017) replace RoIPool's
    quantised bins by bilinear sampling at regular points inside each bin and
    average them. This layer follows torchvision's `roi_align` arithmetic and
    matches it to 1e-4, including boxes that cross the feature map's border
    (sample points up to one pixel outside read the edge value, farther ones
    read 0), empty boxes and, with `aligned=True`, inverted boxes (sampled in
    reverse order, as torchvision does). torchvision's adaptive
    `sampling_ratio=0` is refused: a per-box sample count has no static crop
    size. Inputs are not autocast: box coordinates stay float32 under a
    mixed policy (bfloat16 would round a 500-pixel coordinate to a multiple of
    2); the sampling runs in float32 and the output is cast to the compute
    dtype. Boxes receive no gradient, as in torchvision and Detectron.

    Args:
        output_size: side S of the pooled grid, or a pair `(height, width)`.
        sampling_ratio: bilinear samples per bin along each axis, >= 1.
        aligned: shift by half a feature pixel so box `[0, 0, H, W]` covers
            the whole map (the Detectron2 / torchvision `aligned=True`
            convention); `False` reproduces the original Mask R-CNN mapping.
        spatial_scale: feature pixels per input pixel (1 / stride).
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        Called on `[features (B, h, w, C), boxes (B, N, 4)]` with boxes
        `[y1, x1, y2, x2]` in input-image pixels: `(B, N, S, S, C)` in the
        compute dtype.

    Example:
        >>> import keras, kseg.layers.roi_align
        >>> features = keras.Input((None, None, 16))
        >>> boxes = keras.Input((None, 4))
        >>> pooled = kseg.layers.roi_align.RoIAlign(7, spatial_scale=0.25)([features, boxes])
        >>> pooled.shape
        (None, None, 7, 7, 16)
    """

    def __init__(self, output_size=7, sampling_ratio=2, aligned=True, spatial_scale=1.0, **kwargs):
        # Box coordinates must not be rounded to the compute dtype of a mixed policy.
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self._output_hw = _output_hw(output_size)
        self.output_size = list(output_size) if isinstance(output_size, tuple) else output_size
        self.sampling_ratio = _check_sampling_ratio(sampling_ratio)
        if not isinstance(aligned, bool):
            raise TypeError(f"aligned must be True or False. Received: aligned={aligned!r}")
        self.aligned = aligned
        if not float(spatial_scale) > 0:
            raise ValueError(
                f"spatial_scale must be a positive number. Received: spatial_scale={spatial_scale}"
            )
        self.spatial_scale = float(spatial_scale)

    def _split(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            received = len(inputs) if isinstance(inputs, (list, tuple)) else 1
            raise ValueError(
                f"RoIAlign expects two inputs, [features, boxes]. Received: {received} inputs"
            )
        return inputs

    def call(self, inputs):
        features, boxes = self._split(inputs)
        _check_features_shape(features.shape)
        _check_boxes_shape(boxes.shape)
        boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
        batch = tf.shape(boxes)[0]
        num_boxes = tf.shape(boxes)[1]
        pooled = roi_align_boxes(
            features,
            tf.reshape(boxes, [-1, 4]),
            tf.repeat(tf.range(batch), num_boxes),
            self._output_hw,
            self.sampling_ratio,
            self.aligned,
            self.spatial_scale,
        )
        out_h, out_w = self._output_hw
        pooled = tf.reshape(pooled, [batch, num_boxes, out_h, out_w, tf.shape(features)[3]])
        return tf.cast(pooled, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        features_shape, boxes_shape = self._split(input_shape)
        _check_features_shape(tf.TensorShape(features_shape))
        _check_boxes_shape(tf.TensorShape(boxes_shape))
        return (boxes_shape[0], boxes_shape[1], *self._output_hw, features_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_size": self.output_size,
                "sampling_ratio": self.sampling_ratio,
                "aligned": self.aligned,
                "spatial_scale": self.spatial_scale,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class MultiLevelRoIAlign(keras.layers.Layer):
    """RoIAlign over an FPN: each box pooled from the pyramid level its size selects.

    Lin et al. ("Feature Pyramid Networks for Object Detection", CVPR 2017,
    Eq. 1) assign a box of area w*h to level
    `floor(k0 + log2(sqrt(w * h) / 224))` (see `assign_levels`); Mask R-CNN
    with FPN (He et al., ICCV 2017) pools it there with RoIAlign. Level l has
    stride `2 ** l`, so it is sampled with `spatial_scale = 2 ** -l` and the
    half-pixel `aligned=True` mapping. The work is gathered per level: the
    boxes of each level are selected with `tf.where`, pooled by one
    `crop_and_resize` on that level only, and put back in input order with
    `tf.dynamic_stitch`, so every box is sampled once (not once per level).

    Args:
        output_size: side S of the pooled grid, or a pair `(height, width)`.
        sampling_ratio: bilinear samples per bin along each axis, >= 1.
        canonical_size: box size (sqrt of area) mapped to `canonical_level`.
        canonical_level: k0 of the level rule.
        min_level: level of the first feature map (P2 -> 2).
        max_level: level of the last feature map (P5 -> 5).
        aligned: the half-pixel mapping (True); False is the original Mask R-CNN mapping,
            which torchvision's `MultiScaleRoIAlign` (and so its v1 and v2 Mask R-CNN) uses.
        level_epsilon: None for the exact level rule; torchvision's 1e-6 evaluates it as its
            `LevelMapper` does (see `assign_levels`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        Called on `[P_min, ..., P_max, boxes (B, N, 4)]` (all levels with the
        same channel count C, boxes `[y1, x1, y2, x2]` in input-image pixels):
        `(B, N, S, S, C)` in the compute dtype, rows in the order of the boxes.

    Example:
        >>> import keras, kseg.layers.roi_align
        >>> levels = [keras.Input((None, None, 8)) for _ in range(4)]
        >>> boxes = keras.Input((None, 4))
        >>> layer = kseg.layers.roi_align.MultiLevelRoIAlign(output_size=14)
        >>> layer([*levels, boxes]).shape
        (None, None, 14, 14, 8)
    """

    def __init__(
        self,
        output_size=7,
        sampling_ratio=2,
        canonical_size=224,
        canonical_level=4,
        min_level=2,
        max_level=5,
        aligned=True,
        level_epsilon=None,
        **kwargs,
    ):
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self._output_hw = _output_hw(output_size)
        self.output_size = list(output_size) if isinstance(output_size, tuple) else output_size
        self.sampling_ratio = _check_sampling_ratio(sampling_ratio)
        if not isinstance(aligned, bool):
            raise TypeError(f"aligned must be True or False. Received: aligned={aligned!r}")
        if level_epsilon is not None and not isinstance(level_epsilon, (int, float)):
            raise TypeError(
                f"level_epsilon must be None or a number. Received: level_epsilon={level_epsilon!r}"
            )
        self.aligned = aligned
        self.level_epsilon = None if level_epsilon is None else float(level_epsilon)
        if not float(canonical_size) > 0:
            raise ValueError(
                f"canonical_size must be positive. Received: canonical_size={canonical_size}"
            )
        for name, value in (
            ("canonical_level", canonical_level),
            ("min_level", min_level),
            ("max_level", max_level),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"{name} must be a non-negative integer. Received: {name}={value!r}"
                )
        if min_level > max_level:
            raise ValueError(
                f"min_level must not exceed max_level. Received: min_level={min_level}, "
                f"max_level={max_level}"
            )
        self.canonical_size = canonical_size
        self.canonical_level = canonical_level
        self.min_level = min_level
        self.max_level = max_level

    @property
    def _levels(self):
        return list(range(self.min_level, self.max_level + 1))

    def _split(self, inputs):
        expected = len(self._levels) + 1
        if not isinstance(inputs, (list, tuple)) or len(inputs) != expected:
            received = len(inputs) if isinstance(inputs, (list, tuple)) else 1
            raise ValueError(
                f"MultiLevelRoIAlign expects {expected} inputs: the feature maps of levels "
                f"{self.min_level}..{self.max_level} followed by the boxes. "
                f"Received: {received} inputs"
            )
        return list(inputs[:-1]), inputs[-1]

    def call(self, inputs):
        features, boxes = self._split(inputs)
        for level, feature in zip(self._levels, features):
            _check_features_shape(feature.shape, f"P{level}")
        _check_boxes_shape(boxes.shape)
        boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
        batch = tf.shape(boxes)[0]
        num_boxes = tf.shape(boxes)[1]
        flat_boxes = tf.reshape(boxes, [-1, 4])
        flat_levels = tf.reshape(
            assign_levels(
                boxes,
                self.canonical_size,
                self.canonical_level,
                self.min_level,
                self.max_level,
                self.level_epsilon,
            ),
            [-1],
        )
        image_of_box = tf.repeat(tf.range(batch), num_boxes)
        positions, pooled = [], []
        for level, feature in zip(self._levels, features):
            selected = tf.cast(tf.where(tf.equal(flat_levels, level))[:, 0], tf.int32)
            positions.append(selected)
            pooled.append(
                roi_align_boxes(
                    feature,
                    tf.gather(flat_boxes, selected),
                    tf.gather(image_of_box, selected),
                    self._output_hw,
                    self.sampling_ratio,
                    self.aligned,
                    2.0**-level,
                )
            )
        merged = tf.dynamic_stitch(positions, pooled)
        out_h, out_w = self._output_hw
        merged = tf.reshape(merged, [batch, num_boxes, out_h, out_w, tf.shape(features[0])[3]])
        return tf.cast(merged, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        features_shape, boxes_shape = self._split(input_shape)
        channels = {shape[-1] for shape in features_shape if shape[-1] is not None}
        if len(channels) > 1:
            raise ValueError(
                "Every pyramid level must have the same number of channels. "
                f"Received: channels={[shape[-1] for shape in features_shape]}"
            )
        for level, shape in zip(self._levels, features_shape):
            _check_features_shape(tf.TensorShape(shape), f"P{level}")
        _check_boxes_shape(tf.TensorShape(boxes_shape))
        return (boxes_shape[0], boxes_shape[1], *self._output_hw, features_shape[0][-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_size": self.output_size,
                "sampling_ratio": self.sampling_ratio,
                "canonical_size": self.canonical_size,
                "canonical_level": self.canonical_level,
                "min_level": self.min_level,
                "max_level": self.max_level,
                "aligned": self.aligned,
                "level_epsilon": self.level_epsilon,
            }
        )
        return config
