import hashlib

import keras
import numpy as np
import pytest

import kseg
from kseg.backbones.bundled import BUNDLED_IMAGENET_WEIGHTS


def test_every_listed_file_ships_with_the_package():
    for (name, alpha), filename in BUNDLED_IMAGENET_WEIGHTS.items():
        path = kseg.backbones.bundled_weights_path(name, alpha)
        assert path is not None and path.name == filename


def test_unknown_backbone_has_no_bundled_weights():
    assert kseg.backbones.bundled_weights_path("resnet50") is None
    assert kseg.backbones.bundled_weights_path("mobilenetv2", alpha=1.0) is None


def test_bundled_file_is_the_team_imagenet_file(shared_dir):
    bundled = kseg.backbones.bundled_weights_path("mobilenetv2", alpha=0.35)
    shared = shared_dir / "weights" / bundled.name
    if not shared.is_file():
        pytest.skip(f"{shared} is absent")
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (bundled, shared)]
    assert digest[0] == digest[1]


def test_bundled_weights_load_into_the_backbone_as_into_keras_applications():
    path = str(kseg.backbones.bundled_weights_path("mobilenetv2", alpha=0.35))
    backbone = kseg.backbones.get_backbone("mobilenetv2", weights=path, alpha=0.35)
    reference = keras.applications.MobileNetV2(
        input_shape=(None, None, 3), alpha=0.35, include_top=False, weights=path
    )
    images = np.random.default_rng(0).uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    features = backbone(images)["P5"]
    expected = reference(keras.applications.mobilenet_v2.preprocess_input(images.copy()))
    np.testing.assert_allclose(np.asarray(features), np.asarray(expected), atol=1e-4)
    random = kseg.backbones.get_backbone("mobilenetv2", alpha=0.35)(images)["P5"]
    assert not np.allclose(np.asarray(random), np.asarray(features), atol=1e-2)
