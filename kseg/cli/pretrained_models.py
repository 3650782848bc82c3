"""`--model` of `kseg predict` and `kseg evaluate`: a .keras file or a published checkpoint's name.

A file is loaded with the recipe.json saved beside it; a name of `kseg.pretrained` is loaded
with its converted weights and the entry's class names, palette and resize policy standing in
for the recipe, so the rest of the command treats both alike.
"""

import dataclasses
from pathlib import Path

from kseg.cli import arguments
from kseg.pretrained.resize import MinSideResize, resize_policy  # noqa: F401


@dataclasses.dataclass(frozen=True)
class PretrainedSettings:
    """What a published checkpoint expects, in the fields of a saved recipe that commands read.

    Attributes:
        class_names: the publisher's class names.
        palette: `(num_classes, 3)` uint8 colours.
        resize: a resize policy (`MinSideResize`) or None.
    """

    class_names: tuple
    palette: object
    resize: object


def settings_of(entry):
    """The `PretrainedSettings` of a registry entry (`kseg.pretrained.get`).

    An instance entry's names are those of classes 1..K (its background dropped) and it has no
    resize here: its configuration resizes inside the model.

    Example:
        >>> settings = kseg.cli.pretrained_models.settings_of(
        ...     kseg.pretrained.get("deeplabv3_resnet50"))
        >>> settings.class_names[:2], settings.palette.shape, str(settings.resize)
        (('__background__', 'aeroplane'), (21, 3), 'min_side 520')
        >>> settings = kseg.cli.pretrained_models.settings_of(
        ...     kseg.pretrained.get("maskrcnn_resnet50_fpn"))
        >>> settings.class_names[:2], settings.resize
        (('person', 'bicycle'), None)
    """
    if entry.task == "instance":
        # An instance configuration resizes inside the model (torchvision's min/max-side
        # transform, boxes mapped back), and instance commands name classes 1..K.
        return PretrainedSettings(
            class_names=tuple(entry.class_names[1:]),
            palette=arguments.palette(entry.palette, entry.num_classes),
            resize=None,
        )
    return PretrainedSettings(
        class_names=tuple(entry.class_names),
        palette=arguments.palette(entry.palette, entry.num_classes),
        resize=resize_policy(entry.resize),
    )


def load_model(text):
    """The model `--model` names and its recipe (or a published checkpoint's settings).

    A path that exists is loaded as a model file, with the recipe saved beside it (or None); a
    name of `kseg.pretrained.list_pretrained()` is downloaded (once) and converted.

    Returns:
        `(model, recipe)`: the `keras.Model` and a `kseg.recipes` recipe, `PretrainedSettings`
        or None.

    Raises:
        SystemExit: naming both possibilities and the registry's names for anything else, or
            saying what kseg lacks for a checkpoint it cannot load yet.
    """
    import kseg.pretrained

    if Path(text).exists():
        return arguments.load_model(text), arguments.saved_recipe(text)
    names = kseg.pretrained.list_pretrained()
    if text not in names:
        raise SystemExit(
            f"kseg: error: --model takes a model file or a pretrained checkpoint name; {text!r} "
            f"is neither (no such file). Pretrained names (kseg list --pretrained): "
            f"{', '.join(names)}"
        )
    try:
        model = kseg.pretrained.load(text)
    except kseg.pretrained.NotLoadableError as error:
        raise SystemExit(f"kseg: error: {error}") from None
    return model, settings_of(kseg.pretrained.get(text))
