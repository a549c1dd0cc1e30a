"""End-to-end tests of the ``softlabels`` command line."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from softlabels.cli import main
from softlabels.store import LabelStore


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quick")
    assert main(["train", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    return out


def test_help_lists_commands(capsys: pytest.CaptureFixture) -> None:
    result = subprocess.run([sys.executable, "-m", "softlabels.cli", "--help"],
                            capture_output=True, text=True, check=True)
    assert "train" in result.stdout
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    sub = capsys.readouterr().out
    for flag in ("--config", "--out", "--seeds", "--device", "--quick", "--ipc",
                 "--executor", "--workers", "--retries"):
        assert flag in sub


def test_no_command_prints_the_help(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_the_old_seed_flag_still_works_with_a_deprecation_message(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.warns(FutureWarning, match="'seed' is deprecated.*'seeds'"):
        assert main(["train", "--seed", "3", "--labels", "hard", "--epochs", "1",
                     "--ipc", "1", "--model-args", "width=4", "depth=1",
                     "--out", str(tmp_path), "--json"]) == 0
    assert [r["seed"] for r in json.loads(capsys.readouterr().out)] == [3]


def test_console_script_is_installed() -> None:
    script = shutil.which("softlabels", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("softlabels ")


def test_train_quick_writes_config_results_and_label_store(quick_run: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    config = json.loads((quick_run / "config.json").read_text())
    assert config["config"]["ipc"] == 5
    assert config["config"]["seeds"] == [0]
    assert config["study"] == "train"
    rows = [json.loads(line) for line in (quick_run / "results.jsonl").read_text().splitlines()]
    # The teacher is a cell of the first stage; its labels feed the "teacher" student.
    assert [r["labels"] for r in rows] == ["teacher-model", "hard", "smooth", "teacher"]
    by_mode = {r["labels"]: r for r in rows}
    # 1797 digits; 20% of each class (rounded half up) is held out for testing.
    assert by_mode["teacher-model"]["train_images"] == 1438
    assert by_mode["hard"]["train_images"] == 50
    for row in rows:
        assert 0.5 < row["accuracy"] <= 1.0  # chance is 0.1 on digits
        assert len(row["classwise_accuracy"]) == 10
        assert row["worst_class_accuracy"] <= row["accuracy"]
    assert by_mode["teacher-model"]["accuracy"] > 0.9
    store = LabelStore.load(quick_run / "labels" / "teacher_T4_s0.safetensors")
    assert len(store) == 1438
    assert store.metadata.source == "teacher"
    assert store.metadata.temperature == 4.0


def test_rerun_resumes_without_training(quick_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = (quick_run / "results.jsonl").read_text()
    assert main(["train", "--quick", "--out", str(quick_run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert (quick_run / "results.jsonl").read_text() == before
    assert [r["accuracy"] for r in rows] == [json.loads(line)["accuracy"]
                                             for line in before.splitlines()]


def test_table_output(quick_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--quick", "--out", str(quick_run)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy by label mode" in out
    assert "per-class accuracy" in out
    assert "teacher-model" in out


def test_different_config_in_same_folder_is_refused(quick_run: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--quick", "--lr", "0.5", "--out", str(quick_run)]) == 2
    assert "holds a run with a different config (fields ['lr'])" in capsys.readouterr().err


def test_config_file_and_flag_precedence(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("labels: [hard]\nepochs: 2\nipc: 3\nmodel_args: [width=8]\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "3", "--out", str(out),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["labels"] for r in rows] == ["hard"]
    stored = json.loads((out / "config.json").read_text())["config"]
    assert stored["epochs"] == 3  # the flag wins over the file
    assert stored["ipc"] == 3
    assert stored["model_args"] == ["width=8"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'; valid names: ['cifar10'"),
        (["--model", "vit"], "name must be one of ['convnet'"),
        (["--augment", "mixup"], "invalid choice: 'mixup' (choose from 'dsa', 'flip',"),
        (["--ipc", "500"], "per_class=500 but class 0 has only"),
        (["--dataset", "cifar10", "--data-root", "/nonexistent/folder"], "cifar10"),
        (["--model-args", "width"], "KEY=VALUE"),
        (["--model-args", "heads=4"], "unexpected keyword argument(s) ['heads']"),
        (["--epochs", "0"], "epochs must be >= 1, got 0"),
        (["--out", __file__], "is an existing file"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                argv: list[str], message: str) -> None:
    try:
        code = main(["train", "--quick", "--out", str(tmp_path / "r"), *argv])
    except SystemExit as exit_:  # argparse rejects invalid choices itself
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--teacher-model", "vit"], "teacher_model: name must be one of"),
    (["seg", "--teacher-args", "heads=4"], "teacher_args: model 'unet' got unexpected"),
    (["robust", "--model", "nosuch.module:make"], "module 'nosuch.module' does not import"),
    (["distill", "--model-args", "heads=4"], "model_args: model 'convnet' got unexpected"),
    (["train", "--model", "json:loads_nothing"], "module 'json' has no attribute"),
    (["train", "--model-args", "width=-5"], "model_args: width must be > 0, got -5"),
    (["robust", "--teacher-args", "width=abc"], "teacher_args: width must be an int, got str"),
    (["train", "--temperature", "inf"], "temperature must be a finite number > 0"),
    (["robust", "--eval-alpha", "inf"], "eval_alpha must be a finite number > 0"),
    (["seg", "--lr=-inf"], "lr must be a finite number > 0"),
])
def test_a_bad_model_or_setting_is_refused_before_anything_runs(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture,
                                                     argv: list[str], message: str) -> None:
    out = tmp_path / "run"
    assert main([*argv, "--quick", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused with the config: no folder, no teacher trained


def test_unknown_config_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("epoch: 3\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "unknown config field(s) ['epoch']" in capsys.readouterr().err


def test_a_sweep_can_be_extended_in_the_same_folder(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    base = ["train", "--epochs", "1", "--ipc", "2", "--model-args", "width=8",
            "--out", str(tmp_path), "--json"]
    assert main([*base, "--labels", "hard"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*base, "--labels", "hard", "smooth"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["labels"] for r in rows] == ["hard", "smooth"]
    assert rows[0] == first[0]  # the finished cell is reused, not retrained
    assert main([*base, "--labels", "hard", "hard"]) == 2
    assert "labels must not repeat" in capsys.readouterr().err


def test_a_folder_in_use_by_another_process_is_refused(locked_elsewhere: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--quick", "--out", str(locked_elsewhere)]) == 2
    assert "in use by another running softlabels process" in capsys.readouterr().err


def test_a_run_folder_from_an_older_version_resumes(tmp_path: Path) -> None:
    """A field the stored config predates does not block resuming while at its default."""
    import json

    from softlabels.studies.run_folder import prepare_run_folder, release_run_folder
    from softlabels.studies.train import TrainStudyConfig

    config = TrainStudyConfig(out=str(tmp_path))
    prepare_run_folder(config, tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["config"]["checkpoint_every"]  # as if written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(stored))
    prepare_run_folder(config, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="checkpoint_every"):
        prepare_run_folder(TrainStudyConfig(out=str(tmp_path), checkpoint_every=5), tmp_path)
    release_run_folder(tmp_path)
