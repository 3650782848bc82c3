"""The real weights="imagenet" path, served offline from the team's copies of Google's files."""

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import kseg.backbones
import kseg.testing
from kseg.backbones.taps import TAPS

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / ".." / "shared" / "weights"

APPLICATIONS = {
    "mobilenetv2": (
        keras.applications.MobileNetV2,
        keras.applications.mobilenet_v2.preprocess_input,
        {"alpha": 0.35},
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
    ),
    "mobilenet": (
        keras.applications.MobileNet,
        keras.applications.mobilenet.preprocess_input,
        {"alpha": 0.75},
        "mobilenet_7_5_224_tf_no_top.h5",
    ),
}


@pytest.fixture
def offline_keras_cache(tmp_path, monkeypatch):
    """A Keras cache holding the shared ImageNet files, with downloading forbidden."""
    if not SHARED_WEIGHTS.is_dir():
        pytest.skip(f"shared ImageNet weights folder {SHARED_WEIGHTS} is absent")
    kseg.testing.offline_keras_cache(monkeypatch, tmp_path)
    models = tmp_path / "models"
    for path in SHARED_WEIGHTS.glob("*.h5"):
        shutil.copy(path, models)
    return models


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_imagenet_backbone_matches_keras_application(name, offline_keras_cache):
    constructor, preprocess_input, kwargs, filename = APPLICATIONS[name]
    if not (offline_keras_cache / filename).is_file():
        pytest.skip(f"{filename} is not among the shared weights")
    images = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype("float32")

    backbone = kseg.backbones.get_backbone(name, weights="imagenet", **kwargs)
    features = {key: np.asarray(value) for key, value in backbone(images).items()}

    application = constructor(include_top=False, weights="imagenet", **kwargs)
    taps = keras.Model(
        application.input,
        {key: application.get_layer(layer).output for key, layer in TAPS[name].items()},
    )
    expected = taps(preprocess_input(images.copy()))
    assert sorted(features) == sorted(expected)
    for key, value in features.items():
        np.testing.assert_allclose(value, np.asarray(expected[key]), rtol=1e-4, atol=1e-4)

    scratch = kseg.backbones.get_backbone(name, weights=None, **kwargs)
    assert not np.allclose(np.asarray(scratch(images)["P5"]), features["P5"], atol=1e-2)

    # Dilation keeps the pretrained weights: output stride 16 leaves the stride-8 features as
    # they were, and its stride-16 map holds the stride-32 one on the odd sub-grid (MobileNets
    # pad (0, 1) before stride-2 depthwise convolutions, centring output i on input 2i + 1).
    dilated = kseg.backbones.get_backbone(name, weights="imagenet", output_stride=16, **kwargs)
    dense = {key: np.asarray(value) for key, value in dilated(images).items()}
    np.testing.assert_array_equal(dense["P3"], features["P3"])
    assert dense["P4"].shape[1:3] == (14, 14)
    np.testing.assert_allclose(dense["P4"][:, 1::2, 1::2], features["P5"], rtol=1e-4, atol=1e-4)
