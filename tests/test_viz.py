import csv

import keras
import numpy as np
import pytest
from PIL import Image

from kseg import viz

# Entries of the PASCAL VOC devkit colormap (VOClabelcolormap.m) as documented for VOC2012.
VOC_KNOWN = {
    0: (0, 0, 0),
    1: (128, 0, 0),  # aeroplane
    2: (0, 128, 0),  # bicycle
    3: (128, 128, 0),  # bird
    4: (0, 0, 128),  # boat
    7: (128, 128, 128),  # car
    8: (64, 0, 0),  # cat
    12: (64, 0, 128),  # dog
    15: (192, 128, 128),  # person
    20: (0, 64, 128),  # tvmonitor
    255: (224, 224, 192),  # void / ignore border
}


def test_voc_palette_known_entries():
    assert viz.VOC_PALETTE.shape == (256, 3) and viz.VOC_PALETTE.dtype == np.uint8
    for label, color in VOC_KNOWN.items():
        assert tuple(viz.VOC_PALETTE[label]) == color, label
    assert len(viz.VOC_CLASSES) == 21 and viz.VOC_CLASSES[15] == "person"


def test_voc_palette_follows_bit_interleaving_rule():
    # Bit k of the label goes to channel k % 3 at bit position 7 - k // 3.
    for label in range(256):
        expected = [0, 0, 0]
        for k in range(8):
            if label >> k & 1:
                expected[k % 3] += 2 ** (7 - k // 3)
        assert viz.VOC_PALETTE[label].tolist() == expected


def test_palettes_are_distinct():
    assert len({tuple(c) for c in viz.VOC_PALETTE}) == 256
    assert viz.CAMVID_PALETTE.shape == (11, 3) and len(viz.CAMVID_CLASSES) == 11
    assert len({tuple(c) for c in viz.CAMVID_PALETTE}) == 11
    assert tuple(viz.IGNORE_COLOR) not in {tuple(c) for c in viz.CAMVID_PALETTE}
    assert tuple(viz.CAMVID_PALETTE[viz.CAMVID_CLASSES.index("Road")]) == (128, 64, 128)


@pytest.mark.parametrize("num_classes", [1, 21, 150, 300])
def test_palette_any_size(num_classes):
    colors = viz.palette(num_classes)
    assert colors.shape == (num_classes, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == num_classes
    np.testing.assert_array_equal(
        colors[: min(num_classes, 256)], viz.VOC_PALETTE[: min(num_classes, 256)]
    )
    with pytest.raises(ValueError, match="num_classes=0"):
        viz.palette(0)


def test_colorize_round_trips_through_palette():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 11, (2, 9, 13))
    mask[:, 0, :4] = 11  # CamVid void
    rgb = viz.colorize(mask, viz.CAMVID_PALETTE, ignore_label=11)
    assert rgb.shape == (2, 9, 13, 3) and rgb.dtype == np.uint8
    for label in range(11):
        assert (rgb[mask == label] == viz.CAMVID_PALETTE[label]).all()
    assert (rgb[mask == 11] == viz.IGNORE_COLOR).all()
    np.testing.assert_array_equal(viz.decolorize(rgb, viz.CAMVID_PALETTE, ignore_label=11), mask)


def test_colorize_default_palette_and_errors():
    rgb = viz.colorize(np.array([[0, 15], [255, 1]], dtype=np.uint8))
    assert rgb.tolist() == [[[0, 0, 0], [192, 128, 128]], [[224, 224, 192], [128, 0, 0]]]
    assert viz.colorize(np.array([[300]])).shape == (1, 1, 3)
    with pytest.raises(ValueError, match="Label value 11"):
        viz.colorize(np.array([[11]]), viz.CAMVID_PALETTE, ignore_label=255)
    with pytest.raises(ValueError, match="dtype=float"):
        viz.colorize(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"Pixel colour \(1, 2, 3\)"):
        viz.decolorize(np.array([[[1, 2, 3]]], np.uint8), viz.CAMVID_PALETTE)


def test_overlay_blends_with_alpha():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (8, 10, 3)).astype(np.uint8)
    mask = rng.integers(0, 5, (8, 10))
    np.testing.assert_array_equal(viz.overlay(image, mask, alpha=0.0), image)
    np.testing.assert_array_equal(viz.overlay(image, mask, alpha=1.0), viz.colorize(mask))
    half = viz.overlay(image, mask, alpha=0.25)
    expected = np.rint(0.75 * image + 0.25 * viz.VOC_PALETTE[mask].astype(float))
    np.testing.assert_array_equal(half, expected.astype(np.uint8))
    gray = viz.overlay(image[..., 0].astype(np.float32), mask, alpha=0.0)
    np.testing.assert_array_equal(gray, np.repeat(image[..., :1], 3, axis=-1))
    with pytest.raises(ValueError, match="sizes differ"):
        viz.overlay(image, mask[:, :5])
    with pytest.raises(ValueError, match="alpha=1.5"):
        viz.overlay(image, mask, alpha=1.5)


def test_save_overlay_writes_png(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (12, 20, 3)).astype(np.uint8)
    mask, truth = rng.integers(0, 3, (2, 12, 20))
    single = viz.save_overlay(tmp_path / "one.png", image, mask, alpha=0.4)
    with Image.open(single) as png:
        assert png.format == "PNG" and png.size == (20, 12)
        np.testing.assert_array_equal(np.asarray(png), viz.overlay(image, mask, alpha=0.4))
    pair = viz.save_overlay(tmp_path / "pair.png", image, mask, ground_truth=truth)
    with Image.open(pair) as png:
        assert png.size == (40, 12)
        np.testing.assert_array_equal(np.asarray(png)[:, 20:], viz.overlay(image, truth))


def _assert_png(path, size):
    assert path.stat().st_size > 0
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == size


def test_plot_history_from_dict_history_and_csv(tmp_path):
    logs = {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.9, 0.8], "mean_iou": [0.2, 0.3, 0.4]}
    figure = viz.plot_history(logs, tmp_path / "dict.png", figsize=(6, 3), dpi=50)
    _assert_png(tmp_path / "dict.png", (300, 150))
    assert [axis.get_title() for axis in figure.axes] == ["loss", "mean_iou"]
    assert [len(line.get_xdata()) for line in figure.axes[0].get_lines()] == [3, 3]

    history = keras.callbacks.History()
    history.history, history.epoch = {"loss": [0.9, 0.8]}, [3, 4]
    assert viz.load_history(history)["loss"][0].tolist() == [3, 4]

    csv_path = tmp_path / "history.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "val_loss"])
        writer.writerows([[0, 1.0, 1.2], [1, 0.8, 1.0], [1, 0.7, 0.9], [2, 0.6, 0.8]])
    loaded = viz.load_history(csv_path)
    assert loaded["loss"][0].tolist() == [0, 1, 2]
    assert loaded["loss"][1].tolist() == [1.0, 0.7, 0.6]
    viz.plot_history(csv_path, tmp_path / "csv.png", metrics=["loss"], figsize=(4, 4), dpi=40)
    _assert_png(tmp_path / "csv.png", (160, 160))
    with pytest.raises(ValueError, match="Unknown metrics"):
        viz.plot_history(csv_path, metrics=["accuracy"])
    with pytest.raises(ValueError, match="No training history"):
        viz.load_history(tmp_path / "missing")


def test_tensorboard_logs_of_a_resumed_fit_are_read_back(tmp_path):
    pytest.importorskip(
        "tensorboard", reason="keras.callbacks.TensorBoard needs the tensorboard package"
    )
    from kseg import training

    def model():
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        logits = keras.layers.Conv2D(3, 1, dtype="float32")(x)
        return training.compile_model(
            keras.Model(inputs, logits), num_classes=3, optimizer="adam", learning_rate=0.01
        )

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    masks = rng.integers(0, 3, (4, 16, 16))
    run_dir = tmp_path / "run"
    first = training.fit(
        model(),
        (images, masks),
        (images, masks),
        epochs=2,
        run_dir=run_dir,
        verbose=0,
        batch_size=2,
    )
    # A second call asking for one more epoch continues the run and writes new event files.
    second = training.fit(
        model(),
        (images, masks),
        (images, masks),
        epochs=3,
        run_dir=run_dir,
        verbose=0,
        batch_size=2,
    )
    assert second.epoch == [2]

    scalars = viz.read_tensorboard_scalars(run_dir / "logs")
    assert {"loss", "val_loss", "mean_iou", "val_mean_iou"} <= set(scalars)
    for name in ("loss", "val_loss", "mean_iou"):
        epochs, values = scalars[name]
        assert epochs.tolist() == [0, 1, 2]
        expected = first.history[name] + second.history[name]
        np.testing.assert_allclose(values, expected, rtol=1e-5)
    assert viz.load_history(run_dir)["val_loss"][0].tolist() == [0, 1, 2]
    viz.plot_history(run_dir, tmp_path / "tb.png", figsize=(8, 3), dpi=60)
    _assert_png(tmp_path / "tb.png", (480, 180))


def test_history_csv_with_keras_na_cells_skips_them(tmp_path):
    # Keras's CSVLogger writes "NA" where an epoch logged no value (val_* without validation).
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("epoch,loss,val_loss\n0,1.0,NA\n1,0.5,0.7\n2,0.25,NA\n")
    loaded = viz.load_history(csv_path)
    assert loaded["loss"][1].tolist() == [1.0, 0.5, 0.25]
    assert loaded["val_loss"][0].tolist() == [1] and loaded["val_loss"][1].tolist() == [0.7]
    csv_path.write_text("epoch,loss,val_loss\n0,1.0,NA\n1,0.5,NA\n")
    assert "val_loss" not in viz.load_history(csv_path)


def test_draw_instances_tints_masks_outlines_boxes_and_keeps_the_rest():
    image = np.full((20, 30, 3), 200, np.uint8)
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 4:10, 4:12] = True  # the better detection, painted on top
    masks[1, 6:16, 8:20] = True
    boxes = np.array([[4, 4, 10, 12], [6, 8, 16, 20]], np.float32)
    drawn = viz.draw_instances(image, masks, boxes)
    colours = viz.palette(3)
    # Inside a mask and away from every outline: the 50 % blend with the instance colour.
    np.testing.assert_array_equal(drawn[6, 6], (image[6, 6] + colours[1].astype(int)) // 2)
    np.testing.assert_array_equal(drawn[12, 14], (image[12, 14] + colours[2].astype(int)) // 2)
    # Where the masks overlap, the first (best) one wins.
    np.testing.assert_array_equal(drawn[8, 9], (image[8, 9] + colours[1].astype(int)) // 2)
    # Box outlines: first row and column of the box, last pixel at max - 1.
    assert tuple(drawn[4, 7]) == tuple(colours[1]) and tuple(drawn[9, 7]) == tuple(colours[1])
    assert tuple(drawn[15, 19]) == tuple(colours[2])
    untouched = ~masks.any(0)
    untouched[4:10, 4:12] = untouched[6:16, 8:20] = False
    np.testing.assert_array_equal(drawn[untouched], image[untouched])


def test_draw_instances_writes_captions_inside_their_box_only():
    image = np.zeros((40, 60, 3), np.uint8)
    masks = np.zeros((1, 40, 60), bool)
    boxes = [[5, 5, 35, 55]]
    plain = viz.draw_instances(image, masks, boxes)
    captioned = viz.draw_instances(image, masks, boxes, ["dog 0.93"])
    changed = np.argwhere((plain != captioned).any(-1))
    assert len(changed) > 0
    assert changed[:, 0].min() >= 5 and changed[:, 1].min() >= 5 and changed[:, 0].max() < 20


def test_draw_instances_names_mismatched_inputs():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="masks shape"):
        viz.draw_instances(image, np.zeros((1, 4, 4), bool), [[0, 0, 2, 2]])
    with pytest.raises(ValueError, match="one caption per box"):
        viz.draw_instances(image, np.zeros((1, 8, 8), bool), [[0, 0, 2, 2]], ["a", "b"])
