"""``softlabels reproduce``: the three studies in one command, one report.

By default every study runs in its ``--quick`` form on the embedded data; ``full`` runs the
real-data settings of ``docs/results.md`` (CIFAR-10 distillation, CamVid segmentation, MNIST
robust distillation) from one ``data_root`` holding ``cifar10/``, ``camvid/`` and ``mnist/``.
Each study writes to its own sub-folder and resumes like any sweep; a study that fails is
reported and does not stop (or erase) the others. The combined ``report.md`` and a
self-contained ``report.html`` (figures embedded), opening with the claims table of
:mod:`softlabels.studies.reproduce_report`, are rebuilt at the end of every run.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import write_json
from ..configuration import build_config, check_fields, field_help
from ..results import Table
from .executors import ExecutorConfig
from .registry import STUDIES
from .reproduce_report import cell_seconds, write_reports
from .run_folder import move_aside
from .sweep import Results, run_sweep

__all__ = ["HELP", "ReproduceConfig", "StudyFailedError", "run"]

HELP = "run the three studies (quick on embedded data, or --full) into one report"

#: The studies ``reproduce`` runs: those that declare a ``--full`` preset (not ``train``).
REPRODUCED = tuple(name for name, study in STUDIES.items() if study.full is not None)


class StudyFailedError(ValueError):
    """At least one study failed; the others finished and the report was written."""


@dataclass(frozen=True)
class ReproduceConfig:
    """Settings of ``softlabels reproduce``; each field is the CLI flag of the same name."""

    full: bool = field(default=False, metadata=field_help(
        "run the real-data studies of docs/results.md (needs --data-root; hours on a CPU)"))
    data_root: str | None = field(default=None, metadata=field_help(
        "folder holding cifar10/, camvid/ and mnist/ (with --full)"))
    studies: tuple[str, ...] = field(default=REPRODUCED, metadata=field_help(
        "studies to run", choices=REPRODUCED, nonempty=True, unique=True))
    recipe: str | None = field(default=None, metadata=field_help(
        "with --full: run each study's reproduction of this recipe (e.g. paper, the official "
        "settings sized for one GPU) instead of the CPU-scale runs of docs/results.md"))
    device: str = field(default="auto", metadata=field_help("auto, cpu or cuda"))
    out: str = field(default="runs/reproduce", metadata=field_help("output folder"))

    def __post_init__(self) -> None:
        check_fields(self)
        if self.recipe is not None:
            if not self.full:
                raise ValueError("--recipe chooses a --full reproduction; add --full")
            lacking = [s for s in self.studies
                       if STUDIES[s].recipes.get(self.recipe) is None
                       or STUDIES[s].recipes[self.recipe].full is None]
            if lacking:
                raise ValueError(f"recipe {self.recipe!r} has no reproduction for "
                                 f"{lacking}; give --studies among those that have it")
        if self.data_root is not None and not self.full:
            raise ValueError("--data-root is read by --full only (the quick studies run on "
                             "embedded data): add --full or drop --data-root")
        if self.full and self.data_root is None:
            raise ValueError("--full needs --data-root, the folder holding "
                             + ", ".join(f"{_full(s)[0]}/ (for {s})" for s in self.studies))


def _full(name: str) -> tuple[str, tuple[dict[str, Any], ...]]:
    full = STUDIES[name].full
    assert full is not None  # REPRODUCED holds only studies with a --full preset
    return full[0], tuple(dict(layer) for layer in full[1])


def run(config: ReproduceConfig, executor: ExecutorConfig | None = None, *,
        show_progress: bool | None = None, overwrite: bool = False) -> Results:
    """Run the chosen studies, then write the combined report; one summary row per study.

    With ``overwrite`` a previous reproduction in ``config.out`` is renamed aside first
    (:func:`~softlabels.studies.run_folder.move_aside`; nothing is deleted).

    Raises:
        ValueError: ``full`` and a dataset folder is missing (before anything runs).
        StudyFailedError: a study raised; the others ran and the report names the failure.
    """
    began = time.perf_counter()
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {str(out)!r} is an existing file; choose a folder "
                         "with --out")
    if config.full:
        _check_data_root(config)
    if overwrite:
        move_aside(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for number, name in enumerate(config.studies, start=1):
        print(f"[reproduce] {name} ({number}/{len(config.studies)})", file=sys.stderr)
        summaries.append(_run_study(config, name, out / name, executor, show_progress))
        write_reports(out, config.full, summaries)
    write_json(out / "summary.json", summaries)
    failed = [s for s in summaries if s["status"] != "ok"]
    if failed:
        raise StudyFailedError("; ".join(f"study {s['study']!r} failed: {s['error']}"
                                         for s in failed)
                               + f" (the other studies' results and the report are in "
                                 f"{str(out)!r})")
    table = Table("softlabels reproduce: " + ("full" if config.full else "quick"),
                  ("study", "status", "headline", "cell seconds"), text_columns=3,
                  notes=[f"report: {out}/report.md and {out}/report.html"])
    for s in summaries:
        table.rows.append((s["study"], s["status"], "\n".join(s["headline"]),
                           f"{s['cell_seconds']:.0f}"))
    return Results("reproduce", config, out, summaries, [table],
                   [line for s in summaries for line in s["headline"]],
                   time.perf_counter() - began)


def _check_data_root(config: ReproduceConfig) -> None:
    root = Path(config.data_root)  # type: ignore[arg-type]
    missing = [f"{root / _full(s)[0]} (needed by {s})" for s in config.studies
               if not (root / _full(s)[0]).is_dir()]
    if missing:
        raise ValueError("--data-root is missing " + ", ".join(missing))


def _study_configs(config: ReproduceConfig, name: str, folder: Path) -> list[Any]:
    study = STUDIES[name]
    common = {"out": str(folder), "device": config.device}
    if not config.full:
        return [build_config(study.config_cls, dict(study.quick), common)]
    dataset, layers = _full(name)
    if config.recipe is not None:
        dataset, layers = STUDIES[name].recipes[config.recipe].full  # type: ignore[misc]
    root = str(Path(config.data_root) / dataset)  # type: ignore[arg-type]
    return [build_config(study.config_cls, layer, {**common, "data_root": root})
            for layer in layers]


def _run_study(config: ReproduceConfig, name: str, folder: Path,
               executor: ExecutorConfig | None, show_progress: bool | None) -> dict[str, Any]:
    began = time.perf_counter()
    summary: dict[str, Any] = {"study": name, "folder": str(folder), "status": "ok",
                               "error": None, "headline": []}
    try:
        headline: list[str] = []
        for study_config in _study_configs(config, name, folder):
            headline = run_sweep(STUDIES[name], study_config, executor,
                                 show_progress=show_progress).headline
        summary["headline"] = headline
    except Exception as err:  # one study's failure must not stop the others
        summary["status"] = "failed"
        summary["error"] = f"{type(err).__name__}: {err}"
        summary["traceback"] = traceback.format_exc()
    summary["seconds"] = time.perf_counter() - began
    summary["cell_seconds"] = cell_seconds(name, folder)
    return summary
