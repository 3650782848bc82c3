"""Per-pixel features of an image from a kseg backbone, to pool over superpixels."""

import numpy as np


class BackboneFeatures:
    """Per-pixel features of an image from a kseg backbone, for `UnifiedWeakSegmenter`.

    Builds `kseg.backbones.get_backbone(name, weights=weights, **backbone_kwargs)` once, runs an
    image through it and returns the chosen feature levels resized bilinearly to the image size
    and concatenated; the segmenter averages them over each superpixel. Xu, Schwing and Urtasun
    (CVPR 2015) pool convolutional-network features over superpixels in the same way.

    Args:
        name: backbone name, one of `kseg.backbones.list_backbones()`.
        weights: None (random), "imagenet", or a weights file path, as in `get_backbone`; for
            MobileNetV2 with alpha 0.35, `kseg.backbones.bundled_weights_path("mobilenetv2",
            alpha=0.35)` works offline.
        levels: pyramid keys to use, e.g. `("P3", "P4")`.
        **backbone_kwargs: passed to `get_backbone` (e.g. `alpha=0.35`).

    Example:
        >>> import numpy as np
        >>> from kseg.weak.backbone_features import BackboneFeatures
        >>> extract = BackboneFeatures("tiny", levels=("P2",))
        >>> extract(np.zeros((32, 32, 3), "float32")).shape[:2]
        (32, 32)
    """

    def __init__(self, name="mobilenetv2", *, weights=None, levels=("P3", "P4"), **backbone_kwargs):
        from kseg.backbones import feature_info, get_backbone

        self.name = name
        self.levels = tuple(levels)
        if not self.levels:
            raise ValueError(f"`levels` must name at least one level. Received: levels={levels!r}")
        self.backbone = get_backbone(name, weights=weights, **backbone_kwargs)
        available = [info["key"] for info in feature_info(self.backbone)]
        unknown = [level for level in self.levels if level not in available]
        if unknown:
            raise ValueError(
                f"Backbone {name!r} has levels {available}. Received: levels={list(self.levels)}"
            )

    def __call__(self, image):
        import tensorflow as tf

        image = np.asarray(image, np.float32)
        pyramid = self.backbone(image[None], training=False)
        size = tf.shape(image)[:2]
        maps = [tf.image.resize(pyramid[level], size, method="bilinear") for level in self.levels]
        return np.asarray(tf.concat(maps, axis=-1)[0], np.float32)
