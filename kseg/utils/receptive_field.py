"""The receptive field of a stack of layers or of a functional model, from its layer geometry."""

import math

import keras

from kseg.backbones.preprocessing import ImagePreprocessing
from kseg.layers.resize import ResizeToMatch

_LAYERS = keras.layers
_CONVOLUTIONS = (
    _LAYERS.Conv1D,
    _LAYERS.Conv2D,
    _LAYERS.Conv3D,
    _LAYERS.DepthwiseConv1D,
    _LAYERS.DepthwiseConv2D,
    _LAYERS.SeparableConv1D,
    _LAYERS.SeparableConv2D,
)
_POOLINGS = (
    _LAYERS.MaxPooling1D,
    _LAYERS.MaxPooling2D,
    _LAYERS.MaxPooling3D,
    _LAYERS.AveragePooling1D,
    _LAYERS.AveragePooling2D,
    _LAYERS.AveragePooling3D,
)
# Every output of these reads the whole input.
_GLOBAL = (
    _LAYERS.GlobalAveragePooling1D,
    _LAYERS.GlobalAveragePooling2D,
    _LAYERS.GlobalAveragePooling3D,
    _LAYERS.GlobalMaxPooling1D,
    _LAYERS.GlobalMaxPooling2D,
    _LAYERS.GlobalMaxPooling3D,
    _LAYERS.AdaptiveAveragePooling1D,
    _LAYERS.AdaptiveAveragePooling2D,
    _LAYERS.AdaptiveAveragePooling3D,
    _LAYERS.AdaptiveMaxPooling1D,
    _LAYERS.AdaptiveMaxPooling2D,
    _LAYERS.AdaptiveMaxPooling3D,
    _LAYERS.Flatten,
)
# Upsampling maps one input pixel to a fraction of an output pixel: the recurrence below
# counts whole input pixels and has no answer there.
_UPSAMPLING = (
    _LAYERS.Conv1DTranspose,
    _LAYERS.Conv2DTranspose,
    _LAYERS.Conv3DTranspose,
    _LAYERS.UpSampling1D,
    _LAYERS.UpSampling2D,
    _LAYERS.UpSampling3D,
    _LAYERS.Resizing,
    ResizeToMatch,
)
# Layers that act on each position alone (or only pad and crop): the field passes unchanged.
_POINTWISE = (
    _LAYERS.InputLayer,
    _LAYERS.Activation,
    _LAYERS.ReLU,
    _LAYERS.LeakyReLU,
    _LAYERS.PReLU,
    _LAYERS.ELU,
    _LAYERS.Softmax,
    _LAYERS.BatchNormalization,
    _LAYERS.LayerNormalization,
    _LAYERS.GroupNormalization,
    _LAYERS.Dropout,
    _LAYERS.SpatialDropout1D,
    _LAYERS.SpatialDropout2D,
    _LAYERS.SpatialDropout3D,
    _LAYERS.GaussianNoise,
    _LAYERS.GaussianDropout,
    _LAYERS.Add,
    _LAYERS.Subtract,
    _LAYERS.Multiply,
    _LAYERS.Average,
    _LAYERS.Maximum,
    _LAYERS.Minimum,
    _LAYERS.Concatenate,
    _LAYERS.Rescaling,
    _LAYERS.Normalization,
    _LAYERS.Identity,
    _LAYERS.Dense,
    _LAYERS.ZeroPadding1D,
    _LAYERS.ZeroPadding2D,
    _LAYERS.ZeroPadding3D,
    _LAYERS.Cropping1D,
    _LAYERS.Cropping2D,
    _LAYERS.Cropping3D,
    ImagePreprocessing,
)


def _geometry(layer):
    """`(kernel, stride, dilation)` tuples of a spatial layer, or None for a pointwise one."""
    if isinstance(layer, _UPSAMPLING):
        raise TypeError(
            f"receptive_field cannot follow layer {layer.name!r} of type "
            f"{type(layer).__name__}: upsampling has no whole-pixel receptive field. Measure "
            "the tensor before it with `output=`."
        )
    if isinstance(layer, _CONVOLUTIONS):
        return tuple(layer.kernel_size), tuple(layer.strides), tuple(layer.dilation_rate)
    if isinstance(layer, _POOLINGS):
        size = tuple(layer.pool_size)
        return size, tuple(layer.strides), (1,) * len(size)
    if isinstance(layer, _GLOBAL + _POINTWISE):
        return None
    raise TypeError(
        f"receptive_field does not know how layer {layer.name!r} of type "
        f"{type(layer).__name__} moves information across positions. It handles "
        "convolutions, poolings, global poolings and element-wise layers."
    )


def _spatial_rank(layers):
    ranks = set()
    for layer in layers:
        if isinstance(layer, keras.Model):
            rank = _spatial_rank(layer.layers)
            if rank:
                ranks.add(rank)
        elif isinstance(layer, _CONVOLUTIONS + _POOLINGS):
            ranks.add(len(_geometry(layer)[0]))
    if len(ranks) > 1:
        raise ValueError(
            f"receptive_field needs layers of one spatial rank. Received ranks {sorted(ranks)}"
        )
    return ranks.pop() if ranks else 0


def _pareto(fields):
    """Keeps the `(field, jump)` pairs no other pair beats on both counts."""
    return {
        (r, j)
        for r, j in fields
        if not any((r2 >= r and j2 >= j) and (r2, j2) != (r, j) for r2, j2 in fields)
    }


def _compose(outer, inner):
    """Fields after a sub-network whose own fields are `inner`, fed fields `outer`."""
    return _pareto({(r + (r_in - 1) * j, j * j_in) for r, j in outer for r_in, j_in in inner})


def _layer_fields(layer, axis):
    """The `(field, jump)` pairs of one layer seen on its own, along `axis`."""
    if isinstance(layer, keras.Sequential):
        return _chain_fields(layer.layers, axis)
    if isinstance(layer, keras.Model):
        return _widest(_model_fields(layer, axis), layer.outputs)
    if isinstance(layer, _GLOBAL):
        return {(math.inf, 1)}
    geometry = _geometry(layer)
    if geometry is None:
        return {(1, 1)}
    kernel, stride, dilation = (values[axis] for values in geometry)
    return {(dilation * (kernel - 1) + 1, stride)}


def _chain_fields(layers, axis):
    fields = {(1, 1)}
    for layer in layers:
        fields = _compose(fields, _layer_fields(layer, axis))
    return fields


def _model_fields(model, axis):
    """Maps `id(tensor)` to the Pareto set of `(field, jump)` pairs over paths reaching it.

    A tensor behind a layer the recurrence cannot follow maps to that layer's error instead,
    raised only if a measured output depends on it.
    """
    if not hasattr(model, "_nodes_by_depth"):
        raise TypeError(
            f"receptive_field needs a functional or Sequential model. Received: {model!r}"
        )
    fields = {}
    # Deepest nodes come first in reverse depth order, i.e. inputs before their consumers.
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                for tensor in node.outputs:
                    fields[id(tensor)] = {(1, 1)}
                continue
            inputs = [fields[id(t)] for t in node.input_tensors]
            errors = [value for value in inputs if isinstance(value, Exception)]
            layer = node.operation
            if errors:
                outgoing = [errors[0]] * len(node.outputs)
            elif isinstance(layer, keras.Model) and not isinstance(layer, keras.Sequential):
                incoming = _pareto(set().union(*inputs))
                inner = _model_fields(layer, axis)
                outgoing = []
                for inner_output in layer.outputs:
                    value = inner[id(inner_output)]
                    outgoing.append(
                        value if isinstance(value, Exception) else _compose(incoming, value)
                    )
            else:
                incoming = _pareto(set().union(*inputs))
                try:
                    outgoing = [_compose(incoming, _layer_fields(layer, axis))] * len(node.outputs)
                except TypeError as error:
                    outgoing = [error] * len(node.outputs)
            for tensor, value in zip(node.outputs, outgoing, strict=True):
                fields[id(tensor)] = value
    return fields


def _widest(fields, tensors):
    values = [fields[id(t)] for t in tensors]
    for value in values:
        if isinstance(value, Exception):
            raise value
    return _pareto(set().union(*values))


def _output_tensors(model, output):
    if output is None:
        return list(model.outputs)
    if isinstance(model.output, dict) and output in model.output:
        return [model.output[output]]
    # A nested model's own `.output` lives in its inner graph: read the outer node instead.
    nodes = [
        node
        for depth_nodes in model._nodes_by_depth.values()
        for node in depth_nodes
        if not node.is_input and node.operation.name == output
    ]
    if len(nodes) != 1:
        keys = sorted(model.output) if isinstance(model.output, dict) else []
        raise ValueError(
            f"`output` must name a layer called once in model {model.name!r} (nested models "
            f"count as one layer) or one of its output keys {keys}. Received: output={output!r}"
            + (f", called {len(nodes)} times" if nodes else "")
        )
    return list(nodes[0].outputs)


def receptive_field(model_or_layers, output=None):
    """The receptive field, in input pixels, of a stack of layers or a functional model.

    Each output position of a convolutional network depends on a window of input pixels, its
    theoretical receptive field. Walking from the input, with a field `r = 1` and a jump
    (the input-pixel distance between neighbouring positions) `j = 1`, every convolution
    or pooling of kernel `k`, stride `s` and dilation `d` gives
    `r += (d * (k - 1)) * j` and `j *= s` (Araujo et al. 2019, "Computing Receptive Fields
    of Convolutional Neural Networks", Distill). Stacked 3x3 convolutions with dilations
    1, 2, 4 thus see 3, 7 and 15 pixels, where plain ones see 3, 5, 7 (Yu & Koltun 2016,
    "Multi-scale Context Aggregation by Dilated Convolutions", figure 1).

    Element-wise layers (activations, normalisation, dropout, merges, padding, cropping,
    Dense on the channel axis) leave the field unchanged; global and adaptive poolings and
    Flatten make it infinite (`math.inf`). Upsampling layers (transposed convolutions,
    UpSampling, Resizing) and unknown layers raise TypeError: measure the tensor before
    them with `output`. In a functional model with branches the field of a tensor is the
    largest over the paths that reach it from the input (tracked exactly: a path with a
    smaller field but a larger jump is kept until it is overtaken). The union of the paths'
    windows can be wider when branches are offset from one another, e.g. by even kernels;
    this function reports the widest single path. Padding does not count: the field
    includes positions that fall on padding at the border.

    Args:
        model_or_layers: a `keras.Sequential`, a functional `keras.Model` (nested models
            count through their own graphs), or a list of layers applied in order.
        output: for a model, the output key (for dict outputs) or layer name whose output
            is measured; None takes the largest field over all the model's outputs.

    Returns:
        An int (or `math.inf`) when the field is the same along every spatial axis, else a
        tuple of one value per spatial axis (height first).

    Example:
        >>> import keras, kseg
        >>> layers = [keras.layers.Conv2D(8, 3, dilation_rate=d) for d in (1, 2, 4)]
        >>> kseg.utils.receptive_field(layers)
        15
    """
    if isinstance(model_or_layers, keras.Sequential):
        if output is not None:
            raise ValueError(f"`output` applies to functional models. Received: output={output!r}")
        layers = list(model_or_layers.layers)
    elif isinstance(model_or_layers, keras.Model):
        layers = None
    elif isinstance(model_or_layers, (list, tuple)) and all(
        isinstance(layer, keras.layers.Layer) for layer in model_or_layers
    ):
        if output is not None:
            raise ValueError(f"`output` applies to functional models. Received: output={output!r}")
        layers = list(model_or_layers)
    elif isinstance(model_or_layers, keras.layers.Layer):
        layers = [model_or_layers]
    else:
        raise TypeError(
            "receptive_field takes a keras.Model or a list of keras layers. "
            f"Received: model_or_layers={model_or_layers!r}"
        )

    if layers is not None:
        rank = _spatial_rank(layers)
        per_axis = [max(r for r, _ in _chain_fields(layers, axis)) for axis in range(rank)]
    else:
        model = model_or_layers
        targets = _output_tensors(model, output)
        rank = _spatial_rank(model.layers)
        per_axis = []
        for axis in range(rank):
            per_axis.append(max(r for r, _ in _widest(_model_fields(model, axis), targets)))
    if not per_axis:
        return 1
    per_axis = [value if value == math.inf else int(value) for value in per_axis]
    return per_axis[0] if len(set(per_axis)) == 1 else tuple(per_axis)
