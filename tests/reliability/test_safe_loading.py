"""`.keras` files that would run foreign code, or name classes kseg does not know, fail safely.

That every registered kseg model reloads in safe mode without `custom_objects` is checked by
tests/contracts. Here the other side: `keras.saving.load_model` in its default (safe) mode, which
is what kseg's CLI uses, refuses a file holding a Lambda layer without running the lambda, and
refuses a file naming an unknown layer class (in the kseg package or in an arbitrary module)
with an error that names the class and without importing that module.
"""

import json
import sys
import zipfile

import keras
import pytest

from kseg.layers.resize import ResizeToMatch


def _rewrite_config(source, target, edit):
    with zipfile.ZipFile(source) as archive:
        members = [(item, archive.read(item.filename)) for item in archive.infolist()]
    with zipfile.ZipFile(target, "w") as archive:
        for item, data in members:
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            archive.writestr(item, data)
    return target


def _model_with_resize(path):
    features = keras.Input((None, None, 2))
    reference = keras.Input((None, None, 1))
    resized = ResizeToMatch(name="resize")([features, reference])
    keras.Model([features, reference], resized).save(path)
    return path


def _replace_layer_class(config, module, class_name, registered_name):
    (layer,) = [layer for layer in config["config"]["layers"] if layer["name"] == "resize"]
    layer.update(module=module, class_name=class_name, registered_name=registered_name)


def test_lambda_layer_is_refused_and_its_function_never_runs(tmp_path):
    ran = tmp_path / "lambda_ran"
    marker = str(ran)  # a closure over a Path would not serialize
    inputs = keras.Input((4,))
    # The file handle is left to the garbage collector: a lambda cannot hold a with block.
    touched = keras.layers.Lambda(lambda x: (open(marker, "w").write("ran"), x)[1])(inputs)  # noqa: SIM115
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, touched).save(path)
    ran.unlink()  # building the model ran the lambda once; loading must not run it again
    with pytest.raises(ValueError, match=r"Lambda.*safe_mode=False"):
        keras.saving.load_model(path)
    assert not ran.exists()


def test_unknown_kseg_layer_class_names_the_class(tmp_path):
    saved = _model_with_resize(tmp_path / "model.keras")
    keras.saving.load_model(saved)  # the unedited file loads
    edited = _rewrite_config(
        saved,
        tmp_path / "unknown.keras",
        lambda config: _replace_layer_class(
            config, "kseg.layers.resize", "RemovedLayer", "kseg>RemovedLayer"
        ),
    )
    with pytest.raises(TypeError, match="Could not locate class 'RemovedLayer'"):
        keras.saving.load_model(edited)


def test_layer_class_from_a_foreign_module_is_not_imported(tmp_path, monkeypatch):
    imported = tmp_path / "module_imported"
    (tmp_path / "side_effect_module.py").write_text(
        f"import pathlib\npathlib.Path({str(imported)!r}).write_text('imported')\n"
        "class Payload:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "side_effect_module", raising=False)
    saved = _model_with_resize(tmp_path / "model.keras")
    edited = _rewrite_config(
        saved,
        tmp_path / "foreign.keras",
        lambda config: _replace_layer_class(config, "side_effect_module", "Payload", None),
    )
    with pytest.raises(TypeError, match="Could not locate class 'Payload'"):
        keras.saving.load_model(edited)
    assert not imported.exists()
    assert "side_effect_module" not in sys.modules
