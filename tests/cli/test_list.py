"""`kseg list`: the registered models by task and the backbones, also as `python -m kseg.cli`."""

import os
import subprocess
import sys
import warnings

import kseg
from kseg import cli


def test_list_names_every_registered_model_under_its_task(capsys):
    cli.main(["list"])
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    semantic = [name.strip() for name in lines["models"].split(",")]
    assert semantic == [n for n in kseg.models.list_models() if n != "mask_rcnn"]
    assert lines["instance"].strip().startswith("mask_rcnn (kseg.models.MaskRCNN;")
    backbones = [name.strip() for name in lines["backbones"].split(",")]
    assert backbones == kseg.backbones.list_backbones()


# TensorFlow's start-up lines, as TensorFlow 2.21 on an x86 CPU writes them.
STARTUP_LINES = ("oneDNN", "cpu_feature_guard", "absl::InitializeLog")


def test_python_dash_m_runs_the_command_line_without_tensorflow_start_up_lines():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "kseg.cli", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mask_rcnn (kseg.models.MaskRCNN;" in result.stdout
    assert not [
        line for line in result.stderr.splitlines() if any(s in line for s in STARTUP_LINES)
    ]


def test_input_shape_warning_of_keras_applications_is_shown_only_with_verbose(monkeypatch):
    def warn_as_keras_applications_does(args):
        warnings.warn(
            "`input_shape` is undefined or non-square, or `rows` is not in [96, 128, 160, 192, "
            "224]. Weights for input shape (224, 224) will be loaded as the default.",
            stacklevel=2,
        )
        warnings.warn("another warning", UserWarning, stacklevel=2)

    monkeypatch.setattr(cli.listing, "run", warn_as_keras_applications_does)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.main(["list"])
    assert [str(w.message) for w in caught] == ["another warning"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.main(["list", "--verbose"])
    assert len(caught) == 2 and "non-square" in str(caught[0].message)


def test_list_recipes_prints_every_model_and_purpose_with_its_source(capsys):
    cli.main(["list", "--recipes"])
    lines = capsys.readouterr().out.splitlines()
    heads = [line.split(":", 1)[0] for line in lines if not line.startswith(" ")]
    expected = [f"{m}/{p}" for m in kseg.models.list_models() for p in ("paper", "finetune")]
    assert sorted(heads) == sorted(expected)
    sources = [line for line in lines if line.startswith("    source: ")]
    assert len(sources) == len(expected) and all(len(s) > 20 for s in sources)
    assert any(
        line.startswith("pspnet/paper: sgd 0.01 poly, batch 16, crop 473x473") for line in lines
    )


def test_list_pretrained_prints_every_registry_entry_with_its_status(capsys):
    cli.main(["list", "--pretrained"])
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if not line.startswith("    ")]
    assert [line.split(" ", 1)[0] for line in heads] == kseg.pretrained.list_pretrained()
    loadable = set(kseg.pretrained.list_pretrained(loadable=True))
    for line in heads:
        name = line.split(" ", 1)[0]
        assert ("loads as" in line) == (name in loadable), line
    assert "publisher's COCO-val2017-VOC-labels: miou 66.4, pixel_acc 92.4" in out
