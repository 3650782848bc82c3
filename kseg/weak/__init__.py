"""Weakly-supervised segmentation: training any kseg model from scribbles, image-level tags or boxes.

- `labels`: weak labels generated from full masks (scribbles, tags with optional sizes, boxes),
  so every method can be measured against full supervision on the same data.
- `scribblesup`: ScribbleSup (Lin et al. 2016), superpixel graph + alpha-expansion label
  propagation alternating with training.
- `constrained`: Constrained CNN (Pathak et al. 2015), a Keras loss fitting the network to the
  closest distribution that satisfies the tags' linear constraints.
- `em`: EM-Adapt, EM-Fixed and Bbox-Seg (Papandreou et al. 2015), as Keras losses and
  pseudo-label generators, plus mixed strong/weak datasets.
- `unified`: the unified framework of Xu et al. 2015, max-margin clustering of superpixels under
  constraints from any mix of tags, boxes and partial labels.

SLIC and graph cuts need the `weak` extra: `pip install 'kseg[weak]'`.
"""

from kseg.weak.constrained import ConstrainedCrossEntropy, latent_distribution
from kseg.weak.em import (
    EMAdaptCrossEntropy,
    EMFixedCrossEntropy,
    bbox_rect_labels,
    bbox_seg_labels,
    box_label_map,
    em_adapt_cross_entropy,
    em_adapt_latent_labels,
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
from kseg.weak.scribblesup import (
    ScribbleSupRounds,
    potts_alpha_expansion,
    propagate_scribbles,
    scribblesup_rounds,
    slic_superpixels,
)
from kseg.weak.unified import (
    BackboneFeatures,
    UnifiedWeakSegmenter,
    constrained_assignment,
    one_vs_rest_svm,
)

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
