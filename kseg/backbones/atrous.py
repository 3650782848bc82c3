"""Atrous (dilated) conversion of a strided backbone to a smaller output stride."""

import keras

from kseg.backbones.rebuild import rebuild_layers
from kseg.layers.fast_equivalents import fast_equivalent

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
_POOLINGS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_UNTRACEABLE = (
    keras.layers.Conv2DTranspose,
    keras.layers.UpSampling2D,
    keras.layers.Conv1D,
    keras.layers.Conv3D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling3D,
)


def _square(pair, what, layer):
    pair = tuple(pair) if isinstance(pair, (tuple, list)) else (pair, pair)
    if pair[0] != pair[1]:
        raise ValueError(
            f"Atrous conversion handles square {what} only. Received: {what}={pair} "
            f"in layer {layer.name!r}"
        )
    return int(pair[0])


def _own_stride(layer):
    if isinstance(layer, (*_UNTRACEABLE, keras.Model)):
        raise TypeError(
            f"Cannot trace feature strides through layer {layer.name!r} of type "
            f"{type(layer).__name__}: only 2D convolutions, pooling and stride-preserving "
            "layers are supported."
        )
    if isinstance(layer, _CONVOLUTIONS + _POOLINGS):
        return _square(layer.strides, "strides", layer)
    return 1


def layer_strides(model):
    """Input and output stride of every layer of a functional model, read from its graph.

    The stride of a tensor is the product of the strides of the convolutions and poolings
    between the model input and that tensor; it needs no static input size and no forward
    pass, so it is exact for models built on `(None, None, 3)` inputs. Merging layers take
    the largest stride of their inputs (global-pooling branches rejoin at the stride of the
    tensor they pool).

    Args:
        model: A functional `keras.Model` with one image input.

    Returns:
        A dict mapping each layer name to `(input_stride, output_stride)`.

    Example:
    >>> backbone = kseg.backbones.get_backbone("tiny")
    >>> kseg.backbones.atrous.layer_strides(backbone)["stage3_conv1"]
    (4, 8)
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(f"Expected a functional keras.Model. Received: model={model!r}")
    tensor_strides = {}
    strides = {}
    # Deepest nodes come first in reverse depth order, i.e. inputs before their consumers.
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                for tensor in node.outputs:
                    tensor_strides[id(tensor)] = 1
                continue
            layer = node.operation
            input_stride = max(tensor_strides[id(t)] for t in node.input_tensors)
            output_stride = input_stride * _own_stride(layer)
            for tensor in node.outputs:
                tensor_strides[id(tensor)] = output_stride
            strides[layer.name] = (input_stride, output_stride)
    return strides


def _kernel_size(layer):
    return _square(layer.kernel_size, "kernel_size", layer)


def _dilation_rates(model, strides, output_stride, multi_grid):
    """Dilation rate of every spatial convolution past the target stride."""
    rates = {}
    for layer in model.layers:
        if isinstance(layer, _CONVOLUTIONS) and _kernel_size(layer) > 1:
            input_stride = strides[layer.name][0]
            if input_stride >= output_stride:
                rates[layer.name] = input_stride // output_stride
    if multi_grid is None:
        return rates
    deepest = max(out for _, out in strides.values())
    last_stage = [
        layer.name
        for layer in model.layers
        if isinstance(layer, _CONVOLUTIONS)
        and _kernel_size(layer) > 1
        and strides[layer.name][0] == deepest
    ]
    if not last_stage or len(last_stage) % len(multi_grid):
        raise ValueError(
            f"`multi_grid` needs the last stage's spatial convolutions to split evenly into "
            f"{len(multi_grid)} groups; model {model.name!r} has {len(last_stage)} of them "
            f"at stride {deepest}. Received: multi_grid={tuple(multi_grid)}"
        )
    group = len(last_stage) // len(multi_grid)
    for index, name in enumerate(last_stage):
        rates[name] = max(1, deepest // output_stride) * multi_grid[index // group]
    return rates


def _validate(output_stride, multi_grid):
    if (
        not isinstance(output_stride, int)
        or output_stride < 1
        or output_stride & (output_stride - 1)
    ):
        raise ValueError(
            "`output_stride` must be a positive power of two. "
            f"Received: output_stride={output_stride!r}"
        )
    if multi_grid is not None and (
        not multi_grid or not all(isinstance(r, int) and r >= 1 for r in multi_grid)
    ):
        raise ValueError(
            f"`multi_grid` must be a non-empty sequence of positive integers. "
            f"Received: multi_grid={multi_grid!r}"
        )


def dilate(model, output_stride, multi_grid=None):
    """Rebuilds a strided backbone so that its features stop at `output_stride`.

    Atrous convolution (Chen et al., 2017, "DeepLab: Semantic Image Segmentation with Deep
    Convolutional Nets, Atrous Convolution, and Fully Connected CRFs"; "Rethinking Atrous
    Convolution for Semantic Image Segmentation") keeps a pretrained network's field of view
    while computing denser features: every stride that would take the features past
    `output_stride` becomes 1, and every spatial convolution after that point is dilated by
    the factor its input lost (`original input stride / output_stride`), so kernels keep their
    shapes and the pretrained weights still apply. Explicit `ZeroPadding2D` layers past the
    target stride become identities and the convolutions they fed use "same" padding, which
    keeps feature sizes at `ceil(input / output_stride)`; strided poolings become stride-1
    "same" poolings. `multi_grid` (DeepLabv3) further multiplies the rates of the last stage's
    spatial convolutions, split into `len(multi_grid)` consecutive groups, e.g. the three 3x3
    convolutions of ResNet's block4 with `(1, 2, 4)`.

    Layer names, order and weight shapes are unchanged: weights saved from the original model
    load into the dilated one, and this function copies the current weights across.

    Args:
        model: A functional `keras.Model` built from 2D convolutions and poolings.
        output_stride: Target stride, a power of two. A model whose deepest stride is
            already at most `output_stride` is returned unchanged unless `multi_grid` is set.
        multi_grid: Optional sequence of integer rate multipliers for the last stage.

    Returns:
        A new functional `keras.Model` with the same inputs, outputs structure, layer names
        and weights.

    Example:
    >>> strided = kseg.backbones.get_backbone("tiny")
    >>> dense = kseg.backbones.atrous.dilate(strided, output_stride=8)
    >>> dense.get_layer("stage5_conv2").dilation_rate
    (4, 4)
    """
    _validate(output_stride, multi_grid)
    strides = layer_strides(model)
    deepest = max(out for _, out in strides.values())
    if deepest <= output_stride and multi_grid is None:
        return model
    rates = _dilation_rates(model, strides, output_stride, multi_grid)

    def rebuild(layer):
        config = layer.get_config()
        input_stride, layer_output_stride = strides[layer.name]
        if input_stride < output_stride < layer_output_stride:
            raise ValueError(
                f"Layer {layer.name!r} jumps from stride {input_stride} to "
                f"{layer_output_stride}, past output_stride={output_stride}; it cannot be "
                "converted to dilation."
            )
        if input_stride >= output_stride:
            if isinstance(layer, keras.layers.ZeroPadding2D):
                config["padding"] = ((0, 0), (0, 0))
            elif isinstance(layer, _POOLINGS):
                config.update(strides=(1, 1), padding="same")
            elif isinstance(layer, _CONVOLUTIONS):
                config["strides"] = (1, 1)
                if layer.name in rates:
                    rate = rates[layer.name]
                    config.update(padding="same", dilation_rate=(rate, rate))
        return fast_equivalent(layer.__class__, config).from_config(config)

    return rebuild_layers(model, rebuild)
