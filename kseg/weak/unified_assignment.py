"""Step (a) of the unified framework of Xu et al. (CVPR 2015): superpixel labels under constraints.

With the class models fixed, each image's superpixels take the labels of least one-vs-rest
hinge cost that its weak labels allow, and a greedy repair meets the minimum counts the weak
labels require (`kseg.weak.unified` describes the objective and the repair's limits).
"""

import numpy as np


def hinge_assignment_costs(scores):
    """The one-vs-rest hinge cost of each class for each superpixel, up to a per-row constant.

    Giving superpixel p the class c costs max(0, 1 - s_pc) for c plus max(0, 1 + s_pd) for every
    other class d; subtracting the row's constant sum_d max(0, 1 + s_pd) leaves
    max(0, 1 - s_pc) - max(0, 1 + s_pc), a strictly decreasing function of s_pc.

    Args:
        scores: float array (S, K) of class scores w_c . x_p.

    Returns:
        float64 array (S, K).

    Example:
        >>> import numpy as np
        >>> from kseg.weak.unified_assignment import hinge_assignment_costs
        >>> hinge_assignment_costs(np.array([[-2.0, 0.0, 2.0]])).tolist()
        [[3.0, 0.0, -3.0]]
    """
    scores = np.asarray(scores, np.float64)
    return np.maximum(0.0, 1.0 - scores) - np.maximum(0.0, 1.0 + scores)


def constrained_assignment(scores, allowed, requirements=()):
    """Labels superpixels by their best allowed class, then repairs unmet minimum counts.

    Step (a) of the alternation of Xu, Schwing and Urtasun (CVPR 2015), for one image: each
    superpixel p takes the allowed class of least one-vs-rest hinge cost (its best-scoring allowed
    class); then, for each requirement "at least `count` superpixels of `members` take `class`",
    the missing ones are the members that allow the class with the smallest rise in cost, skipping
    superpixels whose present class another requirement still needs. The requirements are met
    in order of their shortfall, largest first. Every superpixel always keeps an allowed class;
    a requirement that cannot be met without breaking an earlier one (two boxes of different
    classes over the same single superpixel, say) is met as far as it can be, as a soft
    constraint.

    Args:
        scores: float array (S, K) of class scores.
        allowed: bool array (S, K), every row with at least one True.
        requirements: sequence of `(members, class_id, count)`, `members` an integer array of
            superpixel ids.

    Returns:
        int32 array (S,) of classes.

    Raises:
        ValueError: a superpixel allows no class.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.unified_assignment import constrained_assignment
        >>> scores = np.array([[2.0, 1.0], [1.5, 1.2], [1.0, -1.0]])
        >>> constrained_assignment(scores, np.ones((3, 2), bool), [(np.arange(3), 1, 1)]).tolist()
        [0, 1, 0]
    """
    scores = np.asarray(scores, np.float64)
    allowed = np.asarray(allowed, bool)
    if scores.ndim != 2 or allowed.shape != scores.shape:
        raise ValueError(
            "`scores` and `allowed` must both be (S, K). "
            f"Received: scores.shape={scores.shape}, allowed.shape={allowed.shape}"
        )
    empty = np.flatnonzero(~allowed.any(axis=1))
    if empty.size:
        raise ValueError(
            f"Superpixel {int(empty[0])} allows no class: its weak labels contradict each other."
        )
    costs = np.where(allowed, hinge_assignment_costs(scores), np.inf)
    labels = np.argmin(costs, axis=1).astype(np.int32)
    requirements = [
        (np.asarray(members, np.int64).reshape(-1), int(class_id), int(count))
        for members, class_id, count in requirements
    ]

    def shortfall(requirement):
        members, class_id, count = requirement
        return count - int(np.sum(labels[members] == class_id))

    member_sets = [set(members.tolist()) for members, _, _ in requirements]

    def needed(superpixel):
        """Whether moving `superpixel` off its class would break a requirement met so far."""
        return any(
            labels[superpixel] == class_id
            and superpixel in member_set
            and int(np.sum(labels[members] == class_id)) <= count
            for (members, class_id, count), member_set in zip(requirements, member_sets)
        )

    for requirement in sorted(requirements, key=shortfall, reverse=True):
        members, class_id, _ = requirement
        missing = shortfall(requirement)
        if missing <= 0:
            continue
        candidates = members[(labels[members] != class_id) & allowed[members, class_id]]
        rise = costs[candidates, class_id] - costs[candidates, labels[candidates]]
        for superpixel in candidates[np.argsort(rise, kind="stable")]:
            if missing == 0:
                break
            if needed(superpixel):
                continue
            labels[superpixel] = class_id
            missing -= 1
    return labels
