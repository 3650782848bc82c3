"""A name -> builder registry, so the command line and shared tests can reach every model."""

_MODELS = {}


def register_model(name):
    """Registers a model builder under a lower-case name.

    Example:
        >>> import kseg
        >>> "deeplabv3plus" in kseg.models.list_models()
        True
    """

    def decorator(builder):
        key = name.lower()
        if key in _MODELS and _MODELS[key] is not builder:
            raise ValueError(f"a model named {key!r} is already registered")
        _MODELS[key] = builder
        return builder

    return decorator


def get_model(name, **kwargs):
    """Builds the registered model `name` with the builder's keyword arguments.

    Example:
        >>> import kseg
        >>> model = kseg.models.get_model("deeplabv3plus", num_classes=3, backbone="tiny")
        >>> model.output.shape
        (None, None, None, 3)
    """
    try:
        builder = _MODELS[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown model {name!r}. Available models: {', '.join(list_models())}"
        ) from None
    num_classes = kwargs.get("num_classes", 1)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive integer. Received: num_classes={num_classes!r}"
        )
    return builder(**kwargs)


def get_builder(name):
    """Returns the builder function registered as `name`."""
    try:
        return _MODELS[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown model {name!r}. Available models: {', '.join(list_models())}"
        ) from None


def list_models():
    """Names of the registered models, sorted."""
    return sorted(_MODELS)
