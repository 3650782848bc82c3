"""Textual model summaries (backbone, neck/head, parameters, FLOPs) and architecture diagrams.

kseg builders nest the backbone as one `keras.Model` layer inside the segmentation model
(`kseg.models.backbone_of` finds it), so the split "backbone versus everything else" is exact;
the rest is grouped by the layer-name prefixes the builders use (`aspp`, `decoder`, `psp`, ...),
with anything unrecognised listed under `other` rather than guessed at.
"""

import importlib.util
import shutil

import keras
import numpy as np

from kseg.models.backbone_input import backbone_of

NECK_HEAD_PREFIXES = (
    "aspp",
    "decoder",
    "psp",
    "pyramid",
    "context",
    "refinenet",
    "final_rcu",
    "fc",
    "score",
    "upscore",
    "up",
    "logits",
    "classifier",
    "auxiliary",
)
"""Layer-name prefixes that label a part of the neck or head in the summary's breakdown.

A prefix matches a whole name or a name continuing with `_` or a digit, so `up` (U-Net's
expanding path, `up_3_conv_1`) does not swallow `upscore8` and `fc` matches FCN's `fc6`.
"""


def _variable_size(variable):
    return int(np.prod(variable.shape)) if len(variable.shape) else 1


def _unique_size(variables, seen):
    # Weights shared between layers must be counted once, as model.count_params() does.
    total = 0
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            total += _variable_size(variable)
    return total


def _prefix_group(layer_name):
    lowered = layer_name.lower()
    for prefix in NECK_HEAD_PREFIXES:
        rest = lowered[len(prefix) :]
        if lowered.startswith(prefix) and (not rest or rest[0] == "_" or rest[0].isdigit()):
            return prefix
    return "other"


def forward_flops(model, input_size=(512, 512), channels=None):
    """Count the floating-point operations of one image's forward pass with TensorFlow's profiler.

    The model is traced for a fixed `(1, H, W, C)` float32 input and its variables are frozen
    into constants, so every operation has a static shape; `tf.compat.v1.profiler` with
    `ProfileOptionBuilder.float_operation()` then sums the registered per-op costs. A
    convolution's multiply-add counts as two operations (`2*H*W*k*k*Cin*Cout`) and a bias
    addition as one per output element; ops without a registered cost (e.g. ReLU, resizes)
    count as zero, so the figure is a lower bound dominated by convolutions and matmuls.

    Args:
        model: A `keras.Model` taking one image tensor.
        input_size: `(height, width)` of the image.
        channels: Input channels; read from the model's input when None.

    Returns:
        The number of floating-point operations as an int.

    Example:
    >>> model = kseg.models.get_model("fcn8s", num_classes=3, backbone="tiny", num_filters=8)
    >>> kseg.summary.forward_flops(model, (64, 64)) > 0
    True
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    height, width = _validated_size(input_size)
    if channels is None:
        channels = model.inputs[0].shape[-1] if model.inputs else None
        if channels is None:
            raise ValueError(
                "The model's input channels are unknown; pass `channels`. "
                f"Received: model.inputs={model.inputs!r}"
            )
    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(
        tf.TensorSpec([1, height, width, int(channels)], tf.float32)
    )
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    return int(profile.total_float_ops)


def _validated_size(input_size):
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 2
        or not all(isinstance(side, (int, np.integer)) and side > 0 for side in input_size)
    ):
        raise ValueError(
            "`input_size` must be a (height, width) pair of positive integers. "
            f"Received: input_size={input_size!r}"
        )
    return int(input_size[0]), int(input_size[1])


def model_summary(model, input_size=(512, 512)):
    """Summarise a kseg model: backbone, neck/head, parameter counts and FLOPs per image.

    The backbone is the one `kseg.models.backbone_of` finds; every other weight belongs to
    the neck and head, broken down by the layer-name prefixes in
    `NECK_HEAD_PREFIXES` with the rest under `other`. The parts add up exactly to
    `model.count_params()`. FLOPs come from `forward_flops` at batch 1 and `input_size`.

    Args:
        model: A built `keras.Model`.
        input_size: `(height, width)` at which to count FLOPs, or None to skip the count.

    Returns:
        A dict with keys `name`, `backbone` (dict with `name` and `params`, or None),
        `neck_head_params`, `neck_head_groups` (dict group -> params), `total_params`,
        `trainable_params`, `non_trainable_params`, `input_size` and `flops`
        (None when `input_size` is None).

    Example:
    >>> model = kseg.models.get_model("deeplabv3plus", num_classes=3, backbone="tiny")
    >>> summary = kseg.summary.model_summary(model, input_size=(64, 64))
    >>> summary["total_params"] == model.count_params()
    True
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    if not model.built:
        raise ValueError(f"`model` must be built before it is summarised. Received: {model.name}")
    seen = set()
    backbone = backbone_of(model)
    backbone_info = None
    if backbone is not None:
        backbone_info = {"name": backbone.name, "params": _unique_size(backbone.weights, seen)}
    groups = {}
    for layer in model.layers:
        if layer is backbone:
            continue
        size = _unique_size(layer.weights, seen)
        if size:
            group = _prefix_group(layer.name)
            groups[group] = groups.get(group, 0) + size
    # Weights created by the model itself rather than by any layer (rare) still count.
    leftover = _unique_size(model.weights, seen)
    if leftover:
        groups["other"] = groups.get("other", 0) + leftover
    total = _unique_size(model.weights, set())
    trainable = _unique_size(model.trainable_weights, set())
    flops = None
    if input_size is not None:
        input_size = _validated_size(input_size)
        flops = forward_flops(model, input_size)
    return {
        "name": model.name,
        "backbone": backbone_info,
        "neck_head_params": sum(groups.values()),
        "neck_head_groups": groups,
        "total_params": total,
        "trainable_params": trainable,
        "non_trainable_params": total - trainable,
        "input_size": input_size,
        "flops": flops,
    }


def format_summary(summary):
    """Render a `model_summary` dict as an aligned, human-readable block of text.

    Args:
        summary: The dict returned by `model_summary`.

    Returns:
        A multi-line string.

    Example:
    >>> model = kseg.models.get_model("fcn8s", num_classes=3, backbone="tiny", num_filters=8)
    >>> print(kseg.summary.format_summary(kseg.summary.model_summary(model, None)))
    Model                 fcn8s
    Backbone              tiny_backbone: 64,600 params
    Neck + head           21,689 params
      fc                  18,896 params
      score               201 params
      upscore             2,592 params
    Total params          86,289
    Trainable params      85,777
    Non-trainable params  512
    """
    required = ("name", "backbone", "neck_head_params", "neck_head_groups", "total_params")
    missing = [key for key in required if key not in summary]
    if missing:
        raise ValueError(
            f"`summary` is not a model_summary() result: missing keys {missing}. "
            f"Received keys: {sorted(summary)}"
        )
    rows = [("Model", summary["name"])]
    backbone = summary["backbone"]
    if backbone is None:
        rows.append(("Backbone", "none found (no nested keras.Model)"))
    else:
        rows.append(("Backbone", f"{backbone['name']}: {backbone['params']:,} params"))
    rows.append(("Neck + head", f"{summary['neck_head_params']:,} params"))
    for group, size in summary["neck_head_groups"].items():
        rows.append((f"  {group}", f"{size:,} params"))
    rows.append(("Total params", f"{summary['total_params']:,}"))
    if "trainable_params" in summary:
        rows.append(("Trainable params", f"{summary['trainable_params']:,}"))
        rows.append(("Non-trainable params", f"{summary['non_trainable_params']:,}"))
    if summary.get("flops") is not None:
        height, width = summary["input_size"]
        rows.append((f"FLOPs per image ({height}x{width})", f"{summary['flops'] / 1e9:,.3f} G"))
    label_width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(label_width)}  {value}" for label, value in rows)


def diagram_tools_missing():
    """Return the names of the missing tools `keras.utils.plot_model` needs (empty when none).

    Returns:
        A list drawn from `"pydot"` (the Python package) and `"graphviz"` (the `dot` program).

    Example:
    >>> if not kseg.summary.diagram_tools_missing():
    ...     kseg.summary.plot_model_diagram(model, "model.png")
    """
    missing = []
    if importlib.util.find_spec("pydot") is None:
        missing.append("pydot")
    if shutil.which("dot") is None:
        missing.append("graphviz")
    return missing


def plot_model_diagram(model, path, **kwargs):
    """Draw the model's layer graph to an image file with `keras.utils.plot_model`.

    Needs the `pydot` package and Graphviz's `dot` program; when either is missing a
    RuntimeError says what to install instead of Keras' own less specific message.

    Args:
        model: A `keras.Model`.
        path: Output file; its extension (`.png`, `.svg`, `.pdf`) picks the format.
        **kwargs: Passed to `keras.utils.plot_model` (e.g. `show_shapes=True`,
            `expand_nested=True`).

    Returns:
        Whatever `keras.utils.plot_model` returns (an IPython image in notebooks).

    Raises:
        RuntimeError: pydot or graphviz is not installed.

    Example:
    >>> model = kseg.models.get_model("unet", num_classes=3, backbone="tiny")
    >>> kseg.summary.plot_model_diagram(model, "unet.png", show_shapes=True)  # doctest: +SKIP
    """
    missing = diagram_tools_missing()
    if missing:
        hints = []
        if "pydot" in missing:
            hints.append("the pydot package (`pip install pydot`)")
        if "graphviz" in missing:
            hints.append(
                "the Graphviz system package providing `dot` "
                "(e.g. `apt install graphviz` or `brew install graphviz`)"
            )
        raise RuntimeError(
            "plot_model_diagram needs pydot and Graphviz; missing: "
            f"{', '.join(missing)}. Install " + " and ".join(hints) + "."
        )
    return keras.utils.plot_model(model, to_file=str(path), **kwargs)
