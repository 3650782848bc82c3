import numpy as np
import pytest
import tensorflow as tf

from kseg.data.unet_weights import nearest_cell_distances, unet_weight_map, with_unet_weights

W0, SIGMA = 10.0, 5.0


def two_cells():
    # Two 20x15 cells separated by a 5-pixel gap (columns 25..29), far from the image corners.
    cells = np.zeros((40, 60), np.int32)
    cells[10:30, 10:25] = 1
    cells[10:30, 30:45] = 2
    return cells


def border_term(d1, d2):
    return W0 * np.exp(-((d1 + d2) ** 2) / (2 * SIGMA**2))


def test_balanced_class_weights_give_each_class_the_same_total():
    cells = two_cells()
    weights = unet_weight_map(cells, w0=0.0)
    foreground = cells > 0
    n_cell, n_background = foreground.sum(), (~foreground).sum()
    assert weights[foreground].sum() == pytest.approx(weights[~foreground].sum(), rel=1e-5)
    np.testing.assert_allclose(weights[foreground], cells.size / (2 * n_cell), rtol=1e-6)
    np.testing.assert_allclose(weights[~foreground], cells.size / (2 * n_background), rtol=1e-6)


def test_border_weight_peaks_in_the_gap_between_the_cells():
    cells = two_cells()
    weights = unet_weight_map(cells, class_weights=(1.0, 1.0))
    row, col = np.unravel_index(np.argmax(weights), weights.shape)
    assert 10 <= row < 30 and 25 <= col < 30
    # Column 27 is 3 pixels from each cell's border column (24 and 30).
    assert weights[20, 27] == pytest.approx(1.0 + border_term(3.0, 3.0), rel=1e-5)
    # Column 25 touches cell 1 (distance 1) and is 5 pixels from cell 2.
    assert weights[20, 25] == pytest.approx(1.0 + border_term(1.0, 5.0), rel=1e-5)


def test_weight_equals_the_class_weight_far_from_the_gap():
    cells = two_cells()
    weights = unet_weight_map(cells, class_weights=(0.7, 2.0))
    # Corner: sqrt(10**2 + 10**2) from cell 1 and sqrt(10**2 + 30**2) from cell 2.
    assert border_term(np.hypot(10, 10), np.hypot(10, 30)) < 1e-8
    assert weights[0, 0] == pytest.approx(0.7, abs=1e-6)
    assert weights[39, 59] == pytest.approx(0.7, abs=1e-6)
    np.testing.assert_allclose(weights[cells > 0], 2.0)


def test_a_single_cell_gets_no_border_term():
    cells = np.zeros((20, 20), np.int32)
    cells[5:15, 5:15] = 3
    weights = unet_weight_map(cells, class_weights=(1.0, 1.0))
    np.testing.assert_allclose(weights, 1.0)


def test_distances_match_an_all_pixel_search():
    # Independent of the border-pixel shortcut: distance to every pixel of every cell.
    rng = np.random.default_rng(0)
    cells = np.zeros((32, 40), np.int32)
    for cell_id in range(1, 6):
        top, left = rng.integers(0, 26), rng.integers(0, 34)
        cells[top : top + rng.integers(2, 7), left : left + rng.integers(2, 7)] = cell_id
    ids = [i for i in np.unique(cells) if i > 0]
    grid = np.indices(cells.shape).reshape(2, -1).T
    per_cell = np.stack(
        [
            np.linalg.norm(grid[:, None] - np.argwhere(cells == i)[None], axis=-1).min(1)
            for i in ids
        ],
        axis=-1,
    ).reshape(*cells.shape, len(ids))
    per_cell.sort(axis=-1)
    d1, d2 = nearest_cell_distances(cells)
    np.testing.assert_allclose(d1, per_cell[..., 0], atol=1e-4)
    background = cells == 0
    np.testing.assert_allclose(d2[background], per_cell[..., 1][background], atol=1e-4)


def test_tf_data_map_matches_numpy():
    cells = two_cells()
    image = np.zeros((40, 60, 1), np.float32)
    dataset = tf.data.Dataset.from_tensors((image, cells)).map(with_unet_weights)
    out_image, labels, weights = next(iter(dataset))
    assert weights.shape == (40, 60) and labels.dtype == tf.int32
    np.testing.assert_array_equal(out_image.numpy(), image)
    np.testing.assert_array_equal(labels.numpy(), (cells > 0).astype(np.int32))
    np.testing.assert_allclose(weights.numpy(), unet_weight_map(cells), rtol=1e-6)


@pytest.mark.parametrize(
    "mask, kwargs, word",
    [
        (np.zeros((4, 4, 1), np.int32), {}, "2-D"),
        (np.full((4, 4), -1, np.int32), {}, "label value -1"),
        (np.zeros((4, 4), np.float32), {}, "integer"),
        (np.zeros((4, 4), np.int32), {"sigma": 0.0}, "sigma"),
        (np.zeros((4, 4), np.int32), {"class_weights": (1.0,)}, "class_weights"),
    ],
)
def test_bad_input_is_named(mask, kwargs, word):
    with pytest.raises(ValueError, match=word):
        unet_weight_map(mask, **kwargs)


def test_weights_feed_fit_as_per_pixel_sample_weights():
    import keras

    from kseg.models import UNet

    cells = two_cells()[:32, :48]
    dataset = (
        tf.data.Dataset.from_tensors((np.full((32, 48, 1), 128.0, np.float32), cells))
        .map(with_unet_weights)
        .batch(1)
    )
    model = UNet(num_classes=2, input_shape=(None, None, 1), num_filters=2, depth=2, padding="same")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=loss)
    _, labels, weights = next(iter(dataset))
    logits = model(np.full((1, 32, 48, 1), 128.0, np.float32))
    # Keras averages the weighted per-pixel losses over all pixels.
    per_pixel = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    expected = float(np.mean(np.asarray(per_pixel) * weights.numpy()))
    assert model.evaluate(dataset, verbose=0) == pytest.approx(expected, rel=1e-4)
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
