"""Soft-label dataset distillation: image selection, label modes and sweep analysis.

The study of Qin et al., "A Label is Worth a Thousand Images in Dataset Distillation": random
(or loss-ranked) real images per class, labelled by an early-stopped expert, compared across
label modes and IPC, summarised by a scaling-law fit, a size/accuracy Pareto frontier and
DD-Ranking's label-robust score.
"""

from .analysis import (
    ScalingFit,
    dataset_bytes,
    fit_scaling_law,
    label_robust_score,
    pareto_frontier,
)
from .label_modes import (
    LABEL_MODES,
    entropy_matched_smoothing,
    expert_labels,
    hard_labels,
    make_labels,
    shuffle_tail_labels,
    smoothing_for_entropy,
    swap_labels,
    topk_labels,
)
from .selection import (
    QUANTILE_PRESETS,
    load_index_file,
    save_index_file,
    select_by_loss,
    select_random,
)

__all__ = [
    "LABEL_MODES",
    "QUANTILE_PRESETS",
    "ScalingFit",
    "dataset_bytes",
    "entropy_matched_smoothing",
    "expert_labels",
    "fit_scaling_law",
    "hard_labels",
    "label_robust_score",
    "load_index_file",
    "make_labels",
    "pareto_frontier",
    "save_index_file",
    "select_by_loss",
    "select_random",
    "shuffle_tail_labels",
    "smoothing_for_entropy",
    "swap_labels",
    "topk_labels",
]
from .students import BACKENDS as STUDENT_BACKENDS
from .students import StudentsResult, train_students

__all__ += ["STUDENT_BACKENDS", "StudentsResult", "train_students"]
