"""Adversarial robustness distillation with anti-bias soft labels (ABSLD) and its baselines.

Robust teachers are trained with :class:`PGDATObjective` or :class:`TRADESObjective`; students
are distilled with :class:`ARD`, :class:`RSLAD` or :class:`ABSLD`, whose class-wise
temperatures (:class:`ClassTemperatures`) sharpen the teacher's labels for the classes the
student finds hardest.
"""

from .distillers import ABSLD, ARD, RSLAD, Distiller
from .temperatures import ClassTemperatures
from .training import AttackConfig, NaturalObjective, PGDATObjective, TRADESObjective

__all__ = [
    "ABSLD",
    "ARD",
    "RSLAD",
    "AttackConfig",
    "ClassTemperatures",
    "Distiller",
    "NaturalObjective",
    "PGDATObjective",
    "TRADESObjective",
]
