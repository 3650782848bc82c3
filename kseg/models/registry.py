"""A name -> builder registry, so the command line and shared tests can reach every model.

Each entry also records the model's task: "semantic" (per-pixel logits) or "instance"
(detections with masks), which `kseg.tasks` turns into the matching build, fit, evaluate,
predict, draw and export steps.
"""

TASKS = ("semantic", "instance")
"""The tasks a registered model can have."""

_MODELS = {}
_TASK_OF = {}
_ALIASES = {}


def register_model(name, *, task="semantic", aliases=()):
    """Registers a model builder under a lower-case name, with its task.

    Registering the same builder again under its name is harmless; another builder under a
    taken name (or alias) is an error.

    Args:
        name: the model's name, matched case-insensitively.
        task: "semantic" or "instance".
        aliases: other names that reach the same builder (not listed by `list_models`).

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Example:
        >>> import kseg
        >>> "deeplabv3plus" in kseg.models.list_models()
        True
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}. Received: task={task!r}")
    key = name.lower()
    alias_keys = tuple(alias.lower() for alias in aliases)

    def decorator(builder):
        if (key in _MODELS and _MODELS[key] is not builder) or key in _ALIASES:
            raise ValueError(f"a model named {key!r} is already registered")
        for alias in alias_keys:
            if _ALIASES.get(alias, key) != key or alias in _MODELS:
                raise ValueError(f"a model named {alias!r} is already registered")
        _MODELS[key] = builder
        _TASK_OF[key] = task
        _ALIASES.update(dict.fromkeys(alias_keys, key))
        return builder

    return decorator


def _registered_name(name):
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _MODELS:
        raise ValueError(f"Unknown model {name!r}. Available models: {', '.join(list_models())}")
    return key


def get_model(name, **kwargs):
    """Builds the registered model `name` with the builder's keyword arguments.

    Example:
        >>> import kseg
        >>> model = kseg.models.get_model("deeplabv3plus", num_classes=3, backbone="tiny")
        >>> model.output.shape
        (None, None, None, 3)
    """
    builder = get_builder(name)
    num_classes = kwargs.get("num_classes", 1)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive integer. Received: num_classes={num_classes!r}"
        )
    return builder(**kwargs)


def get_builder(name):
    """Returns the builder function (or model class) registered as `name`.

    Example:
        >>> import kseg
        >>> kseg.models.get_builder("MaskRCNN") is kseg.models.MaskRCNN
        True
    """
    return _MODELS[_registered_name(name)]


def get_task(name):
    """Returns the task of the registered model `name`: "semantic" or "instance".

    Example:
        >>> import kseg
        >>> kseg.models.registry.get_task("mask_rcnn"), kseg.models.registry.get_task("unet")
        ('instance', 'semantic')
    """
    return _TASK_OF[_registered_name(name)]


def list_models(task=None):
    """Names of the registered models, sorted; only those of `task` when it is given.

    Example:
        >>> import kseg
        >>> kseg.models.list_models(task="instance")
        ['mask_rcnn']
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None. Received: task={task!r}")
    return sorted(name for name in _MODELS if task is None or _TASK_OF[name] == task)
