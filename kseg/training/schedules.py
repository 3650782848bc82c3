"""Learning-rate schedules: DeepLab's "poly" policy, with an optional linear warm-up."""

import keras


@keras.saving.register_keras_serializable(package="kseg")
class WarmupPolynomialDecay(keras.optimizers.schedules.PolynomialDecay):
    """Linear warm-up followed by Keras's `PolynomialDecay`.

    The "poly" policy of DeepLab (Chen et al., 2016, following Liu et al., ParseNet, 2015),
    lr * (1 - t / T) ** power, optionally preceded by a linear warm-up from 0 to
    `initial_learning_rate` over `warmup_steps` (Goyal et al., "Accurate, Large Minibatch SGD",
    2017). As in `keras.optimizers.schedules.CosineDecay`, the decay covers `decay_steps` steps
    *after* the warm-up, so the schedule is continuous and lasts `warmup_steps + decay_steps`.

    Args:
        initial_learning_rate: learning rate at the end of the warm-up.
        decay_steps: number of decay steps after the warm-up; positive.
        end_learning_rate: learning rate once the decay is over.
        power: exponent of the polynomial.
        cycle: passed to `PolynomialDecay`.
        warmup_steps: number of linear warm-up steps; 0 for none.
        name: name scope of the schedule.

    Returns:
        A serializable `keras.optimizers.schedules.LearningRateSchedule`.

    Example:
        >>> schedule = kseg.training.WarmupPolynomialDecay(0.01, 1000, warmup_steps=100)
        >>> round(float(schedule(50)), 6)
        0.005
    """

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        end_learning_rate=0.0,
        power=0.9,
        cycle=False,
        warmup_steps=0,
        name="WarmupPolynomialDecay",
    ):
        super().__init__(
            initial_learning_rate,
            decay_steps,
            end_learning_rate=end_learning_rate,
            power=power,
            cycle=cycle,
            name=name,
        )
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(
                "`warmup_steps` must be a non-negative integer. "
                f"Received: warmup_steps={warmup_steps!r}"
            )
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        decayed = super().__call__(keras.ops.maximum(step - self.warmup_steps, 0.0))
        if self.warmup_steps == 0:
            return decayed
        warm = keras.ops.cast(self.initial_learning_rate, decayed.dtype) * keras.ops.cast(
            step / self.warmup_steps, decayed.dtype
        )
        return keras.ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        config = super().get_config()
        config["warmup_steps"] = self.warmup_steps
        return config


def poly_schedule(
    initial_learning_rate, decay_steps, power=0.9, end_learning_rate=0.0, warmup_steps=0
):
    """Build the "poly" learning-rate schedule lr * (1 - t / T) ** power used by DeepLab and PSPNet.

    Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
    Convolution, and Fully Connected CRFs" (TPAMI 2017) use power 0.9; Zhao et al. (PSPNet, CVPR
    2017) keep it. Without warm-up this is Keras's own `PolynomialDecay` (so it serializes with no
    kseg code at all); with warm-up it is `WarmupPolynomialDecay`, whose decay starts after the
    warm-up.

    Args:
        initial_learning_rate: base learning rate.
        decay_steps: number of optimizer steps over which to decay (after any warm-up).
        power: exponent of the polynomial.
        end_learning_rate: learning rate reached after `decay_steps`, kept afterwards.
        warmup_steps: number of linear warm-up steps from 0; 0 for none.

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule`.

    Example:
        >>> schedule = kseg.training.poly_schedule(0.01, decay_steps=100)
        >>> round(float(schedule(50)), 6)
        0.005359
    """
    if not isinstance(decay_steps, int) or decay_steps <= 0:
        raise ValueError(
            f"`decay_steps` must be a positive integer. Received: decay_steps={decay_steps!r}"
        )
    if warmup_steps:
        return WarmupPolynomialDecay(
            initial_learning_rate,
            decay_steps,
            end_learning_rate=end_learning_rate,
            power=power,
            warmup_steps=warmup_steps,
        )
    return keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate, decay_steps, end_learning_rate=end_learning_rate, power=power
    )
