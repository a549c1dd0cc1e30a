"""Losses that are correct for soft targets."""

from .classification import KDLoss, SoftCrossEntropy, kd_loss, soft_cross_entropy

__all__ = ["KDLoss", "SoftCrossEntropy", "kd_loss", "soft_cross_entropy"]
