"""The distillation methods by name, and the method entries of a sweep.

:func:`build_distiller` makes ARD, Fair-ARD, RSLAD or ABSLD from a name and its settings
(:data:`METHOD_SETTINGS` names them; the robust study's config fields share those names).

An entry is ``NAME`` or ``NAME:FIELD=VALUE[,FIELD=VALUE]`` (``absld:tau_rate=0.03``,
``absld:official_product=true``); values are YAML scalars. A study lists, per method, the
fields an entry may set, so an ablation is one more entry of a sweep and its text the key of
its cells. :func:`canonical_entry` spells every entry one way, so a folder's keys do not
depend on how a setting was typed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import yaml
from torch import nn

from .distillers import ABSLD, ARD, RSLAD, Distiller
from .fair_ard import FairARD
from .teacher_cache import TeacherLogitCache
from .training import AttackConfig

__all__ = ["METHODS", "METHOD_SETTINGS", "build_distiller", "canonical_entry", "entry_label",
           "parse_entry"]

#: The settings each method reads (and an entry of it may set).
METHOD_SETTINGS: dict[str, tuple[str, ...]] = {
    "rslad": ("kl_reduction",),
    "absld": ("kl_reduction", "tau_min", "tau_max", "tau_rate", "official_product",
              "shared_temperatures", "class_reduction", "rate_decay"),
    "ard": ("kl_reduction", "ard_temperature", "ard_alpha"),
    "fair_ard": ("kl_reduction", "ard_temperature", "ard_alpha", "fair_beta",
                 "class_reduction"),
}
METHODS = tuple(METHOD_SETTINGS)


def build_distiller(name: str, student: nn.Module, teacher: nn.Module, attack: AttackConfig,
                    num_classes: int, settings: Mapping[str, Any], *, seed: int,
                    decay_epochs: Sequence[int] = (),
                    teacher_cache: TeacherLogitCache | None = None) -> Distiller:
    """The distiller ``name`` with ``settings`` (at least ``METHOD_SETTINGS[name]``): the KL
    reduction; ARD's temperature and alpha; Fair-ARD's beta; ABSLD's bounds, rate, variant
    and when its rate decays (at ``decay_epochs``, the learning-rate milestones). Its attack
    starts are drawn from ``seed``."""
    s = settings
    common: dict[str, Any] = {"generator": torch.Generator().manual_seed(seed),
                              "kl_reduction": s["kl_reduction"], "teacher_cache": teacher_cache}
    if name in ("ard", "fair_ard"):
        ard = {"temperature": s["ard_temperature"], "alpha": s["ard_alpha"], **common}
        if name == "ard":
            return ARD(student, teacher, attack, **ard)
        return FairARD(student, teacher, attack, num_classes, beta=s["fair_beta"],
                       reduction=s["class_reduction"], **ard)
    if name == "rslad":
        return RSLAD(student, teacher, attack, **common)
    if name != "absld":
        raise ValueError(f"unknown method {name!r}; valid: {list(METHODS)}")
    return ABSLD(student, teacher, attack, num_classes, low=s["tau_min"], high=s["tau_max"],
                 rate=s["tau_rate"], decay_epochs=decay_epochs,
                 official_product=s["official_product"], shared=s["shared_temperatures"],
                 risk=s["class_reduction"], rate_decay=s["rate_decay"], **common)


def parse_entry(entry: str, allowed: Mapping[str, Sequence[str]]) -> tuple[str, dict[str, Any]]:
    """``("absld", {"tau_rate": 0.03})`` from ``"absld:tau_rate=0.03"``.

    Args:
        entry: the method entry.
        allowed: ``{method name: fields an entry of it may set}``.

    Raises:
        ValueError: an unknown method, a malformed setting, a field the method does not take.

    Example:
        >>> parse_entry("absld:tau_rate=0.03,official_product=true",
        ...             {"absld": ("tau_rate", "official_product")})
        ('absld', {'tau_rate': 0.03, 'official_product': True})
    """
    name, colon, settings = str(entry).partition(":")
    if name not in allowed:
        raise ValueError(f"methods: unknown method {name!r} in {entry!r}; valid: "
                         f"{list(allowed)}")
    overrides: dict[str, Any] = {}
    for item in settings.split(",") if colon else ():
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in allowed[name] or key in overrides:
            raise ValueError(f"methods: {entry!r} sets {item!r}; {name} takes distinct "
                             f"FIELD=VALUE settings with FIELD one of {list(allowed[name])}")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def canonical_entry(entry: str, allowed: Mapping[str, Sequence[str]]) -> str:
    """``entry`` with its settings sorted and their values as YAML writes them.

    Example:
        >>> canonical_entry("absld:tau_rate=.030", {"absld": ("tau_rate",)})
        'absld:tau_rate=0.03'
    """
    name, overrides = parse_entry(entry, allowed)
    shown = [f"{key}={yaml.safe_dump(value).splitlines()[0]}"
             for key, value in sorted(overrides.items())]
    return name + (":" + ",".join(shown) if shown else "")


def entry_label(entry: str) -> str:
    """A file-name-safe label: ``absld:tau_rate=0.03`` -> ``absld-tau_rate0.03``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", entry.replace("=", ""))
