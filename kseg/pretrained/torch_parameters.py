"""PyTorch parameters onto Keras variables: which variable a parameter fills, in which layout.

The converters of `kseg.pretrained` map a state dict onto kseg layers named after the source's
module paths: the key `<module path>.<parameter>` fills a variable of the layer for
`<module path>`. This module holds the part they share:

- convolutions: `weight` (out, in, kh, kw) -> `kernel` (kh, kw, in, out); `bias` -> `bias`;
- BatchNorm (and FrozenBatchNorm2d): `weight` -> `gamma`, `bias` -> `beta`,
  `running_mean` -> `moving_mean`, `running_var` -> `moving_variance`;
  `num_batches_tracked` holds no value a Keras layer uses and is consumed without a copy.
"""

import keras
import numpy as np

_CONVOLUTION_PARAMETERS = {"weight": "kernel", "bias": "bias"}
_NORMALISATION_PARAMETERS = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
UNUSED_PARAMETERS = ("num_batches_tracked",)
"""Parameters a PyTorch layer keeps that no Keras variable holds."""


def keras_variable(layer, parameter):
    """The variable of `layer` that the PyTorch `parameter` fills, or None when none does.

    Example:
        >>> layer = keras.layers.Conv2D(4, 3)
        >>> layer.build((None, 8, 8, 2))
        >>> keras_variable(layer, "weight").path, keras_variable(layer, "running_mean")
        ('conv2d/kernel', None)
    """
    if isinstance(layer, keras.layers.Conv2D):
        attribute = _CONVOLUTION_PARAMETERS.get(parameter)
    elif isinstance(layer, keras.layers.BatchNormalization):
        attribute = _NORMALISATION_PARAMETERS.get(parameter)
    else:
        return None
    return None if attribute is None else getattr(layer, attribute, None)


def keras_layout(array, variable, key):
    """`array` of checkpoint key `key` in the layout and dtype of `variable`.

    Raises:
        TypeError: the array does not hold floats.
        ValueError: its shape, once laid out as Keras lays it out, is not the variable's.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"Checkpoint key {key!r} holds {array.dtype} values; {variable.path} needs floats."
        )
    if array.ndim == 4:
        array = array.transpose(2, 3, 1, 0)
    if tuple(array.shape) != tuple(variable.shape):
        raise ValueError(
            f"Checkpoint key {key!r} has shape {array.shape} (as Keras lays it out), but "
            f"{variable.path} has shape {tuple(variable.shape)}."
        )
    return array.astype(variable.dtype)


def plan_assignments(state_dict, paths, layers):
    """Matches checkpoint keys to the variables of `layers`, each variable at most once.

    Args:
        state_dict: mapping of checkpoint keys to arrays.
        paths: mapping of the checkpoint keys to match to their `<module path>.<parameter>`
            (a key's prefix stripped).
        layers: mapping of module paths to Keras layers.

    Returns:
        `(assignments, consumed, unused)`: a dict id(variable) -> (variable, array) in Keras
        layout, the keys used (counters such as `num_batches_tracked` included) and the keys
        that fill nothing.

    Example:
        >>> layer = keras.layers.Conv2D(4, 3, use_bias=False)
        >>> layer.build((None, 8, 8, 2))
        >>> state = {"c.weight": np.zeros((4, 2, 3, 3), "float32"), "c.bias": np.zeros(4)}
        >>> _, consumed, unused = plan_assignments(state, {k: k for k in state}, {"c": layer})
        >>> consumed, unused
        (['c.weight'], ['c.bias'])
    """
    assignments = {}
    consumed, unused = [], []
    for key, local in paths.items():
        path, _, parameter = local.rpartition(".")
        layer = layers.get(path)
        if layer is not None and parameter in UNUSED_PARAMETERS:
            consumed.append(key)
            continue
        variable = None if layer is None else keras_variable(layer, parameter)
        if variable is None or id(variable) in assignments:
            unused.append(key)
            continue
        assignments[id(variable)] = (variable, keras_layout(state_dict[key], variable, key))
        consumed.append(key)
    return assignments, consumed, unused


def weighted_layers(model):
    """Every layer of `model` holding variables, nested models flattened, by layer name.

    Raises:
        ValueError: two such layers share a name (a torch module path must name one layer).

    Example:
        >>> inputs = keras.Input((4, 4, 3))
        >>> outputs = keras.layers.Conv2D(2, 1, name="conv1")(keras.layers.ReLU()(inputs))
        >>> list(weighted_layers(keras.Model(inputs, outputs)))
        ['conv1']
    """
    layers = {}
    pending = list(model.layers)
    while pending:
        layer = pending.pop(0)
        if isinstance(layer, keras.Model):
            pending.extend(layer.layers)
        elif layer.weights:
            if layer.name in layers:
                raise ValueError(f"Two layers are named {layer.name!r} in model {model.name!r}")
            layers[layer.name] = layer
    return layers


def apply_assignments(model, layers, assignments, unused, prefix):
    """Sets every planned variable, once nothing is left over on either side.

    The checkpoint and the model must match exactly: a key that fills nothing or a variable of
    `layers` that receives nothing fails the whole conversion before any variable changes.

    Args:
        model: the model converted onto, named in the error.
        layers: mapping of module paths to the layers whose variables must all be filled.
        assignments: `plan_assignments`' dict id(variable) -> (variable, array).
        unused: checkpoint keys that filled nothing.
        prefix: the key prefix the conversion read, named in the error.

    Raises:
        ValueError: listing the unused keys and the unset variables.

    Example:
        >>> layer = keras.layers.Dense(2, name="fc")
        >>> layer.build((None, 3))
        >>> apply_assignments(layer, {"fc": layer}, {}, ["head.weight"], prefix="")
        Traceback (most recent call last):
        ...
        ValueError: ... unused keys (1): ['head.weight']; unset variables (2): ['fc/bias', ...
    """
    variables = [variable for layer in layers.values() for variable in layer.weights]
    require_complete(f"{model.name!r} (prefix {prefix!r})", variables, assignments, unused)
    assign_planned(assignments)


def require_complete(subject, variables, assignments, unused):
    """Raises unless every key filled a variable and every one of `variables` received a key.

    Args:
        subject: what the state dict is matched against, for the error ("the head of ...").
        variables: the variables that must all be planned.
        assignments: `plan_assignments`' dict id(variable) -> (variable, array).
        unused: checkpoint keys that filled nothing.

    Raises:
        ValueError: listing the unused keys and the unset variables.

    Example:
        >>> layer = keras.layers.Dense(2, name="fc")
        >>> layer.build((None, 3))
        >>> require_complete("the toy", layer.weights, {}, [])
        Traceback (most recent call last):
        ...
        ValueError: The state dict does not match the toy: unused keys (0): []; unset ...
    """
    unset = [variable.path for variable in variables if id(variable) not in assignments]
    if unused or unset:
        raise ValueError(
            f"The state dict does not match {subject}: "
            f"unused keys ({len(unused)}): {sorted(unused)}; "
            f"unset variables ({len(unset)}): {sorted(unset)}"
        )


def assign_planned(assignments):
    """Sets each planned variable to its array (after `require_complete` passed)."""
    for variable, array in assignments.values():
        variable.assign(array)


def variables_outside(model, part):
    """The variables of `model` that are not `part`'s (a converter's head beside its backbone).

    Example:
        >>> inputs = keras.Input((3,))
        >>> part = keras.layers.Dense(2)
        >>> model = keras.Model(inputs, keras.layers.Dense(1)(part(inputs)))
        >>> len(model.weights), len(variables_outside(model, part))
        (4, 2)
    """
    inside = {id(variable) for variable in part.weights}
    return [variable for variable in model.weights if id(variable) not in inside]
