"""A publisher's model as a kseg builder configuration: `{name: (builder, keyword arguments)}`."""

from kseg.models.registry import get_builder


def build_configured(configs, name, kind, num_classes, overrides):
    """Builds `name` of `configs` with `num_classes`, `overrides` replacing its arguments.

    Args:
        configs: mapping of publisher model names to `(registered kseg builder, kwargs)`.
        name: the model to build.
        kind: what `configs` holds, for the error ("torchvision segmentation model").
        num_classes: classes of the classifier.
        overrides: builder arguments replacing the configuration's.

    Raises:
        ValueError: for a name `configs` lacks, listing the known ones.

    Example:
        >>> configs = {"small": ("unet", {"num_filters": 4, "depth": 2, "padding": "same"})}
        >>> build_configured(configs, "small", "toy", 2, {"name": "tiny_unet"}).name
        'tiny_unet'
        >>> build_configured(configs, "large", "toy", 2, {})
        Traceback (most recent call last):
        ...
        ValueError: Unknown toy 'large'. Known: ['small']
    """
    if name not in configs:
        raise ValueError(f"Unknown {kind} {name!r}. Known: {sorted(configs)}")
    builder, kwargs = configs[name]
    return get_builder(builder)(num_classes=num_classes, **{**kwargs, **overrides})
