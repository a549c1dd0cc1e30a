"""Training and evaluation of classifiers on hard or soft labels."""

from .config import OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig
from .data import from_torch_dataset
from .evaluation import EvalResult, evaluate, predict_logits
from .optim import build_optimizer, build_scheduler
from .training import (
    FitResult,
    NonFiniteLossError,
    epoch_checkpoint_name,
    fit,
    load_epoch_checkpoint,
    saved_checkpoint_epochs,
)

__all__ = [
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "EvalResult",
    "FitResult",
    "NonFiniteLossError",
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "epoch_checkpoint_name",
    "evaluate",
    "fit",
    "from_torch_dataset",
    "load_epoch_checkpoint",
    "predict_logits",
    "saved_checkpoint_epochs",
]
