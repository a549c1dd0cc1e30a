"""Command-line interface: ``softlabels <command> [options]``.

Every command shares ``--config``, ``--out``, ``--device``, ``--quick`` and ``--json``, and takes
a seed (``--seed``, or ``--seeds`` for a sweep over seeds); its other flags are the fields of
the command's config dataclass. The CLI only parses arguments,
runs the study's ``run(config)`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from . import __version__
from .configuration import add_config_arguments, build_config, load_config_file
from .engine import NonFiniteLossError
from .studies import distill as distill_study
from .studies import reproduce as reproduce_study
from .studies import robust as robust_study
from .studies import seg as seg_study
from .studies import train as train_study
from .studies.robust_report import attack_order, method_summary

__all__ = ["main"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its config class, ``--quick`` overrides, runner and summary printer."""

    help: str
    config_cls: type
    quick: dict[str, Any]
    run: Callable[..., list[dict[str, Any]]]
    summarize: Callable[[Any, list[dict[str, Any]], Console], None]


def _summarize_train(config: Any, rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=f"{config.dataset}: test accuracy by label mode (seed {config.seed})")
    for column in ("labels", "accuracy", "worst class", "NSD", "seconds"):
        table.add_column(column, justify="left" if column == "labels" else "right")
    for row in rows:
        table.add_row(row["labels"], f"{100 * row['accuracy']:.2f}%",
                      f"{100 * row['worst_class_accuracy']:.2f}%", f"{row['nsd']:.3f}",
                      f"{row['seconds']:.1f}")
    console.print(table)
    per_class = Table(title="per-class accuracy (%)")
    per_class.add_column("labels")
    num_classes = len(rows[0]["classwise_accuracy"])
    for c in range(num_classes):
        per_class.add_column(str(c), justify="right")
    for row in rows:
        per_class.add_row(row["labels"], *(f"{100 * a:.0f}" for a in row["classwise_accuracy"]))
    console.print(per_class)
    console.print(f"results: {config.out}/results.jsonl")


def _summarize_seg(config: Any, rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=f"{config.dataset}: test scores, mean ± std over seeds (%)")
    columns = (("miou_dataset", "mIoU^D"), ("miou_image", "mIoU^I"), ("miou_class", "mIoU^C"),
               ("miou_image_worst", "worst-5% mIoU^I"), ("ece_dataset", "ECE^D"))
    for title in ("loss", "labels", *(t for _, t in columns)):
        table.add_column(title, justify="left" if title in ("loss", "labels") else "right")
    for entry in seg_study.summary_rows(rows):
        table.add_row(entry["loss"], entry["labels"],
                      *(f"{entry[k][0]:.1f} ± {entry[k][1]:.1f}" for k, _ in columns))
    console.print(table)
    console.print(f"report: {config.out}/report.md, figure: {config.out}/predictions.png")


def _summarize_distill(config: Any, rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=f"{config.dataset}: student test accuracy, mean ± std over seeds (%)")
    for title in ("images", "labels", "IPC", "epoch", "T", "k", "best", "final", "seconds"):
        table.add_column(title, justify="left" if title in ("images", "labels") else "right")
    for row in rows:
        if row["phase"] != "test":
            continue
        table.add_row(row["images"], row["labels"], str(row["ipc"]),
                      *("" if row[k] is None else f"{row[k]:g}"
                        for k in ("expert_epoch", "temperature", "k")),
                      f"{100 * row['best_mean']:.1f} ± {100 * row['best_std']:.1f}",
                      f"{100 * row['final_mean']:.1f} ± {100 * row['final_std']:.1f}",
                      f"{row['seconds']:.0f}")
    console.print(table)
    console.print(f"report: {config.out}/report.md")


def _summarize_robust(config: Any, rows: list[dict[str, Any]], console: Console) -> None:
    summary = method_summary(rows)
    attacks = attack_order(list(rows[0]["scores"])) if rows else []
    table = Table(title=f"{config.dataset}: accuracy (%) / worst class (%) / NSD, "
                        "mean over seeds")
    table.add_column("method")
    for attack in attacks:
        table.add_column(attack, justify="right")
    for method, per_attack in summary.items():
        table.add_row(method, *(f"{100 * per_attack[a]['accuracy'][0]:.1f} / "
                                f"{100 * per_attack[a]['worst_class_accuracy'][0]:.1f} / "
                                f"{per_attack[a]['nsd'][0]:.3f}" for a in attacks))
    console.print(table)
    console.print(f"report: {config.out}/report.md")


def _summarize_reproduce(config: Any, rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="softlabels reproduce: " + ("full" if config.full else "quick"))
    for title in ("study", "status", "seconds", "headline"):
        table.add_column(title, justify="right" if title == "seconds" else "left")
    for row in rows:
        table.add_row(row["study"], row["status"], f"{row['seconds']:.0f}",
                      "\n".join(row["headline"]))
    console.print(table)
    console.print(f"report: {config.out}/report.md and {config.out}/report.html")


COMMANDS: dict[str, Command] = {
    "reproduce": Command(
        help="run the three studies (quick on embedded data, or --full) into one report",
        config_cls=reproduce_study.ReproduceConfig,
        quick=reproduce_study.QUICK,
        run=reproduce_study.run,
        summarize=_summarize_reproduce,
    ),
    "train": Command(
        help="train a model with hard, smoothed or teacher soft labels",
        config_cls=train_study.TrainStudyConfig,
        quick=train_study.QUICK,
        run=train_study.run,
        summarize=_summarize_train,
    ),
    "distill": Command(
        help="soft-label dataset distillation: real images + expert soft labels",
        config_cls=distill_study.DistillStudyConfig,
        quick=distill_study.QUICK,
        run=distill_study.run,
        summarize=_summarize_distill,
    ),
    "robust": Command(
        help="adversarial robustness distillation: ARD, RSLAD and anti-bias ABSLD",
        config_cls=robust_study.RobustStudyConfig,
        quick=robust_study.QUICK,
        run=robust_study.run,
        summarize=_summarize_robust,
    ),
    "seg": Command(
        help="segmentation with Jaccard/Dice metric losses and soft labels",
        config_cls=seg_study.SegStudyConfig,
        quick=seg_study.QUICK,
        run=seg_study.run,
        summarize=_summarize_seg,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``softlabels`` argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="softlabels",
        description="Learning with soft labels: dataset distillation, Jaccard metric losses "
                    "and anti-bias robust distillation on one core.")
    parser.add_argument("--version", action="version", version=f"softlabels {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help,
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        sub.add_argument("--config", default=None,
                         help="YAML or JSON file of config fields (flags override it)")
        sub.add_argument("--quick", action="store_true",
                         help="shrink the run to a few seconds (demos and tests)")
        sub.add_argument("--json", action="store_true",
                         help="print the result rows as JSON instead of tables")
        add_config_arguments(sub, command.config_cls)
    return parser


def _json_safe(value: Any) -> Any:
    """NaN (a class absent from the test set) becomes null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``softlabels`` console script; returns the exit code."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    command = COMMANDS[args.pop("command")]
    config_file, quick, as_json = args.pop("config"), args.pop("quick"), args.pop("json")
    console = Console(stderr=False)
    try:
        file_values = load_config_file(config_file) if config_file else {}
        config = build_config(command.config_cls, command.quick if quick else {},
                              file_values, args)
        rows = command.run(config)
    except (ValueError, TypeError, FileNotFoundError, NonFiniteLossError) as err:
        print(f"softlabels: error: {err}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(_json_safe(rows), indent=2))
    else:
        command.summarize(config, rows, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
