"""kseg.evaluation: progress output and scores."""

import numpy as np
import tensorflow as tf

import kseg


def _tiny_case():
    model = kseg.testing.build_small_model("fcn8s", num_classes=3)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    masks = rng.integers(0, 3, (4, 32, 32)).astype("int32")
    return model, tf.data.Dataset.from_tensor_slices((images, masks)).batch(2)


def test_no_progress_bar_is_drawn_into_a_redirected_stderr(capsys):
    model, dataset = _tiny_case()
    with_bar = kseg.evaluation.evaluate_model(model, dataset, 3, progress=True)
    printed = capsys.readouterr().err
    without_bar = kseg.evaluation.evaluate_model(model, dataset, 3, progress=False)
    # pytest's captured stderr is not a terminal, as a log file is not.
    assert "evaluating" not in printed and "\r" not in printed
    np.testing.assert_array_equal(with_bar["confusion_matrix"], without_bar["confusion_matrix"])
