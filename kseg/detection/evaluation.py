"""Running an instance-segmentation model over examples and scoring it with COCOeval."""

import numpy as np
import tensorflow as tf

from kseg.data.instances import pad_instance_batch
from kseg.detection.coco_eval import coco_evaluate, coco_ground_truth, detections_to_coco
from kseg.detection.serving import detections_with_masks


def instance_predictor(model, *, mask_threshold=0.5):
    """A compiled function from padded image batches to detections with full-image masks.

    Wraps `model` (a `kseg.models.MaskRCNN` or any model returning its detection dict) and
    pastes each detection's 28x28 mask probabilities into the image with
    `kseg.detection.postprocess.paste_masks`.

    Args:
        model: the instance-segmentation model.
        mask_threshold: probability at which a pasted mask pixel is set.

    Returns:
        A function `images (B, H, W, 3) -> dict` with `boxes`, `scores`, `classes`,
        `num_detections` and `masks` `(B, D, H, W)` uint8.

    Example:
        >>> predict = kseg.detection.instance_predictor(model)  # doctest: +SKIP
        >>> predict(images)["masks"].shape  # doctest: +SKIP
        TensorShape([2, 100, 128, 128])
    """

    @tf.function(reduce_retracing=True)
    def predict(images):
        return detections_with_masks(model, images, mask_threshold=mask_threshold)

    return predict


def evaluate_instances(
    model,
    examples,
    categories,
    *,
    batch_size=4,
    iou_types=("segm", "bbox"),
    detection_category_ids=None,
):
    """Mask and box AP of `model` on instance examples, computed by pycocotools' COCOeval.

    The ground truth is built from the examples themselves
    (`kseg.detection.coco_eval.coco_ground_truth`), images are batched and padded as in
    training (`kseg.data.pad_instance_batch`), detections are pasted at full resolution, cut
    back to each image's own size and scored with `coco_evaluate`.

    Args:
        model: a `kseg.models.MaskRCNN` (or a model with the same output dict).
        examples: a `tf.data.Dataset` of unbatched example dicts (`image`, `boxes`, `classes`,
            `masks`, optionally `image_id`), as `kseg.data.coco_instance_dataset` and
            `kseg.data.shapes_instance_examples` yield.
        categories: the class names or `CocoCategories` (see `coco_ground_truth`).
        batch_size: images per forward pass (1, unpadded, for a model that resizes its input).
        iou_types: "segm" and/or "bbox".
        detection_category_ids: the COCO category id of each model class
            (`detection_category_ids[k - 1]` for class k), when the model's classes are not
            the examples' contiguous ones: a published COCO model predicts category ids
            directly (class k is id k), whatever subset of categories the data holds.
            Detections of ids the data lacks count as false positives of no category and are
            ignored by COCOeval. None: the model's classes are the examples' classes.

    Returns:
        A dict of floats: `mask_AP`, `mask_AP50`, `mask_AP75`, ..., `box_AP`, ... and
        `num_images`.

    Example:
        >>> val = kseg.data.shapes_instance_examples("val", num_samples=50)  # doctest: +SKIP
        >>> kseg.detection.evaluate_instances(model, val, kseg.data.shapes_info())  # doctest: +SKIP
        {'mask_AP': 0.61, 'mask_AP50': 0.86, ...}
    """
    ground_truth = coco_ground_truth(examples, categories)
    image_ids = [
        int(example["image_id"]) if "image_id" in example else index + 1
        for index, example in enumerate(examples.as_numpy_iterator())
    ]
    category_ids = (
        _category_ids(ground_truth)
        if detection_category_ids is None
        else [int(i) for i in detection_category_ids]
    )
    predict = instance_predictor(model)
    detections = []
    start = 0
    if getattr(model, "resize_min_side", None) is not None:
        # A model that resizes its input (a torchvision configuration) must see every image at
        # its own size, unpadded, as torchvision's transform resizes each image before padding.
        batches = pad_instance_batch(examples, 1, pad_to_multiple=1)
    else:
        batches = pad_instance_batch(examples, batch_size)
    for images, targets in batches:
        out = {key: value.numpy() for key, value in predict(images).items()}
        count = images.shape[0]
        detections.extend(
            detections_to_coco(
                np.asarray(image_ids[start : start + count]),
                out["boxes"],
                out["scores"],
                out["classes"],
                out["masks"],
                out["num_detections"],
                category_ids,
                image_shapes=targets["image_shape"].numpy(),
            )
        )
        start += count
    results = coco_evaluate(ground_truth, detections, iou_types=iou_types, per_category=False)
    results["num_images"] = len(image_ids)
    return results


def _category_ids(ground_truth):
    return tuple(sorted(ground_truth.getCatIds()))
