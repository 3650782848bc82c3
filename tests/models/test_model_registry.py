"""kseg.models.registry: names, aliases and tasks of the registered builders.

(Named test_model_registry.py, not test_registry.py: tests/ has no packages, so test module names
must be unique, and tests/backbones/test_registry.py holds the other one.)
"""

import pytest

import kseg
from kseg.models import registry


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test are dropped afterwards."""
    for table in ("_MODELS", "_TASK_OF", "_ALIASES"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))


def tiny_builder(num_classes=1):
    return ("tiny", num_classes)


def other_builder(num_classes=1):
    return ("other", num_classes)


def test_a_registered_builder_is_built_found_and_listed_with_its_task(scratch_registry):
    assert registry.register_model("My_Net")(tiny_builder) is tiny_builder
    assert registry.get_model("my_net", num_classes=4) == ("tiny", 4)
    assert registry.get_builder("MY_NET") is tiny_builder
    assert registry.get_task("my_net") == "semantic"
    assert "my_net" in registry.list_models() and "my_net" in registry.list_models("semantic")
    assert "my_net" not in registry.list_models(task="instance")


def test_registering_the_same_builder_twice_is_harmless_another_one_is_refused(scratch_registry):
    registry.register_model("twice")(tiny_builder)
    registry.register_model("twice")(tiny_builder)
    assert registry.list_models().count("twice") == 1
    with pytest.raises(ValueError, match="'twice' is already registered"):
        registry.register_model("TWICE")(other_builder)
    assert registry.get_builder("twice") is tiny_builder


def test_aliases_reach_the_builder_but_are_not_listed(scratch_registry):
    registry.register_model("detector", task="instance", aliases=("Det",))(tiny_builder)
    assert registry.get_builder("det") is tiny_builder
    assert registry.get_task("DET") == "instance"
    assert "det" not in registry.list_models()
    with pytest.raises(ValueError, match="'det' is already registered"):
        registry.register_model("det")(other_builder)
    with pytest.raises(ValueError, match="'detector' is already registered"):
        registry.register_model("another", aliases=("detector",))(other_builder)


def test_unknown_names_and_tasks_are_refused_naming_the_known_ones():
    for lookup in (registry.get_builder, registry.get_task, registry.get_model):
        with pytest.raises(ValueError, match=r"Unknown model 'no_such_net'.*deeplabv3plus"):
            lookup("no_such_net")
    with pytest.raises(ValueError, match="task=.panoptic."):
        registry.register_model("x", task="panoptic")
    with pytest.raises(ValueError, match="task=.panoptic."):
        registry.list_models(task="panoptic")


def test_get_model_checks_num_classes_before_building():
    with pytest.raises(ValueError, match="num_classes=0"):
        registry.get_model("unet", num_classes=0)


def test_mask_rcnn_is_registered_as_the_instance_model():
    assert registry.get_builder("mask_rcnn") is kseg.models.MaskRCNN
    assert registry.get_builder("maskrcnn") is kseg.models.MaskRCNN
    assert registry.list_models(task="instance") == ["mask_rcnn"]
    assert all(registry.get_task(name) == "semantic" for name in registry.list_models("semantic"))
    assert sorted(registry.list_models("semantic") + ["mask_rcnn"]) == registry.list_models()
