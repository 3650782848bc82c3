"""tf.data pipelines for semantic segmentation: loaders, augmentation, validation.

Every loader returns a `tf.data.Dataset` of `(image, mask)` pairs: image float32 `(H, W, 3)`
with values in [0, 255] (models do their own preprocessing) and mask int32 `(H, W)` whose
ignored pixels hold `ignore_label` (255 by default). Each loader has a matching `*_info()`
returning a `DatasetInfo`.
"""

from kseg.data.augment import (
    IMAGENET_MEAN_RGB,
    augment_pair,
    make_pipeline,
    pad_to_size,
    photometric_jitter,
    random_crop,
    random_flip_left_right,
    random_scale,
    resize_pair,
)
from kseg.data.camvid import CAMVID_CLASS_NAMES, CAMVID_PALETTE, camvid_dataset, camvid_info
from kseg.data.class_frequencies import class_pixel_counts, median_frequency_weights
from kseg.data.coco import CocoCategories, coco_categories, coco_instance_dataset
from kseg.data.folders import folder_dataset, folder_info, match_folder_pairs, paired_files_dataset
from kseg.data.info import DatasetInfo
from kseg.data.inputs import image_files, load_split
from kseg.data.instances import (
    instances_from_label_map,
    pad_instance_batch,
    shapes_instance_examples,
)
from kseg.data.load import describe_source, load_dataset
from kseg.data.mask_values import parse_mask_values
from kseg.data.shapes import (
    SHAPES_CLASS_NAMES,
    ShapesSample,
    render_shapes_sample,
    shapes_arrays,
    shapes_dataset,
    shapes_info,
    shapes_instance_dataset,
)
from kseg.data.tfds import tfds_dataset, tfds_info
from kseg.data.unet_weights import unet_weight_map, with_unet_weights
from kseg.data.validate import DatasetError
from kseg.data.voc import VOC_CLASS_NAMES, voc_colormap, voc_dataset, voc_info
from kseg.detection.boxes import boxes_from_masks

__all__ = [
    "CAMVID_CLASS_NAMES",
    "CAMVID_PALETTE",
    "IMAGENET_MEAN_RGB",
    "SHAPES_CLASS_NAMES",
    "VOC_CLASS_NAMES",
    "CocoCategories",
    "DatasetError",
    "DatasetInfo",
    "ShapesSample",
    "augment_pair",
    "boxes_from_masks",
    "camvid_dataset",
    "camvid_info",
    "class_pixel_counts",
    "coco_categories",
    "coco_instance_dataset",
    "describe_source",
    "folder_dataset",
    "folder_info",
    "image_files",
    "instances_from_label_map",
    "load_dataset",
    "load_split",
    "make_pipeline",
    "match_folder_pairs",
    "median_frequency_weights",
    "pad_instance_batch",
    "pad_to_size",
    "parse_mask_values",
    "paired_files_dataset",
    "photometric_jitter",
    "random_crop",
    "random_flip_left_right",
    "random_scale",
    "render_shapes_sample",
    "resize_pair",
    "shapes_arrays",
    "shapes_dataset",
    "shapes_info",
    "shapes_instance_dataset",
    "shapes_instance_examples",
    "tfds_dataset",
    "tfds_info",
    "unet_weight_map",
    "voc_colormap",
    "voc_dataset",
    "voc_info",
    "with_unet_weights",
]
