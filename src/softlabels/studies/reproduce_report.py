"""The combined report of ``softlabels reproduce``: ``report.md`` and a self-contained
``report.html``.

It opens with the claims table (:mod:`softlabels.studies.claims`): each paper's claim, the
paper's number, ours from the committed full runs, the verdict, and this run's numbers (for
the quick run, a smoke test on embedded data). Then the measures' definitions, one line per
study and each study's own report. Wall times are the cells' own ``seconds`` from
``results.jsonl``, so a resumed run reports the time its cells took, not the seconds the
resume spent finding them done.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import markdown

from .._io import write_text
from .claims import CLAIMS, RUNS, VERDICTS, committed, show
from .markdown import definitions, rule
from .run_folder import read_rows

__all__ = ["cell_seconds", "write_reports"]

_TERMS = ("mIoU^D", "mIoU^I", "mIoU^C", "worst-5% mIoU^I", "ECE", "Worst", "NSD",
          "best / final")


def cell_seconds(study: str, folder: Path) -> float:
    """Seconds the finished cells of ``folder`` took, summed (0 without rows)."""
    if study not in RUNS or not (folder / "results.jsonl").exists():
        return 0.0
    return sum(float(r.get("seconds", 0.0)) for r in read_rows(RUNS[study][1], folder))


def _claims(full: bool, summaries: Sequence[dict[str, Any]]) -> list[str]:
    ran = {s["study"]: Path(s["folder"]) for s in summaries if s["status"] == "ok"}
    this_run = ("this run (full)" if full else
                "this quick run: smoke test on embedded data, not evidence")
    lines = ["## What reproduced", "",
             "Ours = the committed full runs of `docs/runs` (CIFAR-10 distillation, CamVid "
             "segmentation, MNIST robust distillation, on two CPU cores; "
             "`softlabels reproduce --full` reruns them). Accuracies and mIoU in %, mean "
             "over seeds (the best student accuracy for distillation, the PGD-20 scores of "
             "the selected students for robustness).", "",
             f"| study | claim | paper | ours (committed full runs) | verdict | {this_run} |",
             rule("llllll")]
    values = committed()
    for claim in CLAIMS:
        rows = (read_rows(RUNS[claim.study][1], ran[claim.study]) if claim.study in ran
                else None)
        here = show(claim, claim.measure(rows)) if rows is not None else "not run"
        lines.append(f"| {claim.study} | {claim.text} | {claim.paper} | "
                     f"{show(claim, values.get(claim.key))} | **{claim.verdict}** | {here} |")
    return [*lines, "", "Measures:", "", *definitions(*_TERMS), ""]


def write_reports(out: Path, full: bool, summaries: Sequence[dict[str, Any]]) -> None:
    """``report.md`` linking the studies' figures, and ``report.html`` embedding them."""
    parts = ["# softlabels: what reproduced", "",
             f"Mode: {'full (real data)' if full else 'quick (embedded data)'}.", ""]
    parts += _claims(full, summaries)
    parts += ["## The studies in this run", "",
              "| study | status | cell time | headline |", rule("llrl")]
    for s in summaries:
        parts.append(f"| {s['study']} | {s['status']} | {s['cell_seconds']:.0f} s | "
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
        "padding:0 1em;color:#222;line-height:1.4}table{border-collapse:collapse;"
        "font-size:0.85em;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;"
        "vertical-align:top}th{background:#f3f3f3}img{max-width:100%;display:block;"
        "margin:0.5em 0}pre{background:#f5f5f5;padding:0.8em;overflow-x:auto;"
        "font-size:0.8em}details{margin:0.5em 0}summary{cursor:pointer;color:#555}"
        ".verdict-0{color:#1a7f37}.verdict-1{color:#9a6700}.verdict-2{color:#cf222e}")


def _html(text: str, out: Path) -> str:
    """A self-contained page: markdown rendered, every PNG inlined as a data URI."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code", "md_in_html"])

    def inline(match: re.Match[str]) -> str:
        path = out / match.group(1)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    for number, verdict in enumerate(VERDICTS):  # green, amber, red
        body = body.replace(f"<strong>{verdict}</strong>",
                            f'<strong class="verdict-{number}">{verdict}</strong>')
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>softlabels: what reproduced</title><style>{_CSS}</style></head><body>\n"
            f"{body}\n</body></html>\n")
