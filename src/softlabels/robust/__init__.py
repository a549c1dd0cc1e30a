"""Adversarial robustness distillation with anti-bias soft labels (ABSLD) and its baselines.

Robust teachers are trained with :class:`PGDATObjective` or :class:`TRADESObjective`; students
are distilled with :class:`ARD`, :class:`FairARD`, :class:`RSLAD` or :class:`ABSLD`, whose
class-wise temperatures (:class:`ClassTemperatures`) sharpen the teacher's labels for the
classes the student finds hardest. A :class:`TeacherLogitCache` computes the frozen teacher's
logits of every augmented training image once for all students.
"""

from .class_stats import CLASS_REDUCTIONS, ClassTally
from .distillers import ABSLD, ARD, KL_REDUCTIONS, RATE_DECAYS, RSLAD, Distiller
from .fair_ard import FairARD, fair_weights
from .teacher_cache import CropFlipVariants, TeacherLogitCache
from .temperatures import ClassTemperatures
from .training import AttackConfig, NaturalObjective, PGDATObjective, TRADESObjective

__all__ = [
    "ABSLD",
    "ARD",
    "CLASS_REDUCTIONS",
    "KL_REDUCTIONS",
    "RATE_DECAYS",
    "RSLAD",
    "AttackConfig",
    "ClassTally",
    "ClassTemperatures",
    "CropFlipVariants",
    "Distiller",
    "FairARD",
    "NaturalObjective",
    "PGDATObjective",
    "TRADESObjective",
    "TeacherLogitCache",
    "fair_weights",
]
