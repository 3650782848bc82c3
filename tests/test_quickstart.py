"""The quickstart's own-data journey, run command by command as a new user would paste it.

Each command is taken verbatim from docs/quickstart.md (so the test breaks when the docs drift
from the code); only the training length and crop size are shrunk by flags appended at the end,
which argparse lets override the documented values. The two training steps run eagerly: tracing
MobileNetV2's training graph would cost most of the test, and `kseg train`'s graph-mode run is
tests/cli/test_train.py's.
"""

import shutil

import numpy as np
import pytest
from PIL import Image
from test_docs import COMMANDS

import kseg
from kseg import cli
from kseg.backbones.bundled import BUNDLED_IMAGENET_WEIGHTS, bundled_weights_path

SHRINK_TRAINING = [
    "--epochs",
    "1",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "2",
    "--crop-size",
    "32",
    "--precision",
    "float32",
    "--run-eagerly",
]


def _quickstart_commands(needle):
    return [
        argv
        for location, argv, complete in COMMANDS
        if location.startswith("docs/quickstart.md")
        and complete
        and any(needle in arg for arg in argv)
    ]


def _write_my_data(root, rng):
    for split, count in (("train", 4), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for index in range(count):
            name = f"{split}{index:04d}"
            mask = np.zeros((40, 48), np.uint8)
            mask[8:30, 10:26] = 1
            mask[20:36, 30:44] = 2
            image = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8)
            image[mask == 1] += np.uint8(150)
            image[mask == 2, 2] = 250
            Image.fromarray(image).save(root / "images" / split / f"{name}.jpg")
            Image.fromarray(mask).save(root / "masks" / split / f"{name}.png")


def test_own_data_train_evaluate_predict_export_as_documented(tmp_path, monkeypatch, capsys):
    commands = _quickstart_commands("my_data")
    train = [c for c in commands if c[1] == "train"]
    evaluate = [c for c in commands if c[1] == "evaluate" and "runs/my_data/model.keras" in c]
    predict = [c for c in commands if c[1] == "predict" and "runs/my_data/model.keras" in c]
    export = [c for c in commands if c[1] == "export" and "runs/my_data/model.keras" in c]
    assert train and evaluate and predict and export, "the quickstart lost an own-data step"

    # `--backbone-weights imagenet` reads keras.applications' cache first; the file kseg ships
    # is the same file, so the documented command runs with downloads forbidden.
    home = tmp_path / "keras_home"
    kseg.testing.offline_keras_cache(monkeypatch, home)
    shutil.copy(
        bundled_weights_path("mobilenetv2", 0.35),
        home / "models" / BUNDLED_IMAGENET_WEIGHTS[("mobilenetv2", 0.35)],
    )
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    _write_my_data(tmp_path / "my_data", rng)
    Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save("big_scan.png")

    cli.main(train[0][1:] + SHRINK_TRAINING)
    assert (tmp_path / "runs" / "my_data" / "model.keras").is_file()
    assert "mean IoU" in capsys.readouterr().out

    cli.main(evaluate[0][1:])
    assert (tmp_path / "scores.json").is_file()

    cli.main(predict[0][1:])
    labels = np.asarray(Image.open(tmp_path / "predictions" / "big_scan_labels.png"))
    assert labels.shape == (70, 90) and labels.max() < 3
    # The named, compared predictions of the validation folder: one side-by-side per image.
    named = [c for c in predict if "--ground-truth" in c]
    assert named, "the quickstart lost its --ground-truth example"
    cli.main(named[0][1:])
    written = sorted(p.name for p in (tmp_path / "predictions" / "val").glob("*_side_by_side.png"))
    assert written == ["val0000_side_by_side.png", "val0001_side_by_side.png"]

    cli.main(export[0][1:])
    assert (tmp_path / "exported" / "my_data" / "saved_model.pb").is_file()
    assert (tmp_path / "exported" / "my_data.tflite").stat().st_size > 0


@pytest.mark.parametrize("needle", ["my_data"])
def test_quickstart_still_documents_the_own_data_commands(needle):
    subcommands = {argv[1] for argv in _quickstart_commands(needle)}
    assert {"train", "evaluate"} <= subcommands
