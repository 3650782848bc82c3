"""A training recipe as data: the frozen `Recipe`, its JSON form, and a run's `recipe.json`."""

import dataclasses
import json
from pathlib import Path

from kseg.recipes.semantic_fitting import LOSSES, SCHEDULES

PURPOSES = ("paper", "finetune")
"""The recipe purposes: the paper's settings, or a short fine-tuning run on a CPU."""

CLASS_WEIGHTINGS = ("none", "median_frequency", "sqrt_median_frequency")
"""How classes are weighted in the loss: equally, or by median frequency (Eigen & Fergus 2015)."""

OPTIMIZERS = ("sgd", "adam", "adamw")
"""The optimizer names a recipe accepts."""

RECIPE_FILE = "recipe.json"
"""The file name of the resolved recipe in a run folder, beside `model.keras`."""


def _size(value, field):
    """`value` as a `(height, width)` tuple of positive ints, or None."""
    if value is None:
        return None
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"`{field}` must be SIZE or (HEIGHT, WIDTH). Received: {field}={value!r}")
    return value


def _choice(value, choices, field):
    if value not in choices:
        raise ValueError(f"`{field}` must be one of {choices}. Received: {field}={value!r}")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a training run needs, with where the values come from.

    The defaults are kseg's generic settings (those of `kseg train` before recipes existed);
    the catalogue (`kseg.recipes.get`) gives each model its own.

    Attributes:
        model: registered model name (`kseg.models.list_models()`).
        purpose: "paper" or "finetune".
        model_args: builder arguments (backbone, alpha, backbone_weights, output_stride, ...).
        optimizer: "sgd", "adam" or "adamw".
        learning_rate: initial (peak) learning rate.
        schedule: "poly" (decay to 0 with power 0.9) or "constant".
        warmup_steps: steps of linear warm-up before the schedule; 0 for none.
        weight_decay: decoupled weight decay, or None.
        momentum: SGD momentum.
        batchnorm_momentum: momentum (decay) set on every batch normalisation, or None to keep
            the built model's.
        batch_size: images per training step.
        crop_size: training crop `(height, width)`.
        resize: size every image is resized to first, in training and at evaluation and
            prediction; None keeps the native size.
        scale_range: `(low, high)` random rescaling before cropping, or None.
        flip: random left-right mirroring.
        jitter: random photometric jitter.
        epochs: training epochs.
        steps_per_epoch: steps of an epoch; None for one pass over the training images.
        loss: a name of `kseg.recipes.LOSSES`.
        class_weighting: "none", "median_frequency" (`kseg.data.median_frequency_weights`)
            or "sqrt_median_frequency" (their square roots).
        source: where the values come from: paper and section, or the measured run.
        class_names: names of the classes a run trained on (filled in by the run); None in
            the catalogue.
        palette: `(r, g, b)` colour per class of that run, or None.

    Example:
        >>> recipe = kseg.recipes.Recipe(model="unet", learning_rate=1e-3, source="a test")
        >>> recipe.replace(batch_size=2).batch_size, recipe.batch_size
        (2, 8)
        >>> kseg.recipes.Recipe.from_json(recipe.to_json()) == recipe
        True
    """

    model: str
    purpose: str = "finetune"
    model_args: dict = dataclasses.field(default_factory=dict)
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    schedule: str = "poly"
    warmup_steps: int = 0
    weight_decay: float | None = None
    momentum: float = 0.9
    batchnorm_momentum: float | None = None
    batch_size: int = 8
    crop_size: tuple | None = (512, 512)
    resize: tuple | None = None
    scale_range: tuple | None = (0.5, 2.0)
    flip: bool = True
    jitter: bool = True
    epochs: int = 30
    steps_per_epoch: int | None = None
    loss: str = "ce"
    class_weighting: str = "none"
    source: str = ""
    class_names: tuple | None = None
    palette: tuple | None = None

    def __post_init__(self):
        _choice(self.purpose, PURPOSES, "purpose")
        _choice(self.optimizer, OPTIMIZERS, "optimizer")
        _choice(self.schedule, SCHEDULES, "schedule")
        _choice(self.loss, LOSSES, "loss")
        _choice(self.class_weighting, CLASS_WEIGHTINGS, "class_weighting")
        for field in ("batch_size", "epochs"):
            if int(getattr(self, field)) < 1:
                raise ValueError(
                    f"`{field}` must be at least 1. Received: {field}={getattr(self, field)!r}"
                )
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise ValueError(
                f"`steps_per_epoch` must be at least 1 or None. "
                f"Received: steps_per_epoch={self.steps_per_epoch!r}"
            )
        if float(self.learning_rate) <= 0 or int(self.warmup_steps) < 0:
            raise ValueError(
                "`learning_rate` must be positive and `warmup_steps` at least 0. Received: "
                f"learning_rate={self.learning_rate!r}, warmup_steps={self.warmup_steps!r}"
            )
        # JSON gives lists: sizes and ranges become tuples so that equal recipes compare equal.
        normalised = {
            "model_args": {
                name: tuple(value) if isinstance(value, list) else value
                for name, value in (self.model_args or {}).items()
            },
            "crop_size": _size(self.crop_size, "crop_size"),
            "resize": _size(self.resize, "resize"),
            "scale_range": None if self.scale_range is None else tuple(self.scale_range),
            "class_names": None if self.class_names is None else tuple(self.class_names),
            "palette": None
            if self.palette is None
            else tuple(tuple(int(c) for c in color) for color in self.palette),
        }
        if normalised["scale_range"] is not None and (
            len(normalised["scale_range"]) != 2
            or not 0 < normalised["scale_range"][0] <= normalised["scale_range"][1]
        ):
            raise ValueError(
                "`scale_range` must be (LOW, HIGH) with 0 < LOW <= HIGH, or None. "
                f"Received: scale_range={self.scale_range!r}"
            )
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    @classmethod
    def field_names(cls):
        """The names of a recipe's fields, in order.

        Example:
            >>> kseg.recipes.Recipe.field_names()[:3]
            ('model', 'purpose', 'model_args')
        """
        return tuple(field.name for field in dataclasses.fields(cls))

    def replace(self, **overrides):
        """A copy with the given fields changed, validated like a new recipe.

        Args:
            **overrides: field values; `model_args` replaces the whole dict.

        Returns:
            A new `Recipe`.

        Raises:
            ValueError: for a name that is not a field (named in the message) or a bad value.

        Example:
            >>> kseg.recipes.Recipe(model="unet").replace(epoch=3)
            Traceback (most recent call last):
            ...
            ValueError: Unknown recipe field 'epoch'. Fields: model, purpose, ...
        """
        unknown = [name for name in overrides if name not in self.field_names()]
        if unknown:
            raise ValueError(
                f"Unknown recipe field {unknown[0]!r}. Fields: {', '.join(self.field_names())}"
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self):
        """The recipe as plain JSON values (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self):
        """The recipe as an indented JSON object (`from_json` reads it back)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text):
        """The recipe of a JSON object written by `to_json`.

        Raises:
            ValueError: for an unknown field or a bad value.
        """
        values = json.loads(text)
        unknown = [name for name in values if name not in cls.field_names()]
        if unknown:
            raise ValueError(
                f"Unknown recipe field {unknown[0]!r}. Fields: {', '.join(cls.field_names())}"
            )
        return cls(**values)

    def optimization(self):
        """The recipe's training-length and optimizer fields as `fit_semantic` keyword arguments.

        Example:
            >>> kseg.recipes.get("deeplabv3plus").optimization()["optimizer"]
            'adam'
        """
        return {
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "optimizer": self.optimizer,
            "batchnorm_momentum": self.batchnorm_momentum,
            "warmup_steps": self.warmup_steps,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "schedule": self.schedule,
        }

    def summary(self):
        """The recipe in a few plain lines, as `kseg train` prints it at start.

        Example:
            >>> print(kseg.recipes.Recipe(model="unet", source="a test").summary())
            ... # doctest: +NORMALIZE_WHITESPACE
            recipe unet/finetune: sgd lr 0.01 poly, warm-up 0, weight decay none, momentum 0.9,
              batch-norm momentum as built; batch 8, crop 512x512, resize native,
              scale 0.5-2, flip yes, jitter yes; 30 epochs of one pass; loss ce,
              class weighting none; model {}
              source: a test
        """

        def size(value):
            return "native" if value is None else f"{value[0]}x{value[1]}"

        scale = "none" if self.scale_range is None else "{:g}-{:g}".format(*self.scale_range)
        steps = "one pass" if self.steps_per_epoch is None else f"{self.steps_per_epoch} steps"
        batchnorm = (
            "as built" if self.batchnorm_momentum is None else f"{self.batchnorm_momentum:g}"
        )
        decay = "none" if self.weight_decay is None else f"{self.weight_decay:g}"
        return (
            f"recipe {self.model}/{self.purpose}: {self.optimizer} lr {self.learning_rate:g} "
            f"{self.schedule}, warm-up {self.warmup_steps}, weight decay {decay}, momentum "
            f"{self.momentum:g},\n  batch-norm momentum {batchnorm}; batch {self.batch_size}, "
            f"crop {size(self.crop_size)}, resize {size(self.resize)},\n  scale {scale}, flip "
            f"{'yes' if self.flip else 'no'}, jitter {'yes' if self.jitter else 'no'}; "
            f"{self.epochs} epochs of {steps}; loss {self.loss},\n  class weighting "
            f"{self.class_weighting}; model {self.model_args}\n  source: {self.source}"
        )


def save(recipe, run_dir):
    """Writes `recipe` as `run_dir/recipe.json` (creating the folder).

    Args:
        recipe: a `Recipe`.
        run_dir: the run folder.

    Returns:
        The path of the file.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> path = kseg.recipes.save(kseg.recipes.get("unet"), folder)
        >>> kseg.recipes.load(folder) == kseg.recipes.get("unet")
        True
    """
    path = Path(run_dir) / RECIPE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe.to_json() + "\n")
    return path


def load(path):
    """The recipe saved for a run folder or a model file in it, or None without one.

    A model file's recipe is `recipe.json` beside it, or in the run folder above for the epoch
    checkpoints in `RUN_DIR/checkpoints/`.

    Args:
        path: a run folder, or a `.keras` file.

    Returns:
        A `Recipe`, or None.

    Raises:
        ValueError: when the file exists but is not a recipe.
    """
    path = Path(path)
    folders = [path] if path.is_dir() else [path.parent]
    if not path.is_dir() and path.parent.name == "checkpoints":
        folders.append(path.parent.parent)
    for folder in folders:
        candidate = folder / RECIPE_FILE
        if candidate.is_file():
            try:
                return Recipe.from_json(candidate.read_text())
            except (ValueError, TypeError) as error:
                raise ValueError(f"{candidate} is not a kseg recipe: {error}") from None
    return None
