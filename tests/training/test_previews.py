"""PreviewImages: the PNG rows are image | prediction | ground truth, and TensorBoard holds them."""

import numpy as np
import tensorflow as tf
from PIL import Image
from training_helpers import tiny_model

from kseg import training, viz


def _image_summaries(logdir):
    found = []
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                # tf.summary.image stores [width, height, encoded PNG...] as a string tensor.
                if value.metadata.plugin_data.plugin_name == "images":
                    pngs = tf.make_ndarray(value.tensor)[2:]
                    found.append(
                        (event.step, value.tag, [tf.io.decode_png(p).numpy() for p in pngs])
                    )
    return found


def test_previews_write_pngs_and_image_summaries_of_the_same_picture(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 12, 10, 3)).astype(np.uint8)
    masks = rng.integers(0, 3, (2, 12, 10))
    masks[0, 0, 0] = 255
    model = tiny_model()
    names = ["sky", "road", "car"]
    render = training.semantic_renderer(images, masks, class_names=names)
    previews = training.PreviewImages(tmp_path, render)
    previews.set_model(model)
    for epoch in range(2):
        previews.on_epoch_end(epoch)
    previews.on_train_end()

    written = np.asarray(Image.open(tmp_path / "previews" / "epoch_002.png"))
    rows, present = [], {0, 1, 2}  # every class occurs in the random masks
    colors = viz.palette(3)
    for image, mask in zip(images, masks, strict=True):
        labels = np.argmax(np.asarray(model(image[None].astype("float32")))[0], -1)
        rows.append([image, viz.overlay(image, labels, colors), viz.overlay(image, mask, colors)])
    expected = viz.compose_panels(
        rows, names, colors, titles=training.previews.TITLES, classes=sorted(present)
    )
    np.testing.assert_array_equal(written, expected)
    summaries = _image_summaries(tmp_path / "logs")
    assert [(step, tag) for step, tag, _ in summaries] == [(0, "previews"), (1, "previews")]
    np.testing.assert_array_equal(summaries[-1][2][0], written)


def test_large_images_are_shown_shrunk_to_max_side():
    image = np.zeros((100, 400, 3), np.uint8)
    image[:, 200:] = 255  # right half white
    mask = np.zeros((100, 400), np.int64)
    mask[:, 200:] = 1
    render = training.semantic_renderer([image], [mask], max_side=80)
    picture = render(tiny_model())
    untitled = training.semantic_renderer([image], [mask], max_side=None)(tiny_model())
    # Three 80 x 20 panels instead of three 400 x 100 ones, under the same titles.
    assert picture.shape[1] < untitled.shape[1] / 4 and picture.shape[0] < untitled.shape[0]
    assert picture.shape[1] >= 3 * 80
