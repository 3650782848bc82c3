"""Weakly-supervised segmentation: any kseg model trained from scribbles, image-level tags or boxes.

- `labels`: weak labels generated from full masks (scribbles, tags with optional sizes, boxes),
  so every method can be measured against full supervision on the same data.
- `scribblesup`: ScribbleSup (Lin et al. 2016), label propagation over a superpixel graph
  (`superpixels`) by alpha-expansion (`alpha_expansion`), alternating with training.
- `constrained`: Constrained CNN (Pathak et al. 2015), a Keras loss fitting the network to the
  closest distribution that satisfies the tags' linear constraints.
- `em_adapt`, `em_fixed`, `box_labels`: EM-Adapt, EM-Fixed, Bbox-Rect and Bbox-Seg
  (Papandreou et al. 2015), as Keras losses (sharing `em_loss`) and pseudo-label generators,
  plus mixed strong/weak datasets.
- `unified`: the unified framework of Xu et al. 2015, max-margin clustering of superpixels under
  constraints from any mix of tags, boxes and partial labels (`unified_assignment`,
  `linear_svm`, with optional `backbone_features`).

SLIC and graph cuts need the `weak` extra: `pip install 'kseg[weak]'`.
"""

from kseg.weak.alpha_expansion import potts_alpha_expansion
from kseg.weak.backbone_features import BackboneFeatures
from kseg.weak.box_labels import bbox_rect_labels, bbox_seg_labels, box_label_map
from kseg.weak.constrained import ConstrainedCrossEntropy, latent_distribution
from kseg.weak.em_adapt import EMAdaptCrossEntropy, em_adapt_cross_entropy, em_adapt_latent_labels
from kseg.weak.em_fixed import (
    EMFixedCrossEntropy,
    em_fixed_cross_entropy,
    em_fixed_latent_labels,
    mixed_supervision_dataset,
    tag_label_map,
)
from kseg.weak.labels import (
    boxes_from_mask,
    scribbles_from_mask,
    tags_from_mask,
    weak_label_dataset,
)
from kseg.weak.linear_svm import one_vs_rest_svm
from kseg.weak.scribblesup import ScribbleSupRounds, propagate_scribbles, scribblesup_rounds
from kseg.weak.superpixels import slic_superpixels
from kseg.weak.unified import UnifiedWeakSegmenter
from kseg.weak.unified_assignment import constrained_assignment

__all__ = [
    "BackboneFeatures",
    "ConstrainedCrossEntropy",
    "EMAdaptCrossEntropy",
    "EMFixedCrossEntropy",
    "ScribbleSupRounds",
    "UnifiedWeakSegmenter",
    "bbox_rect_labels",
    "bbox_seg_labels",
    "box_label_map",
    "boxes_from_mask",
    "constrained_assignment",
    "em_adapt_cross_entropy",
    "em_adapt_latent_labels",
    "em_fixed_cross_entropy",
    "em_fixed_latent_labels",
    "latent_distribution",
    "mixed_supervision_dataset",
    "one_vs_rest_svm",
    "potts_alpha_expansion",
    "propagate_scribbles",
    "scribbles_from_mask",
    "scribblesup_rounds",
    "slic_superpixels",
    "tag_label_map",
    "tags_from_mask",
    "weak_label_dataset",
]
