"""`--model NAME`: published checkpoints by name, their settings, and the errors of bad names."""

from pathlib import Path

import numpy as np
import pytest
from keras.src.utils import file_utils
from toy_pretrained import TOY_CLASS_NAMES, TOY_MIN_SIDE, register_toy_checkpoint

import kseg
from kseg.cli import pretrained_models

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def forbid_download(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"the test tried to download {url}")

    monkeypatch.setattr(file_utils, "urlretrieve", refuse)


@pytest.mark.parametrize(
    "size, expected",
    # torchvision's Resize(side): the shorter side becomes side, the longer
    # int(side * long / short).
    [
        ((375, 500), (520, 693)),
        ((500, 375), (693, 520)),
        ((520, 520), (520, 520)),
        ((7, 3), (1213, 520)),
    ],
)
def test_min_side_resize_keeps_the_aspect_with_torchvisions_rounding(size, expected):
    policy = pretrained_models.MinSideResize(520)
    assert tuple(int(v) for v in policy(*size)) == expected
    assert expected == (int(520 * size[0] / min(size)), int(520 * size[1] / min(size)))


def test_only_the_min_side_policy_is_read():
    assert pretrained_models.resize_policy("min_side 520") == pretrained_models.MinSideResize(520)
    with pytest.raises(ValueError, match="min 800 max 1333"):
        pretrained_models.resize_policy("min 800 max 1333")


def test_settings_of_an_entry_are_its_names_voc_colours_and_resize():
    entry = kseg.pretrained.get("fcn_resnet50")
    settings = pretrained_models.settings_of(entry)
    assert settings.class_names == entry.class_names
    np.testing.assert_array_equal(settings.palette, kseg.viz.palette(21))
    assert settings.resize == pretrained_models.MinSideResize(520)


def test_an_existing_file_wins_over_a_registry_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("fcn_resnet50").write_bytes(b"not a model")
    forbid_download(monkeypatch)
    # Read as a model file (which Keras refuses by its name), not fetched from the registry.
    with pytest.raises(ValueError, match="filepath=fcn_resnet50"):
        pretrained_models.load_model("fcn_resnet50")


def test_a_registry_name_loads_the_converted_checkpoint(tmp_path, monkeypatch):
    toy, cache_dir = register_toy_checkpoint(tmp_path, monkeypatch)
    model, settings = pretrained_models.load_model("toy")
    assert settings.class_names == TOY_CLASS_NAMES
    assert settings.resize == pretrained_models.MinSideResize(TOY_MIN_SIDE)
    reference = np.load(FIXTURES / "torchvision_segmentation_small.npz")
    # Logits written by torchvision itself for the same narrow FCN.
    np.testing.assert_allclose(
        np.asarray(model(reference["image0"])), reference["fcn_out0"], atol=1e-4, rtol=1e-4
    )
    assert (cache_dir / "kseg" / "pretrained" / Path(toy.url).name).is_file()


def test_an_unknown_name_lists_the_registry(monkeypatch, capsys):
    forbid_download(monkeypatch)
    with pytest.raises(SystemExit) as stop:
        pretrained_models.load_model("no_such_model")
    message = str(stop.value.code)
    assert "'no_such_model'" in message and "model file" in message
    for name in kseg.pretrained.list_pretrained():
        assert name in message
