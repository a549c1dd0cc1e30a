"""The studies by name: the one list the CLI, ``reproduce`` and users read.

A user adds a study of their own with :func:`register_study` (an explicit call, never an
import side effect); its functions must be importable by module name for the ``processes``
and ``ray`` executors, which send the study to their workers by reference.
"""

from __future__ import annotations

from typing import Any

from ..configuration import build_config
from . import distill, robust, seg, train
from .executors import ExecutorConfig
from .sweep import Results, Study, run_sweep

__all__ = ["STUDIES", "get_study", "list_studies", "register_study", "run_study"]

STUDIES: dict[str, Study] = {s.name: s for s in (train.STUDY, distill.STUDY, seg.STUDY,
                                                   robust.STUDY)}

#: Names the CLI uses for its own commands; a study cannot take them.
RESERVED = frozenset({"reproduce", "report", "list", "export"})


def register_study(study: Study) -> None:
    """Add ``study`` to :data:`STUDIES` (so that the CLI and :func:`run_study` know it).

    Raises:
        ValueError: the name is taken by another study or a command.
    """
    if not isinstance(study, Study):
        raise TypeError(f"study must be a Study, got {type(study).__name__}")
    if study.name in RESERVED or (study.name in STUDIES and STUDIES[study.name] is not study):
        raise ValueError(f"a study or command named {study.name!r} exists already")
    STUDIES[study.name] = study


def get_study(name: str) -> Study:
    """The study called ``name``; the error lists the known ones."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; known studies: {list_studies()}")
    return STUDIES[name]


def list_studies() -> list[str]:
    """Names of the registered studies."""
    return list(STUDIES)


def run_study(study: str | Study, config: Any = None, *, quick: bool = False,
              executor: ExecutorConfig | None = None, show_progress: bool | None = None,
              overwrite: bool = False, **fields: Any) -> Results:
    """Run (or resume) a study from Python; the same operation as ``softlabels <study>``.

    Args:
        study: a study name or :class:`Study`.
        config: its config; built from ``quick`` and ``fields`` when omitted.
        quick: start from the study's ``--quick`` preset.
        executor: where the cells run (default: serially here).
        show_progress: see :func:`softlabels.progress.progress`.
        overwrite: start afresh, renaming a run already in the folder aside (see
            :func:`~softlabels.studies.sweep.run_sweep`).
        **fields: config fields (only without ``config``).

    Example:
        >>> results = run_study("train", quick=True, out="runs/t", show_progress=False)
        ... # doctest: +SKIP
    """
    chosen = get_study(study) if isinstance(study, str) else study
    if config is None:
        config = build_config(chosen.config_cls, dict(chosen.quick) if quick else {}, fields)
    elif fields or quick:
        raise ValueError("give either config or quick/fields, not both")
    if not isinstance(config, chosen.config_cls):
        raise TypeError(f"config must be a {chosen.config_cls.__name__}, got "
                        f"{type(config).__name__}")
    return run_sweep(chosen, config, executor, show_progress=show_progress,
                     overwrite=overwrite)
