"""The seg study's recipe fields, presets, eps selection and training splits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from softlabels.cli import main
from softlabels.configuration import build_config
from softlabels.engine import TrainConfig
from softlabels.studies import seg, seg_cells
from softlabels.studies.registry import run_study
from softlabels.studies.reproduce import ReproduceConfig, _study_configs
from softlabels.studies.seg_presets import RECIPES
from softlabels.studies.sweep import Cell

TINY = {"epochs": 1, "teacher_epochs": 1, "model_args": ("base_width=4",),
        "teacher_args": ("base_width=4",), "batch_size": 64, "figure_images": 0,
        "device": "cpu"}


def test_the_defaults_train_as_before_the_recipe_fields() -> None:
    config = seg.SegStudyConfig(crop=128)
    assert config.train_config(3) == TrainConfig(
        epochs=30, batch_size=8, optimizer="adamw", lr=3e-3, weight_decay=1e-4,
        schedule="cosine", seed=3, save_interval=10.0)
    train = seg_cells._split("digit_scenes", None, False, "test")
    assert seg_cells._seg_loss(config, train, "ce+jml").smooth == 1e-3
    # The same steps in the same order: a resumed run draws the same augmentation.
    assert repr(seg_cells._augment(config, train)) == (
        "PairedAugment(PairedFlip(p=0.5), PairedRandomCrop(size=(128, 128), "
        "pad_value_image=0.0, pad_value_mask=255))")
    cells = [c for stage in seg.plan(config, []) for c in stage.cells]
    assert [c.name for c in cells][:2] == ["teacher-s0", "ce-hard-s0"]
    assert all("smoothing" not in c.key for c in cells)


def test_the_converge_recipe_sets_the_official_recipe() -> None:
    config = build_config(seg.SegStudyConfig, RECIPES["converge"].fields)
    recipe = config.train_config(0)
    assert (recipe.schedule, recipe.schedule_unit, recipe.warmup, recipe.decay_norms,
            recipe.weight_decay, recipe.per_step) == ("poly", "step", 0.01, False, 0.01, True)
    assert config.teacher_epochs == 2 * config.epochs
    assert config.train_splits == ("train", "val")
    assert config.val_split == "val"
    assert config.select_smoothing == (0.1, 0.25, 0.5)
    train = seg_cells._split("digit_scenes", None, False, "test")
    assert repr(seg_cells._augment(config, train)).startswith(
        "PairedAugment(PairedFlip(p=0.5), PairedRandomScale(scale_range=(0.75, 1.5)), "
        "PairedRandomCrop(size=(128, 128)")
    assert seg_cells._seg_loss(config, train, "ce+jml").smooth == 1.0
    sizes = [sum(p.numel() for p in seg.build_model("unet", args, train, 0).parameters())
             for args in (config.model_args, config.teacher_args)]
    assert [round(s / 1e6, 1) for s in sizes] == [1.8, 7.2]
    gpu = build_config(seg.SegStudyConfig, RECIPES["paper"].fields)
    differ = {f.name for f in dataclasses.fields(config)
              if getattr(config, f.name) != getattr(gpu, f.name)}
    assert differ == {"out", "device", "precision", "channels_last"}


def _grid(layers: tuple) -> list[tuple[str, str, int]]:
    """(loss, labels, seed) of every student the layers plan, in one folder."""
    cells = set()
    for layer in layers:
        config = build_config(seg.SegStudyConfig, layer)
        rows = [{**c.key, "miou_dataset": 0.5} for c in seg.plan(config, [])[0].cells]
        cells |= {(c.key["loss"], c.key["labels"], c.key["seed"])
                  for c in seg.plan(config, rows)[-1].cells}
    return sorted(cells)


@pytest.mark.parametrize("name", ["converge", "paper"])
def test_each_recipe_reproduces_the_grid_of_the_issue_and_no_more(name: str) -> None:
    dataset, layers = RECIPES[name].full
    expected = sorted([(loss, "hard", s) for loss in ("ce", "ce+jml") for s in range(3)]
                      + [(loss, labels, s) for loss in ("ce", "ce+jml", "ce+sjl")
                         for labels in ("smooth", "teacher") for s in range(3)])
    assert dataset == "camvid"
    assert _grid(layers) == expected
    # The parts share one folder: only the sweep fields differ between them.
    first, *others = (dataclasses.asdict(build_config(seg.SegStudyConfig, layer))
                      for layer in layers)
    for other in others:
        assert {k for k in first if first[k] != other[k]} <= set(seg.STUDY.sweep_fields)


def test_reproduce_runs_the_seg_recipes(tmp_path: Path) -> None:
    config = ReproduceConfig(full=True, data_root=str(tmp_path), recipe="paper",
                             studies=("distill", "seg"))
    configs = _study_configs(config, "seg", tmp_path / "out" / "seg")
    assert [c.labels for c in configs] == [("hard",), ("smooth",), ("teacher",)]
    assert {(c.epochs, c.precision, c.data_root) for c in configs} == {
        (RECIPES["paper"].fields["epochs"], "bf16", str(tmp_path / "camvid"))}
    assert ReproduceConfig(full=True, data_root=str(tmp_path), recipe="converge",
                           studies=("seg",)).recipe == "converge"


def _selection_config(**fields: object) -> seg.SegStudyConfig:
    return seg.SegStudyConfig(**{"labels": ("hard", "smooth", "teacher"), "seeds": (0, 1),
                                 "select_smoothing": (0.1, 0.25, 0.5), "val_split": "holdout",
                                 **fields})


def test_the_plan_waits_for_the_selection_then_uses_its_eps() -> None:
    config = _selection_config()
    select, teachers, students = seg.plan(config, [])
    assert [c.name for c in select.cells] == [
        "select-smooth-eps0.1-s0", "select-smooth-eps0.25-s0", "select-smooth-eps0.5-s0"]
    assert (len(teachers.cells), teachers.pending) == (0, 2)
    assert [c.name for c in students.cells] == ["ce-hard-s0", "ce_jml-hard-s0", "ce-hard-s1",
                                                "ce_jml-hard-s1"]
    assert students.pending == 8
    rows = [{**c.key, "miou_dataset": score} for c, score in zip(select.cells, (0.3, 0.4, 0.4),
                                                                 strict=True)]
    assert seg.chosen_smoothing(config, rows) == 0.25  # the first of a tie
    _, teachers, students = seg.plan(config, rows)
    assert teachers.pending == students.pending == 0
    assert [c.name for c in teachers.cells] == ["teacher-s0-eps0.25", "teacher-s1-eps0.25"]
    smoothed = [c for c in students.cells if c.key["labels"] != "hard"]
    assert len(smoothed) == 8
    assert all(c.key["smoothing"] == 0.25 for c in smoothed)
    assert "ce_jml-smooth-s1-eps0.25" in [c.name for c in smoothed]
    # Hard labels alone need no eps: no selection cells.
    assert seg.plan(_selection_config(labels=("hard",)), [])[0].cells == ()


@pytest.mark.parametrize(("fields", "message"), [
    ({"scale": (1.5,)}, "scale must be two factors"),
    ({"scale": (1.5, 0.75)}, "LOW <= HIGH"),
    ({"scale": (0.0, 1.0)}, "scale must be > 0"),
    ({"warmup": 1.0}, "warmup must be"),
    ({"schedule": "linear"}, "schedule must be one of"),
    ({"train_splits": ("test",)}, "train_splits must name splits other than test"),
    ({"train_splits": ("val",)}, "got 'val'"),  # digit_scenes has train and test only
    ({"val_split": "val"}, "val_split must be holdout or a split"),
    ({"dataset": "camvid", "val_split": "test"}, "val_split must be holdout"),
    ({"dataset": "camvid", "train_splits": ("val",), "val_split": "val"}, "leaves nothing"),
    ({"dataset": "camvid", "train_splits": ("train", "val"), "stream": True},
     "--stream reads one training split"),
    ({"dataset": "camvid", "stream": True}, "holds images out in memory"),
    ({"metric_smooth": -1.0}, "metric_smooth must be >= 0"),
])
def test_bad_recipe_fields_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _selection_config(**fields)


def test_the_holdout_splits_the_training_images() -> None:
    config = _selection_config()
    train, val = seg_cells.selection_data(config)
    assert (len(train), len(val)) == (205, 51)  # a fifth of the 256 scenes
    assert set(train.indices.tolist()).isdisjoint(val.indices.tolist())
    assert seg_cells.training_data(config) is seg_cells._split("digit_scenes", None, False,
                                                               "train")


def test_camvid_trains_on_train_and_val(test_data_root: Path) -> None:
    root = test_data_root / "camvid"
    if not root.is_dir():
        pytest.skip("no CamVid copy in the test data")
    config = seg.SegStudyConfig(dataset="camvid", data_root=str(root),
                                train_splits=("train", "val"), select_smoothing=(0.5,))
    data = seg_cells.training_data(config)
    train, val = seg_cells.selection_data(config)
    assert (len(data), len(train), len(val), len(seg_cells.test_data(config))) == (
        468, 367, 101, 233)
    assert torch.equal(data.masks[367:], val.masks)


def _row(folder: Path, **key: object) -> dict:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return next(r for r in rows if all(r.get(k) == v for k, v in key.items()))


def test_a_sweep_selects_eps_on_the_holdout_and_resumes_alike(tmp_path: Path) -> None:
    fields = {**TINY, "losses": ("ce+jml",), "labels": ("hard", "smooth"),
              "select_smoothing": (0.1, 0.5), "val_split": "holdout"}
    results = run_study("seg", out=str(tmp_path / "run"), show_progress=False, **fields)
    folder = results.folder
    selected = [r for r in results.rows if r.get("phase") == "select"]
    assert [r["num_images"] for r in selected] == [51, 51]  # scored on the held-out fifth
    eps = max(selected, key=lambda r: r["miou_dataset"])["smoothing"]
    smooth = _row(folder, loss="ce+jml", labels="smooth")
    assert smooth["smoothing"] == eps
    assert smooth["num_images"] == 128
    assert (folder / "checkpoints" / f"ce_jml-smooth-s0-eps{eps:g}" / "last.pt").is_file()
    report = (folder / "report.md").read_text()
    assert f"| ce+jml | smooth (eps {eps:g}) | 1 |" in report
    assert "| eps | seed | val mIoU^D |" in report
    # A killed run: drop the last rows; the rerun recomputes them from the checkpoints, and
    # a selection cell computed afresh elsewhere gives the same row.
    lines = (folder / "results.jsonl").read_text().splitlines()
    (folder / "results.jsonl").write_text("\n".join(lines[:2]) + "\n")
    again = run_study("seg", out=str(folder), show_progress=False, **fields)
    assert again.cells_run == 2
    drop = {"seconds", "threads"}  # how long and on how many threads, not what
    assert {k: v for k, v in _row(folder, labels="smooth").items() if k not in drop} == {
        k: v for k, v in smooth.items() if k not in drop}
    config = seg.SegStudyConfig(out=str(tmp_path / "other"), **fields)
    cell = Cell({"phase": "select", "smoothing": 0.1, "seed": 0}, "select-smooth-eps0.1-s0")
    fresh = seg_cells.run_cell(config, cell, tmp_path / "other", show_progress=False)
    first = _row(folder, phase="select", smoothing=0.1)
    assert {k: v for k, v in fresh.items() if k not in drop} == {
        k: v for k, v in first.items() if k not in {*drop, *cell.key}}


def test_the_cli_applies_the_converge_recipe_under_the_flags(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["seg", "--recipe", "converge", "--dataset", "digit_scenes", "--train-splits",
                 "train", "--val-split", "holdout", "--losses", "ce", "--seeds", "0",
                 "--epochs", "1", "--model-args", "base_width=4", "depth=2", "--crop", "32",
                 "--figure-images", "0", "--device", "cpu", "--out", str(out)]) == 0
    stored = json.loads((out / "config.json").read_text())["config"]
    assert (stored["schedule"], stored["metric_smooth"], stored["scale"]) == (
        "poly", 1.0, [0.75, 1.5])  # from the recipe
    assert (stored["epochs"], stored["labels"]) == (1, ["hard"])  # the flag, the recipe
    assert "**Sanity gate**" in (out / "report.md").read_text()
