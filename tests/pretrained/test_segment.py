import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from toy_pretrained import TOY_CLASS_NAMES, TOY_MIN_SIDE, register_toy_checkpoint

import kseg


def test_segment_predicts_at_the_entry_size_and_returns_labels_at_the_photo_size(
    tmp_path, monkeypatch
):
    _, cache_dir = register_toy_checkpoint(tmp_path, monkeypatch)
    model = kseg.pretrained.load("toy", cache_dir=cache_dir)
    photo = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    labels = kseg.pretrained.segment("toy", photo, model=model)
    assert labels.shape == (48, 80) and labels.dtype == np.int32
    # Independently: torchvision's Resize(32) makes 48x80 into 32x53 (int(32 * 80 / 48)),
    # bilinear with antialiasing; the logits come back to 48x80 bilinearly before the argmax.
    resized = tf.image.resize(photo[None].astype("float32"), (32, 53), antialias=True)
    logits = tf.image.resize(model(resized), (48, 80), method="bilinear")
    np.testing.assert_array_equal(labels, np.argmax(np.asarray(logits)[0], axis=-1))


def test_segment_reads_a_file_and_loads_the_model_itself(tmp_path, monkeypatch):
    _, cache_dir = register_toy_checkpoint(tmp_path, monkeypatch)
    photo = np.random.default_rng(1).integers(0, 256, (TOY_MIN_SIDE, 40, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    labels = kseg.pretrained.segment("toy", tmp_path / "photo.png", cache_dir=cache_dir)
    # Already at the entry's shorter side: no resize, labels are the model's argmax.
    model = kseg.pretrained.load("toy", cache_dir=cache_dir)
    expected = np.argmax(np.asarray(model(photo[None].astype("float32")))[0], axis=-1)
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) <= set(range(len(TOY_CLASS_NAMES)))


def test_draw_blends_the_labels_and_lists_only_the_classes_present(tmp_path, monkeypatch):
    register_toy_checkpoint(tmp_path, monkeypatch)
    photo = np.full((40, 64, 3), 100, np.uint8)
    labels = np.zeros((40, 64), np.int32)
    labels[10:30, 20:50] = 2
    picture = kseg.pretrained.draw("toy", photo, labels)
    palette = kseg.viz.palette(3)
    expected = kseg.viz.overlay(photo, labels, palette)
    np.testing.assert_array_equal(picture[:40, :64], expected)
    legend = kseg.viz.legend(TOY_CLASS_NAMES, palette, 64, classes=[0, 2])
    np.testing.assert_array_equal(picture[40:], legend)


def test_bad_photos_and_instance_names_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(ValueError, match=r"notes\.txt: not an image file"):
        kseg.pretrained.segment("deeplabv3_resnet50", tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"shape=\(4, 4\)"):
        kseg.pretrained.segment("deeplabv3_resnet50", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="'maskrcnn_resnet50_fpn' is not a semantic"):
        kseg.pretrained.draw("maskrcnn_resnet50_fpn", np.zeros((4, 4, 3)), np.zeros((4, 4)))
