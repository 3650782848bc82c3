"""Max pooling that remembers where each maximum was, and the unpooling that puts it back."""

import keras
import tensorflow as tf
from keras import ops

from kseg.validation import validate_choice, validate_positive_int

_PADDINGS = ("valid", "same")


def _assert(condition, *message_and_values):
    # A bare Assert op: tf.debugging's asserts wrap it in a cond, whose Merge node grappler's
    # loop optimizer then reports it has to skip.
    return tf.raw_ops.Assert(condition=condition, data=list(message_and_values), summarize=8)


def _pooled_length(length, pool_size, strides, padding):
    if length is None:
        return None
    if padding == "same":
        return -(-length // strides)
    return (length - pool_size) // strides + 1


_INDEX_FORMATS = ("flat", "window")


def _output_height_width(reference, dtype):
    # The reference is either the pre-pooling tensor or its (height, width).
    if reference.shape.rank == 1:
        return tf.cast(reference, dtype)
    return tf.shape(reference, out_type=dtype)[1:3]


def _same_shape(pooled_shape, argmax_shape):
    return _assert(
        tf.reduce_all(tf.equal(pooled_shape, argmax_shape)),
        "pooled values and argmax indices must have the same shape. Received: pooled shape=",
        pooled_shape,
        "argmax shape=",
        argmax_shape,
    )


def _indices_fit(indices, limit, output_covers, message, output_size, argmax_shape):
    """Asserts that every index lies in [0, limit) and that the output covers the pooled map."""
    largest = tf.reduce_max(indices)
    smallest = tf.reduce_min(indices)
    return _assert(
        output_covers & (largest < limit) & (smallest >= 0),
        message,
        output_size,
        "argmax shape=",
        argmax_shape,
        "index range=",
        tf.stack([smallest, largest]),
    )


def _static_or_dynamic(tensor, axis):
    # A known channel count must survive the reshapes: TFLite's Conv2D needs it, and a
    # dynamic one would hide it.
    static = tensor.shape[axis]
    return static if static is not None else tf.shape(tensor)[axis]


def _window_argmax(inputs, window, padding):
    """Row-major position of each window's first maximum, for windows that do not overlap."""
    height, width = tf.shape(inputs)[1], tf.shape(inputs)[2]
    if padding == "same":
        # TensorFlow's "same" puts the smaller half of the padding before. Padding with the
        # dtype's lowest finite value keeps it from winning a window, unless the input itself
        # holds that value or -inf there (the pooled value is max_pool2d's either way).
        pad_height = -(-height // window) * window - height
        pad_width = -(-width // window) * window - width
        inputs = tf.pad(
            inputs,
            [[0, 0], [pad_height // 2, pad_height - pad_height // 2],
             [pad_width // 2, pad_width - pad_width // 2], [0, 0]],
            constant_values=inputs.dtype.min,
        )  # fmt: skip
    else:
        inputs = inputs[:, : height // window * window, : width // window * window]
    stacked = tf.nn.space_to_depth(inputs, window)
    channels = _static_or_dynamic(inputs, 3)
    # space_to_depth orders each window's values row-major ahead of the channel, so axis 1
    # below runs over the window positions 0..k*k-1.
    positions = tf.argmax(
        tf.reshape(stacked, [-1, window * window, channels]), axis=1, output_type=tf.int32
    )
    shape = tf.shape(stacked)
    return tf.reshape(positions, [shape[0], shape[1], shape[2], channels])


def _window_unpool(values, positions, window, height_width):
    """Writes each value at its window position, then crops or zero-pads to `height_width`."""
    shape = tf.shape(values)
    channels = _static_or_dynamic(values, 3)
    one_hot = tf.one_hot(
        tf.reshape(positions, [-1, channels]), window * window, axis=1, dtype=values.dtype
    )
    spread = one_hot * tf.reshape(values, [-1, 1, channels])
    spread = tf.reshape(spread, [shape[0], shape[1], shape[2], window * window * channels])
    full = tf.nn.depth_to_space(spread, window)
    # A "same" pooling padded the grid by less than one window, its smaller half before;
    # a "valid" one (or a larger requested size) leaves rows and columns to fill with zeros.
    covered = shape[1:3] * window
    excess = tf.maximum(covered - height_width, 0)
    kept = tf.minimum(covered, height_width)
    start = excess // 2
    full = tf.slice(full, [0, start[0], start[1], 0], [-1, kept[0], kept[1], -1])
    missing = tf.maximum(height_width - covered, 0)
    full = tf.pad(full, [[0, 0], [0, missing[0]], [0, missing[1]], [0, 0]])
    # Padding by computed amounts leaves every dimension unknown to TFLite's converter, whose
    # Conv2D then has no built-in kernel; the reshape states the channel count again.
    return tf.reshape(full, [shape[0], height_width[0], height_width[1], channels])


@keras.saving.register_keras_serializable(package="kseg")
class MaxPoolingWithArgmax2D(keras.layers.Layer):
    """Max pooling that also returns where every maximum was.

    SegNet (Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional
    Encoder-Decoder Architecture for Image Segmentation", TPAMI 2017) keeps the
    max-pooling indices of each encoder stage and lets the decoder upsample by
    writing values back to those positions (`kseg.layers.MaxUnpooling2D`).
    Two index formats are offered:

    - `"flat"` (default): `tf.nn.max_pool_with_argmax` with the batch folded
      in: the maximum of output `(b, i, j, c)` sits at input position
      `((b * H + y) * W + x) * C + c`, so the indices address the flattened
      input tensor directly and any window and stride work. TFLite has no
      built-in for it (TF Select only).
    - `"window"`: the position of the maximum inside its own window,
      `dy * pool_size + dx` in `0 .. pool_size**2 - 1`, the first maximum on
      ties as `max_pool_with_argmax` picks. This is the storage the paper
      describes ("storing only the max-pooling indices ... 2 bits for each
      2x2 pooling window", Section 3). It needs non-overlapping windows
      (`pool_size == strides`) and is computed with `space_to_depth` and
      `argmax`, which TFLite runs with built-in kernels.

    `"valid"` padding drops a trailing odd row or column as PyTorch's
    `max_pool2d` does; `"same"` padding keeps it, which lets a decoder restore
    any input size exactly.

    Args:
        pool_size: square pooling window.
        strides: pooling stride; must equal `pool_size` for `"window"` indices.
        padding: `"valid"` or `"same"`.
        index_format: `"flat"` or `"window"`, as above.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tuple `(pooled, argmax)`: the pooled tensor `(B, h, w, C)` in the
        compute dtype and indices of the same shape, int64 for `"flat"` and
        int32 for `"window"`.

    Example:
        >>> import keras, kseg
        >>> x = keras.Input((None, None, 8))
        >>> pooled, argmax = kseg.layers.MaxPoolingWithArgmax2D()(x)
        >>> pooled.shape, argmax.dtype
        ((None, None, None, 8), 'int64')
        >>> window = kseg.layers.MaxPoolingWithArgmax2D(index_format="window")
        >>> window(x)[1].dtype
        'int32'
    """

    def __init__(self, pool_size=2, strides=2, padding="valid", index_format="flat", **kwargs):
        super().__init__(**kwargs)
        pool_size = validate_positive_int(pool_size, "pool_size")
        strides = validate_positive_int(strides, "strides")
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}. Received: padding={padding!r}")
        if (
            validate_choice(index_format, "index_format", _INDEX_FORMATS) == "window"
            and pool_size != strides
        ):
            raise ValueError(
                "index_format='window' needs non-overlapping windows, pool_size == strides; "
                "use index_format='flat' for other strides. "
                f"Received: pool_size={pool_size}, strides={strides}"
            )
        self.pool_size = pool_size
        self.strides = strides
        self.padding = padding
        self.index_format = index_format

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "MaxPoolingWithArgmax2D takes 4-D inputs (B, H, W, C). "
                f"Received: input shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        # The values come from a plain max pool in both formats, so they (and their gradient)
        # do not depend on the index format.
        pooled = tf.nn.max_pool2d(inputs, self.pool_size, self.strides, self.padding.upper())
        if self.index_format == "window":
            argmax = _window_argmax(inputs, self.pool_size, self.padding)
            return pooled, tf.stop_gradient(argmax)
        # MaxPoolWithArgmax rejects an empty tensor; one zero image stands in for an empty
        # batch and is sliced off again, so an empty batch gives empty outputs like MaxPool.
        batch = tf.shape(inputs)[0]
        may_be_empty = inputs.shape[0] is None or inputs.shape[0] == 0
        nonempty = inputs
        if may_be_empty:
            stand_in = tf.maximum(1 - batch, 0)
            nonempty = tf.pad(inputs, [[0, stand_in], [0, 0], [0, 0], [0, 0]])
        # Only the indices are taken from max_pool_with_argmax. Grappler's arithmetic optimizer
        # swaps a max pool with a monotonic op feeding only it (BN -> ReLU -> pool becomes
        # pool -> ReLU) and, for MaxPoolWithArgmax, rewires the int64 argmax consumers to the
        # float ReLU output; the graph then fails to optimise ("Ignoring multi-device function
        # optimization failure ... expected int64") and the whole function runs unoptimised.
        # Two consumers of the input rule the swap out; the maximum is the same value either way.
        _, argmax = tf.nn.max_pool_with_argmax(
            nonempty,
            ksize=self.pool_size,
            strides=self.strides,
            padding=self.padding.upper(),
            output_dtype=tf.int64,
            include_batch_in_index=True,
        )
        if may_be_empty:
            argmax = argmax[:batch]
        # The argmax has no gradient; stopping it keeps it out of autodiff bookkeeping.
        return pooled, tf.stop_gradient(argmax)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        shape = (
            batch,
            _pooled_length(height, self.pool_size, self.strides, self.padding),
            _pooled_length(width, self.pool_size, self.strides, self.padding),
            channels,
        )
        return shape, shape

    def compute_output_spec(self, inputs):
        pooled_shape, argmax_shape = self.compute_output_shape(inputs.shape)
        return (
            keras.KerasTensor(pooled_shape, dtype=self.compute_dtype),
            keras.KerasTensor(
                argmax_shape, dtype="int32" if self.index_format == "window" else "int64"
            ),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pool_size": self.pool_size,
                "strides": self.strides,
                "padding": self.padding,
                "index_format": self.index_format,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class MaxUnpooling2D(keras.layers.Layer):
    """Writes pooled values back to the positions their maxima came from; zeros elsewhere.

    The decoder's upsampling of SegNet (Badrinarayanan, Kendall & Cipolla,
    TPAMI 2017): it needs no learned weights and restores boundary detail,
    since each value returns to the exact pixel that won its pooling window.
    Indices follow `kseg.layers.MaxPoolingWithArgmax2D` in the same
    `index_format`: `"flat"` ones address the flattened output
    (`((b * H + y) * W + x) * C + c`) and are written there; a maximum
    that overlapping windows share is written back once, as PyTorch's
    `MaxUnpool2d` does. `"window"` ones give the position
    `dy * pool_size + dx` inside each non-overlapping window, the paper's
    2 bits per 2x2 window; they are expanded with a one-hot and
    `depth_to_space`, which TFLite runs with built-in kernels.
    The output's height and width are those of a reference tensor (the
    encoder's tensor before pooling), so sizes the pooling rounded down or
    padded up come back exactly.

    Args:
        index_format: `"flat"` (default) or `"window"`, as the pooling made them.
        pool_size: the pooling window, used by `"window"` indices only.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        Called on `[pooled, argmax, reference]`, where `reference` is a tensor
        `(B, H, W, ...)` or an int tensor `[H, W]`: a tensor
        `(B, H, W, C)` in the compute dtype.

    Example:
        >>> import keras, kseg
        >>> x = keras.Input((None, None, 8))
        >>> pooled, argmax = kseg.layers.MaxPoolingWithArgmax2D()(x)
        >>> kseg.layers.MaxUnpooling2D()([pooled, argmax, x]).shape
        (None, None, None, 8)
        >>> pool = kseg.layers.MaxPoolingWithArgmax2D(padding="same", index_format="window")
        >>> pooled, positions = pool(x)
        >>> kseg.layers.MaxUnpooling2D(index_format="window")([pooled, positions, x]).shape
        (None, None, None, 8)
    """

    def __init__(self, index_format="flat", pool_size=2, **kwargs):
        super().__init__(**kwargs)
        self.index_format = validate_choice(index_format, "index_format", _INDEX_FORMATS)
        self.pool_size = validate_positive_int(pool_size, "pool_size")

    def _split(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 3:
            raise ValueError(
                "MaxUnpooling2D takes [pooled, argmax, reference_or_output_size]. "
                f"Received: inputs={inputs!r}"
            )
        return inputs

    def build(self, input_shape):
        pooled_shape, argmax_shape, _ = self._split(input_shape)
        if len(pooled_shape) != 4 or len(argmax_shape) != 4:
            raise ValueError(
                "pooled values and argmax must be 4-D (B, h, w, C). "
                f"Received: pooled shape={tuple(pooled_shape)}, argmax shape={tuple(argmax_shape)}"
            )
        for known_pooled, known_argmax in zip(pooled_shape, argmax_shape):
            if (
                known_pooled is not None
                and known_argmax is not None
                and known_pooled != known_argmax
            ):
                raise ValueError(
                    "pooled values and argmax indices must have the same shape. Received: "
                    f"pooled shape={tuple(pooled_shape)}, argmax shape={tuple(argmax_shape)}"
                )
        reference_shape = input_shape[2]
        if len(reference_shape) == 4:
            for axis in (1, 2):
                output_size, pooled_size = reference_shape[axis], pooled_shape[axis]
                if None not in (output_size, pooled_size) and output_size < pooled_size:
                    raise ValueError(
                        "the unpooled output cannot be smaller than the pooled map its indices "
                        f"came from. Received: output (reference) shape={tuple(reference_shape)}, "
                        f"argmax shape={tuple(argmax_shape)}"
                    )
                if (
                    self.index_format == "window"
                    and None not in (output_size, pooled_size)
                    and output_size <= (pooled_size - 1) * self.pool_size
                ):
                    raise ValueError(
                        "the unpooled output would crop away whole pooling windows: with "
                        f"pool_size={self.pool_size} it needs more than (h - 1) * "
                        f"{self.pool_size} rows and columns. Received: output (reference) "
                        f"shape={tuple(reference_shape)}, argmax shape={tuple(argmax_shape)}"
                    )

    def call(self, inputs):
        pooled, argmax, reference = self._split(inputs)
        if not argmax.dtype.is_integer:
            raise TypeError(
                f"argmax must hold integer indices. Received: argmax dtype={argmax.dtype}"
            )
        reference = tf.convert_to_tensor(reference)
        if self.index_format == "window":
            return self._unpool_windows(pooled, argmax, reference)
        pooled_shape = tf.shape(pooled, out_type=tf.int64)
        argmax_shape = tf.shape(argmax, out_type=tf.int64)
        same_shape = _same_shape(pooled_shape, argmax_shape)
        height_width = _output_height_width(reference, tf.int64)
        output_shape = tf.concat([pooled_shape[:1], height_width, pooled_shape[3:]], axis=0)
        flat_size = tf.reduce_prod(output_shape)
        flat_argmax = tf.reshape(tf.cast(argmax, tf.int64), (-1, 1))
        fits = _indices_fit(
            flat_argmax,
            flat_size,
            tf.reduce_all(height_width >= argmax_shape[1:3]),
            "argmax indices do not fit the unpooled output, which must be at least as large as the "
            "pooled map and hold every index. Received: output shape=",
            output_shape,
            argmax_shape,
        )
        with tf.control_dependencies([same_shape, fits]):
            # Overlapping windows can share a maximum: every copy carries the same value, so
            # writing (not adding, as scatter_nd would) puts it back once, as PyTorch's
            # MaxUnpool2d does. The gradient with respect to the values is a gather at the
            # same indices.
            values = tf.reshape(pooled, (-1,))
            flat = tf.tensor_scatter_nd_update(
                tf.zeros(tf.reshape(flat_size, (1,)), values.dtype), flat_argmax, values
            )
        return ops.reshape(flat, output_shape)

    def _unpool_windows(self, pooled, positions, reference):
        window = self.pool_size
        pooled_shape = tf.shape(pooled)
        positions_shape = tf.shape(positions)
        height_width = _output_height_width(reference, tf.int32)
        same_shape = _same_shape(pooled_shape, positions_shape)
        positions = tf.cast(positions, tf.int32)
        fits = _indices_fit(
            positions,
            window * window,
            tf.reduce_all(height_width > (pooled_shape[1:3] - 1) * window),
            f"window argmax indices do not fit: each must lie in [0, {window * window}) "
            f"(pool_size={window}) and the output must cover every pooled window. "
            "Received: output size=",
            height_width,
            positions_shape,
        )
        with tf.control_dependencies([same_shape, fits]):
            return _window_unpool(pooled, positions, window, height_width)

    def compute_output_shape(self, input_shape):
        pooled_shape, _, reference_shape = self._split(input_shape)
        if len(reference_shape) == 1:
            return (pooled_shape[0], None, None, pooled_shape[-1])
        return (pooled_shape[0], reference_shape[1], reference_shape[2], pooled_shape[-1])

    def compute_output_spec(self, inputs):
        shape = self.compute_output_shape([tensor.shape for tensor in self._split(inputs)])
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"index_format": self.index_format, "pool_size": self.pool_size})
        return config
