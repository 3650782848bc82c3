"""Pictures of a few validation images after every epoch: a PNG and a TensorBoard image summary.

Each row of a preview shows one image, the model's prediction over it and the ground truth over
it, under column titles (and a legend of the classes for semantic models). `PreviewImages`
writes them as `run_dir/previews/epoch_NNN.png` and as the image summary "previews" of
`run_dir/logs/previews`, so TensorBoard's Images tab steps through the epochs. The rows are drawn
by a renderer: `semantic_renderer` for per-pixel labels, `instance_renderer` for detections.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from kseg.validation import IGNORE_LABEL
from kseg.viz import compose_panels, draw_instances, overlay
from kseg.viz import palette as default_palette

TITLES = ("image", "prediction", "ground truth")
"""The column titles of a preview."""


MAX_SIDE = 320
"""Panels are shrunk to at most this many pixels on their longer side, to keep previews small."""


def _shrunk(panel, max_side):
    height, width = panel.shape[:2]
    scale = max_side / max(height, width) if max_side else 1.0
    if scale >= 1.0:
        return panel
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(panel).resize(size, Image.Resampling.BOX))


def _as_uint8(image):
    return np.clip(np.rint(np.asarray(image, np.float64)), 0, 255).astype(np.uint8)


def semantic_renderer(
    images, masks, *, class_names=None, palette=None, ignore_label=IGNORE_LABEL, max_side=MAX_SIDE
):
    """A renderer for `PreviewImages`: image | prediction overlay | ground-truth overlay per row.

    The rows are laid out by `kseg.viz.compose_panels` under the column titles `TITLES`, with a
    legend of the classes present in the predictions or the ground truth when `class_names` is
    given.

    Args:
        images: the preview images, a sequence of `(H, W, 3)` arrays in [0, 255].
        masks: their integer label masks `(H, W)`.
        class_names: the class names, in label order, for the legend; None: no legend.
        palette: class colours (see `kseg.viz.colorize`); default the VOC palette.
        ignore_label: label drawn in the ignore colour.
        max_side: the model sees each image whole; its panels are then shrunk to at most this
            many pixels on the longer side (None: never).

    Returns:
        A function `model -> uint8 (height, width, 3)`.

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
        >>> render = kseg.training.semantic_renderer(
        ...     [np.zeros((32, 48, 3))], [np.ones((32, 48))], class_names=["sky", "road"]
        ... )
        >>> picture = render(model)
        >>> picture.shape[0] > 32, picture.shape[1] >= 3 * 48
        (True, True)
    """
    images = [_as_uint8(image) for image in images]
    masks = [np.asarray(mask).astype(np.int64) for mask in masks]

    colors = palette
    if class_names is not None and palette is None:
        colors = default_palette(len(class_names))

    def render(model):
        rows, present = [], set()
        for image, mask in zip(images, masks, strict=True):
            logits = model(image[None].astype(np.float32), training=False)
            labels = np.argmax(np.asarray(logits)[0], axis=-1)
            present.update(np.unique(labels).tolist() + np.unique(mask).tolist())
            panels = [
                image,
                overlay(image, labels, colors, ignore_label=ignore_label),
                overlay(image, mask, colors, ignore_label=ignore_label),
            ]
            rows.append([_shrunk(panel, max_side) for panel in panels])
        if class_names is None:
            return compose_panels(rows, titles=TITLES)
        shown = sorted(label for label in present if 0 <= label < len(class_names))
        return compose_panels(rows, class_names, colors, titles=TITLES, classes=shown)

    return render


def instance_renderer(examples, *, class_names=None, min_score=0.5, max_side=MAX_SIDE):
    """A renderer for `PreviewImages`: image | detections | ground-truth instances per row.

    Args:
        examples: unbatched instance example dicts (`image`, `boxes`, `masks`), as
            `kseg.data.shapes_instance_examples` yields, already taken to the preview count.
        class_names: the object class names (class 1 first) for the captions; default the
            class numbers.
        min_score: detections scoring below this are not drawn.
        max_side: panels are shrunk to at most this many pixels on the longer side (None:
            never).

    Returns:
        A function `model -> uint8 (height, width, 3)` (`kseg.viz.compose_panels` under the
        column titles `TITLES`).

    Example:
        >>> examples = kseg.data.shapes_instance_examples("val", num_samples=1, image_size=64)
        >>> render = kseg.training.instance_renderer(examples)
        >>> model = kseg.models.MaskRCNN(  # doctest: +SKIP
        ...     num_classes=5, backbone="tiny", fpn_channels=16)
        >>> render(model).shape[2]  # doctest: +SKIP
        3
    """
    from kseg.detection.serving import instance_serving_function

    examples = list(examples.as_numpy_iterator())

    def name(class_id):
        if class_names and 1 <= class_id <= len(class_names):
            return class_names[class_id - 1]
        return str(class_id)

    def render(model):
        serve = tf.function(instance_serving_function(model), reduce_retracing=True)
        rows = []
        for example in examples:
            image = _as_uint8(example["image"])
            out = {key: value.numpy() for key, value in serve(tf.constant(image)).items()}
            keep = [i for i in range(int(out["num_detections"])) if out["scores"][i] >= min_score]
            captions = [f"{name(int(out['classes'][i]))} {out['scores'][i]:.2f}" for i in keep]
            predicted = draw_instances(image, out["masks"][keep], out["boxes"][keep], captions)
            truth = draw_instances(image, example["masks"], example["boxes"])
            rows.append([_shrunk(panel, max_side) for panel in (image, predicted, truth)])
        return compose_panels(rows, titles=TITLES)

    return render


class PreviewImages(keras.callbacks.Callback):
    """Writes `previews/epoch_NNN.png` and a TensorBoard image summary after every epoch.

    Args:
        run_dir: the run folder; the PNGs go to `run_dir/previews`, the summaries to
            `run_dir/logs/previews` (tag "previews", step = epoch index from 0, as
            Keras's TensorBoard callback counts).
        render: a function `model -> uint8 (H, W, 3)`, e.g. `semantic_renderer(...)`.
        tensorboard: also write the image summary.

    Example:
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
        >>> render = kseg.training.semantic_renderer([np.zeros((8, 6, 3))], [np.ones((8, 6))])
        >>> previews = kseg.training.PreviewImages("/tmp/kseg_previews", render)
        >>> previews.set_model(model)
        >>> previews.on_epoch_end(0)
        >>> previews.written[-1].name
        'epoch_001.png'
    """

    def __init__(self, run_dir, render, *, tensorboard=True):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.render = render
        self.tensorboard = tensorboard
        self.written = []
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        picture = self.render(self.model)
        path = self.run_dir / "previews" / f"epoch_{epoch + 1:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(path, format="PNG")
        self.written.append(path)
        if self.tensorboard:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(
                    str(self.run_dir / "logs" / "previews")
                )
            with self._writer.as_default():
                tf.summary.image(
                    "previews",
                    picture[None],
                    step=epoch,
                    description="each row: image, prediction, ground truth",
                )
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
