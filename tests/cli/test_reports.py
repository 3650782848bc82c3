"""How `kseg` prints and writes semantic scores: a mean over fewer classes says so."""

import json

import numpy as np

from kseg.cli import reports
from kseg.metrics import confusion_matrix_scores


def test_an_absent_class_is_named_beside_the_mean(tmp_path, capsys):
    scores = confusion_matrix_scores([[6, 2, 0], [1, 3, 0], [0, 0, 0]])
    names = ["background", "cat", "dog"]
    reports.print_scores(scores, names)
    lines = capsys.readouterr().out.splitlines()
    dog = next(line for line in lines if "dog" in line)
    assert "nan" in dog and "absent" in dog
    assert "absent" not in next(line for line in lines if "cat" in line)
    mean = next(line for line in lines if line.startswith("mean IoU"))
    # IoU 6/9 and 3/6, averaged over the two classes that occur.
    assert f"mean IoU {(6 / 9 + 3 / 6) / 2:.4f} (over 2 of 3 classes; " in mean
    assert mean.split("absent from labels and predictions: ")[1].startswith("dog)")

    reports.write_scores(tmp_path / "scores.json", scores, names)
    record = json.loads((tmp_path / "scores.json").read_text())
    assert record["present_classes"] == [0, 1] and record["absent_classes"] == [2]
    assert record["absent_class_names"] == ["dog"] and np.isnan(record["iou"][2])


def test_every_class_present_says_all_of_them(capsys):
    reports.print_scores(confusion_matrix_scores(np.eye(2) * 5), None)
    assert "mean IoU 1.0000 (over 2 of 2 classes)  pixel accuracy" in capsys.readouterr().out
