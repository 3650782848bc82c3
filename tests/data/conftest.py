"""Helpers that write tiny image/mask files for the data tests."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path, array):
    """Save a uint8 (H, W, 3) array as png or jpg (by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def write_mask(path, labels, palette=None):
    """Save an (H, W) label array as a grayscale PNG, or a palette PNG when given a palette."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8))
    if palette is not None:
        image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    image.save(path)
    return path


def random_pair(rng, height, width, labels):
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mask = rng.choice(np.asarray(labels, dtype=np.uint8), size=(height, width))
    return image, mask


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


class _Files:
    """The helpers above, handed to tests as the `files` fixture."""

    write_image = staticmethod(write_image)
    write_mask = staticmethod(write_mask)
    random_pair = staticmethod(random_pair)


@pytest.fixture
def files():
    return _Files
