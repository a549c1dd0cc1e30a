"""``softlabels robust``: end to end in --quick mode, resuming, and bad settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from softlabels.cli import main
from softlabels.configuration import build_config
from softlabels.robust import ClassTemperatures
from softlabels.studies import robust
from softlabels.studies.reproduce import ReproduceConfig
from softlabels.studies.robust import RobustStudyConfig
from softlabels.studies.robust_presets import RECIPES
from softlabels.studies.robust_report import paired_differences
from softlabels.studies.robust_setup import load_parts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_one_row_per_method_and_seed(quick_robust: Path) -> None:
    rows = _rows(quick_robust)
    teacher = rows.pop(0)  # the first stage: the teacher, scored like the students
    assert teacher["phase"] == "teacher"
    assert teacher["teacher_method"] == "trades"
    assert teacher["scores"]["clean"]["accuracy"] > 0.8
    config = RobustStudyConfig(**robust.QUICK)
    assert {(r["method"], r["seed"]) for r in rows} == {
        (m, s) for m in config.methods for s in config.seeds}
    for row in rows:
        assert set(row["scores"]) == {"clean", "fgsm", "pgd5", "cw"}
        for score in row["scores"].values():
            assert 0.0 <= score["worst_class_accuracy"] <= score["accuracy"] <= 1.0
            assert len(score["classwise_accuracy"]) == 10
            assert score["nsd"] >= 0.0
        # An attack never raises accuracy above the clean one (same images, same model).
        assert row["scores"]["pgd5"]["accuracy"] <= row["scores"]["clean"]["accuracy"]
        assert row["selected_epoch"] in {int(e) for e in row["selection"]}
        assert set(row["selection"]) == {"2", "4", "6"}
    absld = [r for r in rows if r["method"] == "absld"]
    for row in absld:
        adv = row["temperatures"]["adv"]
        assert len(adv) == config.epochs + 1  # initial + one update per epoch
        assert adv[0] == [1.0] * 10
        assert all(config.tau_min <= t <= config.tau_max for t in adv[-1])
        assert adv[-1] != adv[0]


def test_absld_rows_log_the_class_risks_each_update_used(quick_robust: Path) -> None:
    config = RobustStudyConfig(**robust.QUICK)
    for row in _rows(quick_robust)[1:]:
        assert set(row["last_scores"]) == set(row["scores"])  # AutoAttack is off in --quick
        assert row["last_epoch"] == config.epochs
        if row["method"] != "absld":
            assert "class_risks" not in row
            continue
        risks = row["class_risks"]
        assert len(risks["adv"]) == len(risks["nat"]) == config.epochs
        # Replaying the logged risks through the update rule gives the logged temperatures.
        for term in ("adv", "nat"):
            replay = ClassTemperatures(10, 1.0, config.tau_min, config.tau_max,
                                       config.tau_rate)
            milestones = config.train_config(0, config.epochs).resolved_milestones()
            for epoch, risk in enumerate(risks[term], start=1):
                replay.update(torch.tensor(risk))
                if epoch in milestones:
                    replay.decay(0.1)
            torch.testing.assert_close(torch.tensor(replay.history, dtype=torch.float64),
                                       torch.tensor(row["temperatures"][term],
                                                    dtype=torch.float64))


def test_paired_differences_match_seed_by_seed() -> None:
    def row(method: str, seed: int, acc: float) -> dict[str, Any]:
        score = {"accuracy": acc, "worst_class_accuracy": acc / 2, "nsd": 0.1}
        return {"method": method, "seed": seed, "scores": {"clean": score, "pgd20": score}}

    rows = [{"phase": "teacher"}, row("rslad", 0, 0.5), row("rslad", 1, 0.6),
            row("absld", 0, 0.55), row("absld", 1, 0.5), row("absld", 2, 0.9)]
    pairs = paired_differences(rows)
    assert set(pairs) == {"absld"}
    assert set(pairs["absld"]) == {0, 1}
    assert pairs["absld"][0]["accuracy"] == pytest.approx(0.05)
    assert pairs["absld"][1]["worst_class_accuracy"] == pytest.approx(-0.05)
    assert pairs["absld"][1]["nsd"] == pytest.approx(0.0)


def test_report_figures_and_teacher(quick_robust: Path) -> None:
    report = (quick_robust / "report.md").read_text()
    assert "| method | clean Avg | clean Worst | clean NSD | fgsm Avg |" in report
    assert "| teacher (trades) |" in report
    for method in ("rslad", "absld", "ard"):
        assert f"| {method} |" in report
    assert "The same at the last epoch of every student" in report
    assert "PGD scores minus RSLAD's, seed by seed" in report
    for name in ("classwise_robust.png", "temperatures.png"):
        data = (quick_robust / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert f"]({name})" in report  # linked under its title


def test_rerun_redoes_nothing(quick_robust: Path) -> None:
    before = (quick_robust / "results.jsonl").read_text()
    checkpoints = {p: p.stat().st_mtime_ns for p in (quick_robust / "checkpoints").rglob("*.pt")}
    assert main(["robust", "--quick", "--out", str(quick_robust)]) == 0
    assert {p: p.stat().st_mtime_ns
            for p in (quick_robust / "checkpoints").rglob("*.pt")} == checkpoints  # no retraining
    assert (quick_robust / "results.jsonl").read_text() == before


@pytest.mark.parametrize(("changes", "message"), [
    ({"eps": -0.1}, "eps must be >= 0"),
    ({"train_steps": 0}, "steps must be >= 1"),
    ({"seeds": (-1,)}, "seeds must be >= 0, got -1"),
    ({"eval_steps": 0}, "eval_steps must be >= 1"),
    ({"tau_min": 3.0, "tau_max": 1.0}, "tau_min must be <= tau_max"),
    ({"methods": ()}, "methods must name at least one value"),
    ({"methods": ("rslad", "rslad")}, "must not repeat"),
    ({"methods": ("trades",)}, "methods"),
    ({"test_fraction": 0.0}, "test_fraction must be > 0.0 and < 1.0, got 0.0"),
    ({"select_every": 0}, "select_every must be >= 1"),
    # The bad input: eta <= 0, the product variant with one temperature vector.
    ({"tau_rate": 0.0}, "tau_rate must be > 0"),
    ({"tau_rate": -0.1}, "tau_rate must be > 0"),
    ({"methods": ("absld:tau_rate=0",)}, "tau_rate must be > 0"),
    ({"official_product": True, "shared_temperatures": True}, "choose one of them"),
    ({"methods": ("absld:official_product=true,shared_temperatures=true",)}, "choose one"),
    ({"per_class": 20, "val_per_class": 20}, "val_per_class must be < per_class"),
    ({"ard_temperature": 1e-25}, r"ard_temperature must lie in"),
    ({"kl_reduction": "sum"}, "kl_reduction"),
    ({"teacher_cache": True, "augment": "dsa"}, "enumerates crop and flip"),
])
def test_bad_config(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_config(RobustStudyConfig, robust.QUICK, changes)


def test_source_split_is_divided_into_train_and_test(tmp_path: Path) -> None:
    config = build_config(RobustStudyConfig, robust.QUICK, {"source_split": "test",
                                                           "out": str(tmp_path)})
    data = load_parts(config)
    train_ids = set(data.train.indices.tolist()) | set(data.val.indices.tolist())
    assert not train_ids & set(data.test.indices.tolist())
    assert len(train_ids) + len(data.test) == 359  # the digits test split


def test_a_balanced_subset_larger_than_the_smallest_class_fails_before_any_cell(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["robust", "--quick", "--per-class", "1000", "--out", str(out)]) == 2
    assert re.search(r"per_class=1000: every class must have 1000 images, but class \d has "
                     r"only \d+ \(the smallest\)", capsys.readouterr().err)
    assert not (out / "results.jsonl").exists()


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_build_valid_configs(name: str, tmp_path: Path) -> None:
    recipe = RECIPES[name]
    config = build_config(RobustStudyConfig, recipe.fields)
    assert config.dataset == "cifar10"
    assert (config.kl_reduction, config.rate_decay, config.eps) == ("mean", "before", 8 / 255)
    assert recipe.full is not None
    for layer in recipe.full[1]:
        build_config(RobustStudyConfig, layer, {"data_root": str(tmp_path)})
    assert ReproduceConfig(full=True, data_root=str(tmp_path), recipe=name,
                           studies=("robust",)).recipe == name


def test_the_presets_schedules() -> None:
    balanced = build_config(RobustStudyConfig, RECIPES["balanced"].fields)
    assert balanced.train_config(0, balanced.epochs).milestones == (22, 26)
    assert (balanced.per_class, balanced.val_per_class, balanced.test_per_class) == (300, 50,
                                                                                      100)
    paper = build_config(RobustStudyConfig, RECIPES["paper"].fields)
    assert paper.train_config(0, paper.epochs).milestones == (215, 260, 285)
    gpu = build_config(RobustStudyConfig, RECIPES["paper"].full[1][0])
    assert (gpu.precision, gpu.channels_last, gpu.per_class) == ("bf16", True, 1000)
    # One GPU preset per study: reproduce --full --recipe paper runs distill's and this one.
    assert ReproduceConfig(full=True, data_root="data", recipe="paper",
                           studies=("distill", "robust")).studies == ("distill", "robust")
