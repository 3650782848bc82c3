import numpy as np
import pytest

from kseg.inference.overlap_tile import overlap_tile_predict
from kseg.models.unet import UNet, unet_output_size


def test_overlap_tile_equals_one_pass_over_the_mirrored_image():
    # depth 2, 92-pixel tiles give 52-pixel outputs (a multiple of 4), so stitched tiles must
    # equal a single pass over the whole image mirrored by the 20-pixel margin.
    model = UNet(num_classes=3, input_shape=(None, None, 1), num_filters=2, depth=2)
    image = np.random.default_rng(3).uniform(0, 255, (100, 90, 1)).astype("float32")
    tiled = overlap_tile_predict(model, image, tile_size=92, batch_size=3)
    assert tiled.shape == (100, 90, 3)
    whole = np.pad(image, ((20, 20 + 104 - 100), (20, 20 + 104 - 90), (0, 0)), mode="symmetric")
    assert unet_output_size(whole.shape[0], depth=2) == 104
    expected = np.asarray(model(whole[None]))[0, :100, :90]
    np.testing.assert_allclose(tiled, expected, atol=1e-4)


def test_overlap_tile_handles_batches_and_small_images():
    model = UNet(num_classes=2, input_shape=(None, None, 1), num_filters=2, depth=2)
    images = np.random.default_rng(4).uniform(0, 255, (2, 30, 41, 1)).astype("float32")
    batch = overlap_tile_predict(model, images, tile_size=92)
    assert batch.shape == (2, 30, 41, 2)
    np.testing.assert_allclose(
        batch[1], overlap_tile_predict(model, images[1], tile_size=92), atol=1e-5
    )
    with pytest.raises(ValueError, match="Received: shape"):
        overlap_tile_predict(model, np.zeros((5, 5)), tile_size=92)
