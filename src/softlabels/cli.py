"""Command-line interface: ``softlabels <command> [options]``.

One subcommand per registered study (its flags are the fields of its config dataclass, plus
the executor flags), ``reproduce`` (the studies in one report), ``report`` (rebuild a run
folder's report from its rows), ``export`` (one distillation cell as a dataset file) and
``list`` (the names flags accept). The CLI only parses, runs and prints the tables it is
given; it holds no study-specific code.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from . import __version__
from .configuration import add_config_arguments, build_config, load_config_file, upgrade_fields
from .distilled import FORMATS
from .engine import NonFiniteLossError
from .results import Table, json_safe
from .studies import reproduce
from .studies.catalog import CATALOGS, catalog
from .studies.executors import ExecutorConfig
from .studies.export import export_cell
from .studies.registry import STUDIES, get_study
from .studies.run_folder import read_rows, read_run_config
from .studies.sweep import run_sweep

__all__ = ["build_parser", "main"]

# What a user's input causes; each message names the value or the path. A path that is a file
# where a folder belongs (or the reverse), or that may not be written, is one of them.
_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError,
           IsADirectoryError, PermissionError, ImportError, NonFiniteLossError)


def _common_flags(sub: argparse.ArgumentParser, config_cls: type) -> None:
    sub.add_argument("--config", default=None,
                     help="YAML or JSON file of config fields (flags override it)")
    sub.add_argument("--quick", action="store_true",
                     help="shrink the run to a few seconds (demos and tests)")
    sub.add_argument("--json", action="store_true",
                     help="print the result rows as JSON instead of tables")
    sub.add_argument("--overwrite", action="store_true",
                     help="start afresh in --out: a run already there is renamed to "
                          "<out>.replaced-<date>-<time> first (nothing is deleted); without "
                          "it a rerun resumes, and a different config is refused")
    add_config_arguments(sub, config_cls)
    group = sub.add_argument_group("executor (where the cells run; does not change results)")
    add_config_arguments(group, ExecutorConfig)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    """The ``softlabels`` argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="softlabels",
        description="Learning with soft labels: dataset distillation, Jaccard metric losses "
                    "and anti-bias robust distillation on one core.")
    parser.add_argument("--version", action="version", version=f"softlabels {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    formatter = argparse.ArgumentDefaultsHelpFormatter
    sub = commands.add_parser("reproduce", help=reproduce.HELP, description=reproduce.HELP,
                              formatter_class=formatter)
    _common_flags(sub, reproduce.ReproduceConfig)
    for study in STUDIES.values():
        sub = commands.add_parser(study.name, help=study.help, description=study.help,
                                  formatter_class=formatter)
        if study.recipes:
            sub.add_argument("--recipe", default=None, choices=list(study.recipes),
                             help="a named preset, applied after --quick and before --config "
                                  "and flags: " + "; ".join(f"{name}: {r.help}" for name, r
                                                           in study.recipes.items()))
        _common_flags(sub, study.config_cls)
    sub = commands.add_parser("report", help="rebuild a run folder's report from its "
                                             "config.json and results.jsonl")
    sub.add_argument("folder", help="the run folder")
    sub.add_argument("--study", default=None, choices=list(STUDIES),
                     help="the study of the folder (read from config.json when recorded)")
    sub = commands.add_parser(
        "export", help="write one cell of a distill run as a distilled dataset file",
        description="Write the images and soft labels of one finished distill cell, with "
                    "class names, normalisation and provenance, as .npz (load_dataset('npz') "
                    "reads x, y) or .safetensors; softlabels.distilled.load_distilled reads "
                    "all of it and ddranking_inputs hands it to DD-Ranking.")
    sub.add_argument("folder", help="the distill run folder")
    sub.add_argument("--cell", required=True,
                     help="cell name, e.g. test-random-ipc10-teacher-e5-T1 (a wrong name "
                          "lists the cells)")
    sub.add_argument("--format", default="npz", choices=FORMATS, help="file format")
    sub.add_argument("--out", default=None,
                     help="file to write (default: FOLDER/exports/CELL.FORMAT)")
    sub = commands.add_parser("list", help="list the models, datasets, losses, label modes or "
                                           "studies the flags accept")
    sub.add_argument("what", choices=list(CATALOGS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``softlabels`` console script; returns the exit code."""
    # Deprecation messages read as the CLI's own, not as a Python source location.
    before = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = before


def _format_warning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, line: str | None = None) -> str:
    return f"softlabels: warning: {message}\n"


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    if command is None:
        parser.print_help()
        return 0
    console = Console(stderr=False)
    try:
        if command == "report":
            _rebuild_report(args["folder"], args["study"], console)
            return 0
        if command == "export":
            path = export_cell(args["folder"], args["cell"], args["format"], args["out"])
            console.print(f"exported {args['cell']}: {path}")
            return 0
        if command == "list":
            print_tables(catalog(args["what"]), console)
            return 0
        config_file, quick, as_json = args.pop("config"), args.pop("quick"), args.pop("json")
        overwrite = args.pop("overwrite")
        executor_names = set(ExecutorConfig.__dataclass_fields__)
        executor = build_config(ExecutorConfig,
                                {k: v for k, v in args.items() if k in executor_names})
        fields = {k: v for k, v in args.items() if k not in executor_names}
        file_values = load_config_file(config_file) if config_file else {}
        if command == "reproduce":
            config = build_config(reproduce.ReproduceConfig, file_values, fields)
            results = reproduce.run(config, executor, overwrite=overwrite)
        else:
            study = get_study(command)
            recipe = fields.pop("recipe", None)
            config = build_config(study.config_cls, dict(study.quick) if quick else {},
                                  dict(study.recipes[recipe].fields) if recipe else {},
                                  file_values, fields)
            results = run_sweep(study, config, executor, overwrite=overwrite)
    except _ERRORS as err:
        print(f"softlabels: error: {err}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(json_safe(results.rows), indent=2))
    else:
        print_tables(results.tables, console)
    return 0


def print_tables(tables: Sequence[Table], console: Console) -> None:
    """Print every table (a study's ``Results.tables``, a catalog)."""
    for table in tables:
        console.print(_rich(table))
        for note in table.notes:
            console.print(note, markup=False, highlight=False)


def _rich(table: Table) -> RichTable:
    # Cells are plain text: "softlabels[timm]" must not be read as rich markup.
    shown = RichTable(title=escape(table.title))
    for number, column in enumerate(table.columns):
        shown.add_column(escape(column),
                         justify="left" if number < table.text_columns else "right")
    for row in table.rows:
        shown.add_row(*(escape(cell) for cell in row))
    return shown


def _rebuild_report(folder: str, study_name: str | None, console: Console) -> None:
    stored = read_run_config(folder)
    name = study_name or stored.get("study")
    if name is None:
        raise ValueError(f"{folder!r} does not record its study (an older run); pass --study")
    study = get_study(name)
    # Spellings of the previous release are read as they are, without a warning: the user
    # did not type them.
    config: Any = build_config(study.config_cls,
                               upgrade_fields(study.config_cls, stored["config"], warn=False))
    rows = read_rows(study.config_cls, folder)
    study.report(config, Path(folder), rows, True)
    console.print(f"report: {folder}/report.md ({len(rows)} rows)")


if __name__ == "__main__":
    sys.exit(main())
