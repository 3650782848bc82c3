import hashlib
import urllib.error

import keras
import numpy as np
import pytest

import kseg
import kseg.testing
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


def _refuse_network(monkeypatch, tmp_path, error):
    """An empty Keras cache in tmp_path where every download raises `error`."""
    from keras.src.utils import file_utils

    kseg.testing.offline_keras_cache(monkeypatch, tmp_path)
    attempts = []

    def fail(url, *args, **kwargs):
        attempts.append(url)
        raise error

    monkeypatch.setattr(file_utils, "urlretrieve", fail)
    return attempts


def test_imagenet_loads_the_bundled_file_without_the_network(tmp_path, monkeypatch):
    attempts = _refuse_network(monkeypatch, tmp_path, urllib.error.URLError("offline"))
    from_imagenet = kseg.backbones.get_backbone("mobilenetv2", weights="imagenet", alpha=0.35)
    path = kseg.backbones.bundled_weights_path("mobilenetv2", alpha=0.35)
    reference = keras.applications.MobileNetV2(
        input_shape=(None, None, 3), alpha=0.35, include_top=False, weights=str(path)
    )
    assert attempts == [] and not any((tmp_path / "models").iterdir())
    expected = {w.path: np.asarray(w) for w in reference.weights}
    loaded = {w.path: np.asarray(w) for w in from_imagenet.weights}
    assert expected.keys() <= loaded.keys() and len(expected) > 200
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name], value)


def test_builders_take_the_bundled_imagenet_file_offline(tmp_path, monkeypatch):
    attempts = _refuse_network(monkeypatch, tmp_path, urllib.error.URLError("offline"))
    model = kseg.models.DeepLabV3Plus(
        num_classes=2, backbone="mobilenetv2", backbone_weights="imagenet", alpha=0.35
    )
    bundled = kseg.backbones.get_backbone(
        "mobilenetv2",
        weights=str(kseg.backbones.bundled_weights_path("mobilenetv2", alpha=0.35)),
        output_stride=16,
        alpha=0.35,
    )
    backbone = kseg.models.backbone_of(model)
    assert attempts == []
    for built, reference in zip(backbone.weights, bundled.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(built), np.asarray(reference))


@pytest.mark.parametrize(
    ("input_shape", "alpha", "bundled"),
    [
        ((None, None, 3), 0.35, True),
        ((224, 224, 3), 0.35, True),
        ((96, 160, 3), 0.35, True),  # not square: keras loads the 224 file
        ((128, 128, 3), 0.35, False),  # keras loads the 128-pixel file
        ((None, None, 3), 0.5, False),
        ((None, None, 3), 1.0, False),
    ],
)
def test_bundled_file_only_when_keras_would_fetch_that_file(input_shape, alpha, bundled):
    found = kseg.backbones.bundled_imagenet_weights("mobilenetv2", input_shape, alpha=alpha)
    assert (found is not None) == bundled
    assert kseg.backbones.bundled_imagenet_weights("resnet50", input_shape) is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (urllib.error.URLError("[Errno -3] Temporary failure in name resolution"), "name res"),
        (ConnectionResetError("connection reset by peer"), "connection reset by peer"),
    ],
)
def test_failed_download_is_one_line_naming_file_url_and_cache_path(
    tmp_path, monkeypatch, error, reason
):
    attempts = _refuse_network(monkeypatch, tmp_path, error)
    with pytest.raises(kseg.backbones.WeightsDownloadError) as raised:
        kseg.backbones.get_backbone("mobilenetv2", weights="imagenet", alpha=0.5)
    message = str(raised.value)
    file_name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
    assert len(attempts) == 1 and attempts[0].endswith("/" + file_name)
    assert "\n" not in message
    assert file_name in message and attempts[0] in message
    assert str(tmp_path / "models" / file_name) in message
    assert reason in message


def test_other_errors_inside_the_block_pass_unchanged():
    with pytest.raises(ValueError, match="unrelated"):
        with kseg.backbones.explain_failed_download():
            raise ValueError("unrelated")
    with pytest.raises(FileNotFoundError):
        with kseg.backbones.explain_failed_download():
            open("/nonexistent/kseg/file")
