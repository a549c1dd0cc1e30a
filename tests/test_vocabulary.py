"""One CLI vocabulary: shared flag names, renamed flags and label modes, fractions, listings."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from softlabels.cli import build_parser, main
from softlabels.configuration import build_config, parse_float
from softlabels.studies.distill import DistillStudyConfig
from softlabels.studies.distill_cells import resolve_student_backend
from softlabels.studies.registry import STUDIES
from softlabels.studies.seg import SegStudyConfig
from softlabels.studies.train import TrainStudyConfig


def _parsed(argv: list[str]) -> dict:
    args = vars(build_parser().parse_args(argv))
    return {k: v for k, v in args.items() if k not in ("command", "config", "quick", "json",
                                                      "overwrite", "recipe")}


@pytest.mark.parametrize(("text", "value"), [("8/255", 8 / 255), ("0.5", 0.5), ("1e-3", 1e-3),
                                             (" 2 / 4 ", 0.5), (3, 3.0)])
def test_fractions_are_read_wherever_a_float_is(text: object, value: float) -> None:
    assert parse_float(text) == value


def test_fractions_on_the_command_line_and_in_config_files() -> None:
    assert _parsed(["robust", "--eps", "8/255"])["eps"] == 8 / 255
    config = build_config(SegStudyConfig, {"smoothing": "1/4", "lr": "3e-3"})
    assert (config.smoothing, config.lr) == (0.25, 0.003)


@pytest.mark.parametrize("text", ["8/0", "a/b", "8/255/2", "", "one"])
def test_bad_numbers_name_the_value(text: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="a fraction such as 8/255"):
        parse_float(text)
    with pytest.raises(ValueError, match=f"'smoothing' must be of type float .*{text!r}"):
        build_config(SegStudyConfig, {"smoothing": text})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["robust", "--eps", text])
    assert "invalid float value" in capsys.readouterr().err


def test_one_flag_one_meaning_across_the_studies() -> None:
    fields = {name: {f.name for f in dataclasses.fields(study.config_cls)}
              for name, study in STUDIES.items()}
    # Label smoothing is --smoothing, images per class --ipc, seeds --seeds; --eps is only
    # ever the attack radius.
    assert "smoothing" in fields["train"]
    assert "smoothing" in fields["seg"]
    assert "ipc" in fields["train"]
    assert "ipc" in fields["distill"]
    assert [s for s, names in fields.items() if "eps" in names] == ["robust"]
    assert all("seeds" in names and "seed" not in names for names in fields.values())
    assert not any("images_per_class" in names for names in fields.values())
    # Soft labels from a trained model are "teacher" and label smoothing is "smooth" wherever
    # a study has label modes.
    for name in ("train", "distill", "seg"):
        assert {"hard", "smooth", "teacher"} <= set(STUDIES[name].label_modes), name


@pytest.mark.parametrize(("argv", "field", "value", "old"), [
    (["train", "--images-per-class", "3"], "ipc", 3, "images_per_class"),
    (["train", "--seed", "4"], "seeds", (4,), "seed"),
    (["seg", "--eps", "0.3"], "smoothing", 0.3, "eps"),
    (["seg", "--labels", "hard", "ls", "kd"], "labels", ("hard", "smooth", "teacher"), "'ls'"),
    (["distill", "--labels", "hard", "expert"], "labels", ("hard", "teacher"), "'expert'"),
    (["distill", "--dm-labels", "expert"], "dm_labels", ("teacher",), "'expert'"),
])
def test_old_spellings_still_work_with_a_deprecation_message(argv: list[str], field: str,
                                                             value: object, old: str) -> None:
    study = STUDIES[argv[0]]
    with pytest.warns(FutureWarning, match=f"{old}.*deprecated|deprecated.*{old}"):
        config = build_config(study.config_cls, _parsed(argv))
    assert getattr(config, field) == value


def test_an_old_label_mode_given_in_python_is_renamed_too() -> None:
    with pytest.warns(FutureWarning, match="labels 'kd' is deprecated .*; use 'teacher'"):
        config = SegStudyConfig(labels=("hard", "kd"))
    assert config.labels == ("hard", "teacher")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current spellings warn about nothing
        assert DistillStudyConfig(labels=("hard", "teacher")).labels == ("hard", "teacher")


def test_a_new_and_an_old_name_together_are_refused() -> None:
    with pytest.raises(ValueError, match="give 'ipc' or its old name 'images_per_class'"):
        build_config(TrainStudyConfig, {"ipc": 2, "images_per_class": 3})


def test_help_lists_the_current_choices_and_the_datasets(capsys: pytest.CaptureFixture
                                                         ) -> None:
    with pytest.raises(SystemExit):
        main(["seg", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{hard,smooth,teacher,semi}" in text
    assert "ls" not in text.replace("labels", "").split()  # old spellings stay hidden
    assert "camvid, digit_scenes" in text
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "cifar10, cifar100, digits" in text
    assert "module.path:factory" in text
    assert "--images-per-class" not in text


@pytest.mark.parametrize(("what", "expected"), [
    ("models", ["convnet", "unet", "module.path:factory", "timm:NAME"]),
    ("datasets", ["digits", "cifar10", "npz", "imagefolder", "camvid", "digit_scenes"]),
    ("losses", ["ce+jml", "ce+sjl", "ce+dml"]),
    ("label-modes", ["teacher", "smooth", "semi", "topk", "learned"]),
    ("studies", ["train", "distill", "seg", "robust"]),
])
def test_list_names_what_the_flags_accept(what: str, expected: list[str],
                                          capsys: pytest.CaptureFixture) -> None:
    assert main(["list", what]) == 0
    out = capsys.readouterr().out
    for name in expected:
        assert name in out, name


def test_list_of_something_unknown_is_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["list", "optimisers"])
    assert "invalid choice: 'optimisers'" in capsys.readouterr().err


def test_student_backend_auto_means_what_the_help_says() -> None:
    field = DistillStudyConfig.__dataclass_fields__["student_backend"]
    assert field.default == "auto"
    assert "auto = sequential on a CPU" in field.metadata["help"]
    assert resolve_student_backend("auto", "cpu") == "sequential"
    assert resolve_student_backend("vmap", "cpu") == "vmap"  # an explicit choice is kept
