"""Named presets: ``softlabels <study> --recipe NAME`` and ``reproduce --full --recipe NAME``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from softlabels.cli import main
from softlabels.configuration import build_config
from softlabels.studies.distill import DistillStudyConfig
from softlabels.studies.distill_presets import PAPER, RECIPES
from softlabels.studies.reproduce import ReproduceConfig


def test_the_paper_recipe_is_a_valid_config_with_the_official_settings() -> None:
    config = build_config(DistillStudyConfig, PAPER)
    assert config.zca
    assert config.zca_eps == 0.1
    assert config.student_config().milestones == (750, 1500, 2250)
    assert config.student_config().gamma == 0.3
    assert len(config.seeds) == 5
    full = build_config(DistillStudyConfig, RECIPES["paper"].full[1][0])
    assert full.precision == "bf16"


@pytest.mark.slow
def test_a_recipe_sits_between_quick_and_the_flags(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["distill", "--quick", "--recipe", "paper", "--model-args", "width=4",
                 "depth=1", "--expert-epochs", "1", "--expert-epoch", "1", "--seeds", "0",
                 "--ipc", "1", "--images", "random", "--labels", "hard", "teacher",
                 "--student-epochs", "2", "--eval-every", "1", "--device", "cpu", "--out",
                 str(out)]) == 0
    stored = json.loads((out / "config.json").read_text())["config"]
    assert stored["zca"] is True  # from the recipe
    assert stored["student_decay"] == 0.3  # from the recipe
    assert stored["seeds"] == [0]  # the flag wins
    assert (out / "zca.pt").is_file()


def test_reproduce_recipes_need_full_and_a_study_that_has_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--recipe chooses a --full reproduction"):
        ReproduceConfig(recipe="paper")
    with pytest.raises(ValueError,
                       match=r"recipe 'converge' has no reproduction for \['distill'\]"):
        ReproduceConfig(full=True, data_root=str(tmp_path), recipe="converge",
                        studies=("distill", "seg"))
