import keras
import numpy as np
from loss_helpers import ALL_LOSSES, np_cross_entropy, np_dice, random_batch, tiny_model


def test_combined_loss_is_the_weighted_sum():
    labels, logits = random_batch(seed=20)
    expected = np_cross_entropy(labels, logits) + 0.5 * np_dice(labels, logits, 1.0)
    np.testing.assert_allclose(float(ALL_LOSSES["combined"]()(labels, logits)), expected, rtol=1e-5)


def test_compiled_model_with_kseg_loss_reloads_in_safe_mode(tmp_path):
    model = tiny_model()
    model.compile(optimizer="sgd", loss=ALL_LOSSES["combined"]())
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.loss.get_config() == model.loss.get_config()
