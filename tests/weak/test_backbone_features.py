"""Backbone features pooled over superpixels beside the histograms of the unified segmenter."""

import numpy as np
import pytest

pytest.importorskip("skimage", reason="superpixels need scikit-image (the `weak` extra)")

from kseg.weak.backbone_features import BackboneFeatures
from kseg.weak.unified import UnifiedWeakSegmenter


def test_backbone_features_join_the_histograms():
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    extract = BackboneFeatures("tiny", levels=("P2",))
    channels = extract(images[0]).shape[-1]
    weak = [{"tags": np.array([0, 1])}] * 3
    segmenter = UnifiedWeakSegmenter(2, feature_extractor=extract, n_segments=12, iterations=1)
    segmenter.fit(images, weak)
    assert segmenter.weights_.shape == (3 * 25 + 2 * 10 + channels, 2)
    assert segmenter.predict(images).shape == (3, 32, 32)
