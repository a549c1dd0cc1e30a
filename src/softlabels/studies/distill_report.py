"""The report of ``softlabels distill``: tables, scaling-law fits, Pareto frontier, figures.

Everything here is computed from the rows of ``results.jsonl`` (plus the experts' test
accuracies), so a report can be rebuilt from a finished or interrupted run at any time.
Accuracies are the students' *best* test accuracy over the periodic evaluations (the official
protocol of Qin et al.) unless a table says *final* (the DC protocol).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from .._io import write_text
from ..distill import fit_scaling_law, label_robust_score, pareto_frontier
from .markdown import config_block, definitions, rule

__all__ = ["PAPER_CIFAR10", "chosen_epoch_row", "group_name", "write_report"]

#: Published CIFAR-10 ConvNet accuracies (%) by (images, labels) and IPC: random real images
#: with hard labels (DATM paper), the soft-label baseline and DM (Qin et al., Table 2).
PAPER_CIFAR10: dict[tuple[str, str], dict[int, float]] = {
    ("random", "hard"): {1: 15.4, 10: 31.0, 50: 50.6},
    ("random", "teacher"): {1: 21.1, 10: 46.3, 50: 62.1},
    ("dm", "hard"): {1: 26.0, 10: 48.9, 50: 63.0},
}

Row = dict[str, Any]


def group_name(row: Row, with_epoch: bool) -> str:
    """The label of a row's curve: images + labels (+ epoch, T, k where the mode uses them)."""
    parts = [row["images"], row["labels"]]
    if with_epoch and row.get("expert_epoch") is not None:
        parts.append(f"e{row['expert_epoch']}")
    if row.get("temperature") not in (None, 1.0):
        parts.append(f"T{row['temperature']:g}")
    if row.get("k") is not None:
        parts.append(f"k{row['k']}")
    return " ".join(parts)


def chosen_epoch_row(candidates: Sequence[Row]) -> Row:
    """The selection cell whose expert epoch ``--select-epoch`` picks: the best mean validation
    accuracy, the earlier epoch on a tie."""
    return max(candidates, key=lambda r: (r["best_mean"], -r["expert_epoch"]))


def write_report(folder: Path, config: Any, rows: Sequence[Row],
                 expert_accuracy: dict[int, float], *, figures: bool = False,
                 warnings: Sequence[str] = ()) -> None:
    """Write ``report.md`` (and, with ``figures``, the PNG figures) into ``folder``;
    ``warnings`` open it, in bold."""
    tests = [r for r in rows if r["phase"] == "test"]
    # The expert-epoch candidates; the selection's hard-label cells only set a baseline.
    selects = [r for r in rows if r["phase"] == "select" and r["labels"] != "hard"]
    hard_selects = {r["ipc"]: r for r in rows if r["phase"] == "select"
                    and r["labels"] == "hard"}
    with_epoch = not config.select_epoch
    made: list[str] = []
    if figures:
        made = _figures(folder, tests, selects, with_epoch)
    lines = [f"# Soft-label distillation on {config.dataset}", "",
             "Student test accuracy in %, mean ± sample std over seeds "
             f"{list(config.seeds)}; *best* = max over evaluations every {config.eval_every} "
             "epochs and the last, *final* = after the last epoch.", ""]
    lines += [f"**Warning: {text}.**" for text in warnings] + ([""] if warnings else [])
    lines += _main_table(tests, with_epoch, config.dataset == "cifar10")
    lines += _selection_table(selects, hard_selects)
    lines += _expert_table(expert_accuracy)
    lines += _scaling_table(tests, with_epoch)
    lines += _pareto_table(tests, with_epoch)
    lines += _robust_score_table(tests, expert_accuracy, config.expert_epochs)
    lines += _learned_table(tests)
    lines += [f"![{_FIGURE_TITLES[name]}]({name})" for name in made]
    lines += ["", "Measures:", "", *definitions("best / final"), ""]
    lines += config_block(config)
    write_text(folder / "report.md", "\n".join(lines))


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _groups(rows: Sequence[Row], with_epoch: bool) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(group_name(row, with_epoch), []).append(row)
    return groups


def _main_table(tests: Sequence[Row], with_epoch: bool, paper: bool) -> list[str]:
    if not tests:
        return ["No test cells have finished yet.", ""]
    ipcs = sorted({r["ipc"] for r in tests})
    header = "| images, labels | " + " | ".join(f"IPC {i} best / final" for i in ipcs) + " |"
    lines = ["## Accuracy by IPC", "", header, rule("l" + "r" * len(ipcs))]
    for name, members in _groups(tests, with_epoch).items():
        by_ipc = {r["ipc"]: r for r in members}
        cells = []
        for ipc in ipcs:
            row = by_ipc.get(ipc)
            if row is None:
                cells.append("")
                continue
            text = f"{_pct(row['best_mean'], row['best_std'])} / " \
                   f"{_pct(row['final_mean'], row['final_std'])}"
            if not with_epoch and row.get("expert_epoch") is not None:
                text += f" (e{row['expert_epoch']})"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if paper:
        lines += ["", "Published CIFAR-10 numbers (ConvNet, %): "
                  + "; ".join(f"{i} {lab}: " + ", ".join(f"IPC {k} {v}" for k, v in d.items())
                              for (i, lab), d in PAPER_CIFAR10.items())]
    return [*lines, ""]


def _selection_table(selects: Sequence[Row], hard: dict[int, Row]) -> list[str]:
    if not selects:
        return []
    lines = ["## Expert epoch selection (validation split)", "",
             "| IPC | expert epoch | val best | chosen |", rule("rrrl")]
    for ipc in sorted({r["ipc"] for r in selects}):
        members = sorted((r for r in selects if r["ipc"] == ipc),
                         key=lambda r: r["expert_epoch"])
        best = chosen_epoch_row(members)
        for row in members:
            lines.append(f"| {ipc} | {row['expert_epoch']} | "
                         f"{_pct(row['best_mean'], row['best_std'])} | "
                         f"{'yes' if row is best else ''} |")
        if ipc in hard:  # the baseline every expert epoch should beat
            lines.append(f"| {ipc} | hard labels | "
                         f"{_pct(hard[ipc]['best_mean'], hard[ipc]['best_std'])} | |")
    return [*lines, ""]


def _expert_table(expert_accuracy: dict[int, float]) -> list[str]:
    if not expert_accuracy:
        return []
    lines = ["## Expert test accuracy", "", "| epoch | accuracy |", rule("rr")]
    lines += [f"| {e} | {100 * a:.1f} |" for e, a in sorted(expert_accuracy.items())]
    return [*lines, ""]


def _scaling_table(tests: Sequence[Row], with_epoch: bool) -> list[str]:
    lines = ["## Scaling law acc = a - b * IPC^(-c) (best accuracy, every seed a point)", "",
             "| images, labels | a | b | c | RMSE | note |", rule("lrrrrl")]
    fitted = 0
    for name, members in _groups(tests, with_epoch).items():
        ipcs = [r["ipc"] for r in members for _ in r["best"]]
        accs = [a for r in members for a in r["best"]]
        if len(set(ipcs)) < 3:
            continue
        try:
            fit = fit_scaling_law(ipcs, accs)
        except RuntimeError as err:
            lines.append(f"| {name} | fit failed: {err} | | | | |")
            continue
        fitted += 1
        note = f"{', '.join(fit.at_bound)} at a bound: not determined by these IPCs" \
            if fit.at_bound else ""
        lines.append(f"| {name} | {fit.a:.3f} | {fit.b:.3f} | {fit.c:.3f} | {fit.rmse:.4f} "
                     f"| {note} |")
    if not fitted:
        return ["Scaling law: needs at least 3 IPC values per curve.", ""]
    return [*lines, ""]


def _pareto_table(tests: Sequence[Row], with_epoch: bool) -> list[str]:
    if not tests:
        return []
    lines = ["## Pareto frontier: best accuracy against dataset size", "",
             "Bytes = uint8 images + labels stored compactly (hard: 1 byte, top-k: fp16 values "
             "+ class ids, other soft labels: fp16) or every label as fp32.", ""]
    for measure, title in (("num_images", "images"), ("bytes", "bytes"),
                           ("bytes_fp32", "bytes with fp32 labels")):
        measured = [r for r in tests if measure in r]  # rows of older versions may lack it
        if not measured:
            continue
        frontier = pareto_frontier([r[measure] for r in measured],
                                   [r["best_mean"] for r in measured])
        lines += [f"Frontier by {title}:", "", f"| {title} | accuracy | cell |", rule("rrl")]
        for index in frontier:
            row = measured[index]
            lines.append(f"| {row[measure]} | {_pct(row['best_mean'], row['best_std'])} | "
                         f"{group_name(row, True)} IPC {row['ipc']} |")
        lines.append("")
    return lines


def _robust_score_table(tests: Sequence[Row], expert_accuracy: dict[int, float],
                        last_epoch: int) -> list[str]:
    """DD-Ranking's LRS of the DM images against random images, per IPC and label mode."""
    real = expert_accuracy.get(last_epoch)
    index = {(r["images"], r["ipc"], group_name(r, True).split(" ", 1)[1]): r for r in tests}
    lines = ["## DD-Ranking label-robust score of DM images", "",
             f"Acc(real, hard) = the final expert's {100 * (real or 0):.1f}%.", "",
             "| IPC | labels | HLR | IOR | LRS |", rule("rlrrr")]
    count = 0
    for (images, ipc, labels), row in sorted(index.items()):
        dm_hard = index.get(("dm", ipc, "hard"))
        random_same = index.get(("random", ipc, labels))
        if images != "dm" or real is None or dm_hard is None or random_same is None:
            continue
        score = label_robust_score(real, dm_hard["best_mean"], row["best_mean"],
                                   random_same["best_mean"])
        count += 1
        lines.append(f"| {ipc} | {labels} | {100 * score['hlr']:.1f} | "
                     f"{100 * score['ior']:.1f} | {score['lrs']:.3f} |")
    return [*lines, ""] if count else []


def _learned_table(tests: Sequence[Row]) -> list[str]:
    learned = [r for r in tests if r["labels"] == "learned" and "js_to_expert" in r]
    if not learned:
        return []
    lines = ["## Learned labels: mean Jensen-Shannon distance to expert labels", "",
             "| images | IPC | outer loss first → last | start → learned, by expert epoch | "
             "closest epoch |", rule("lrlll")]
    for row in learned:
        pairs = ", ".join(f"e{e}: {row['js_init_to_expert'][e]:.3f} → {v:.3f}"
                          for e, v in row["js_to_expert"].items())
        closest = min(row["js_to_expert"], key=lambda e: row["js_to_expert"][e])
        lines.append(f"| {row['images']} | {row['ipc']} | {row['learned_loss_first']:.3f} → "
                     f"{row['learned_loss_last']:.3f} | {pairs} | {closest} |")
    return [*lines, ""]


# --------------------------------------------------------------------------- figures


_FIGURE_TITLES = {
    "acc_vs_ipc.png": "Student test accuracy against images per class",
    "expert_epoch.png": "Expert epoch selection on the validation split",
    "pareto.png": "Accuracy against the distilled set's size (Pareto frontier)",
    "topk_heatmap.png": "Top-k teacher labels: test accuracy (%) by k and IPC",
}


def _figures(folder: Path, tests: Sequence[Row], selects: Sequence[Row],
             with_epoch: bool) -> list[str]:
    """Draw every figure the rows allow; returns the file names written."""
    made = []
    for name, draw in (("acc_vs_ipc.png", lambda ax: _draw_acc(ax, tests, with_epoch)),
                       ("expert_epoch.png", lambda ax: _draw_epochs(ax, selects)),
                       ("pareto.png", lambda ax: _draw_pareto(ax, tests)),
                       ("topk_heatmap.png", lambda ax: _draw_topk(ax, tests))):
        fig = Figure(figsize=(6, 4.4))
        ax = fig.subplots()
        if draw(ax):
            ax.set_title(_FIGURE_TITLES[name], fontsize=10)
            fig.tight_layout()
            fig.savefig(folder / name, dpi=100)
            made.append(name)
    return made


def _draw_acc(ax: Any, tests: Sequence[Row], with_epoch: bool) -> bool:
    if not tests:
        return False
    # The paper's comparison (hard vs teacher labels) solid in strong colours, the ablations
    # dashed in others, so that up to 4 + 14 curves stay apart.
    strong = list(matplotlib.colormaps["tab10"].colors)
    palettes = {True: strong[:4], False: strong[4:] + list(matplotlib.colormaps["Dark2"].colors)}
    used = {True: 0, False: 0}
    for name, members in _groups(tests, with_epoch).items():
        members = sorted(members, key=lambda r: r["ipc"])
        main = members[0]["labels"] in ("hard", "teacher")
        color = palettes[main][used[main] % len(palettes[main])]
        used[main] += 1
        ax.errorbar([r["ipc"] for r in members], [100 * r["best_mean"] for r in members],
                    yerr=[100 * r["best_std"] for r in members], marker="o", capsize=3,
                    label=name, color=color,
                    linestyle="-" if main else "--", linewidth=1.6 if main else 0.9,
                    markersize=5 if main else 3)
    _ipc_ticks(ax, sorted({r["ipc"] for r in tests}))
    ax.set_xlabel("images per class (IPC)")
    ax.set_ylabel("student test accuracy (%), best")
    ax.legend(fontsize=6, ncol=2, title="images, labels", title_fontsize=7)
    return True


def _ipc_ticks(ax: Any, ipcs: Sequence[int]) -> None:
    """A log axis labelled at exactly the IPCs of the sweep (5 and 50 included), not only at
    the powers of ten."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ipcs))
    ax.xaxis.set_major_formatter(FixedFormatter([str(i) for i in ipcs]))
    ax.xaxis.set_minor_locator(NullLocator())


def _draw_epochs(ax: Any, selects: Sequence[Row]) -> bool:
    if not selects:
        return False
    for ipc in sorted({r["ipc"] for r in selects}):
        members = sorted((r for r in selects if r["ipc"] == ipc),
                         key=lambda r: r["expert_epoch"])
        ax.plot([r["expert_epoch"] for r in members], [100 * r["best_mean"] for r in members],
                marker="o", label=f"IPC {ipc}")
        best = chosen_epoch_row(members)
        ax.plot([best["expert_epoch"]], [100 * best["best_mean"]], marker="*", markersize=14,
                color="black")
    ax.set_xlabel("expert epoch (★ = chosen)")
    ax.set_ylabel("student validation accuracy (%), best")
    ax.legend(fontsize=7, title="images per class", title_fontsize=7)
    return True


def _draw_pareto(ax: Any, tests: Sequence[Row]) -> bool:
    if not tests:
        return False
    sizes = [r["bytes"] for r in tests]
    accs = [100 * r["best_mean"] for r in tests]
    kinds = sorted({r["labels"] for r in tests})
    for kind in kinds:
        ax.scatter([s for s, r in zip(sizes, tests, strict=True) if r["labels"] == kind],
                   [a for a, r in zip(accs, tests, strict=True) if r["labels"] == kind],
                   s=14, label=kind)
    frontier = pareto_frontier(sizes, accs)
    ax.step([sizes[i] for i in frontier], [accs[i] for i in frontier], where="post",
            color="black", linewidth=1, label="frontier")
    ax.set_xscale("log")
    ax.set_xlabel("distilled set size (bytes: uint8 images + labels)")
    ax.set_ylabel("student test accuracy (%), best")
    ax.legend(fontsize=6, title="labels", title_fontsize=7)
    return True


def _draw_topk(ax: Any, tests: Sequence[Row]) -> bool:
    """Rows k = 0 (hard labels), the top-k cells, and all classes (the expert labels)."""
    cells = [r for r in tests if r["labels"] == "topk" and r["images"] == "random"]
    if not cells:
        return False
    ks = sorted({r["k"] for r in cells})
    ipcs = sorted({r["ipc"] for r in cells})
    rows = ["0 (hard)", *[str(k) for k in ks], "all"]
    grid = np.full((len(rows), len(ipcs)), math.nan)
    for r in cells:
        grid[rows.index(str(r["k"])), ipcs.index(r["ipc"])] = 100 * r["best_mean"]
    for r in tests:
        if r["images"] != "random" or r["ipc"] not in ipcs:
            continue
        # "all" only from the expert labels the top-k cells were cut from.
        same_expert = any(c["ipc"] == r["ipc"] and c["expert_epoch"] == r.get("expert_epoch")
                          and c["temperature"] == r.get("temperature") for c in cells)
        if r["labels"] == "hard" or (r["labels"] == "teacher" and same_expert):
            row = rows[0] if r["labels"] == "hard" else rows[-1]
            grid[rows.index(row), ipcs.index(r["ipc"])] = 100 * r["best_mean"]
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(ipcs)), [str(i) for i in ipcs])
    ax.set_yticks(range(len(rows)), rows)
    middle = np.nanmin(grid) + 0.6 * (np.nanmax(grid) - np.nanmin(grid))
    for (i, j), value in np.ndenumerate(grid):
        if not math.isnan(value):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7,
                    color="black" if value > middle else "white")
    ax.set_xlabel("images per class")
    ax.set_ylabel("k (top-k label entries kept)")
    ax.figure.colorbar(image, ax=ax, label="test accuracy (%)")
    return True
