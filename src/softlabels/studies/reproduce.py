"""``softlabels reproduce``: the three studies in one command, one report.

By default every study runs in its ``--quick`` form on the embedded data; ``full`` runs the
real-data settings of ``docs/results.md`` (CIFAR-10 distillation, CamVid segmentation, MNIST
robust distillation) from one ``data_root`` holding ``cifar10/``, ``camvid/`` and ``mnist/``.
Each study writes to its own sub-folder and resumes like any sweep; a study that fails is
reported and does not stop (or erase) the others. The combined ``report.md`` and a
self-contained ``report.html`` (figures embedded) are rebuilt at the end of every run.
"""

from __future__ import annotations

import base64
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import markdown

from .._checks import check_choice
from .._io import write_json, write_text
from ..configuration import build_config, field_help
from . import distill, robust, seg
from .robust_report import method_summary

__all__ = ["FULL", "STUDIES", "ReproduceConfig", "StudyFailedError", "run"]


@dataclass(frozen=True)
class _Study:
    config_cls: type
    quick: dict[str, Any]
    run: Callable[..., list[dict[str, Any]]]
    headline: Callable[[list[dict[str, Any]]], list[str]]


def _distill_headline(rows: list[dict[str, Any]]) -> list[str]:
    tests = [r for r in rows if r["phase"] == "test" and r["images"] == "random"]
    lines = []
    for ipc in sorted({r["ipc"] for r in tests}):
        cells = {r["labels"]: r for r in tests if r["ipc"] == ipc
                 and r["labels"] in ("hard", "expert")}
        if cells:
            lines.append(f"IPC {ipc}: " + ", ".join(
                f"{mode} {100 * cells[mode]['best_mean']:.1f}%" for mode in sorted(cells)))
    return lines


def _seg_headline(rows: list[dict[str, Any]]) -> list[str]:
    return [f"{e['labels']} {e['loss']}: mIoU^D {e['miou_dataset'][0]:.1f}%"
            for e in seg.summary_rows(rows)]


def _robust_headline(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for method, per_attack in method_summary(rows).items():
        name = next(a for a in per_attack if a.startswith("pgd"))
        score = per_attack[name]
        lines.append(f"{method}: {name} {100 * score['accuracy'][0]:.1f}%, worst class "
                     f"{100 * score['worst_class_accuracy'][0]:.1f}%, NSD "
                     f"{score['nsd'][0]:.3f}")
    return lines


STUDIES: dict[str, _Study] = {
    "distill": _Study(distill.DistillStudyConfig, distill.QUICK, distill.run,
                      _distill_headline),
    "seg": _Study(seg.SegStudyConfig, seg.QUICK, seg.run, _seg_headline),
    "robust": _Study(robust.RobustStudyConfig, robust.QUICK, robust.run, _robust_headline),
}

_DISTILL_CIFAR10 = {
    "dataset": "cifar10", "model_args": ("width=64",), "expert_epochs": 20,
    "expert_epoch": (2, 5, 10, 20), "select_epoch": True, "seeds": (0, 1, 2),
    "student_epochs": 300, "eval_every": 150, "dm_iterations": 1000,
}

#: ``full``: per study, the dataset folder it needs under ``data_root`` and the configs it runs
#: in order (later ones extend the sweep of earlier ones in the same folder). These are the
#: settings behind ``docs/results.md``.
FULL: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "distill": ("cifar10", [
        {**_DISTILL_CIFAR10, "images": ("random", "dm"), "ipc": (1, 10),
         "labels": ("hard", "expert")},
        {**_DISTILL_CIFAR10, "images": ("random", "dm"), "ipc": (1, 10),
         "labels": ("hard", "expert", "smooth", "topk", "swap", "shuffle"), "k": (1, 2, 3, 5)},
        {**_DISTILL_CIFAR10, "images": ("random", "dm"), "ipc": (50,),
         "labels": ("hard", "expert", "topk"), "k": (1, 2, 3, 5)},
    ]),
    "seg": ("camvid", [
        {"dataset": "camvid", "losses": ("ce", "ce+jml", "ce+sjl"),
         "labels": ("hard", "ls", "kd"), "seeds": (0, 1, 2), "epochs": 8, "crop": 128,
         "teacher_args": ("base_width=24",)},
    ]),
    "robust": ("mnist", [
        {"dataset": "mnist", "source_split": "test", "test_fraction": 0.2, "eps": 0.3,
         "alpha": 0.04, "train_steps": 10, "eval_steps": 20, "eval_alpha": 0.03,
         "teacher_args": ("width=32",), "model_args": ("width=16",), "teacher_epochs": 10,
         "epochs": 10, "select_every": 2, "seeds": (0, 1, 2), "autoattack_images": 100},
    ]),
}


class StudyFailedError(ValueError):
    """At least one study failed; the others finished and the report was written."""


@dataclass(frozen=True)
class ReproduceConfig:
    """Settings of ``softlabels reproduce``; each field is the CLI flag of the same name."""

    full: bool = field(default=False, metadata=field_help(
        "run the real-data studies of docs/results.md (needs --data-root; hours on a CPU)"))
    data_root: str | None = field(default=None, metadata=field_help(
        "folder holding cifar10/, camvid/ and mnist/ (with --full)"))
    studies: tuple[str, ...] = field(default=tuple(STUDIES), metadata=field_help(
        "studies to run", choices=tuple(STUDIES)))
    device: str = field(default="auto", metadata=field_help("auto, cpu or cuda"))
    out: str = field(default="runs/reproduce", metadata=field_help("output folder"))

    def __post_init__(self) -> None:
        if not self.studies:
            raise ValueError(f"studies must name at least one of {list(STUDIES)}")
        for name in self.studies:
            check_choice("studies", name, tuple(STUDIES))
        if self.full and self.data_root is None:
            raise ValueError("--full needs --data-root, the folder holding "
                             + ", ".join(f"{FULL[s][0]}/ (for {s})" for s in self.studies))


#: ``--quick`` changes nothing: the default already is the quick form of every study.
QUICK: dict[str, Any] = {}


def run(config: ReproduceConfig, *, show_progress: bool | None = None
        ) -> list[dict[str, Any]]:
    """Run the chosen studies, then write the combined report; one summary row per study.

    Raises:
        ValueError: ``full`` and a dataset folder is missing (before anything runs).
        StudyFailedError: a study raised; the others ran and the report names the failure.
    """
    out = Path(config.out)
    if config.full:
        _check_data_root(config)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for number, name in enumerate(config.studies, start=1):
        print(f"[reproduce] {name} ({number}/{len(config.studies)})", file=sys.stderr)
        summaries.append(_run_study(config, name, out / name, show_progress))
        _write_reports(out, config, summaries)
    write_json(out / "summary.json", summaries)
    failed = [s for s in summaries if s["status"] != "ok"]
    if failed:
        raise StudyFailedError("; ".join(f"study {s['study']!r} failed: {s['error']}"
                                         for s in failed)
                               + f" (the other studies' results and the report are in "
                                 f"{str(out)!r})")
    return summaries


def _check_data_root(config: ReproduceConfig) -> None:
    root = Path(config.data_root)  # type: ignore[arg-type]
    missing = [f"{root / FULL[s][0]} (needed by {s})" for s in config.studies
               if not (root / FULL[s][0]).is_dir()]
    if missing:
        raise ValueError("--data-root is missing " + ", ".join(missing))


def _study_configs(config: ReproduceConfig, name: str, folder: Path) -> list[Any]:
    study = STUDIES[name]
    common = {"out": str(folder), "device": config.device}
    if not config.full:
        return [build_config(study.config_cls, study.quick, common)]
    dataset, layers = FULL[name]
    root = str(Path(config.data_root) / dataset)  # type: ignore[arg-type]
    return [build_config(study.config_cls, layer, {**common, "data_root": root})
            for layer in layers]


def _run_study(config: ReproduceConfig, name: str, folder: Path,
               show_progress: bool | None) -> dict[str, Any]:
    began = time.perf_counter()
    summary: dict[str, Any] = {"study": name, "folder": str(folder), "status": "ok",
                               "error": None, "headline": []}
    try:
        rows: list[dict[str, Any]] = []
        for study_config in _study_configs(config, name, folder):
            rows = STUDIES[name].run(study_config, show_progress=show_progress)
        summary["headline"] = STUDIES[name].headline(rows)
    except Exception as err:  # one study's failure must not stop the others
        summary["status"] = "failed"
        summary["error"] = f"{type(err).__name__}: {err}"
        summary["traceback"] = traceback.format_exc()
    summary["seconds"] = time.perf_counter() - began
    return summary


def _write_reports(out: Path, config: ReproduceConfig, summaries: list[dict[str, Any]]) -> None:
    """``report.md`` linking the studies' figures, and ``report.html`` embedding them."""
    parts = ["# softlabels: the three studies", "",
             f"Mode: {'full (real data)' if config.full else 'quick (embedded data)'}.", "",
             "| study | status | wall time | headline |", "|---|---|---|---|"]
    for s in summaries:
        parts.append(f"| {s['study']} | {s['status']} | {s['seconds']:.0f} s | "
                     + "<br>".join(s["headline"] or [s["error"] or ""]) + " |")
    for s in summaries:
        folder = Path(s["folder"])
        parts += ["", f"## {s['study']}", ""]
        report = folder / "report.md"
        if s["status"] != "ok":
            parts += [f"**Failed**: `{s['error']}`", ""]
        if report.exists():
            text = report.read_text(encoding="utf-8")
            text = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", text,
                          flags=re.MULTILINE)
            text = re.sub(r"!\[([^\]]*)\]\(([^)/]+)\)",
                          lambda m, sub=folder.name: f"![{m.group(1)}]({sub}/{m.group(2)})",
                          text)
            parts.append(text)
    text = "\n".join(parts) + "\n"
    write_text(out / "report.md", text)
    write_text(out / "report.html", _html(text, out))


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#222}table{border-collapse:collapse;font-size:0.85em;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "pre{background:#f5f5f5;padding:0.8em;overflow-x:auto;font-size:0.8em}")


def _html(text: str, out: Path) -> str:
    """A self-contained page: markdown rendered, every PNG inlined as a data URI."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])

    def inline(match: re.Match[str]) -> str:
        path = out / match.group(1)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>softlabels report</title><style>{_CSS}</style></head><body>\n"
            f"{body}\n</body></html>\n")

