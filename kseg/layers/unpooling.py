"""Max pooling that remembers where each maximum was, and the unpooling that puts it back."""

import keras
import tensorflow as tf
from keras import ops

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


@keras.saving.register_keras_serializable(package="kseg")
class MaxPoolingWithArgmax2D(keras.layers.Layer):
    """Max pooling that also returns the flat position of every maximum.

    SegNet (Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional
    Encoder-Decoder Architecture for Image Segmentation", TPAMI 2017) keeps the
    max-pooling indices of each encoder stage and lets the decoder upsample by
    writing values back to those positions (`kseg.layers.MaxUnpooling2D`).
    The indices come from `tf.nn.max_pool_with_argmax` with the batch folded
    in: the maximum of output `(b, i, j, c)` sits at input position
    `((b * H + y) * W + x) * C + c`, so the indices address the flattened
    input tensor directly. `"valid"` padding drops a trailing odd row or
    column as PyTorch's `max_pool2d` does; `"same"` padding keeps it, which
    lets a decoder restore any input size exactly.

    Args:
        pool_size: square pooling window.
        strides: pooling stride.
        padding: `"valid"` or `"same"`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tuple `(pooled, argmax)`: the pooled tensor `(B, h, w, C)` in the
        compute dtype and int64 indices of the same shape.

    Example:
        >>> import keras, kseg
        >>> x = keras.Input((None, None, 8))
        >>> pooled, argmax = kseg.layers.MaxPoolingWithArgmax2D()(x)
        >>> pooled.shape, argmax.dtype
        ((None, None, None, 8), 'int64')
    """

    def __init__(self, pool_size=2, strides=2, padding="valid", **kwargs):
        super().__init__(**kwargs)
        if int(pool_size) <= 0:
            raise ValueError(
                f"pool_size must be a positive integer. Received: pool_size={pool_size}"
            )
        if int(strides) <= 0:
            raise ValueError(f"strides must be a positive integer. Received: strides={strides}")
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}. Received: padding={padding!r}")
        self.pool_size = int(pool_size)
        self.strides = int(strides)
        self.padding = padding

    def call(self, inputs):
        # MaxPoolWithArgmax rejects an empty tensor; one zero image stands in for an empty
        # batch and is sliced off again, so an empty batch gives empty outputs like MaxPool.
        batch = tf.shape(inputs)[0]
        may_be_empty = inputs.shape[0] is None or inputs.shape[0] == 0
        nonempty = inputs
        if may_be_empty:
            stand_in = tf.maximum(1 - batch, 0)
            nonempty = tf.pad(inputs, [[0, stand_in], [0, 0], [0, 0], [0, 0]])
        _, argmax = tf.nn.max_pool_with_argmax(
            nonempty,
            ksize=self.pool_size,
            strides=self.strides,
            padding=self.padding.upper(),
            output_dtype=tf.int64,
            include_batch_in_index=True,
        )
        # The values come from a plain max pool, not from max_pool_with_argmax's first output.
        # Grappler's arithmetic optimizer swaps a max pool with a monotonic op feeding only it
        # (BN -> ReLU -> pool becomes pool -> ReLU) and, for MaxPoolWithArgmax, rewires the
        # int64 argmax consumers to the float ReLU output; the graph then fails to optimise
        # ("Ignoring multi-device function optimization failure ... expected int64") and the
        # whole function runs unoptimised. Two consumers of the input rule the swap out; the
        # maximum is the same value either way.
        pooled = tf.nn.max_pool2d(inputs, self.pool_size, self.strides, self.padding.upper())
        # The argmax has no gradient; stopping it keeps it out of autodiff bookkeeping.
        if may_be_empty:
            argmax = argmax[:batch]
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
            keras.KerasTensor(argmax_shape, dtype="int64"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class MaxUnpooling2D(keras.layers.Layer):
    """Writes pooled values back to the positions their maxima came from; zeros elsewhere.

    The decoder's upsampling of SegNet (Badrinarayanan, Kendall & Cipolla,
    TPAMI 2017): it needs no learned weights and restores boundary detail,
    since each value returns to the exact pixel that won its pooling window.
    Indices follow `kseg.layers.MaxPoolingWithArgmax2D` (batch folded in,
    `((b * H + y) * W + x) * C + c`). The output's height and width are those
    of a reference tensor (the encoder's tensor before pooling), so sizes the
    pooling rounded down come back exactly. Overlapping windows whose maxima
    coincide add up at that position.

    Args:
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
    """

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

    def call(self, inputs):
        pooled, argmax, reference = self._split(inputs)
        if not argmax.dtype.is_integer:
            raise TypeError(
                f"argmax must hold integer indices. Received: argmax dtype={argmax.dtype}"
            )
        pooled_shape = tf.shape(pooled, out_type=tf.int64)
        argmax_shape = tf.shape(argmax, out_type=tf.int64)
        same_shape = _assert(
            tf.reduce_all(tf.equal(pooled_shape, argmax_shape)),
            "pooled values and argmax indices must have the same shape. Received: pooled shape=",
            pooled_shape,
            "argmax shape=",
            argmax_shape,
        )
        reference = tf.convert_to_tensor(reference)
        if reference.shape.rank == 1:
            height_width = tf.cast(reference, tf.int64)
        else:
            height_width = tf.shape(reference, out_type=tf.int64)[1:3]
        output_shape = tf.concat([pooled_shape[:1], height_width, pooled_shape[3:]], axis=0)
        flat_size = tf.reduce_prod(output_shape)
        flat_argmax = tf.reshape(tf.cast(argmax, tf.int64), (-1, 1))
        largest = tf.reduce_max(flat_argmax)
        smallest = tf.reduce_min(flat_argmax)
        fits = _assert(
            tf.reduce_all(height_width >= argmax_shape[1:3])
            & (largest < flat_size)
            & (smallest >= 0),
            "argmax indices do not fit the unpooled output, which must be at least as large as the "
            "pooled map and hold every index. Received: output shape=",
            output_shape,
            "argmax shape=",
            argmax_shape,
            "index range=",
            tf.stack([smallest, largest]),
        )
        with tf.control_dependencies([same_shape, fits]):
            # scatter_nd's gradient with respect to the values is a gather at the same indices.
            flat = tf.scatter_nd(
                flat_argmax, tf.reshape(pooled, (-1,)), tf.reshape(flat_size, (1,))
            )
        return ops.reshape(flat, output_shape)

    def compute_output_shape(self, input_shape):
        pooled_shape, _, reference_shape = self._split(input_shape)
        if len(reference_shape) == 1:
            return (pooled_shape[0], None, None, pooled_shape[-1])
        return (pooled_shape[0], reference_shape[1], reference_shape[2], pooled_shape[-1])

    def compute_output_spec(self, inputs):
        shape = self.compute_output_shape([tensor.shape for tensor in self._split(inputs)])
        return keras.KerasTensor(shape, dtype=self.compute_dtype)
