"""What differs between semantic and instance segmentation models, in one place.

A semantic model maps images to per-pixel logits `(B, H, W, C)`; an instance model
(`kseg.models.MaskRCNN`) maps them to detections with masks. They are built, trained, scored,
run on one image, drawn and exported by different library functions; a task object names the
right one for each step, so callers (the `kseg` command line among them) ask the task rather than
test the model's type. `for_name` finds the task of a registered model name, `for_model` that of
a built or loaded model.
"""

import inspect

import numpy as np
import tensorflow as tf

from kseg.detection.evaluation import evaluate_instances
from kseg.detection.serving import instance_serving_function
from kseg.evaluation import evaluate_model
from kseg.export import saved_model
from kseg.inference.predictor import make_predictor
from kseg.models.registry import get_builder, get_model, get_task, list_models
from kseg.recipes import fit_instances, fit_semantic
from kseg.validation import IGNORE_LABEL
from kseg.viz import draw_instances, overlay


class SemanticTask:
    """Per-pixel classification: logits `(B, H, W, num_classes)` against integer masks.

    Example:
        >>> task = kseg.tasks.for_name("fcn8s")
        >>> model = task.build("deeplabv3plus", num_classes=3, backbone="tiny")
        >>> labels = task.predictor(model)(np.zeros((32, 48, 3), np.float32))
        >>> labels.shape, task.draw(np.zeros((32, 48, 3)), labels).shape
        ((32, 48), (32, 48, 3))
    """

    name = "semantic"

    def build(self, model_name, **kwargs):
        """Builds the registered model `model_name` (see `kseg.models.get_model`)."""
        return get_model(model_name, **kwargs)

    def fit(self, model, train, val, **kwargs):
        """Compiles and trains the model: `kseg.recipes.fit_semantic`."""
        return fit_semantic(model, train, val, **kwargs)

    def inference(
        self,
        model,
        *,
        scales=(1.0,),
        flip=False,
        window=None,
        overlap=1 / 3,
        crf=False,
        crf_options=None,
    ):
        """An images -> labels function for the given inference modes, or None for plain argmax.

        Args:
            model: the segmentation model.
            scales: image scales averaged over (multi-scale inference).
            flip: also average over mirrored images.
            window: sliding-window size (int or `(height, width)`), or None.
            overlap: fraction shared by neighbouring windows.
            crf: refine with the dense CRF.
            crf_options: keyword arguments of `kseg.inference.dense_crf` (iterations, kernel
                widths and weights) for `crf`.

        Returns:
            None when every mode is off, else `kseg.inference.make_predictor(model, ...)`.
        """
        if tuple(scales) == (1.0,) and not flip and window is None and not crf:
            return None
        return make_predictor(
            model,
            scales=scales,
            flip=flip,
            window=window,
            overlap=overlap,
            crf=crf,
            crf_options=crf_options,
        )

    def evaluate(self, model, dataset, num_classes, *, ignore_label=IGNORE_LABEL, **inference):
        """Per-class IoU, mean IoU and accuracies over `(images, masks)` batches.

        Args:
            model: the segmentation model.
            dataset: batches of `(images, masks)`.
            num_classes: number of classes.
            ignore_label: label left out of every score.
            **inference: the modes of `inference` (scales, flip, window, overlap, crf,
                crf_options).

        Returns:
            The dict of `kseg.evaluation.evaluate_model`.
        """
        predict_fn = self.inference(model, **inference)
        return evaluate_model(
            model, dataset, num_classes, ignore_label=ignore_label, predict_fn=predict_fn
        )

    def predictor(self, model, **inference):
        """A function mapping one image `(H, W, 3)` in [0, 255] to uint8 labels `(H, W)`.

        Args:
            model: the segmentation model.
            **inference: the modes of `inference` (scales, flip, window, overlap, crf,
                crf_options).

        Returns:
            The function.
        """
        # make_predictor runs a folded, frozen copy of the model in every mode.
        predict_fn = self.inference(model, **inference) or make_predictor(model)

        def predict(image):
            images = np.asarray(image, np.float32)[None]
            return predict_fn(images)[0].astype(np.uint8)

        return predict

    def draw(self, image, labels, *, palette=None):
        """The labels blended over the image (`kseg.viz.overlay`), a uint8 `(H, W, 3)` array."""
        return overlay(image, labels, palette)

    def export(self, model, path, **kwargs):
        """Writes a SavedModel with a uint8 serving signature (`kseg.export.saved_model`)."""
        return saved_model(model, path, **kwargs)


class InstanceTask:
    """Instance segmentation: detections with boxes, classes, scores and masks.

    Example:
        >>> task = kseg.tasks.for_name("mask_rcnn")
        >>> masks = np.zeros((1, 8, 8), bool)
        >>> masks[0, 2:6, 2:6] = True
        >>> detections = {"boxes": np.array([[2.0, 2.0, 6.0, 6.0]]), "masks": masks}
        >>> task.draw(np.zeros((8, 8, 3), np.uint8), detections)[3, 3].tolist()
        [64, 0, 0]
    """

    name = "instance"

    def build(self, model_name, **kwargs):
        """Builds the registered model `model_name` (see `kseg.models.get_model`).

        Keywords its builder does not name go to the backbone (`with_backbone_arguments`), as
        a semantic builder passes them on: `alpha=0.35` sets a MobileNet backbone's width.
        """
        return get_model(model_name, **with_backbone_arguments(get_builder(model_name), kwargs))

    def fit(self, model, batches, **kwargs):
        """Compiles and trains the model: `kseg.recipes.fit_instances`."""
        return fit_instances(model, batches, **kwargs)

    def evaluate(self, model, examples, categories, *, batch_size=4, detection_category_ids=None):
        """COCO mask and box AP over instance examples: `kseg.detection.evaluate_instances`."""
        return evaluate_instances(
            model,
            examples,
            categories,
            batch_size=batch_size,
            detection_category_ids=detection_category_ids,
        )

    def predictor(self, model, *, mask_threshold=0.5, min_score=0.0):
        """A function mapping one uint8 image `(H, W, 3)` to its detections.

        Args:
            model: the instance segmentation model.
            mask_threshold: mask probability at which a pixel belongs to the instance.
            min_score: detections scoring below this are dropped.

        Returns:
            The function; its result is a dict of numpy arrays: `boxes (N, 4)` `[y1, x1, y2,
            x2]` in pixels, `classes (N,)`, `scores (N,)` and full-image `masks (N, H, W)`, best
            first.
        """
        serve = tf.function(
            instance_serving_function(model, mask_threshold=mask_threshold),
            reduce_retracing=True,
        )

        def predict(image):
            result = {key: value.numpy() for key, value in serve(tf.constant(image)).items()}
            count = int(result["num_detections"])
            keep = [i for i in range(count) if result["scores"][i] >= min_score]
            return {key: result[key][keep] for key in ("boxes", "classes", "scores", "masks")}

        return predict

    def draw(self, image, detections, *, captions=None):
        """Masks and boxes drawn over the image (`kseg.viz.draw_instances`)."""
        return draw_instances(image, detections["masks"], detections["boxes"], captions)

    def export(self, model, path, **kwargs):
        """Writes the instance SavedModel: one uint8 image in, detections out."""
        return saved_model(model, path, **kwargs)


# Keyword arguments every keras.Model takes besides its builder's own.
_KERAS_MODEL_ARGUMENTS = frozenset({"name", "dtype", "trainable"})


def with_backbone_arguments(builder, kwargs):
    """Moves the arguments `builder` does not name into its `backbone_kwargs`.

    Semantic builders pass unknown keywords on to their backbone; `kseg.models.MaskRCNN` takes
    them as a `backbone_kwargs` dict. With this, `alpha=0.35` (`--model-arg alpha=0.35` on the
    command line) reaches the backbone of both, and `backbone_kwargs={...}` keeps working (its
    entries are merged).

    Args:
        builder: a model builder (function or class).
        kwargs: the builder keyword arguments.

    Returns:
        A new dict; unchanged for a builder without a `backbone_kwargs` dict parameter.

    Example:
        >>> kwargs = {"alpha": 0.35, "rpn_test_nms": (200, 100)}
        >>> kseg.tasks.with_backbone_arguments(kseg.models.MaskRCNN, kwargs)
        {'rpn_test_nms': (200, 100), 'backbone_kwargs': {'alpha': 0.35}}
    """
    parameters = inspect.signature(builder).parameters
    takes_dict = parameters.get("backbone_kwargs")
    if takes_dict is None or takes_dict.kind == takes_dict.VAR_KEYWORD:
        return dict(kwargs)
    named = {
        name
        for name, parameter in parameters.items()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    } | _KERAS_MODEL_ARGUMENTS
    result = {name: value for name, value in kwargs.items() if name in named}
    backbone = dict(result.pop("backbone_kwargs", None) or {})
    backbone.update({name: value for name, value in kwargs.items() if name not in named})
    if backbone:
        result["backbone_kwargs"] = backbone
    return result


SEMANTIC = SemanticTask()
INSTANCE = InstanceTask()
_TASKS = {task.name: task for task in (SEMANTIC, INSTANCE)}


def for_name(model_name):
    """The task of the registered model `model_name`.

    Args:
        model_name: a name of `kseg.models.list_models()` (or an alias such as "maskrcnn").

    Returns:
        `kseg.tasks.SEMANTIC` or `kseg.tasks.INSTANCE`.

    Raises:
        ValueError: for a name that is not registered.

    Example:
        >>> kseg.tasks.for_name("MaskRCNN").name
        'instance'
    """
    return _TASKS[get_task(model_name)]


def for_model(model):
    """The task of a built or loaded model: instance for a registered instance model's class.

    Args:
        model: a `keras.Model`.

    Returns:
        `kseg.tasks.SEMANTIC` or `kseg.tasks.INSTANCE`.

    Example:
        >>> kseg.tasks.for_model(kseg.models.UNet(num_classes=2, backbone="tiny")).name
        'semantic'
    """
    for name in list_models(task=INSTANCE.name):
        builder = get_builder(name)
        if isinstance(builder, type) and isinstance(model, builder):
            return INSTANCE
    return SEMANTIC
