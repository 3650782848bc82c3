"""Inference-time procedures applied around a trained segmentation model."""

from kseg.inference.batchnorm_folding import (
    fold_batch_norm,
    fold_batch_norm_if_exact,
    supports_batch_norm_folding,
)
from kseg.inference.dense_crf import dense_crf
from kseg.inference.frozen import FrozenModel
from kseg.inference.multiscale import multiscale_predict
from kseg.inference.overlap_tile import overlap_tile_predict
from kseg.inference.patch_classifier import patch_labels, patch_scores
from kseg.inference.predictor import make_predictor
from kseg.inference.sliding_window import sliding_window_predict

__all__ = [
    "FrozenModel",
    "dense_crf",
    "fold_batch_norm",
    "fold_batch_norm_if_exact",
    "make_predictor",
    "multiscale_predict",
    "overlap_tile_predict",
    "patch_labels",
    "patch_scores",
    "sliding_window_predict",
    "supports_batch_norm_folding",
]
