"""A semantic model trained end to end from a `Recipe`: data, loss, model and fit."""

from kseg.data.augment import resize_pair
from kseg.data.class_frequencies import class_pixel_counts, median_frequency_weights
from kseg.models.registry import get_model, get_task
from kseg.recipes.recipe import save
from kseg.recipes.semantic_fitting import fit_semantic, segmentation_loss, semantic_batches
from kseg.validation import IGNORE_LABEL


def resized(source, size):
    """`(image, mask)` pairs resized to `size` (image bilinear, mask nearest); None: unchanged."""
    if size is None:
        return source
    return source.map(lambda image, mask: resize_pair(image, mask, size))


def recipe_loss(recipe, num_classes, train_source=None, ignore_label=IGNORE_LABEL):
    """The loss a recipe names, class-weighted by median frequency when it asks.

    Args:
        recipe: a `Recipe`.
        num_classes: number of classes.
        train_source: the training `(image, mask)` pairs as trained on (after the recipe's
            resize); needed for class weights (`recipe.class_weighting` not "none").
        ignore_label: mask value left out of the loss and the counts.

    Returns:
        A `keras.losses.Loss`.

    Example:
        >>> masks = tf.data.Dataset.from_tensor_slices(np.array([[[0, 0], [0, 1]]], np.uint8))
        >>> recipe = kseg.recipes.get("segnet_basic")
        >>> loss = kseg.recipes.recipe_loss(recipe, 2, masks)
        >>> [round(w, 3) for w in loss.class_weights]
        [0.667, 2.0]
    """
    weights = None
    if recipe.class_weighting != "none":
        if train_source is None:
            raise ValueError("median-frequency class weights need the training masks")
        counts = class_pixel_counts(train_source, num_classes, ignore_label)
        power = 0.5 if recipe.class_weighting == "sqrt_median_frequency" else 1.0
        weights = median_frequency_weights(counts, power=power)
    return segmentation_loss(recipe.loss, num_classes, ignore_label, class_weights=weights)


def fit_recipe(
    recipe,
    train_source,
    val_source,
    *,
    num_classes,
    run_dir,
    class_names=None,
    palette=None,
    ignore_label=IGNORE_LABEL,
    seed=0,
    model=None,
    **fit_options,
):
    """Trains a semantic model the way `recipe` says and saves the recipe in `run_dir`.

    Both splits are resized to `recipe.resize` (when set); training batches take the recipe's
    crop, scale range, flip and jitter (`semantic_batches`); the loss is the recipe's, with
    median-frequency class weights counted on the training masks when it asks; the model is
    built from `recipe.model` and `recipe.model_args` unless given; `fit_semantic` trains it
    with the recipe's optimizer, schedule, warm-up, weight decay, momentum and batch-norm
    momentum. `run_dir/recipe.json` holds the recipe with the class names and palette, so that
    `kseg evaluate` and `kseg predict` run the model the same way.

    Args:
        recipe: a semantic model's `Recipe` (see `kseg.recipes.resolve`).
        train_source: training `(image, mask)` pairs of known cardinality.
        val_source: validation `(image, mask)` pairs.
        num_classes: number of classes.
        run_dir: the run folder (resumable).
        class_names: class names, for previews and `recipe.json`.
        palette: `(num_classes, 3)` class colours, or None.
        ignore_label: mask value left out of loss and metric.
        seed: seed of the augmentation and shuffling.
        model: a built model to train instead of building `recipe.model`.
        **fit_options: other arguments of `fit_semantic` (metrics, verbose, monitor, ...).

    Returns:
        The trained model.

    Example:
        >>> import tempfile
        >>> source = kseg.data.load_dataset("shapes", "train", num_samples=4, image_size=48)
        >>> recipe = kseg.recipes.resolve(
        ...     "deeplabv3plus", model_args={"backbone": "tiny"}, resize=(32, 32),
        ...     crop_size=(32, 32), batch_size=2, epochs=1, steps_per_epoch=1,
        ... )
        >>> run_dir = tempfile.mkdtemp()
        >>> model = kseg.recipes.fit_recipe(
        ...     recipe, source, source, num_classes=5, run_dir=run_dir, run_eagerly=True,
        ... )  # doctest: +ELLIPSIS
        1/1 - ...
        >>> kseg.recipes.load(run_dir).resize, model.output.shape[-1]
        ((32, 32), 5)
    """
    if get_task(recipe.model) != "semantic":
        raise ValueError(
            f"fit_recipe trains semantic models; {recipe.model} is trained with "
            "kseg.recipes.fit_instances. Received: recipe.model={recipe.model!r}"
        )
    train_source = resized(train_source, recipe.resize)
    val_source = resized(val_source, recipe.resize)
    train, val, steps = semantic_batches(
        train_source,
        val_source,
        batch_size=recipe.batch_size,
        crop_size=recipe.crop_size,
        ignore_label=ignore_label,
        seed=seed,
        scale_range=recipe.scale_range,
        steps_per_epoch=recipe.steps_per_epoch,
        flip=recipe.flip,
        jitter=recipe.jitter,
    )
    loss = recipe_loss(recipe, num_classes, train_source, ignore_label)
    if model is None:
        model = get_model(recipe.model, num_classes=num_classes, **recipe.model_args)
    save(
        recipe.replace(
            class_names=class_names,
            palette=None if palette is None else [list(map(int, c)) for c in palette],
        ),
        run_dir,
    )
    fit_semantic(
        model,
        train,
        val,
        num_classes=num_classes,
        steps_per_epoch=steps,
        run_dir=run_dir,
        ignore_label=ignore_label,
        loss=loss,
        class_names=class_names,
        palette=palette,
        **recipe.optimization(),
        **fit_options,
    )
    return model
