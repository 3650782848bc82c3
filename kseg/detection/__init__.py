"""Instance segmentation: boxes, anchors, training targets, proposals, detections, COCO AP.

Everything here is batched TensorFlow that runs inside `kseg.models.MaskRCNN`'s graph (and its
SavedModel export), except the COCO conversion and evaluation, which run pycocotools on numpy.
"""

from kseg.detection.anchors import generate_anchors
from kseg.detection.boxes import (
    as_boxes,
    box_area,
    box_iou,
    boxes_from_masks,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    image_boxes,
    numpy_boxes_from_masks,
)
from kseg.detection.coco_eval import coco_evaluate, coco_ground_truth, detections_to_coco
from kseg.detection.evaluation import evaluate_instances, instance_predictor
from kseg.detection.losses import box_head_losses, mask_loss, rpn_losses, smooth_l1
from kseg.detection.postprocess import detect, paste_masks
from kseg.detection.proposals import select_proposals
from kseg.detection.serving import export_instance_saved_model, instance_serving_function
from kseg.detection.targets import roi_targets, rpn_targets

__all__ = [
    "as_boxes",
    "box_area",
    "box_head_losses",
    "box_iou",
    "boxes_from_masks",
    "clip_boxes",
    "coco_evaluate",
    "coco_ground_truth",
    "decode_boxes",
    "detect",
    "detections_to_coco",
    "encode_boxes",
    "evaluate_instances",
    "image_boxes",
    "export_instance_saved_model",
    "generate_anchors",
    "instance_predictor",
    "instance_serving_function",
    "mask_loss",
    "numpy_boxes_from_masks",
    "paste_masks",
    "roi_targets",
    "rpn_losses",
    "rpn_targets",
    "select_proposals",
    "smooth_l1",
]
