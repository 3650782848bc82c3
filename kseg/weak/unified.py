"""One model for any mix of weak labels: max-margin clustering of superpixels under constraints.

Xu, Schwing and Urtasun, "Learning to Segment Under Various Forms of Weak Supervision" (CVPR 2015)
treat weakly-supervised segmentation as clustering. Every image is cut into superpixels, each
with a feature vector x_p; a linear model w_c per class scores them; the superpixels' labels
h_p are latent. Weights and labels are learned together by minimising the max-margin clustering
objective

    1/2 sum_c ||w_c||^2 + C sum_p sum_c max(0, 1 - t_pc w_c . x_p),  t_pc = +1 if h_p = c else -1,

(x_p ending in a constant 1 whose weight is the bias) subject to the constraints every form of
weak label puts on the labels of its image:
- image tags: a superpixel takes only a class tagged in its image, and every tagged class takes
  at least one superpixel of the image;
- boxes: a superpixel outside every box is background, one inside takes background or the class
  of a box holding it, and each box's class covers at least `box_fraction` of the box's
  superpixels;
- partial labels (scribbles, a few labelled pixels): a superpixel under labelled pixels takes
  their class (the most frequent one if several).
Any mix is allowed per image: the constraints are intersected.

The objective is minimised by alternation, as in the paper:
(a) with the weights fixed, the labels of each image minimise the objective under its
    constraints. Without coupling constraints the one-vs-rest hinge cost of giving p the class
    c, max(0, 1 - s_pc) - max(0, 1 + s_pc) up to a constant, falls strictly as the score s_pc
    rises, so each superpixel takes its best-scoring allowed class; then a repair step meets
    each "at least n superpixels of class c" requirement by moving the superpixels whose cost
    rises least, never taking one that another requirement still needs. This greedy repair,
    this implementation's replacement for an exact integer-programming solution, is exact for a
    single requirement per image and may fall short of the optimum when requirements compete for
    the same superpixels.
(b) with the labels fixed, the weights are the one-vs-rest linear SVMs of the objective, found by
    a few epochs of dual coordinate descent (Hsieh et al., ICML 2008, the LIBLINEAR method, which
    converges to the optimum) with the bias as a constant feature of value 1 (regularised like
    the weights, as LIBLINEAR does).
Two choices of this implementation, not the paper's: the first weights are learned before any
assignment, from the allowed sets alone (class c is positive on every superpixel that may take
c and negative on every one that may not), and with `balanced=True` each class's SVM weighs its
positives and negatives equally, so that the background does not swamp small objects. A
superpixel counts as inside a box when at least half of its pixels are.

Step (a) is `kseg.weak.unified_assignment.constrained_assignment`, step (b)
`kseg.weak.linear_svm.one_vs_rest_svm`; `UnifiedWeakSegmenter` below turns weak labels into
their constraints and alternates the two.

Features: the colour and texture histograms of `kseg.weak.superpixels.superpixel_histograms`,
concatenated with the superpixel averages of a per-pixel feature map when a `feature_extractor` is
given (`BackboneFeatures` pools a kseg backbone's feature maps resized bilinearly to the image).
Features are standardised with the training images' mean and deviation.

Pseudo-labels for a kseg network: fit the segmenter on the weakly-labelled training images, then
take `latent_labels(images, weak_labels)` (the constrained assignment, which respects every weak
label; `fit` leaves the same maps in `training_labels_`) or `predict(images)` (the unconstrained
classifier, for images without labels) as uint8 (N, H, W) masks, and train any kseg model on them:

    segmenter = kseg.weak.unified.UnifiedWeakSegmenter(num_classes).fit(images, weak_labels)
    model.compile("adam", kseg.losses.SegmentationCrossEntropy())
    model.fit(images, segmenter.training_labels_, epochs=...)

scikit-image is the optional `weak` extra (`pip install 'kseg[weak]'`), imported only when used.
"""

import numpy as np

from kseg.detection.boxes import image_boxes
from kseg.validation import (
    IGNORE_LABEL,
    validate_fraction,
    validate_non_negative_int,
    validate_non_negative_number,
    validate_positive_int,
    validate_positive_number,
)
from kseg.weak.inputs import validate_image_batch, validate_label_map_classes, validate_rgb_image
from kseg.weak.linear_svm import one_vs_rest_svm
from kseg.weak.superpixels import slic_superpixels, superpixel_histograms, superpixel_means
from kseg.weak.unified_assignment import constrained_assignment

_WEAK_LABEL_KEYS = ("tags", "boxes", "box_classes", "partial")
# A superpixel counts as inside a box when at least this share of its pixels lies in the box.
_INSIDE_SHARE = 0.5


def _multi_hot_tags(tags, num_classes, index):
    tags = np.asarray(tags)
    if tags.ndim != 1:
        raise ValueError(f"Image {index}: `tags` must be 1-D. Received: tags.shape={tags.shape}")
    if np.issubdtype(tags.dtype, np.integer):
        bad = tags[(tags < 0) | (tags >= num_classes)]
        if bad.size:
            raise ValueError(
                f"Image {index}: the tags name class {int(bad[0])}, outside 0..{num_classes - 1} "
                f"for num_classes={num_classes}. Received: tags={tags.tolist()}"
            )
        present = np.zeros(num_classes, bool)
        present[tags] = True
        return present
    present = tags.astype(np.float64) > 0
    if present.shape[0] != num_classes:
        beyond = np.flatnonzero(present[num_classes:]) + num_classes
        detail = f" (they name class {int(beyond[0])})" if beyond.size else ""
        raise ValueError(
            f"Image {index}: multi-hot `tags` must have num_classes={num_classes} entries"
            f"{detail}. Received: tags.shape={tags.shape}"
        )
    return present


def _clipped_boxes(boxes, box_classes, height, width, num_classes, background_class, index):
    try:
        boxes = image_boxes(boxes, height, width)
    except ValueError as error:
        raise ValueError(f"Image {index}: {error}") from error
    box_classes = np.asarray(box_classes).reshape(-1)
    if len(box_classes) != len(boxes):
        raise ValueError(
            f"Image {index}: `boxes` must be (N, 4) with one entry of `box_classes` each. "
            f"Received: boxes.shape={boxes.shape}, box_classes.shape={box_classes.shape}"
        )
    if box_classes.size and not np.issubdtype(box_classes.dtype, np.integer):
        raise ValueError(f"Image {index}: `box_classes` must be integers. Received: {box_classes}")
    for number, class_id in enumerate(box_classes):
        if not 0 <= class_id < num_classes or class_id == background_class:
            raise ValueError(
                f"Image {index}, box {number}: class {int(class_id)} must be a foreground class in "
                f"0..{num_classes - 1} other than background_class={background_class}."
            )
    # Pixel (i, j) is inside [y1, y2) x [x1, x2) when its cell [i, i+1) x [j, j+1) meets the box.
    rows = np.clip(np.stack([np.floor(boxes[:, 0]), np.ceil(boxes[:, 2])], 1), 0, height)
    cols = np.clip(np.stack([np.floor(boxes[:, 1]), np.ceil(boxes[:, 3])], 1), 0, width)
    return rows.astype(np.int64), cols.astype(np.int64), box_classes.astype(np.int64)


class UnifiedWeakSegmenter:
    """Superpixel segmentation learned from any mix of tags, boxes and partial labels.

    The max-margin clustering of Xu, Schwing and Urtasun ("Learning to Segment Under Various
    Forms of Weak Supervision", CVPR 2015): per-class linear models over superpixel features,
    with the superpixels' labels latent and constrained by each image's weak labels, learned by
    alternating a constrained assignment and one-vs-rest SVM training (the module docstring
    gives the objective, the constraints and both steps).

    Weak labels, one dict per image, with any of:
    - "tags": the classes present (background included when present), as a float or bool
      multi-hot (K,) like `kseg.weak.labels.tags_from_mask` makes, or as integer class ids (an
      integer array or a list of ints: `[1, 0, 1]` means classes {0, 1}, not a multi-hot). A
      class id outside 0..K-1 (or a multi-hot longer than K) raises a ValueError.
    - "boxes" float (N, 4) `[y1, x1, y2, x2]` pixels with "box_classes" int (N,), as
      `kseg.weak.labels.boxes_from_mask` makes; when given, every object is assumed boxed, so
      superpixels outside all boxes are background. A box reaching past the image is clipped
      to it; a box wholly outside, empty, or of the background class raises a ValueError.
    - "partial": uint8 (H, W) class ids on labelled pixels, 255 elsewhere (scribbles from
      `kseg.weak.labels.scribbles_from_mask`); a superpixel under labelled pixels takes their
      most frequent class, and the painted maps keep every labelled pixel's own class.
    An image with none of them (an empty dict) raises a ValueError naming it: leave such images
    out of `fit`, or predict them afterwards.

    Args:
        num_classes: K, at most 255.
        feature_extractor: None (colour and texture histograms only) or a callable mapping an
            image (H, W, 3) in [0, 255] to a feature map (H, W, C), such as
            `BackboneFeatures("mobilenetv2", weights=kseg.backbones.bundled_weights_path(
            "mobilenetv2", alpha=0.35), alpha=0.35)` (ImageNet features, 288 channels).
        n_segments: approximate SLIC superpixels per image.
        compactness: SLIC compactness.
        sigma: Gaussian pre-smoothing of SLIC; without it, noisy textures can make SLIC's
            connectivity step merge a whole image into one superpixel.
        C: hinge weight of the SVMs.
        iterations: assignment/SVM alternations after the initial SVM.
        svm_epochs: dual coordinate descent passes per SVM.
        box_fraction: share of a box's superpixels its class must take, in [0, 1].
        background_class: the class outside boxes, or None for data where every pixel belongs
            to a boxed class (street scenes such as CamVid): a superpixel then takes the class of
            a box holding at least half of it, or else of a box it touches.
        balanced: in each class's SVM, weight the hinge terms so that its positives and its
            negatives carry equal total weight (N / (2 n_pos) and N / (2 n_neg)), so a rare class
            is not swamped by the background.
        seed: seed of the SVMs' visiting order.

    Example:
        >>> import numpy as np
        >>> from kseg.weak.unified import UnifiedWeakSegmenter
        >>> images = np.zeros((2, 32, 32, 3), "float32"); images[:, :, 16:] = (200.0, 30.0, 30.0)
        >>> weak = [{"tags": [0, 1]}, {"tags": [0, 1]}]
        >>> segmenter = UnifiedWeakSegmenter(2, n_segments=16).fit(images, weak)
        >>> segmenter.predict(images).shape
        (2, 32, 32)
    """

    def __init__(
        self,
        num_classes,
        *,
        feature_extractor=None,
        n_segments=100,
        compactness=10.0,
        sigma=1.0,
        C=1.0,
        iterations=10,
        svm_epochs=10,
        box_fraction=0.3,
        background_class=0,
        balanced=True,
        seed=0,
    ):
        num_classes = validate_label_map_classes(num_classes)
        if feature_extractor is not None and not callable(feature_extractor):
            raise TypeError(
                "`feature_extractor` must be None or a callable image -> (H, W, C) features. "
                f"Received: feature_extractor={feature_extractor!r}"
            )
        validate_positive_int(n_segments, "n_segments")
        validate_positive_number(compactness, "compactness")
        validate_non_negative_number(sigma, "sigma")
        validate_positive_number(C, "C")
        validate_non_negative_int(iterations, "iterations")
        validate_positive_int(svm_epochs, "svm_epochs")
        validate_fraction(box_fraction, "box_fraction")
        if background_class is not None and not 0 <= background_class < num_classes:
            raise ValueError(
                f"`background_class` must be None or in 0..{num_classes - 1}. "
                f"Received: background_class={background_class!r}"
            )
        self.num_classes = int(num_classes)
        self.feature_extractor = feature_extractor
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        self.sigma = float(sigma)
        self.C = float(C)
        self.iterations = int(iterations)
        self.svm_epochs = int(svm_epochs)
        self.box_fraction = float(box_fraction)
        self.background_class = None if background_class is None else int(background_class)
        self.balanced = bool(balanced)
        self.seed = seed
        self.weights_ = None
        self.bias_ = None

    # Superpixels and features.

    def _superpixels(self, image):
        image = validate_rgb_image(image)
        segments = slic_superpixels(
            image, n_segments=self.n_segments, compactness=self.compactness, sigma=self.sigma
        )
        colour, texture = superpixel_histograms(image, segments)
        parts = [colour, texture]
        if self.feature_extractor is not None:
            feature_map = np.asarray(self.feature_extractor(image.astype(np.float32)), np.float64)
            if feature_map.ndim != 3 or feature_map.shape[:2] != image.shape[:2]:
                raise ValueError(
                    "`feature_extractor` must return (H, W, C) features at the image size. "
                    f"Received: shape {feature_map.shape} for image.shape={image.shape}"
                )
            parts.append(superpixel_means(segments, feature_map))
        return segments, np.concatenate(parts, axis=1)

    def _standardise(self, features):
        return (features - self.feature_mean_) / self.feature_scale_

    # Constraints.

    def image_constraints(self, segments, weak_label, index=0):
        """The allowed classes and minimum counts that one image's weak labels impose.

        Args:
            segments: int array (H, W) of superpixel ids 0..S-1.
            weak_label: dict with any of "tags", "boxes" + "box_classes", "partial".
            index: image number for error messages.

        Returns:
            `(allowed, requirements)`: bool array (S, K) and a list of
            `(members, class_id, count)` for `constrained_assignment`.

        Example:
            >>> import numpy as np
            >>> from kseg.weak.unified import UnifiedWeakSegmenter
            >>> segments = np.repeat(np.arange(4), 4).reshape(4, 4)
            >>> segmenter = UnifiedWeakSegmenter(3)
            >>> allowed, needs = segmenter.image_constraints(segments, {"tags": [0, 2]})
            >>> allowed[0].tolist(), [(c, n) for _, c, n in needs]
            ([True, False, True], [(0, 1), (2, 1)])
        """
        if not isinstance(weak_label, dict):
            raise TypeError(f"Image {index}: weak labels must be a dict. Received: {weak_label!r}")
        unknown = sorted(set(weak_label) - set(_WEAK_LABEL_KEYS))
        if unknown:
            raise ValueError(
                f"Image {index}: unknown weak-label keys {unknown}; "
                f"expected {list(_WEAK_LABEL_KEYS)}."
            )
        if not any(key in weak_label for key in ("tags", "boxes", "partial")):
            raise ValueError(
                f"Image {index} has no weak label (give 'tags', 'boxes' with 'box_classes', or "
                "'partial'); leave unlabelled images out of fit and predict them afterwards."
            )
        if ("boxes" in weak_label) != ("box_classes" in weak_label):
            raise ValueError(f"Image {index}: 'boxes' and 'box_classes' go together.")
        segments = np.asarray(segments, np.int64)
        height, width = segments.shape
        num_segments = int(segments.max()) + 1
        sizes = np.bincount(segments.ravel(), minlength=num_segments)
        everything = np.arange(num_segments)
        allowed = np.ones((num_segments, self.num_classes), bool)
        requirements = []

        if "tags" in weak_label:
            present = _multi_hot_tags(weak_label["tags"], self.num_classes, index)
            if not present.any():
                raise ValueError(f"Image {index}: the tags name no class.")
            allowed &= present[None, :]
            requirements += [(everything, int(c), 1) for c in np.flatnonzero(present)]

        if "boxes" in weak_label:
            rows, cols, classes = _clipped_boxes(
                weak_label["boxes"],
                weak_label["box_classes"],
                height,
                width,
                self.num_classes,
                self.background_class,
                index,
            )
            box_allowed = np.zeros((num_segments, self.num_classes), bool)
            touched = np.zeros((num_segments, self.num_classes), bool)
            if self.background_class is not None:
                box_allowed[:, self.background_class] = True
            for (y1, y2), (x1, x2), class_id in zip(rows, cols, classes):
                inside_pixels = np.bincount(segments[y1:y2, x1:x2].ravel(), minlength=num_segments)
                members = np.flatnonzero(inside_pixels >= _INSIDE_SHARE * sizes)
                if members.size == 0:
                    # A box smaller than every superpixel it touches still holds its majority one.
                    members = np.array([int(np.argmax(inside_pixels / sizes))])
                box_allowed[members, class_id] = True
                touched[inside_pixels > 0, class_id] = True
                count = max(1, int(np.ceil(self.box_fraction * members.size)))
                requirements.append((members, int(class_id), count))
            if self.background_class is None:
                # Without a background every pixel is some box's class: a superpixel no box holds
                # by half takes a class of a box it touches, and one no box touches (unlabelled
                # pixels, such as CamVid's void) is left free.
                loose = ~box_allowed.any(axis=1)
                box_allowed[loose] = touched[loose]
                box_allowed[~box_allowed.any(axis=1)] = True
            allowed &= box_allowed

        if "partial" in weak_label:
            partial = np.asarray(weak_label["partial"])
            if not np.issubdtype(partial.dtype, np.integer):
                raise ValueError(
                    f"Image {index}: `partial` must hold integer class ids. "
                    f"Received: dtype={partial.dtype}"
                )
            if partial.shape != (height, width):
                raise ValueError(
                    f"Image {index}: `partial` must be (H, W) = {(height, width)}. "
                    f"Received: partial.shape={partial.shape}"
                )
            values = np.unique(partial)
            bad = values[(values != IGNORE_LABEL) & ((values < 0) | (values >= self.num_classes))]
            if bad.size:
                raise ValueError(
                    f"Image {index}: `partial` holds class {int(bad[0])}, outside "
                    f"0..{self.num_classes - 1} (255 marks unlabelled pixels)."
                )
            labelled = partial != IGNORE_LABEL
            votes = np.zeros((num_segments, self.num_classes), np.int64)
            np.add.at(votes, (segments[labelled], partial[labelled].astype(np.int64)), 1)
            fixed = np.flatnonzero(votes.sum(axis=1) > 0)
            fixed_class = np.argmax(votes[fixed], axis=1)
            conflict = ~allowed[fixed, fixed_class]
            if conflict.any():
                where = int(np.flatnonzero(conflict)[0])
                raise ValueError(
                    f"Image {index}: a partial label of class {int(fixed_class[where])} falls "
                    "where the image's tags or boxes forbid that class."
                )
            allowed[fixed] = False
            allowed[fixed, fixed_class] = True

        empty = np.flatnonzero(~allowed.any(axis=1))
        if empty.size:
            raise ValueError(
                f"Image {index}: its weak labels leave superpixel {int(empty[0])} no class "
                "(e.g. boxes given but the background not among the tags)."
            )
        return allowed, requirements

    # Learning.

    def _prepare(self, images, weak_labels):
        images = validate_image_batch(images)
        if len(weak_labels) != len(images):
            raise ValueError(
                "`weak_labels` needs one dict per image. "
                f"Received: {len(weak_labels)} dicts for {len(images)} images"
            )
        prepared = []
        for index, (image, weak_label) in enumerate(zip(images, weak_labels)):
            segments, features = self._superpixels(image)
            allowed, requirements = self.image_constraints(segments, weak_label, index)
            prepared.append((segments, features, allowed, requirements))
        return prepared

    def _class_weights(self, positive):
        """Per (sample, class) hinge weights giving a class's positives and negatives equal say."""
        if not self.balanced:
            return None
        total = len(positive)
        positives = positive.sum(axis=0)
        negatives = total - positives
        on_positive = total / (2.0 * np.maximum(positives, 1))
        on_negative = total / (2.0 * np.maximum(negatives, 1))
        return np.where(positive, on_positive[None, :], on_negative[None, :])

    def _fit_class_models(self, features, positive, seed):
        """Sets `weights_` and `bias_` to the SVMs of (N, K) bool targets `positive`."""
        self.weights_, self.bias_ = one_vs_rest_svm(
            features,
            positive,
            self.num_classes,
            C=self.C,
            epochs=self.svm_epochs,
            seed=seed,
            weights=self._class_weights(positive),
        )

    def _assign(self, prepared, features):
        labels, start = [], 0
        for _, own, allowed, requirements in prepared:
            scores = features[start : start + len(own)] @ self.weights_ + self.bias_
            labels.append(constrained_assignment(scores, allowed, requirements))
            start += len(own)
        return np.concatenate(labels)

    def fit(self, images, weak_labels):
        """Learns the class models from weakly-labelled images by constrained max-margin clustering.

        Args:
            images: float array (N, H, W, 3), RGB in [0, 255].
            weak_labels: sequence of N dicts (see the class docstring).

        Returns:
            self, with `weights_` (D, K), `bias_` (K,), `history_` (superpixels relabelled by
            each alternation) and `training_labels_`, the last assignment painted back with the
            partial labels on their own pixels: uint8 (N, H, W).
        """
        prepared = self._prepare(images, weak_labels)
        raw = np.concatenate([features for _, features, _, _ in prepared])
        self.feature_mean_ = raw.mean(axis=0)
        self.feature_scale_ = np.where(raw.std(axis=0) > 1e-8, raw.std(axis=0), 1.0)
        features = self._standardise(raw)
        allowed = np.concatenate([own for _, _, own, _ in prepared])

        # Initial models from the allowed sets alone: a class's negatives are certain.
        self._fit_class_models(features, allowed, seed=self.seed)
        labels = self._assign(prepared, features)
        self.history_ = []
        for iteration in range(self.iterations):
            positive = labels[:, None] == np.arange(self.num_classes)
            self._fit_class_models(features, positive, seed=self.seed + iteration + 1)
            new_labels = self._assign(prepared, features)
            changed = int(np.sum(new_labels != labels))
            self.history_.append(changed)
            labels = new_labels
            if changed == 0:
                break
        self.training_labels_ = self._paint(prepared, labels, weak_labels)
        return self

    def _paint(self, prepared, labels, weak_labels):
        maps, start = [], 0
        for (segments, own, _, _), weak_label in zip(prepared, weak_labels):
            painted = labels[start : start + len(own)][segments].astype(np.uint8)
            if "partial" in weak_label:
                # Labelled pixels are ground truth, even where their superpixel took another class.
                partial = np.asarray(weak_label["partial"])
                painted = np.where(partial != IGNORE_LABEL, partial, painted).astype(np.uint8)
            maps.append(painted)
            start += len(own)
        return np.stack(maps)

    def _check_fitted(self):
        if self.weights_ is None:
            raise RuntimeError("Call `fit` before `predict` or `latent_labels`.")

    def decision_function(self, image):
        """Superpixels and their class scores for one image.

        Args:
            image: float array (H, W, 3), RGB in [0, 255].

        Returns:
            `(segments, scores)`: int32 (H, W) superpixel ids and float64 (S, K) class scores.
        """
        self._check_fitted()
        segments, features = self._superpixels(image)
        return segments, self._standardise(features) @ self.weights_ + self.bias_

    def predict(self, images):
        """Labels images with the learned class models, one class per superpixel.

        Args:
            images: float array (N, H, W, 3), RGB in [0, 255].

        Returns:
            uint8 array (N, H, W) of classes.
        """
        images = validate_image_batch(images)
        maps = []
        for image in images:
            segments, scores = self.decision_function(image)
            maps.append(np.argmax(scores, axis=1).astype(np.uint8)[segments])
        return np.stack(maps)

    def latent_labels(self, images, weak_labels):
        """Labels weakly-labelled images by the constrained assignment under the learned models.

        The pseudo-labels to train a kseg network on: every weak label is respected (only tagged
        classes, background outside boxes, partial labels kept on their pixels), and within those
        limits each superpixel takes its best-scoring class.

        Args:
            images: float array (N, H, W, 3), RGB in [0, 255].
            weak_labels: sequence of N dicts (see the class docstring).

        Returns:
            uint8 array (N, H, W) of classes.
        """
        self._check_fitted()
        prepared = self._prepare(images, weak_labels)
        features = self._standardise(np.concatenate([own for _, own, _, _ in prepared]))
        return self._paint(prepared, self._assign(prepared, features), weak_labels)
