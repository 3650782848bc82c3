"""Inference-time procedures applied around a trained segmentation model."""

from kseg.inference.dense_crf import dense_crf
