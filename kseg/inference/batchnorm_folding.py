"""Batch normalisation folded into the convolution before it, for inference and export.

In inference mode a batch normalisation is an affine map per channel with its moving
statistics, `y = (x - mean) * gamma / sqrt(variance + epsilon) + beta`, and a convolution is
linear per output channel, so the pair is one convolution with a scaled kernel and a bias
(Jacob et al., 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", Sec. 3.2). The folded model does one pass over each
feature map where the pair did three (convolution, multiply, add), and has no normalisation
left to fuse for the TFLite and ONNX converters.

The rewrite covers Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D (folded into the
pointwise kernel) and Conv1D/2D/3DTranspose followed by a `BatchNormalization` (or a subclass
such as `kseg.backbones.resnet.FrozenBatchNormalization`) in the graph of a functional model
and every functional model nested in it (the backbones), plus the `kseg.layers.ConvBNReLU`
blocks, alone or inside composite layers such as `ASPP` and `PyramidPooling`. A pair is left
as it is unless folding it is exact: the convolution has no activation and its output feeds
only that normalisation, over the channel axis, with no forced `training=True`.
"""

import keras
import numpy as np
from keras.src.models.functional import Functional

from kseg.layers import atrous_conv, atrous_depthwise_conv
from kseg.layers.conv_block import ConvBNReLU
from kseg.layers.fast_equivalents import fast_equivalent

# Kernel axes that hold the output channels, by how each convolution lays its kernel out:
# "last" (..., in, out), "transpose" (..., out, in), "depthwise" (..., in, multiplier).
_KERNEL_LAYOUTS = {
    keras.layers.Conv1D: "last",
    keras.layers.Conv2D: "last",
    atrous_conv.Conv2D: "last",
    keras.layers.Conv3D: "last",
    keras.layers.SeparableConv1D: "last",
    keras.layers.SeparableConv2D: "last",
    keras.layers.Conv1DTranspose: "transpose",
    keras.layers.Conv2DTranspose: "transpose",
    keras.layers.Conv3DTranspose: "transpose",
    keras.layers.DepthwiseConv1D: "depthwise",
    keras.layers.DepthwiseConv2D: "depthwise",
    atrous_depthwise_conv.DepthwiseConv2D: "depthwise",
}


@keras.saving.register_keras_serializable(package="kseg")
class FoldedConvBNReLU(ConvBNReLU):
    """A `kseg.layers.ConvBNReLU` whose batch normalisations are folded into its convolutions.

    Same arguments, configuration, sublayers and weights as `ConvBNReLU`, so a composite
    layer that built ConvBNReLU blocks runs them unchanged and a saved file finds every
    weight where it looks. Each convolution's kernel holds the normalisation's scale and the
    normalisation's `beta` holds the folded bias: the block computes `conv(x) + beta` where
    ConvBNReLU computes `batch_normalization(conv(x))`; the moving statistics and `gamma` are
    not read. `fold_batch_norm` creates it with the folded weights.

    Example:
        >>> layer = kseg.inference.batchnorm_folding.FoldedConvBNReLU(4, 3, separable=True)
        >>> layer(np.zeros((1, 5, 5, 2), "float32")).shape
        TensorShape([1, 5, 5, 4])
    """

    def call(self, inputs, training=None):
        x = inputs
        if self.separable:
            x = keras.activations.relu(_add_beta(self.depthwise(x), self.depthwise_bn))
        x = _add_beta(self.conv(x), self.bn)
        if self.use_activation:
            x = keras.activations.relu(x)
        return x


def _add_beta(x, batchnorm):
    return x + keras.ops.cast(batchnorm.beta, x.dtype)


def _fold_blocks_in_place(layer):
    """Turns every ConvBNReLU inside `layer` into a FoldedConvBNReLU, in place.

    The composite (an ASPP, say) keeps its class and configuration; only its blocks change
    class, to a subclass with their layout that calls the same sublayers differently.
    """
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        if type(sublayer) is ConvBNReLU:
            sublayer.__class__ = FoldedConvBNReLU


@keras.saving.register_keras_serializable(package="kseg")
class BatchNormFolded(keras.layers.Wrapper):
    """Runs a layer with each of its `ConvBNReLU` blocks as a `FoldedConvBNReLU`.

    The wrapped layer (a `ConvBNReLU`, an `ASPP`, a `PyramidPooling`...) keeps its class and
    configuration; once it is built (some composites create their blocks in `build`) its
    blocks run folded. Saved and reloaded, the wrapper does the same, so a folded model loads
    in safe mode. `fold_batch_norm` creates it and sets the folded weights.

    Args:
        layer: the layer to run.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> aspp = kseg.layers.ASPP(filters=4, dilation_rates=(2,))
        >>> folded = kseg.inference.batchnorm_folding.BatchNormFolded(aspp)
        >>> folded(np.zeros((1, 6, 6, 3), "float32")).shape
        TensorShape([1, 6, 6, 4])
    """

    def __init__(self, layer, **kwargs):
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        if layer.built:
            _fold_blocks_in_place(layer)

    def build(self, input_shape=None):
        super().build(input_shape)
        _fold_blocks_in_place(self.layer)

    def call(self, inputs, training=None):
        return self.layer(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def _output_channel_scale(kernel, layout, scale):
    """`scale` shaped to multiply `kernel` along its output channels."""
    if layout == "last":
        return scale
    if layout == "transpose":
        return scale[:, None]
    return scale.reshape(kernel.shape[-2:])


def folded_weights(conv, batchnorm):
    """The weights of `conv` with a bias that absorb `batchnorm`'s inference transform.

    Computed in float64: `s = gamma / sqrt(moving_variance + epsilon)` scales the kernel's
    output channels and the bias becomes `(bias - moving_mean) * s + beta`.

    Args:
        conv: a built convolution layer (a kind listed in this module).
        batchnorm: the built `BatchNormalization` applied to its output channels.

    Returns:
        The list for `set_weights` on a copy of `conv` with `use_bias=True`: its kernel (for
        a separable convolution, the depthwise kernel unchanged and the pointwise kernel
        scaled), then the bias.

    Example:
        >>> conv = keras.layers.Conv2D(2, 1, use_bias=False)
        >>> bn = keras.layers.BatchNormalization(epsilon=0.0)
        >>> _ = bn(conv(np.ones((1, 1, 1, 1), "float32")))
        >>> _ = bn.moving_variance.assign([4.0, 0.25])
        >>> _ = conv.kernel.assign(np.ones((1, 1, 1, 2)))
        >>> [w.ravel().tolist() for w in kseg.inference.batchnorm_folding.folded_weights(conv, bn)]
        [[0.5, 2.0], [0.0, 0.0]]
    """
    layout = _KERNEL_LAYOUTS[type(conv)]
    channels = int(batchnorm.moving_mean.shape[0])
    one = np.ones(channels)
    gamma = np.asarray(batchnorm.gamma, np.float64) if batchnorm.scale else one
    beta = np.asarray(batchnorm.beta, np.float64) if batchnorm.center else 0.0 * one
    mean = np.asarray(batchnorm.moving_mean, np.float64)
    variance = np.asarray(batchnorm.moving_variance, np.float64)
    scale = gamma / np.sqrt(variance + batchnorm.epsilon)
    weights = [np.asarray(w, np.float64) for w in conv.get_weights()]
    bias = weights.pop() if conv.use_bias else 0.0 * one
    kernel = weights[-1]
    weights[-1] = kernel * _output_channel_scale(kernel, layout, scale)
    weights.append((bias - mean) * scale + beta)
    dtype = conv.variable_dtype
    return [w.astype(dtype) for w in weights]


def _is_plain_convolution(layer):
    return (
        type(layer) in _KERNEL_LAYOUTS
        and layer.built
        and layer.get_config().get("activation") == "linear"
        and layer.dtype_policy.quantization_mode is None
        and not getattr(layer, "lora_enabled", False)
    )


def _normalises_channels(conv, batchnorm):
    rank = conv.rank + 2
    channel_axis = 1 if conv.data_format == "channels_first" else rank - 1
    return batchnorm.built and int(batchnorm.axis) % rank == channel_axis


def _functional_models(model):
    """`model` and every functional model nested in its graph, each once."""
    found, pending = {}, [model]
    while pending:
        current = pending.pop()
        if id(current) in found:
            continue
        found[id(current)] = current
        for nodes in current._nodes_by_depth.values():
            pending.extend(
                node.operation
                for node in nodes
                if node.operation is not None and hasattr(node.operation, "_nodes_by_depth")
            )
    return list(found.values())


def foldable_pairs(model):
    """The (convolution, batch normalisation) pairs of a functional model that fold exactly.

    Searches the model's graph and the graphs of the functional models nested in it. A pair
    qualifies when the normalisation's only input is the convolution's output, nothing else
    reads that output (no other layer, no model output), each layer runs once, the
    convolution has no activation, and the normalisation acts on the channel axis without a
    forced `training=True`. `ConvBNReLU` blocks are not listed; `fold_batch_norm` folds them
    separately.

    Args:
        model: a functional `keras.Model`.

    Returns:
        A list of `(convolution layer, BatchNormalization layer)`.

    Example:
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        >>> x = keras.layers.BatchNormalization(name="bn")(x)
        >>> model = keras.Model(inputs, keras.layers.ReLU()(x))
        >>> [(c.name, b.name) for c, b in kseg.inference.batchnorm_folding.foldable_pairs(model)]
        [('conv', 'bn')]
    """
    models = _functional_models(model)
    nodes = {}
    for current in models:
        for depth_nodes in current._nodes_by_depth.values():
            nodes.update((id(node), node) for node in depth_nodes if node.operation is not None)
    readers, calls = {}, {}
    for node in nodes.values():
        calls.setdefault(id(node.operation), set()).add(id(node))
        for tensor in node.input_tensors:
            readers.setdefault(id(tensor), set()).add(id(node))
    for current in models:
        for tensor in current.outputs:
            readers.setdefault(id(tensor), set()).add("model output")
    pairs = []
    for node in nodes.values():
        batchnorm = node.operation
        if not isinstance(batchnorm, keras.layers.BatchNormalization):
            continue
        if len(node.input_tensors) != 1 or node.arguments.kwargs.get("training") is True:
            continue
        source = node.input_tensors[0]
        conv = source._keras_history.operation
        if not _is_plain_convolution(conv) or not _normalises_channels(conv, batchnorm):
            continue
        if len(calls[id(conv)]) != 1 or len(calls[id(batchnorm)]) != 1:
            continue
        if readers.get(id(source)) == {id(node)}:
            pairs.append((conv, batchnorm))
    return pairs


def supports_batch_norm_folding(model):
    """Whether `fold_batch_norm` can rebuild `model`: a functional or Sequential model.

    Subclassed models (`kseg.models.MaskRCNN`) are rebuilt by their own `from_config`, which
    would not know the folded layers, so they are left as they are.

    Example:
        >>> kseg.inference.supports_batch_norm_folding(
        ...     kseg.models.DeepLabV3Plus(num_classes=2, backbone="tiny"))
        True
    """
    from kseg.models.heads import DeepSupervisionModel

    # A functional subclass is rebuilt as plain Functional unless it is one kseg knows.
    return type(model) in (Functional, keras.Sequential) or isinstance(model, DeepSupervisionModel)


def _holds_blocks(layer):
    return not hasattr(layer, "_nodes_by_depth") and any(
        type(sublayer) is ConvBNReLU
        for sublayer in layer._flatten_layers(include_self=True, recursive=True)
    )


def _copy_block_weights(original, folded):
    """Copies `original`'s weights into its `BatchNormFolded` copy and folds every block."""
    folded.layer.set_weights(original.get_weights())
    originals = original._flatten_layers(include_self=True, recursive=True)
    copies = folded.layer._flatten_layers(include_self=True, recursive=True)
    for source, target in zip(originals, copies, strict=True):
        if type(source) is not ConvBNReLU:
            continue
        pairs = [(source.conv, source.bn, target.conv, target.bn)]
        if source.separable:
            pairs.append(
                (source.depthwise, source.depthwise_bn, target.depthwise, target.depthwise_bn)
            )
        for conv, batchnorm, conv_copy, batchnorm_copy in pairs:
            *kernels, bias = folded_weights(conv, batchnorm)
            conv_copy.set_weights(kernels + [0 * bias] * conv.use_bias)
            # Identity statistics: only beta is read, but a reader of the file sees no stale ones.
            channels = bias.shape[0]
            batchnorm_copy.moving_mean.assign(np.zeros(channels))
            batchnorm_copy.moving_variance.assign(np.ones(channels))
            batchnorm_copy.gamma.assign(np.ones(channels))
            batchnorm_copy.beta.assign(bias)


def fold_batch_norm(model):
    """Returns an inference copy of `model` with batch normalisation folded into convolutions.

    Every convolution followed by a `BatchNormalization` (listed by `foldable_pairs`) becomes
    one convolution with a bias and the normalisation leaves the graph; every
    `kseg.layers.ConvBNReLU`, alone or inside a composite layer, runs as a
    `FoldedConvBNReLU` inside a `BatchNormFolded` wrapper. Everything else is copied with its
    weights, so the copy gives the same outputs as `model(x, training=False)` up to float
    rounding, saves to `.keras` and reloads in safe mode. `model` itself is not changed.

    The copy is for inference: it normalises with the moving statistics even when called with
    `training=True`, so train the original and fold again.

    Args:
        model: a functional or Sequential `keras.Model` (built, with an `Input`).

    Returns:
        A new functional model (of the same class for `DeepSupervisionModel`).

    Example:
        >>> model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny")
        >>> folded = kseg.inference.fold_batch_norm(model)
        >>> images = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3))
        >>> bool(np.allclose(folded(images), model(images, training=False), atol=1e-4))
        True
        >>> [type(layer).__name__ for layer in folded.layers[2:4]]
        ['BatchNormFolded', 'BatchNormFolded']
    """
    if not supports_batch_norm_folding(model):
        raise TypeError(
            "fold_batch_norm rebuilds functional and Sequential models; a subclassed model "
            "is rebuilt by its own from_config, which does not know folded layers. "
            f"Received: model of type {type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                "fold_batch_norm needs a Sequential model that starts with keras.Input. "
                f"Received: model={model.name!r} without a defined input"
            )
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    pairs = foldable_pairs(model)
    batchnorm_of = {id(conv): batchnorm for conv, batchnorm in pairs}
    removed = {id(batchnorm) for _, batchnorm in pairs}
    copies = []

    def clone(layer):
        if id(layer) in removed:
            return layer  # never called: `call` passes its input through
        config = layer.get_config()
        if _holds_blocks(layer):
            copy = BatchNormFolded(type(layer).from_config(config), name=layer.name)
        else:
            if id(layer) in batchnorm_of:
                # The folded normalisation's shift becomes the convolution's bias.
                config = {**config, "use_bias": True}
            copy = fast_equivalent(type(layer), config).from_config(config)
        copies.append((layer, copy))
        return copy

    def call(layer, *args, **kwargs):
        if id(layer) in removed:
            return args[0]
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(
        model, clone_function=clone, call_function=call, recursive=True
    )
    for original, copy in copies:
        if id(original) in batchnorm_of:
            copy.set_weights(folded_weights(original, batchnorm_of[id(original)]))
        elif isinstance(copy, BatchNormFolded):
            _copy_block_weights(original, copy)
        else:
            copy.set_weights(original.get_weights())
    if hasattr(model, "auxiliary_loss_weight"):  # a DeepSupervisionModel's training option
        folded.auxiliary_loss_weight = model.auxiliary_loss_weight
    return folded


def fold_batch_norm_if_exact(model):
    """`fold_batch_norm(model)` where that is exact and changes something, else `model`.

    kseg's predict and export paths run their model through this. Folding is skipped for
    subclassed models (`supports_batch_norm_folding`), for a model with nothing to fold, and
    for a model whose folded convolutions do not compute in float32: under `mixed_bfloat16`
    a folded kernel is rounded to bfloat16 where the normalisation ran in float32 after the
    convolution, so the outputs would differ by more than float32 rounding.

    Args:
        model: any Keras model.

    Returns:
        The folded copy, or `model` itself.

    Example:
        >>> model = kseg.models.DeepLabV3Plus(num_classes=3, backbone="tiny")
        >>> kseg.inference.fold_batch_norm_if_exact(model) is model
        False
        >>> inputs = keras.Input((4, 4, 3))
        >>> plain = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
        >>> kseg.inference.fold_batch_norm_if_exact(plain) is plain
        True
    """
    if not supports_batch_norm_folding(model):
        return model
    functional = model
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            return model
        functional = keras.Model(model.inputs[0], model.outputs[0])
    folded_layers = [conv for conv, _ in foldable_pairs(functional)] + [
        layer for layer in functional._flatten_layers() if type(layer) is ConvBNReLU
    ]
    if not folded_layers or any(layer.compute_dtype != "float32" for layer in folded_layers):
        return model
    return fold_batch_norm(model)
