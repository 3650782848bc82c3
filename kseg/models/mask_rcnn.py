"""Mask R-CNN: FPN backbone, region proposals, RoIAlign, box and mask heads, trained with `fit`.

He et al. 2017, "Mask R-CNN". The model is a `keras.Model` subclass because training needs
the ground truth inside the graph (anchor and proposal matching, sampling, mask targets), so
`train_step` and `test_step` are overridden as Keras 3 intends; `call` is inference and
returns fixed-size detections, which `predict` and the SavedModel export serve.
"""

import keras
import tensorflow as tf

from kseg.backbones import feature_info
from kseg.backbones.preprocessing import ImagePreprocessing
from kseg.detection.anchors import generate_anchors, generate_grid_anchors
from kseg.detection.losses import box_head_losses, mask_loss, rpn_losses
from kseg.detection.postprocess import detect
from kseg.detection.proposals import select_proposals
from kseg.detection.targets import roi_targets, rpn_targets
from kseg.detection.transform import (
    rescale_boxes,
    resize_instance_masks,
    resize_min_max_side,
)
from kseg.layers.fpn import FeaturePyramid
from kseg.layers.roi_align import MultiLevelRoIAlign
from kseg.layers.roi_heads import BoxHead, MaskHead
from kseg.layers.rpn_head import RegionProposalHead
from kseg.models.backbone_input import resolve_backbone
from kseg.models.mask_rcnn_checks import check_images, check_options, check_targets
from kseg.models.registry import register_model
from kseg.utils.padding import pad_bottom_right_to_multiple

SIZE_DIVISOR = 64
LOSS_NAMES = (
    "rpn_objectness_loss",
    "rpn_box_loss",
    "box_class_loss",
    "box_regression_loss",
    "mask_loss",
)


@register_model("mask_rcnn", task="instance", aliases=("maskrcnn",))
@keras.saving.register_keras_serializable(package="kseg")
class MaskRCNN(keras.Model):
    """Instance segmentation with a feature pyramid, RPN, RoIAlign and box and mask heads.

    He et al. 2017, "Mask R-CNN", with the FPN backbone (Lin et al. 2017): backbone stages
    C2..C5 feed `kseg.layers.FeaturePyramid` (P2..P6, 256 channels); a shared
    `RegionProposalHead` scores 3 anchors per position (one size per level, 32..512 px);
    proposals are decoded, clipped and reduced by TensorFlow's NMS; `MultiLevelRoIAlign`
    pools 7x7 features for the `BoxHead` and 14x14 for the `MaskHead` from the level the
    paper's rule assigns. Training samples 256 anchors at 1:1 and 512 regions at 1:3 inside
    the graph; the mask loss is the average binary cross-entropy of the ground-truth class's
    28x28 mask only.

    Inputs are RGB images in [0, 255], any size (padded inside to a multiple of
    `size_divisor`, 64). `fit`
    takes `(images, targets)` with `targets` a dict of `gt_boxes (B, M, 4)` `[y1, x1, y2,
    x2]` pixels, `gt_classes (B, M)` (1..num_classes-1; -1 on padding rows) and `gt_masks (B,
    M, H, W)`, as `kseg.data.pad_instance_batch` yields. `call` and `predict` return a dict of
    `boxes (B, D, 4)`, `scores (B, D)`, `classes (B, D)`, `num_detections (B,)` and `masks
    (B, D, 28, 28)` probabilities of each detection's class; `kseg.detection.paste_masks`
    turns those into full-image masks.

    The options after `detection_nms_iou` are where torchvision's Mask R-CNN differs; their
    defaults keep the design above, and `kseg.pretrained.convert_torchvision_mask_rcnn`
    sets them for torchvision's `maskrcnn_resnet50_fpn` (v1) and `maskrcnn_resnet50_fpn_v2`
    checkpoints.

    Args:
        num_classes: classes including the background (81 for COCO).
        backbone: a backbone name from `kseg.backbones.list_backbones()` (ResNet-50/101 in
            the paper).
        backbone_weights: None, "imagenet" or a path, for the backbone.
        backbone_kwargs: options for the backbone (e.g. `{"alpha": 0.35}`).
        freeze_batch_norm: run the backbone's batch normalisation in inference mode with
            fixed parameters (the usual practice at a few images per batch).
        fpn_channels: width of the pyramid, RPN and mask head (256).
        anchor_sizes: anchor side per level P2..P6 (32..512 px).
        aspect_ratios: anchor height/width ratios (0.5, 1, 2).
        rpn_train_nms: `(pre_nms_top_n, post_nms_top_n)` per image in training (2000, 2000).
        rpn_test_nms: the same at inference (1000, 1000).
        rpn_nms_iou: proposal NMS threshold (0.7).
        rpn_batch_size: anchors sampled per image (256, half positive at most).
        roi_batch_size: regions sampled per image (512, a quarter positive at most).
        roi_positive_fraction: the positive share of sampled regions (0.25).
        box_fc_units: width of the box head's fully connected layers (1024).
        mask_channels: width of the mask head's convolutions (256).
        sampling_ratio: RoIAlign samples per bin side (2).
        detections_per_image: detections kept per image (100).
        score_threshold: minimum class score of a detection (0.05).
        detection_nms_iou: class-wise NMS threshold at inference (0.5).
        size_divisor: images are padded at the bottom and right to a multiple of this (64
            keeps every level of P2..P6 exact; torchvision pads to 32).
        resize_min_side: None, or resize every batch inside the model so the shorter side is
            this (bilinear, torchvision's `GeneralizedRCNNTransform` rule, see
            `kseg.detection.transform`); boxes come back in the input's pixels, and in
            training the ground-truth boxes and masks are resized with their images.
        resize_max_side: the bound of the longer side with `resize_min_side` (1333 with 800).
        input_normalization: None lets the backbone normalise its input (after padding); a
            `kseg.backbones.preprocessing` mode ("torch") normalises inside the model before
            resizing and padding, so padding is zero in normalised values as in torchvision,
            and builds the backbone without its own normalisation.
        anchor_layout: "centred" (anchors centred on their cells, see
            `kseg.detection.generate_anchors`) or "grid" (torchvision's `AnchorGenerator`:
            rounded cell anchors at the cell corners, `kseg.detection.anchors.
            generate_grid_anchors`).
        clip_boxes_to: clip proposals and detections to the "padded" network input or to the
            "image" before padding (torchvision).
        roi_aligned: RoIAlign's half-pixel mapping (True) or the original one (False, as in
            torchvision's Mask R-CNN).
        roi_level_epsilon: None for the exact FPN level rule, or torchvision's 1e-6 (see
            `kseg.layers.roi_align.assign_levels`).
        detection_min_size: None drops detections without area; a number drops those with a
            side under it (torchvision: 1e-2).
        mask_paste: how `kseg.detection.paste_masks` pastes this model's masks: "centres" or
            "torchvision" (read by `kseg.detection.instance_predictor` and the export).
        fpn_batch_norm: batch normalisation after every FPN convolution (torchvision v2).
        rpn_num_convs: shared 3x3 convolutions of the RPN head (1; 2 in torchvision v2).
        box_head_convs: 3x3 convolution + batch norm + ReLU blocks of the box head before its
            fully connected layers (0; 4 in torchvision v2).
        box_head_fc: fully connected layers of the box head (2; 1 in torchvision v2).
        mask_head_batch_norm: batch normalisation in the mask head's convolutions (v2).
        **kwargs: standard `keras.Model` arguments (`name`).

    Example:
        >>> import kseg
        >>> model = kseg.models.MaskRCNN(num_classes=5, backbone="tiny", fpn_channels=16,
        ...                              box_fc_units=32, mask_channels=16)
        >>> out = model(tf.zeros((1, 64, 64, 3)))
        >>> sorted(out)
        ['boxes', 'classes', 'masks', 'num_detections', 'scores']
    """

    def __init__(
        self,
        num_classes=81,
        backbone="resnet50",
        backbone_weights=None,
        backbone_kwargs=None,
        freeze_batch_norm=True,
        fpn_channels=256,
        anchor_sizes=(32, 64, 128, 256, 512),
        aspect_ratios=(0.5, 1.0, 2.0),
        rpn_train_nms=(2000, 2000),
        rpn_test_nms=(1000, 1000),
        rpn_nms_iou=0.7,
        rpn_batch_size=256,
        roi_batch_size=512,
        roi_positive_fraction=0.25,
        box_fc_units=1024,
        mask_channels=256,
        sampling_ratio=2,
        detections_per_image=100,
        score_threshold=0.05,
        detection_nms_iou=0.5,
        size_divisor=SIZE_DIVISOR,
        resize_min_side=None,
        resize_max_side=None,
        input_normalization=None,
        anchor_layout="centred",
        clip_boxes_to="padded",
        roi_aligned=True,
        roi_level_epsilon=None,
        detection_min_size=None,
        mask_paste="centres",
        fpn_batch_norm=False,
        rpn_num_convs=1,
        box_head_convs=0,
        box_head_fc=2,
        mask_head_batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_options(
            size_divisor,
            resize_min_side,
            resize_max_side,
            input_normalization,
            anchor_layout,
            clip_boxes_to,
            mask_paste,
        )
        if not isinstance(backbone, str):
            raise TypeError(
                "MaskRCNN takes the backbone by name so that the model can be saved and "
                f"reloaded. Received: backbone={backbone!r}"
            )
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                "num_classes counts the background and at least one object class. "
                f"Received: num_classes={num_classes!r}"
            )
        if len(anchor_sizes) != 5:
            raise ValueError(
                "anchor_sizes needs one size per pyramid level P2..P6. "
                f"Received: anchor_sizes={anchor_sizes!r}"
            )
        if not 0.0 < roi_positive_fraction <= 1.0:
            raise ValueError(
                "roi_positive_fraction must be in (0, 1]. "
                f"Received: roi_positive_fraction={roi_positive_fraction!r}"
            )
        self.num_classes = num_classes
        self.backbone_name = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.freeze_batch_norm = bool(freeze_batch_norm)
        self.fpn_channels = fpn_channels
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.rpn_train_nms = tuple(int(n) for n in rpn_train_nms)
        self.rpn_test_nms = tuple(int(n) for n in rpn_test_nms)
        self.rpn_nms_iou = float(rpn_nms_iou)
        self.rpn_batch_size = int(rpn_batch_size)
        self.roi_batch_size = int(roi_batch_size)
        self.roi_positive_fraction = float(roi_positive_fraction)
        self.box_fc_units = box_fc_units
        self.mask_channels = mask_channels
        self.sampling_ratio = sampling_ratio
        self.detections_per_image = int(detections_per_image)
        self.score_threshold = float(score_threshold)
        self.detection_nms_iou = float(detection_nms_iou)
        self.size_divisor = int(size_divisor)
        self.resize_min_side = resize_min_side
        self.resize_max_side = resize_max_side
        self.input_normalization = input_normalization
        self.anchor_layout = anchor_layout
        self.clip_boxes_to = clip_boxes_to
        self.roi_aligned = bool(roi_aligned)
        self.roi_level_epsilon = None if roi_level_epsilon is None else float(roi_level_epsilon)
        self.detection_min_size = None if detection_min_size is None else float(detection_min_size)
        self.mask_paste = mask_paste
        self.fpn_batch_norm = bool(fpn_batch_norm)
        self.rpn_num_convs = int(rpn_num_convs)
        self.box_head_convs = int(box_head_convs)
        self.box_head_fc = int(box_head_fc)
        self.mask_head_batch_norm = bool(mask_head_batch_norm)

        backbone_options = dict(self.backbone_kwargs)
        if input_normalization is not None:
            backbone_options.setdefault("include_preprocessing", False)
            self.input_preprocessing = ImagePreprocessing(
                input_normalization, name="input_preprocessing"
            )
        self.backbone = resolve_backbone(
            backbone,
            input_shape=(None, None, 3),
            weights=backbone_weights,
            output_stride=32,
            **backbone_options,
        )
        if self.freeze_batch_norm:
            for layer in self.backbone._flatten_layers():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        self.feature_pyramid = FeaturePyramid(
            fpn_channels, batch_norm=self.fpn_batch_norm, name="fpn"
        )
        self.rpn_head = RegionProposalHead(
            len(self.aspect_ratios), fpn_channels, num_convs=self.rpn_num_convs, name="rpn_head"
        )
        roi_options = {
            "sampling_ratio": sampling_ratio,
            "aligned": self.roi_aligned,
            "level_epsilon": self.roi_level_epsilon,
        }
        self.box_roi_align = MultiLevelRoIAlign(output_size=7, name="box_roi_align", **roi_options)
        self.mask_roi_align = MultiLevelRoIAlign(
            output_size=14, name="mask_roi_align", **roi_options
        )
        self.box_head = BoxHead(
            num_classes,
            box_fc_units,
            num_convs=self.box_head_convs,
            conv_channels=fpn_channels,
            num_fc=self.box_head_fc,
            name="box_head",
        )
        self.mask_head = MaskHead(
            num_classes, mask_channels, batch_norm=self.mask_head_batch_norm, name="mask_head"
        )
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", *LOSS_NAMES)}
        self.build((None, None, None, 3))

    def build(self, input_shape):
        # Every weight shape is known from the configuration, so the model is complete (and
        # saveable, countable) before it sees data, whichever of call or fit runs first.
        channels = {info["key"]: info["channels"] for info in feature_info(self.backbone)}
        self.feature_pyramid.build([(None, None, None, channels[f"P{n}"]) for n in (2, 3, 4, 5)])
        self.rpn_head.build([(None, None, None, self.fpn_channels)])
        self.box_head.build((None, None, 7, 7, self.fpn_channels))
        self.mask_head.build((None, None, 14, 14, self.fpn_channels))
        self.built = True

    # ----------------------------------------------------------------- shared pieces

    def _pyramid(self, images, training):
        features = self.backbone(images, training=training)
        levels = [features[f"P{level}"] for level in (2, 3, 4, 5)]
        # `training` is passed on explicitly: compute_losses runs outside Model.__call__, so
        # no call context carries it to the batch norms of the torchvision v2 options.
        return self.feature_pyramid(levels, training=training)

    def _inputs(self, images):
        """The padded network input and the size of the image inside it (before padding)."""
        images = tf.cast(images, self.compute_dtype)
        if self.input_normalization is not None:
            images = self.input_preprocessing(images)
        if self.resize_min_side is not None:
            images = tf.cast(
                resize_min_max_side(images, self.resize_min_side, self.resize_max_side),
                self.compute_dtype,
            )
        image_size = tf.shape(images)[1:3]
        return pad_bottom_right_to_multiple(images, self.size_divisor), image_size

    def _clip_size(self, images, image_size):
        return image_size if self.clip_boxes_to == "image" else tf.shape(images)[1:3]

    def _anchors(self, images, pyramid=None):
        shape = tf.shape(images)
        if self.anchor_layout == "grid":
            return generate_grid_anchors(
                shape[1],
                shape[2],
                [tf.unstack(tf.shape(level)[1:3]) for level in pyramid],
                sizes=self.anchor_sizes,
                aspect_ratios=self.aspect_ratios,
            )
        return generate_anchors(
            shape[1],
            shape[2],
            sizes=self.anchor_sizes,
            aspect_ratios=self.aspect_ratios,
        )

    def _proposals(self, objectness, deltas, anchors, clip_size, nms_counts):
        proposals, _ = select_proposals(
            [tf.stop_gradient(o) for o in objectness],
            [tf.stop_gradient(d) for d in deltas],
            anchors,
            clip_size[0],
            clip_size[1],
            pre_nms_top_n=nms_counts[0],
            post_nms_top_n=nms_counts[1],
            nms_iou=self.rpn_nms_iou,
        )
        return tf.stop_gradient(proposals)

    def _mask_logits_for(self, pyramid, boxes, classes, training=False):
        pooled = self.mask_roi_align([*pyramid[:4], boxes])
        logits = self.mask_head(pooled, training=training)
        logits = tf.transpose(logits, (0, 1, 4, 2, 3))
        return tf.gather(logits, tf.maximum(classes, 0), axis=2, batch_dims=2)

    # ----------------------------------------------------------------- inference

    def call(self, images, training=False):
        check_images(images)
        input_size = tf.shape(images)[1:3]
        images, image_size = self._inputs(images)
        clip_size = self._clip_size(images, image_size)
        pyramid = self._pyramid(images, training)
        objectness, deltas = self.rpn_head(pyramid)
        anchors = self._anchors(images, pyramid)
        proposals = self._proposals(objectness, deltas, anchors, clip_size, self.rpn_test_nms)
        class_logits, box_deltas = self.box_head(
            self.box_roi_align([*pyramid[:4], proposals]), training=training
        )
        detections = detect(
            proposals,
            class_logits,
            box_deltas,
            clip_size[0],
            clip_size[1],
            score_threshold=self.score_threshold,
            nms_iou=self.detection_nms_iou,
            max_detections=self.detections_per_image,
            min_size=self.detection_min_size,
        )
        mask_logits = self._mask_logits_for(
            pyramid, detections["boxes"], detections["classes"], training
        )
        detections["masks"] = tf.sigmoid(mask_logits)
        if self.resize_min_side is not None:
            detections["boxes"] = rescale_boxes(
                detections["boxes"], image_size[0], image_size[1], input_size[0], input_size[1]
            )
        return detections

    # ----------------------------------------------------------------- training

    def compute_losses(self, images, targets, training=True):
        """The five Mask R-CNN losses and their sum for a batch, as a dict of float32 scalars.

        Example:
            >>> losses = model.compute_losses(images, targets)  # doctest: +SKIP
            >>> sorted(losses)[:2]  # doctest: +SKIP
            ['box_class_loss', 'box_regression_loss']
        """
        check_images(images)
        check_targets(images, targets)
        input_size = tf.shape(images)[1:3]
        images, image_size = self._inputs(images)
        clip_size = self._clip_size(images, image_size)
        gt_boxes = tf.cast(targets["gt_boxes"], tf.float32)
        gt_masks = targets["gt_masks"]
        if self.resize_min_side is not None:
            # The targets follow their images through the resize, as in torchvision's transform.
            gt_boxes = rescale_boxes(gt_boxes, *tf.unstack(input_size), *tf.unstack(image_size))
            gt_masks = resize_instance_masks(gt_masks, image_size[0], image_size[1])
        gt_classes = tf.cast(targets["gt_classes"], tf.int32)
        pyramid = self._pyramid(images, training)
        objectness, deltas = self.rpn_head(pyramid)
        anchors = self._anchors(images, pyramid)
        labels, delta_targets = rpn_targets(
            tf.concat(anchors, axis=0), gt_boxes, gt_classes, num_samples=self.rpn_batch_size
        )
        rpn_objectness, rpn_box = rpn_losses(
            tf.concat(objectness, axis=1), tf.concat(deltas, axis=1), labels, delta_targets
        )
        proposals = self._proposals(objectness, deltas, anchors, clip_size, self.rpn_train_nms)
        sampled = roi_targets(
            proposals,
            gt_boxes,
            gt_classes,
            gt_masks,
            num_samples=self.roi_batch_size,
            positive_fraction=self.roi_positive_fraction,
            mask_size=28,
        )
        rois = tf.stop_gradient(sampled["rois"])
        class_logits, box_deltas = self.box_head(
            self.box_roi_align([*pyramid[:4], rois]), training=training
        )
        box_class, box_regression = box_head_losses(
            class_logits, box_deltas, sampled["classes"], sampled["box_deltas"]
        )
        # The mask branch runs on the positive regions only (at most a quarter of the sample).
        positives = max(1, round(self.roi_batch_size * self.roi_positive_fraction))
        _, order = tf.math.top_k(tf.cast(sampled["classes"] > 0, tf.float32), k=positives)
        mask_rois = tf.gather(rois, order, batch_dims=1)
        mask_classes = tf.gather(sampled["classes"], order, batch_dims=1)
        mask_targets = tf.gather(sampled["mask_targets"], order, batch_dims=1)
        pooled = self.mask_roi_align([*pyramid[:4], mask_rois])
        masks = mask_loss(self.mask_head(pooled, training=training), mask_classes, mask_targets)
        losses = dict(zip(LOSS_NAMES, (rpn_objectness, rpn_box, box_class, box_regression, masks)))
        losses["loss"] = tf.add_n(list(losses.values()))
        if self.losses:
            losses["loss"] = losses["loss"] + tf.add_n(
                [tf.cast(loss, tf.float32) for loss in self.losses]
            )
        return losses

    def _update_trackers(self, losses):
        for name, tracker in self.loss_trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self.loss_trackers.items()}

    def train_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses = self.compute_losses(images, targets, training=True)
            scaled = self.optimizer.scale_loss(losses["loss"])
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_trackers(losses)

    def test_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update_trackers(self.compute_losses(images, targets, training=False))

    @property
    def metrics(self):
        return list(self.loss_trackers.values())

    # ----------------------------------------------------------------- serialisation

    def get_config(self):
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            # The weights travel in the saved file; a reload must not download them again.
            "backbone_weights": None,
            "backbone_kwargs": self.backbone_kwargs,
            "freeze_batch_norm": self.freeze_batch_norm,
            "fpn_channels": self.fpn_channels,
            "anchor_sizes": self.anchor_sizes,
            "aspect_ratios": self.aspect_ratios,
            "rpn_train_nms": self.rpn_train_nms,
            "rpn_test_nms": self.rpn_test_nms,
            "rpn_nms_iou": self.rpn_nms_iou,
            "rpn_batch_size": self.rpn_batch_size,
            "roi_batch_size": self.roi_batch_size,
            "roi_positive_fraction": self.roi_positive_fraction,
            "box_fc_units": self.box_fc_units,
            "mask_channels": self.mask_channels,
            "sampling_ratio": self.sampling_ratio,
            "detections_per_image": self.detections_per_image,
            "score_threshold": self.score_threshold,
            "detection_nms_iou": self.detection_nms_iou,
            "size_divisor": self.size_divisor,
            "resize_min_side": self.resize_min_side,
            "resize_max_side": self.resize_max_side,
            "input_normalization": self.input_normalization,
            "anchor_layout": self.anchor_layout,
            "clip_boxes_to": self.clip_boxes_to,
            "roi_aligned": self.roi_aligned,
            "roi_level_epsilon": self.roi_level_epsilon,
            "detection_min_size": self.detection_min_size,
            "mask_paste": self.mask_paste,
            "fpn_batch_norm": self.fpn_batch_norm,
            "rpn_num_convs": self.rpn_num_convs,
            "box_head_convs": self.box_head_convs,
            "box_head_fc": self.box_head_fc,
            "mask_head_batch_norm": self.mask_head_batch_norm,
        }
