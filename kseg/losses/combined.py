"""A weighted sum of losses, e.g. cross-entropy plus Dice."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kseg")
class CombinedLoss(keras.losses.Loss):
    """Weighted sum of several losses, e.g. cross-entropy plus Dice.

    Each member is called with the same `y_true`, `y_pred` and `sample_weight` and keeps its
    own normalisation; the result is `sum_k weights[k] * loss_k`.

    Args:
        losses: list of `keras.losses.Loss` instances (or names Keras can resolve).
        weights: optional list of floats, one per loss (default all 1).
        name: loss name.
        dtype: Keras loss dtype.

    Returns:
        A `keras.losses.Loss` giving a float32 scalar.

    Example:
        >>> import numpy as np, kseg.losses
        >>> loss = kseg.losses.CombinedLoss(
        ...     [kseg.losses.SegmentationCrossEntropy(), kseg.losses.DiceLoss(num_classes=3)],
        ...     [1.0, 0.5])
        >>> float(loss(np.zeros((1, 4, 4), "int32"), np.zeros((1, 4, 4, 3), "float32"))) > 0
        True
    """

    def __init__(self, losses, weights=None, name="combined_loss", dtype=None):
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)
        if not isinstance(losses, (list, tuple)) or not losses:
            raise ValueError(
                f"`losses` must be a non-empty list of losses. Received: losses={losses!r}"
            )
        self.losses = [keras.losses.get(loss) for loss in losses]
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses):
            raise ValueError(
                f"`weights` needs one entry per loss ({len(losses)}). Received: weights={weights}"
            )
        self.weights = weights

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            total = 0.0
            for weight, loss in zip(self.weights, self.losses):
                total = total + weight * ops.cast(
                    loss(y_true, y_pred, sample_weight=sample_weight), "float32"
                )
            return total

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        config.update(
            {
                "losses": [keras.losses.serialize(loss) for loss in self.losses],
                "weights": list(self.weights),
                "dtype": self.dtype,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["losses"] = [keras.losses.deserialize(loss) for loss in config["losses"]]
        return cls(**config)
