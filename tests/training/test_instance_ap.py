"""InstanceAP: which epochs are scored, and NaN entries on the others."""

import math

import pytest

import kseg
from kseg.training import InstanceAP


def test_epochs_without_an_evaluation_log_nan_and_do_not_run_the_model():
    examples = kseg.data.shapes_instance_examples("val", num_samples=1, image_size=64)
    ap = InstanceAP(examples, kseg.data.shapes_info(), every=2)
    ap.set_params({"epochs": 5})
    ap.on_train_begin()
    # Epochs counted from 1: 2 and 4 are multiples of 2, and 5 is the last.
    assert [epoch for epoch in range(5) if ap.due(epoch, ap.last_epoch)] == [1, 3, 4]
    logs = {"val_loss": 1.0}
    ap.on_epoch_end(0, logs)  # no model set: an evaluation here would fail
    assert set(logs) == {"val_loss", "val_mask_AP", "val_box_AP"}
    assert math.isnan(logs["val_mask_AP"]) and math.isnan(logs["val_box_AP"])
    with pytest.raises(ValueError, match="every=0"):
        InstanceAP(examples, kseg.data.shapes_info(), every=0)
