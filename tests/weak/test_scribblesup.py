"""ScribbleSup: propagation on synthetic images, a training round, and bad input."""

import keras
import numpy as np
import pytest

pytest.importorskip("skimage", reason="ScribbleSup needs scikit-image (the `weak` extra)")
pytest.importorskip("gco", reason="ScribbleSup needs gco-wrapper (the `weak` extra)")

import kseg.testing
from kseg.losses import SegmentationCrossEntropy
from kseg.weak.scribblesup import propagate_scribbles, scribblesup_rounds


def _disc_image(height=40, width=48):
    """A flat orange disc on a flat blue background, and its mask."""
    rows, cols = np.mgrid[:height, :width]
    disc = (rows - 20) ** 2 + (cols - 26) ** 2 <= 12**2
    image = np.where(disc[..., None], [230.0, 120.0, 30.0], [30.0, 60.0, 200.0])
    return image.astype(np.float32), disc.astype(np.uint8)


def test_two_flat_regions_with_one_scribble_each_are_labelled_fully():
    image, mask = _disc_image()
    scribbles = np.full(mask.shape, 255, np.uint8)
    scribbles[18:23, 26] = 1  # a short stroke at the disc's centre
    scribbles[2, 2:8] = 0  # a short stroke in a background corner
    labels = propagate_scribbles(image, scribbles, num_classes=2, n_segments=60)
    assert labels.dtype == np.uint8 and labels.shape == mask.shape
    np.testing.assert_array_equal(labels, mask)


# Background (class 0) and three object colours, far apart in RGB as in the red-on-blue.
SCENE_COLOURS = np.array([[40, 60, 200], [200, 40, 40], [40, 190, 60], [230, 210, 40]], float)


def _shape(kind, height, width, centre, size, angle):
    rows, cols = np.mgrid[:height, :width]
    dy, dx = rows - centre[0], cols - centre[1]
    if kind == "disc":
        return dy**2 + dx**2 <= size**2
    if kind == "rectangle":
        return (np.abs(dy) <= 0.7 * size) & (np.abs(dx) <= size)
    along = dy * np.cos(angle) + dx * np.sin(angle)
    across = -dy * np.sin(angle) + dx * np.cos(angle)
    return (along / size) ** 2 + (across / (0.6 * size)) ** 2 <= 1  # ellipse


def _noisy_scene(seed, kinds, height, width, size):
    """Flat shapes (classes 1..) on a flat background (class 0), Gaussian noise of 20 grey levels.

    Each shape gets one horizontal stroke through its centre, half its size long; the background
    gets two strokes along the top and bottom rows.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.int64)
    scribbles = np.full((height, width), 255, np.uint8)
    for index, kind in enumerate(kinds):
        centre = (height // 2, int((index + 0.5) * width / len(kinds)))
        region = _shape(kind, height, width, centre, size, rng.uniform(0, np.pi))
        mask[region] = index + 1
        half = max(size // 4, 1)
        scribbles[centre[0], centre[1] - half : centre[1] + half + 1] = index + 1
    for row in (2, height - 3):
        scribbles[row, width // 4 : 3 * width // 4] = 0
    assert (mask[scribbles != 255] == scribbles[scribbles != 255]).all()
    image = SCENE_COLOURS[mask] + rng.normal(0.0, 20.0, (height, width, 3))
    return np.clip(image, 0, 255), scribbles, mask


@pytest.mark.parametrize(
    ("seed", "kinds", "height", "width", "size", "n_segments"),
    [
        (0, ["disc"], 96, 128, 30, 300),  # the case
        (1, ["disc"], 64, 64, 16, 150),
        (2, ["rectangle"], 120, 160, 40, 1000),
        (3, ["ellipse"], 80, 100, 32, 300),
        (4, ["disc", "rectangle", "ellipse"], 96, 192, 24, 600),
        (5, ["ellipse", "disc", "rectangle"], 120, 200, 28, 300),
        (6, ["rectangle", "ellipse", "disc"], 100, 240, 32, 1000),
    ],
)
def test_a_stroke_labels_its_flat_region_under_noise(seed, kinds, height, width, size, n_segments):
    image, scribbles, mask = _noisy_scene(seed, kinds, height, width, size)
    num_classes = len(kinds) + 1
    labels = propagate_scribbles(image, scribbles, num_classes=num_classes, n_segments=n_segments)
    for label in range(num_classes):
        recall = np.mean(labels[mask == label] == label)
        assert recall >= 0.95, f"class {label}: {recall:.3f} of its region"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_network", [False, True])
def test_propagation_never_changes_a_scribbled_pixel(seed, with_network):
    rng = np.random.default_rng(100 + seed)
    num_classes = int(rng.integers(2, 6))
    image, _, _ = _noisy_scene(seed, ["disc"], 40, 48, 12)
    scribbles = np.full((40, 48), 255, np.uint8)
    # Scattered pixels of random classes: many superpixels hold two or more classes.
    scattered = rng.random((40, 48)) < 0.08
    scribbles[scattered] = rng.integers(0, num_classes, scattered.sum())
    scribbles[20, 10:14] = [0, 1, 0, 1]  # two classes side by side, surely in one superpixel
    probabilities = rng.dirichlet(np.ones(num_classes), (40, 48)) if with_network else None
    labels = propagate_scribbles(
        image, scribbles, probabilities, num_classes=num_classes, n_segments=40
    )
    on_scribble = scribbles != 255
    np.testing.assert_array_equal(labels[on_scribble], scribbles[on_scribble])


def test_scribble_pixels_keep_their_class():
    image = np.random.default_rng(3).uniform(0, 255, (32, 36, 3)).astype(np.float32)
    scribbles = np.full((32, 36), 255, np.uint8)
    scribbles[5, 3:30] = 0
    scribbles[6, 3:30] = 2  # right beside class 0, so superpixels hold two classes
    scribbles[20:30, 10] = 1
    labels = propagate_scribbles(image, scribbles, num_classes=3, n_segments=30)
    on_scribble = scribbles != 255
    np.testing.assert_array_equal(labels[on_scribble], scribbles[on_scribble])
    assert set(np.unique(labels)) <= {0, 1, 2}


def _three_stripes():
    image = np.zeros((24, 36, 3), np.float32)
    image[:, 12:24] = [0.0, 200.0, 0.0]
    image[:, 24:] = [0.0, 0.0, 220.0]
    scribbles = np.full((24, 36), 255, np.uint8)
    scribbles[10:14, 5] = 0
    scribbles[10:14, 17] = 1
    probabilities = np.full((24, 36, 3), 0.05, np.float32)
    probabilities[:, :12, 0] = probabilities[:, 12:24, 1] = probabilities[:, 24:, 2] = 0.9
    return image, scribbles, probabilities


def test_network_term_labels_an_unscribbled_region_when_all_classes_are_allowed():
    image, scribbles, probabilities = _three_stripes()
    labels = propagate_scribbles(
        image,
        scribbles,
        probabilities,
        n_segments=27,
        network_weight=5.0,
        restrict_to_scribbled_classes=False,
    )
    np.testing.assert_array_equal(labels[:, :12], 0)
    np.testing.assert_array_equal(labels[:, 12:24], 1)
    np.testing.assert_array_equal(labels[:, 24:], 2)


def test_paper_rule_keeps_unscribbled_classes_out():
    image, scribbles, probabilities = _three_stripes()
    labels = propagate_scribbles(image, scribbles, probabilities, n_segments=27, network_weight=5.0)
    assert set(np.unique(labels)) <= {0, 1}


def test_scribblesup_rounds_train_a_kseg_model():
    keras.utils.set_random_seed(0)
    model = kseg.testing.build_small_model("fcn8s", num_classes=2)
    model.compile(keras.optimizers.Adam(1e-3), SegmentationCrossEntropy(), run_eagerly=True)
    image, mask = _disc_image(32, 32)
    images = np.stack([image, image[:, ::-1]])
    scribbles = np.full((2, 32, 32), 255, np.uint8)
    scribbles[:, 18:23, 16] = 1
    scribbles[:, 2, 2:8] = 0
    result = scribblesup_rounds(
        model, images, scribbles, rounds=2, epochs_per_round=1, batch_size=2, n_segments=40
    )
    assert len(result.labels) == len(result.histories) == 2
    for labels, history in zip(result.labels, result.histories):
        assert labels.shape == (2, 32, 32) and labels.dtype == np.uint8
        assert np.isfinite(history.history["loss"]).all()
    np.testing.assert_array_equal(result.labels[0][scribbles != 255], scribbles[scribbles != 255])
    # Round 1 propagates from scribbles alone, which on flat regions recovers the disc (up to a
    # corner pixel that SLIC merges into a disc superpixel at this size).
    assert np.mean(result.labels[0] == np.stack([mask, mask[:, ::-1]])) >= 0.99


def test_image_without_scribbles_is_an_error():
    image, _ = _disc_image()
    with pytest.raises(ValueError, match="no scribble pixel"):
        propagate_scribbles(image, np.full((40, 48), 255, np.uint8), num_classes=2)


def test_rounds_name_the_image_without_scribbles():
    model = kseg.testing.build_small_model("fcn8s", num_classes=2)
    images = np.zeros((2, 16, 16, 3), np.float32)
    scribbles = np.full((2, 16, 16), 255, np.uint8)
    scribbles[0, 4, 4] = 1
    with pytest.raises(ValueError, match="Image 1: .*no scribble pixel"):
        scribblesup_rounds(model, images, scribbles, n_segments=4)


def test_scribble_class_outside_the_model_is_named():
    image, _ = _disc_image()
    scribbles = np.full((40, 48), 255, np.uint8)
    scribbles[3, 3] = 5
    with pytest.raises(ValueError, match="class 5, outside 0..2"):
        propagate_scribbles(image, scribbles, num_classes=3)


def test_shape_mismatch_names_both_shapes():
    image, _ = _disc_image()
    with pytest.raises(ValueError, match=r"scribbles.shape=\(40, 40\).*image.shape=\(40, 48, 3\)"):
        propagate_scribbles(image, np.zeros((40, 40), np.uint8), num_classes=2)
    with pytest.raises(ValueError, match=r"probabilities.shape=\(40, 48, 2\)"):
        propagate_scribbles(
            image, np.zeros((40, 48), np.uint8), np.ones((40, 48, 2)), num_classes=3
        )
    with pytest.raises(ValueError, match=r"probabilities.shape=\(40, 47, 2\)"):
        propagate_scribbles(image, np.zeros((40, 48), np.uint8), np.ones((40, 47, 2)))


def test_image_outside_the_rgb_range_is_an_error():
    with pytest.raises(ValueError, match="RGB in \\[0, 255\\]"):
        propagate_scribbles(np.full((8, 8, 3), 300.0), np.zeros((8, 8), np.uint8), num_classes=1)
