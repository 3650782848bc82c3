"""The Mask R-CNN part of `pretrained_load.py`: torchvision's detector, kseg's, and how they agree.

`pretrained_load.py` runs the shared steps (torch worker, checkpoint, first and cached
`kseg.pretrained.load`); for `maskrcnn_resnet50_fpn` and `maskrcnn_resnet50_fpn_v2` it calls
this module's torch worker and inference comparison instead of the semantic ones.

The torch worker builds the model with `build` of tests/fixtures/torchvision_mask_rcnn_reference.py
(torchvision's builder with `weights=None, weights_backbone=None, num_classes=91` under
`torch.manual_seed(0)`, random BatchNorm statistics, the box classifier and the box-delta
weights rescaled so the random network detects objects with untied scores), then gives its
transform back torchvision's own sizes (shorter side 800, longer at most 1333) in place of the
fixture's small test sizes. Images are that script's smooth noise (uniform values on 8-pixel
cells, bilinearly upsampled and rounded, `numpy.random.default_rng(1)`) at photo sizes,
480x640 and 427x640, so the model resizes them up to 800x1066 and 800x1199.

Both sides are timed as a user calls them on one uint8 photo: torchvision's `model([image])`
under `torch.inference_mode` (transform, detection and mask pasting) against
`kseg.detection.instance_predictor(model)` (the compiled call that also pastes the masks at the
photo's size), alternating call by call after one untimed call per size. The first kseg and
torchvision outputs are compared as the parity test compares them: the largest box corner
difference in pixels, the largest score difference, whether the labels agree in order, and
the share of equal pixels over all pasted masks. At photo sizes the random network gives
some detections of one label with scores that differ by less than float32 rounding, whose
order either library may swap; the box and mask figures are also given with such near-ties
paired across the swap, and the number of rows it moved.
"""

import sys
import time
from pathlib import Path

import numpy as np

import results_io
from torch_timed_calls import serve_timed_calls

MODELS = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
IMAGE_SIZES = ((480, 640), (427, 640))
NUM_CLASSES = 91
RESIZE_MIN_SIDE = 800
RESIZE_MAX_SIDE = 1333
# Side of the noise cells the images are upsampled from (the reference script's full models).
SMOOTHING = 8
# Scores closer than this are a near-tie whose order float32 rounding may decide (`tie_pairing`).
TIE_SCORE_TOLERANCE = 1e-5
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
INPUT = {
    "image_sizes": [list(size) for size in IMAGE_SIZES],
    "images": "smooth noise: uniform [0, 255] on 8-pixel cells, bilinearly upsampled, uint8",
    "resize": f"torchvision's: shorter side {RESIZE_MIN_SIDE}, longer <= {RESIZE_MAX_SIDE}",
    "num_classes": NUM_CLASSES,
    "weights": (
        "random (tests/fixtures/torchvision_mask_rcnn_reference.py build: torch.manual_seed(0), "
        "BatchNorm statistics from default_rng(0), box classifier weight x0.3 with N(0, 1) bias, "
        "RPN and box-delta weights x0.1)"
    ),
    "kseg_call": "kseg.detection.instance_predictor(model) (compiled, masks pasted)",
    "torchvision_call": "model([image]) under torch.inference_mode (transform and pasting)",
}


def _smooth_image(rng, height, width):
    import torch
    from torch import nn

    coarse = rng.uniform(0, 255, (1, 3, height // SMOOTHING + 1, width // SMOOTHING + 1))
    smooth = nn.functional.interpolate(
        torch.from_numpy(coarse.astype("float32")),
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )
    return np.round(smooth.numpy().transpose(0, 2, 3, 1)).astype(np.uint8)


def torch_worker(args):
    """Writes the state dict, images and detections of one torchvision Mask R-CNN, then times it."""
    import torch
    import torchvision

    sys.path.insert(0, str(FIXTURES))
    from torchvision_mask_rcnn_reference import build

    torch.set_num_threads(args.threads)
    folder = Path(args.folder)
    model = build(args.model)
    model.transform.min_size = (RESIZE_MIN_SIDE,)
    model.transform.max_size = RESIZE_MAX_SIDE
    torch.save(model.state_dict(), folder / "state_dict.pth")

    rng = np.random.default_rng(1)
    arrays, batches = {}, []
    with torch.inference_mode():
        for index, (height, width) in enumerate(IMAGE_SIZES):
            image = _smooth_image(rng, height, width)
            batches.append(
                [torch.from_numpy(np.ascontiguousarray(image[0].transpose(2, 0, 1))) / 255.0]
            )
            # Also the untimed warm-up call of this image size.
            result = model(batches[-1])[0]
            arrays[f"image{index}"] = image
            arrays[f"boxes{index}"] = result["boxes"].numpy()
            arrays[f"scores{index}"] = result["scores"].numpy()
            arrays[f"labels{index}"] = result["labels"].numpy()
            arrays[f"masks{index}"] = (result["masks"][:, 0] > 0.5).numpy().astype(np.uint8)
        np.savez(folder / "reference.npz", **arrays)
        serve_timed_calls(torch, torchvision, lambda index: model(batches[index]))


def tie_pairing(boxes, labels, scores, reference_boxes, reference_labels, reference_scores):
    """For each detection, the torchvision row it is compared with, allowing swapped near-ties.

    Two detections of one label whose scores differ by less than float32 rounding can come out
    of the score sort in either order. Row `i` is paired with the torchvision row of the same
    label whose score is within `TIE_SCORE_TOLERANCE` of it and whose box is nearest to its
    own; a row without such a candidate keeps its own position.

    Returns:
        An index array into the torchvision rows.
    """
    candidates = (labels[:, None] == reference_labels[None, :]) & (
        np.abs(scores[:, None] - reference_scores[None, :]) <= TIE_SCORE_TOLERANCE
    )
    distance = np.abs(boxes[:, None, :] - reference_boxes[None, :, :]).max(axis=-1)
    nearest = np.where(candidates, distance, np.inf).argmin(axis=1)
    return np.where(candidates.any(axis=1), nearest, np.arange(len(labels)))


def detection_parity(detections, reference, index):
    """kseg's detections on image `index` against torchvision's, as the parity test measures them.

    Args:
        detections: numpy arrays of `instance_predictor` for one image (batch of 1).
        reference: the torch worker's `reference.npz`.
        index: the image.

    Returns:
        Detection counts, `boxes_max_abs_px` and `scores_max_abs` over the detections both
        sides have, position by position; `same_labels_and_order` (and the same count);
        `mask_pixels_equal`, the share of equal pixels over all pasted masks; and the same box
        and mask figures with near-tied detections paired across a swap (`tie_pairing`),
        with `near_tie_swaps`, how many rows such a swap moved.
    """
    count = int(detections["num_detections"][0])
    expected = len(reference[f"boxes{index}"])
    shared = min(count, expected)
    # kseg's boxes are [y1, x1, y2, x2]; torchvision's [x1, y1, x2, y2].
    boxes = detections["boxes"][0, :shared][:, [1, 0, 3, 2]]
    labels = detections["classes"][0, :count]
    scores = detections["scores"][0, :shared]
    masks = detections["masks"][0, :shared].astype(bool)
    reference_boxes = reference[f"boxes{index}"][:shared]
    reference_masks = reference[f"masks{index}"][:shared].astype(bool)
    paired = tie_pairing(
        boxes,
        labels[:shared],
        scores,
        reference_boxes,
        reference[f"labels{index}"][:shared],
        reference[f"scores{index}"][:shared],
    )
    return {
        "detections_kseg": count,
        "detections_torchvision": expected,
        "boxes_max_abs_px": float(np.abs(boxes - reference_boxes).max()),
        "scores_max_abs": float(np.abs(scores - reference[f"scores{index}"][:shared]).max()),
        "same_labels_and_order": bool(
            count == expected and np.array_equal(labels, reference[f"labels{index}"])
        ),
        "mask_pixels_equal": float(np.mean(masks == reference_masks)),
        "near_tie_swaps": int(np.sum(paired != np.arange(shared))),
        "boxes_max_abs_px_ties_paired": float(np.abs(boxes - reference_boxes[paired]).max()),
        "mask_pixels_equal_ties_paired": float(np.mean(masks == reference_masks[paired])),
    }


def compare_inference(model, worker, reference, repeats):
    """Per-image times and parity of a converted Mask R-CNN against the torch worker's model.

    Args:
        model: the kseg `MaskRCNN` from `kseg.pretrained.load`.
        worker: the running `pretrained_load.TorchWorker` (its `timed_call(index)`).
        reference: the worker's `reference.npz`.
        repeats: timed calls per image and side.

    Returns:
        `(images, summary)`: per image size the timing comparison and `detection_parity`; the
        worst figures over the images.
    """
    import tensorflow as tf

    import kseg

    predict = kseg.detection.instance_predictor(model)
    inputs = [
        tf.constant(reference[f"image{i}"].astype("float32")) for i in range(len(IMAGE_SIZES))
    ]
    # The untimed call per size (tracing included) gives the detections compared.
    outputs = [{key: value.numpy() for key, value in predict(image).items()} for image in inputs]
    calls = {index: {"kseg": [], "torchvision": []} for index in range(len(IMAGE_SIZES))}
    for _ in range(repeats):
        for index, image in enumerate(inputs):
            start = time.perf_counter()
            predict(image)
            calls[index]["kseg"].append(time.perf_counter() - start)
            calls[index]["torchvision"].append(worker.timed_call(index))
    images = {}
    for index, (height, width) in enumerate(IMAGE_SIZES):
        images[f"{height}x{width}"] = {
            **results_io.timing_comparison(
                calls[index]["kseg"], calls[index]["torchvision"], "torchvision"
            ),
            **detection_parity(outputs[index], reference, index),
        }
    rows = list(images.values())
    summary = {
        "max_boxes_abs_px": max(row["boxes_max_abs_px"] for row in rows),
        "max_scores_abs": max(row["scores_max_abs"] for row in rows),
        "all_same_labels_and_order": all(row["same_labels_and_order"] for row in rows),
        "min_mask_pixels_equal": min(row["mask_pixels_equal"] for row in rows),
        "near_tie_swaps": sum(row["near_tie_swaps"] for row in rows),
        "max_boxes_abs_px_ties_paired": max(row["boxes_max_abs_px_ties_paired"] for row in rows),
        "min_mask_pixels_equal_ties_paired": min(
            row["mask_pixels_equal_ties_paired"] for row in rows
        ),
    }
    return images, summary
