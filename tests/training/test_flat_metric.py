"""FlatMetricWarning: one warning, only after the set number of flat measured epochs."""

import pytest

from kseg.training import FlatMetricWarning


def _feed(watch, values):
    for epoch, value in enumerate(values):
        watch.on_epoch_end(epoch, {"val_mean_iou": value} if value is not None else {})


def test_warns_once_after_three_flat_epochs(capsys):
    watch = FlatMetricWarning("val_mean_iou", epochs=3, tolerance=1e-4)
    _feed(watch, [0.1, 0.30000, 0.30004, float("nan"), None, 0.29996])
    # Spread of the last three measured values: 0.30004 - 0.29996 = 8e-5, within 1e-4.
    assert watch.warned
    _feed(watch, [0.3, 0.3, 0.3])
    printed = capsys.readouterr().out
    assert printed.count("warning: val_mean_iou has stayed at 0.3000 (within 0.0001)") == 1


def test_no_warning_while_the_metric_moves(capsys):
    watch = FlatMetricWarning("val_mean_iou", epochs=3, tolerance=1e-4)
    _feed(watch, [0.30, 0.3002, 0.3004, 0.3006, 0.25])
    assert not watch.warned and capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="epochs=1"):
        FlatMetricWarning("val_mean_iou", epochs=1)
