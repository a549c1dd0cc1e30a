"""``softlabels export`` and ``distill --images file``: a cell as a dataset file and back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from softlabels.cli import main
from softlabels.configuration import build_config
from softlabels.data import load_dataset
from softlabels.distilled import DistilledSet, ddranking_inputs, load_distilled, save_distilled
from softlabels.store import LabelStore
from softlabels.studies.distill import DistillStudyConfig
from softlabels.studies.export import distilled_cell, export_cell
from softlabels.studies.registry import run_study

TEACHER = "test-random-ipc2-teacher-e2-T1"
DM = "test-dm-ipc2-hard"
# A sweep of a few seconds with random and DM images and a label store per cell.
TINY: dict[str, Any] = {
    "model_args": ("width=4", "depth=1"), "expert_epochs": 2, "expert_batch_size": 128,
    "expert_lr": 0.05, "ipc": (2,), "labels": ("hard", "teacher"), "expert_epoch": (2,),
    "seeds": (0,), "student_epochs": 4, "eval_every": 2, "student_augment": "none",
    "expert_augment": "none", "images": ("random", "dm"), "dm_iterations": 3,
    "dm_batch_real": 8,
}


def _config(out: Path, **changes: Any) -> DistillStudyConfig:
    return build_config(DistillStudyConfig, TINY, {"out": str(out), "device": "cpu",
                                                   **changes})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("distill-export") / "run"
    run_study("distill", _config(out), show_progress=False)
    return out


def test_an_exported_cell_holds_its_images_labels_and_provenance(run: Path,
                                                                 tmp_path: Path) -> None:
    path = export_cell(run, TEACHER, "npz", tmp_path / "set.npz")
    exported = load_distilled(path)
    store = LabelStore.load(run / "labels" / f"{TEACHER}.safetensors")
    train = load_dataset("digits", split="train")
    # The cell's images are training images: find each exported one among them.
    order = torch.sort(train.labels[store.indices], stable=True).indices  # class-major
    assert torch.equal(exported.images, train.images[store.indices][order])
    assert torch.equal(exported.labels, train.labels[store.indices][order])
    torch.testing.assert_close(exported.soft_labels, store.labels[order])
    assert exported.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert exported.class_names == train.info.class_names
    assert exported.mean == pytest.approx(train.info.mean)
    assert exported.provenance["cell"] == TEACHER
    assert exported.provenance["cell_key"]["labels"] == "teacher"
    assert exported.provenance["dataset"] == "digits"
    row = next(json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()
               if json.loads(line).get("labels") == "teacher"
               and json.loads(line).get("images") == "random")
    assert exported.provenance["row"]["best_mean"] == row["best_mean"]


def test_the_npz_loads_as_a_plain_dataset_and_the_safetensors_alike(run: Path,
                                                                    tmp_path: Path) -> None:
    npz = export_cell(run, TEACHER, "npz", tmp_path / "set.npz")
    plain = load_dataset("npz", npz)  # x and y: the hard labels of the images
    exported = load_distilled(npz)
    assert torch.equal(plain.images, exported.images)
    assert torch.equal(plain.labels, exported.labels)
    assert plain.info.class_names == exported.class_names
    safetensors = load_distilled(export_cell(run, TEACHER, "safetensors"))
    assert (run / "exports" / f"{TEACHER}.safetensors").is_file()  # the default place
    assert torch.equal(safetensors.images, exported.images)
    torch.testing.assert_close(safetensors.soft_labels, exported.soft_labels)
    assert safetensors.provenance == exported.provenance


def test_dm_cells_export_their_synthetic_images(run: Path) -> None:
    exported = distilled_cell(run, DM)
    saved = torch.load(run / "dm" / "ipc2.pt", weights_only=True)
    assert torch.equal(exported.images, saved["images"])
    assert torch.equal(exported.soft_labels.argmax(1), saved["labels"])  # hard labels


def test_ddranking_gets_class_major_normalised_images(run: Path) -> None:
    exported = distilled_cell(run, TEACHER)
    images, soft = ddranking_inputs(exported)
    # DD-Ranking builds its hard labels as [c] * ipc and feeds the images to models without
    # a normalisation layer.
    ipc = 2
    hard = torch.tensor([c for c in range(10) for _ in range(ipc)])
    ordered = exported.class_major()
    assert torch.equal(ordered.labels, hard)
    mean, std = exported.mean[0], exported.std[0]
    torch.testing.assert_close(images * std + mean, ordered.images)
    torch.testing.assert_close(soft, ordered.soft_labels)
    uneven = DistilledSet(exported.images[1:], exported.labels[1:], exported.class_names,
                          exported.soft_labels[1:], exported.mean, exported.std)
    with pytest.raises(ValueError, match="same number of images in every class"):
        ddranking_inputs(uneven)


def test_an_export_of_a_cell_that_does_not_exist_lists_the_cells(
        run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(run), "--cell", "test-random-ipc9-teacher"]) == 2
    error = capsys.readouterr().err
    assert "has no finished cell 'test-random-ipc9-teacher'" in error
    assert TEACHER in error


def test_an_export_into_a_path_below_a_file_is_a_clear_error(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("mine")
    target = tmp_path / "file" / "set.npz"
    assert main(["export", str(run), "--cell", TEACHER, "--out", str(target)]) == 2
    assert str(tmp_path / "file") in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"


def test_a_run_folder_without_label_stores_cannot_be_exported(tmp_path: Path) -> None:
    folder = tmp_path / "committed"
    shutil.copytree(Path(__file__).resolve().parents[2] / "docs" / "runs" / "distill-cifar10",
                    folder)
    # The committed run spells the teacher labels "expert"; cells are named the new way.
    with pytest.raises(ValueError, match=r"has no label store .* cannot be exported"):
        distilled_cell(folder, "test-random-ipc50-teacher-e20-T1")


def test_only_distill_runs_export(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"study": "seg", "config": {}}))
    with pytest.raises(ValueError, match="holds a 'seg' run"):
        distilled_cell(tmp_path, TEACHER)


def test_own_images_are_scored_under_the_same_protocol(run: Path, tmp_path: Path) -> None:
    image_file = export_cell(run, TEACHER, "npz", tmp_path / "mine.npz")
    out = tmp_path / "scored"
    config = _config(out, images=("file",), image_file=str(image_file),
                     labels=("hard", "file"))
    rows = [r for r in run_study("distill", config, show_progress=False).rows
            if r.get("phase") == "test"]
    assert {(r["images"], r["labels"]) for r in rows} == {("file", "hard"), ("file", "file")}
    original = {json.loads(line)["labels"]: json.loads(line)
                for line in (run / "results.jsonl").read_text().splitlines()
                if json.loads(line).get("phase") == "test"
                and json.loads(line)["images"] == "random"}
    for row in rows:
        # The same images with the same labels (the file's soft labels are the teacher's).
        twin = original["teacher" if row["labels"] == "file" else "hard"]
        assert row["num_images"] == twin["num_images"] == 20
        assert row["label_entropy"] == pytest.approx(twin["label_entropy"], abs=1e-5)
        assert row["eval_split"] == "test"
        assert abs(row["best_mean"] - twin["best_mean"]) <= 0.1  # order of images differs


def _bad_file(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "bad.npz"
    x = arrays.pop("x", np.zeros((20, 1, 8, 8), dtype=np.float32))
    y = arrays.pop("y", np.repeat(np.arange(10), 2))
    np.savez(path, x=x, y=y, **arrays)
    return path


@pytest.mark.parametrize(("arrays", "labels", "message"), [
    ({"x": np.zeros((20, 1, 4, 4), dtype=np.float32)}, ("hard",),
     r"holds images of shape \(C, H, W\) = \(1, 4, 4\) but dataset 'digits' has \(1, 8, 8\)"),
    ({"x": np.zeros((20, 3, 8, 8), dtype=np.float32)}, ("hard",), r"= \(3, 8, 8\)"),
    ({"class_names": np.array([str(c) for c in range(12)])}, ("hard",),
     "has 12 classes but dataset 'digits' has 10"),
    ({"soft_labels": np.full((20, 5), 0.2, dtype=np.float32)}, ("hard",),
     "soft_labels must be"),
    ({"y": np.zeros(20, dtype=np.int64)}, ("hard",),
     r"holds \[20, 0, 0, 0, 0, 0, 0, 0, 0, 0\] images per class; --ipc is 2"),
    ({}, ("file",), r"uses the soft labels inside .* which has none"),
])
def test_an_image_file_that_does_not_fit_the_dataset_is_refused(
        tmp_path: Path, arrays: dict[str, np.ndarray], labels: tuple[str, ...],
        message: str) -> None:
    path = _bad_file(tmp_path, **arrays)
    config = _config(tmp_path / "out", images=("file",), image_file=str(path), labels=labels)
    with pytest.raises(ValueError, match=message):
        run_study("distill", config, show_progress=False)
    assert not (tmp_path / "out" / "results.jsonl").exists()  # refused before any cell


def test_an_image_file_needs_the_file_source_and_one_ipc(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--images file and --image-file go together"):
        _config(tmp_path, image_file="x.npz")
    with pytest.raises(ValueError, match=r"the single ipc that --image-file 'x\.npz' holds"):
        _config(tmp_path, images=("file",), image_file="x.npz", ipc=(1, 2))
    with pytest.raises(FileNotFoundError, match=r"distilled set .*none\.npz.* does not exist"):
        run_study("distill", _config(tmp_path / "o", images=("file",),
                                     image_file=str(tmp_path / "none.npz")),
                  show_progress=False)


def test_a_distilled_set_round_trips_through_both_formats(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    soft = torch.rand(6, 3, generator=generator)
    data = DistilledSet(torch.rand(6, 3, 4, 4, generator=generator),
                        torch.tensor([2, 0, 1, 0, 2, 1]), ("a", "b", "c"),
                        soft / soft.sum(1, keepdim=True), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2),
                        {"note": "made by hand"}, {"matrix": torch.eye(3)})
    for suffix in ("npz", "safetensors"):
        back = load_distilled(save_distilled(tmp_path / f"set.{suffix}", data))
        order = torch.tensor([1, 3, 2, 5, 0, 4])  # class-major, stable
        assert torch.equal(back.images, data.images[order])
        assert torch.equal(back.labels, data.labels[order])
        torch.testing.assert_close(back.soft_labels, data.soft_labels[order])
        assert back.class_names == ("a", "b", "c")
        assert back.mean == pytest.approx((0.5, 0.4, 0.3))
        assert back.provenance == {"note": "made by hand"}
        assert torch.equal(back.zca["matrix"], torch.eye(3))  # the hook for ZCA whitening
    with pytest.raises(ValueError, match="format must be one of"):
        save_distilled(tmp_path / "set.pt", data)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_damaged_file_is_refused_naming_it_never_read_as_other_values(
        tmp_path: Path, suffix: str) -> None:
    generator = torch.Generator().manual_seed(0)
    soft = torch.rand(4, 2, generator=generator).softmax(1)
    original = DistilledSet(torch.rand(4, 1, 3, 3, generator=generator),
                            torch.tensor([0, 0, 1, 1]), ("a", "b"), soft, (0.5,), (0.25,))
    path = save_distilled(tmp_path / f"set{suffix}", original)
    clean = path.read_bytes()
    refused = 0
    for offset in range(0, len(clean), 5):
        damaged = bytearray(clean)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            loaded = load_distilled(path)
        except ValueError as err:
            message = str(err)
            refused += 1
            assert str(path) in message
            continue
        # A flip the format does not notice may only touch what carries no value (padding).
        assert torch.equal(loaded.images, original.images)
        assert torch.equal(loaded.soft_labels, original.soft_labels)
        assert loaded.class_names == original.class_names
    assert refused > 0


def test_a_set_written_before_the_checksum_still_loads(tmp_path: Path) -> None:
    images = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    old = tmp_path / "old.npz"  # as the previous release wrote it: no checksum, no version
    np.savez_compressed(old, x=images.numpy(), y=np.array([0, 1]),
                        class_names=np.array(["a", "b"]),
                        provenance=np.array(json.dumps({"format": "softlabels.distilled_set",
                                                        "cell": "c"})))
    loaded = load_distilled(old)
    assert torch.equal(loaded.images, images)
    assert loaded.provenance == {"cell": "c"}
