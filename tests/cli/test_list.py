"""`kseg list`: the registered models by task and the backbones, also as `python -m kseg.cli`."""

import subprocess
import sys

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


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "kseg.cli", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mask_rcnn (kseg.models.MaskRCNN;" in result.stdout
