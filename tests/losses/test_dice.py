import numpy as np
import pytest
from loss_helpers import IGNORE, NUM_CLASSES, np_dice, random_batch

from kseg.losses import DiceLoss


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_dice_loss_matches_numpy(smooth):
    labels, logits = random_batch(seed=9)
    value = DiceLoss(NUM_CLASSES, smooth=smooth)(labels, logits)
    np.testing.assert_allclose(float(value), np_dice(labels, logits, smooth), rtol=1e-5)


def test_dice_loss_of_a_confident_correct_prediction_is_near_zero():
    labels, _ = random_batch(seed=10)
    logits = 30.0 * np.eye(NUM_CLASSES, dtype="float32")[np.where(labels == IGNORE, 0, labels)]
    assert float(DiceLoss(NUM_CLASSES, smooth=1.0)(labels, logits)) < 1e-4
