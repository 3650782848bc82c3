"""Constrained CNN: a segmentation network trained from image-level tags through linear constraints.

Pathak, Krähenbühl and Darrell, "Constrained Convolutional Neural Networks for Weakly
Supervised Segmentation", ICCV 2015. For each image the network gives per-pixel class
distributions Q. The method finds the latent distribution P over labels that is closest to Q in
KL divergence, `min_P (1/n) sum_i KL(P_i || Q_i)`, subject to linear constraints on the class
masses `m_l = (1/n) sum_i P_i(l)` that the tags imply:

- suppression: a class absent from the tags has zero mass;
- foreground: each tagged class other than the background has `m_l >= a_l`;
- background: when the background is tagged next to some object, `a_0 <= m_0 <= b_0`;
- size (optional): per-class lower and upper bounds from known area fractions.

The problem is convex and its dual is smooth: with non-negative multipliers `lambda` on the
constraints, the minimiser is `P_i(l) ∝ Q_i(l) exp(v_l)` with `v_l` the signed sum of the
multipliers of class l, and the dual gradient is each constraint's violation. Absent classes are
removed exactly (their multiplier would be infinite). The remaining multipliers are found by
projected gradient ascent with Nesterov momentum and gradient-mapping restarts (O'Donoghue and
Candès, 2015), vectorised over the batch, for a fixed number of iterations in float32. The dual
Hessian is minus a covariance of class indicators, whose largest eigenvalue is at most 1/2, so
with two multipliers per class the gradient is 1-Lipschitz and a step of 1 is safe. A slack
with hinge penalty beta on a constraint (the paper's remedy for unsatisfiable constraints)
bounds its multiplier by beta.

The network is then trained on the cross-entropy between P (held fixed) and its softmax, which
differs from the paper's KL objective only by the entropy of P, a constant for the gradient.

Default bounds: a foreground class covers at least 5% of the image and the background between
30% and 70%. These are the values of the authors' released code (github.com/pathak22/ccnn,
`src/python_layers.py`: `fg_lower = 0.05`, `bg_lower, bg_upper = 0.3, 0.7`, background upper
bound only when an object is tagged); the paper's text could not be consulted here to confirm
them. That code also puts a slack of 2 on the foreground lower bounds
(`foreground_slack=2.0` reproduces it); the default here is hard constraints.
"""

import keras
import numpy as np
import tensorflow as tf

from kseg.validation import validate_fraction, validate_positive_int

DEFAULT_FOREGROUND_LOWER_BOUND = 0.05
DEFAULT_BACKGROUND_BOUNDS = (0.3, 0.7)
# Factors on an object's known share of the image: generous, so that the latent labels take in
# every pixel of an object the network is unsure of (see ConstrainedCrossEntropy).
DEFAULT_SIZE_BOUNDS = (1.5, 3.0)
# Multipliers of hard constraints stop here, so an infeasible problem stays finite; exp(1e4)
# is never formed because the distributions come from log-softmax.
_HARD_CONSTRAINT_LIMIT = 1e4
# The hard solver's shifts stay within +-_SHIFT_RANGE (logits differ by far less), found to
# _SHIFT_RANGE / 2**_BISECTION_STEPS, in _HARD_SWEEPS sweeps over the classes.
_SHIFT_RANGE = 100.0
_BISECTION_STEPS = 32
_HARD_SWEEPS = 10


def _check_bounds_pair(bounds, name, upper_limit=1.0):
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a pair (lower, upper). Received: {name}={bounds!r}"
        ) from None
    if not 0.0 <= low <= high <= upper_limit:
        raise ValueError(
            f"`{name}` must satisfy 0 <= lower <= upper <= {upper_limit}. "
            f"Received: {name}={bounds!r}"
        )
    return (low, high)


def _check_solver(iterations, step_size, foreground_slack):
    validate_positive_int(iterations, "iterations")
    if not 0.0 < float(step_size) <= 1.0:
        raise ValueError(
            "`step_size` must be in (0, 1] (the dual gradient is 1-Lipschitz). "
            f"Received: step_size={step_size!r}"
        )
    if foreground_slack is not None and not float(foreground_slack) > 0.0:
        raise ValueError(
            "`foreground_slack` must be positive or None. "
            f"Received: foreground_slack={foreground_slack!r}"
        )


def _check_hardness(hardness):
    if isinstance(hardness, bool) or not float(hardness) >= 1.0:
        raise ValueError(f"`hardness` must be a number >= 1. Received: hardness={hardness!r}")
    return float(hardness)


def _check_tag_width(tags, num_classes, what="tags"):
    """Raises a ValueError naming the tagged classes that the logits lack."""
    width = tags.shape[-1]
    if width is None or width == num_classes:
        return
    message = f"{what} have {width} columns but the logits have {num_classes} classes"
    if width > num_classes:
        extra = f"classes {num_classes}..{width - 1}"
        if tf.executing_eagerly():
            named = np.flatnonzero(np.any(np.asarray(tags)[..., num_classes:] > 0.5, axis=0))
            if named.size:
                extra = "class(es) " + ", ".join(str(int(c) + num_classes) for c in named)
        message += f"; tags name {extra}, which the model does not predict"
    raise ValueError(message + ".")


def _check_ranks(logits, tags):
    if logits.shape.rank != 4:
        raise ValueError(
            f"`logits` must have shape (B, H, W, K). Received: logits.shape={tuple(logits.shape)}"
        )
    if logits.shape[-1] is None:
        raise ValueError("The class axis of `logits` must be known statically.")
    if tags.shape.rank != 2:
        raise ValueError(f"`tags` must have shape (B, K). Received: tags.shape={tuple(tags.shape)}")


def _per_class(value, like, name):
    value = tf.cast(tf.convert_to_tensor(value), tf.float32)
    if value.shape.rank not in (0, 1, 2):
        raise ValueError(
            f"`{name}` must be a scalar, (K,) or (B, K). Received: shape {value.shape}"
        )
    return tf.broadcast_to(value, tf.shape(like))


def latent_distribution(
    logits,
    tags,
    *,
    lower_bound=DEFAULT_FOREGROUND_LOWER_BOUND,
    lower_bounds=None,
    upper_bounds=None,
    background=0,
    background_bounds=DEFAULT_BACKGROUND_BOUNDS,
    foreground_slack=None,
    iterations=100,
    step_size=1.0,
    hardness=1.0,
):
    """The per-image distribution closest in KL to softmax(logits) that obeys the tags' constraints.

    Solves, for every image of the batch, `min_P (1/n) sum_i KL(P_i || Q_i)` with
    `Q = softmax(logits)` over the n pixels, subject to (with `m_l` the mean of `P_i(l)` over
    pixels): `m_l = 0` for classes absent from the tags; `m_l >= lower_bound` (or
    `lower_bounds[l]`) for tagged classes other than `background`; `m_l <= upper_bounds[l]`
    when given; and `background_bounds[0] <= m_0 <= background_bounds[1]` when the background
    and at least one other class are tagged. The solution is found in the dual by projected
    gradient ascent (see the module docstring, after Pathak et al., ICCV 2015), which keeps it
    of the form `P ∝ Q exp(v)` with one shift v per class and image.

    An image whose tags are all zero carries no information: its P is Q unchanged. Bounds that
    cannot all hold (e.g. more than 14 tagged objects at 5% each beside a 30% background) have
    no solution; hard multipliers then grow until `iterations` run out, while a
    `foreground_slack` lets foreground lower bounds give way.

    Args:
        logits: float `(B, H, W, K)` scores; any float dtype, computed in float32.
        tags: `(B, K)` multi-hot of the classes present (values > 0.5 count as present).
        lower_bound: foreground lower bound a_l as a fraction of the image (paper's 5%).
        lower_bounds: optional per-class lower bounds `(K,)` or `(B, K)` for tagged classes,
            replacing `lower_bound` (and the background's lower bound) where not NaN.
        upper_bounds: optional per-class upper bounds `(K,)` or `(B, K)` for tagged classes
            (1 = no bound), replacing the background's upper bound where not NaN.
        background: index of the background class, or None when there is none.
        background_bounds: `(a_0, b_0)` for the background's mass (paper's 30% and 70%).
        foreground_slack: hinge penalty beta of a slack on each foreground lower bound, or
            None for hard bounds (the authors' code uses 2).
        iterations: number of dual ascent steps (hardness 1).
        step_size: dual step, in (0, 1] (hardness 1).
        hardness: h >= 1 sharpens P to `P ∝ (Q exp(v))^h`, which weighs down the entropy of P
            in the objective: at 1000 P is practically one label per pixel, the most likely
            labelling that obeys the constraints. The authors' code has this `scale` (1 by
            default, 1000 in its size-constraint setting). Above 1 the dual's curvature grows
            with h, so it is solved by exact block-coordinate ascent (one class at a time, by
            bisection) instead of gradient steps; `iterations` and `step_size` then do not apply.

    Returns:
        float32 `(B, H, W, K)` latent distributions P (rows sum to 1, zero on absent classes).

    Example:
        >>> import numpy as np, kseg.weak.constrained
        >>> logits = np.zeros((1, 4, 4, 3), "float32"); logits[..., 0] = 3.0
        >>> p = kseg.weak.constrained.latent_distribution(logits, np.array([[1.0, 0.0, 1.0]]))
        >>> np.round(p.numpy().mean(axis=(1, 2)), 3)  # background capped at 70%, class 1 absent
        array([[0.7, 0. , 0.3]], dtype=float32)
    """
    lower_bound = validate_fraction(lower_bound, "lower_bound")
    background_bounds = _check_bounds_pair(background_bounds, "background_bounds")
    _check_solver(iterations, step_size, foreground_slack)
    hardness = _check_hardness(hardness)
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    tags = tf.cast(tf.convert_to_tensor(tags), tf.float32)
    _check_ranks(logits, tags)
    num_classes = logits.shape[-1]
    _check_tag_width(tags, num_classes)
    if background is not None and not 0 <= int(background) < num_classes:
        raise ValueError(
            f"`background` must be a class index below {num_classes} or None. "
            f"Received: background={background!r}"
        )

    batch = tf.shape(logits)[0]
    scores = tf.reshape(logits, [batch, -1, num_classes])
    present = tags > 0.5
    has_tags = tf.reduce_any(present, axis=-1, keepdims=True)
    present = tf.logical_or(present, tf.logical_not(has_tags))
    is_background = _background_column(background, num_classes)
    foreground = tf.logical_and(present, tf.logical_not(is_background))
    any_foreground = tf.reduce_any(foreground, axis=-1, keepdims=True)
    background_constrained = tf.logical_and(tf.logical_and(present, is_background), any_foreground)

    zeros = tf.zeros_like(tags)
    lower = tf.where(foreground, lower_bound, zeros)
    lower = tf.where(background_constrained, background_bounds[0], lower)
    upper = tf.where(background_constrained, background_bounds[1], tf.ones_like(tags))
    if lower_bounds is not None:
        given = _per_class(lower_bounds, tags, "lower_bounds")
        lower = tf.where(tf.logical_and(present, ~tf.math.is_nan(given)), given, lower)
    if upper_bounds is not None:
        given = _per_class(upper_bounds, tags, "upper_bounds")
        upper = tf.where(tf.logical_and(present, ~tf.math.is_nan(given)), given, upper)
    constrained = tf.logical_and(present, has_tags)
    active_lower = tf.cast(tf.logical_and(constrained, lower > 0.0), tf.float32)
    active_upper = tf.cast(tf.logical_and(constrained, upper < 1.0), tf.float32)
    lower_limit = tf.fill(tf.shape(tags), _HARD_CONSTRAINT_LIMIT)
    if foreground_slack is not None:
        lower_limit = tf.where(foreground, float(foreground_slack), lower_limit)

    # Absent classes get -inf scores: the exact limit of an infinite suppression multiplier.
    masked = tf.where(present[:, None, :], tf.nn.log_softmax(scores, axis=-1), -np.inf)

    if hardness > 1.0:
        shift = _hard_coordinate_ascent(
            masked,
            lower,
            upper,
            active_lower,
            active_upper,
            lower_limit,
            hardness,
        )
        return tf.reshape(_tilted(masked, shift, hardness), tf.shape(logits))

    limit = tf.concat([lower_limit, tf.fill(tf.shape(tags), _HARD_CONSTRAINT_LIMIT)], axis=-1)
    active = tf.concat([active_lower, active_upper], axis=-1)
    targets = tf.concat([lower, -upper], axis=-1)
    step = tf.constant(float(step_size), tf.float32)

    def distribution(multipliers):
        shift = multipliers[:, :num_classes] - multipliers[:, num_classes:]
        return _tilted(masked, shift, 1.0)

    def dual_gradient(multipliers):
        mass = tf.reduce_mean(distribution(multipliers), axis=1)
        return (targets - tf.concat([mass, -mass], axis=-1)) * active

    def body(index, current, previous, momentum):
        next_momentum = 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * momentum**2))
        lookahead = current + ((momentum - 1.0) / next_momentum) * (current - previous)
        lookahead = tf.clip_by_value(lookahead, 0.0, limit)
        updated = tf.clip_by_value(lookahead + step * dual_gradient(lookahead), 0.0, limit)
        updated = updated * active
        # Momentum restarts when the projected step turns against the last move.
        restart = (
            tf.reduce_sum((updated - lookahead) * (updated - current), axis=-1, keepdims=True) < 0.0
        )
        next_momentum = tf.where(restart, 1.0, next_momentum)
        return index + 1, updated, current, next_momentum

    initial = tf.zeros_like(targets)
    ones = tf.ones_like(targets[:, :1])
    _, multipliers, _, _ = tf.while_loop(
        lambda index, *_: index < iterations,
        body,
        (tf.constant(0), initial, initial, ones),
    )
    return tf.reshape(distribution(multipliers), tf.shape(logits))


def _background_column(background, num_classes):
    """Bool `(1, K)`, True at the background class (all False without one)."""
    index = -1 if background is None else int(background)
    return tf.one_hot(index, num_classes, on_value=True, off_value=False)[None, :]


def _tilted(masked, shift, hardness):
    """`P ∝ exp(hardness * (masked + shift))` per pixel: Q tilted by one shift per class."""
    return tf.exp(tf.nn.log_softmax(hardness * (masked + shift[:, None, :]), axis=-1))


def _hard_coordinate_ascent(
    masked, lower, upper, active_lower, active_upper, lower_limit, hardness
):
    """Per-class shifts v of `P ∝ exp(hardness * (masked + v))` that meet the mass bounds.

    Exact block-coordinate ascent on the dual: one class at a time, the other shifts held, its
    mass is a monotone function of its own shift, `mean_i sigmoid(h (v_l + s_i))` with s_i the
    pixel's log-odds of class l against the rest. Its shift is 0 when the mass already lies
    within the bounds, and otherwise the root, found by bisection, that puts the mass on the
    violated bound. Unlike gradient steps, this does not slow down as P hardens (the dual's
    curvature grows with h), and each bisection step costs one sigmoid per pixel.
    """
    num_classes = masked.shape[-1]
    lower_limit = tf.minimum(lower_limit, _SHIFT_RANGE)

    def fit_class(index, shift):
        own = tf.one_hot(index, num_classes, on_value=True, off_value=False)
        others = tf.where(own, -np.inf, masked + shift[:, None, :])
        # P_l = sigmoid(h (v_l + log_odds)): the rest's mass enters through its own h-softmax.
        rest = tf.reduce_logsumexp(hardness * others, axis=-1) / hardness
        log_odds = tf.gather(masked, index, axis=-1) - rest
        log_odds = tf.where(tf.math.is_nan(log_odds), np.inf, log_odds)

        def mass(value):
            return tf.reduce_mean(tf.sigmoid(hardness * (value[:, None] + log_odds)), axis=1)

        start = mass(tf.zeros_like(log_odds[:, 0]))
        low_bound, high_bound = tf.gather(lower, index, axis=-1), tf.gather(upper, index, axis=-1)
        raise_mass = (tf.gather(active_lower, index, axis=-1) > 0) & (start < low_bound)
        cut_mass = (tf.gather(active_upper, index, axis=-1) > 0) & (start > high_bound)
        target = tf.where(raise_mass, low_bound, high_bound)
        bracket_low = tf.where(raise_mass, 0.0, -_SHIFT_RANGE)
        bracket_high = tf.where(raise_mass, tf.gather(lower_limit, index, axis=-1), 0.0)

        def halve(step, bracket):
            low, high = bracket
            middle = 0.5 * (low + high)
            below = mass(middle) < target
            return step + 1, (tf.where(below, middle, low), tf.where(below, high, middle))

        _, (low, high) = tf.while_loop(
            lambda step, _: step < _BISECTION_STEPS, halve, (0, (bracket_low, bracket_high))
        )
        # The upper end of the bracket meets a lower bound, the lower end an upper bound.
        solved = tf.where(raise_mass, high, low)
        value = tf.where(raise_mass | cut_mass, solved, 0.0)
        return index + 1, tf.where(own[None, :], value[:, None], shift)

    def sweep(step, shift):
        _, shift = tf.while_loop(lambda index, _: index < num_classes, fit_class, (0, shift))
        return step + 1, shift

    _, shift = tf.while_loop(lambda step, _: step < _HARD_SWEEPS, sweep, (0, tf.zeros_like(lower)))
    return shift


def _soft_object_classes(hard, soft, background):
    """Hard P's background mass, with its object mass shared among classes as in soft P."""
    num_classes = hard.shape[-1]
    is_background = tf.one_hot(background, num_classes)
    background_mass = tf.reduce_sum(hard * is_background, axis=-1, keepdims=True)
    soft_objects = soft * (1.0 - is_background)
    soft_total = tf.reduce_sum(soft_objects, -1, keepdims=True)
    hard_objects = hard * (1.0 - is_background)
    # Where the soft solution leaves a pixel no object mass at all, the hard shares stand.
    share = tf.where(
        soft_total > 0.0,
        tf.math.divide_no_nan(soft_objects, soft_total),
        tf.math.divide_no_nan(hard_objects, tf.reduce_sum(hard_objects, -1, keepdims=True)),
    )
    return background_mass * is_background + (1.0 - background_mass) * share


def _split_weak_labels(y_true, num_classes):
    """Reads `(B, K)` tags or `(B, 2K)` tags followed by area fractions."""
    width = y_true.shape[-1]
    if width == 2 * num_classes:
        tags, sizes = y_true[:, :num_classes], y_true[:, num_classes:]
        if tf.executing_eagerly():
            totals = np.asarray(sizes).sum(axis=-1)
            bad = np.flatnonzero((np.abs(totals - 1.0) > 1e-3) & (totals != 0.0))
            if bad.size:
                raise ValueError(
                    f"y_true of width {width} = 2 x {num_classes} classes is read as tags "
                    f"followed by area fractions, but the fractions of image {int(bad[0])} sum "
                    f"to {totals[bad[0]]:.4f} instead of 1 (tags for classes beyond "
                    f"{num_classes - 1} are not allowed)."
                )
        return tags, sizes
    _check_tag_width(y_true, num_classes, what="y_true tags")
    return y_true, None


@keras.saving.register_keras_serializable(package="kseg")
class ConstrainedCrossEntropy(keras.losses.Loss):
    """Constrained CNN loss: cross-entropy to the tag-constrained latent distribution P.

    Pathak et al., "Constrained Convolutional Neural Networks for Weakly Supervised
    Segmentation", ICCV 2015. For each image, `kseg.weak.constrained.latent_distribution`
    projects the network's softmax onto the constraints given by the image's tags (absent
    classes empty, tagged objects at least `lower_bound` of the image, background within
    `background_bounds`); P is held fixed (no gradient flows through the projection) and the
    loss is the pixel-mean cross-entropy `-(1/n) sum_i sum_l P_i(l) log softmax(logits)_i(l)`.

    `y_true` holds tags `(B, K)`, or tags followed by area fractions `(B, 2K)` as made by
    `kseg.weak.labels.tags_from_mask(..., with_sizes=True)` and `weak_label_dataset`. With area
    fractions s, each tagged object class c (every tagged class other than `background`) gets
    the size constraint `a * s_c <= m_c <= min(1, size_bounds[1] * s_c)` in place of the
    foreground bound, with `a = size_bounds[0]` lowered where needed so the objects' lower bounds
    sum to at most 1; the background gets no bound of its own and takes what the objects leave.
    (The paper's size constraint uses one bit per class, whether the object is large; kseg
    uses the fractions.)

    The bounds are generous on purpose, (1.5, 3) by default. With hard latent labels a bound at
    the object's exact share gives it only the pixels the network already ranks highest; early
    in training those are mostly background, and the object's own pixels are labelled
    background with full confidence, a labelling the network then confirms (on the shapes data,
    65% of the object pixels of P were background after one epoch and stayed so; with (1.5, 3)
    18%). `soft_object_classes=True` goes one step further for hard P (see its argument).

    An image with empty tags contributes zero loss. Tags wider than the logits' classes are an
    error naming the classes the model lacks.

    Args:
        lower_bound: foreground lower bound (fraction of the image).
        background: background class index, or None.
        background_bounds: `(lower, upper)` background fraction when objects are tagged.
        size_bounds: `(low, high)` factors applied to known area fractions.
        foreground_slack: hinge penalty of a slack on foreground lower bounds, or None.
        iterations: dual ascent steps per training step (per hardness stage).
        step_size: dual step, in (0, 1].
        hardness: sharpening of P (see `latent_distribution`); 1 keeps P soft, 1000 (the
            authors' setting with size constraints) makes it one label per pixel.
        soft_object_classes: with `hardness > 1` and a background class, decide background
            against object hard but share each object pixel among the tagged object classes
            as the soft (hardness 1) solution under the same bounds does: where two tagged
            objects are still alike to the network, neither label is imposed. A choice of
            kseg, not of the paper; measured in `benchmarks/weak_vs_full.py`.
        reduction: Keras reduction over the per-image losses.
        name: loss name.
        dtype: Keras loss dtype; the computation itself is float32.

    Returns:
        A `keras.losses.Loss` taking `(y_true, logits)` with logits `(B, H, W, K)`.

    Example:
        >>> import kseg.testing, kseg.weak.constrained
        >>> model = kseg.testing.build_small_model("fcn8s", num_classes=5)
        >>> model.compile("adam", loss=kseg.weak.constrained.ConstrainedCrossEntropy())
    """

    def __init__(
        self,
        lower_bound=DEFAULT_FOREGROUND_LOWER_BOUND,
        background=0,
        background_bounds=DEFAULT_BACKGROUND_BOUNDS,
        size_bounds=DEFAULT_SIZE_BOUNDS,
        foreground_slack=None,
        iterations=100,
        step_size=1.0,
        hardness=1.0,
        soft_object_classes=False,
        reduction="sum_over_batch_size",
        name="constrained_cross_entropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.lower_bound = validate_fraction(lower_bound, "lower_bound")
        if background is not None and (isinstance(background, bool) or int(background) < 0):
            raise ValueError(
                f"`background` must be a class index or None. Received: {background!r}"
            )
        self.background = None if background is None else int(background)
        self.background_bounds = _check_bounds_pair(background_bounds, "background_bounds")
        self.size_bounds = _check_bounds_pair(size_bounds, "size_bounds", upper_limit=np.inf)
        _check_solver(iterations, step_size, foreground_slack)
        self.foreground_slack = None if foreground_slack is None else float(foreground_slack)
        self.iterations = int(iterations)
        self.step_size = float(step_size)
        self.hardness = _check_hardness(hardness)
        if not isinstance(soft_object_classes, bool):
            raise ValueError(
                "`soft_object_classes` must be True or False. "
                f"Received: soft_object_classes={soft_object_classes!r}"
            )
        self.soft_object_classes = soft_object_classes

    def _size_bounds(self, tags, sizes):
        """Per-class (lower, upper) mass bounds from area fractions; NaN where none applies."""
        num_classes = tags.shape[-1]
        is_background = _background_column(self.background, num_classes)
        known = tf.logical_and(tags > 0.5, sizes > 0.0)
        objects = tf.logical_and(known, ~is_background)
        object_share = tf.reduce_sum(tf.where(objects, sizes, 0.0), axis=-1, keepdims=True)
        low, high = self.size_bounds
        # The objects' lower bounds must leave room for one another: a * sum(s) <= 1.
        factor = tf.minimum(low, 1.0 / tf.maximum(object_share, 1e-12))
        lower = tf.where(objects, factor * sizes, np.nan)
        upper = tf.where(objects, tf.minimum(1.0, high * sizes), np.nan)
        # The background, when tagged, is bounded only by what the objects leave.
        lower = tf.where(is_background, 0.0, lower)
        upper = tf.where(is_background, 1.0, upper)
        return lower, upper

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)
        y_true = tf.cast(y_true, tf.float32)
        _check_ranks(logits, y_true)
        num_classes = logits.shape[-1]
        tags, sizes = _split_weak_labels(y_true, num_classes)
        lower_bounds = upper_bounds = None
        if sizes is not None:
            lower_bounds, upper_bounds = self._size_bounds(tags, sizes)
        options = dict(
            lower_bound=self.lower_bound,
            lower_bounds=lower_bounds,
            upper_bounds=upper_bounds,
            background=self.background,
            background_bounds=self.background_bounds,
            foreground_slack=self.foreground_slack,
            iterations=self.iterations,
            step_size=self.step_size,
        )
        target = latent_distribution(logits, tags, hardness=self.hardness, **options)
        if self.soft_object_classes and self.hardness > 1.0 and self.background is not None:
            soft = latent_distribution(logits, tags, hardness=1.0, **options)
            target = _soft_object_classes(target, soft, self.background)
        target = tf.stop_gradient(target)
        log_q = tf.nn.log_softmax(logits, axis=-1)
        per_pixel = -tf.reduce_sum(tf.math.multiply_no_nan(log_q, target), axis=-1)
        has_tags = tf.cast(tf.reduce_any(tags > 0.5, axis=-1), tf.float32)
        return tf.reduce_mean(per_pixel, axis=[1, 2]) * has_tags

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "lower_bound": self.lower_bound,
                "background": self.background,
                "background_bounds": list(self.background_bounds),
                "size_bounds": list(self.size_bounds),
                "foreground_slack": self.foreground_slack,
                "iterations": self.iterations,
                "step_size": self.step_size,
                "hardness": self.hardness,
                "soft_object_classes": self.soft_object_classes,
                "dtype": self.dtype,
            }
        )
        return config
