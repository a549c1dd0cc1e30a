"""Tests of softlabels.distill.selection: random and loss-ranked selection, index files."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.distill import load_index_file, save_index_file, select_by_loss, select_random

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import device_fixture, off_cpu  # noqa: F401

# Classes 0, 1, 2 with 5, 7 and 6 images, interleaved so positions and classes differ.
LABELS = torch.tensor([0, 1, 2, 1, 0, 2, 1, 1, 0, 2, 1, 0, 2, 1, 2, 0, 1, 2])


def test_random_counts_per_class_and_sorted_unique_positions():
    positions = select_random(LABELS, 4, seed=3)
    assert positions.dtype == torch.int64
    assert positions.tolist() == sorted(set(positions.tolist()))
    chosen = LABELS[positions]
    assert [int((chosen == c).sum()) for c in range(3)] == [4, 4, 4]


def test_random_is_deterministic_by_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = select_random(LABELS, 3, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    assert torch.equal(first, select_random(LABELS, 3, seed=7))
    draws = {tuple(select_random(LABELS, 3, seed=s).tolist()) for s in range(6)}
    assert len(draws) > 1


def test_random_ipc_larger_than_a_class_names_class_and_counts():
    with pytest.raises(ValueError, match=r"ipc=6 .*class 0 has 5"):
        select_random(LABELS, 6, seed=0)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"labels": LABELS.float(), "ipc": 1, "seed": 0}, TypeError),
    ({"labels": LABELS.reshape(3, 6), "ipc": 1, "seed": 0}, ValueError),
    ({"labels": LABELS, "ipc": 0, "seed": 0}, ValueError),
    ({"labels": LABELS, "ipc": 1.0, "seed": 0}, TypeError),
    ({"labels": LABELS - 1, "ipc": 1, "seed": 0}, ValueError),
])
def test_random_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        select_random(**kwargs)


# Hand-made: class 0 at even positions, class 1 at odd positions.
HAND_LABELS = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
HAND_LOSSES = torch.tensor([0.9, 0.2, 0.1, 2.0, 0.5, 0.05, 1.5, 0.7, 0.3, 1.1])
# class 0 by loss: pos 2 (0.1), 8 (0.3), 4 (0.5), 0 (0.9), 6 (1.5)
# class 1 by loss: pos 5 (0.05), 1 (0.2), 7 (0.7), 9 (1.1), 3 (2.0)


def test_easiest_and_hardest_on_hand_made_losses():
    easiest = select_by_loss(HAND_LABELS, HAND_LOSSES, 2, "easiest")
    hardest = select_by_loss(HAND_LABELS, HAND_LOSSES, 2, "hardest")
    assert easiest.tolist() == [1, 2, 5, 8]
    assert hardest.tolist() == [0, 3, 6, 9]
    assert not set(easiest.tolist()) & set(hardest.tolist())
    for cls in (0, 1):
        easy = HAND_LOSSES[easiest][HAND_LABELS[easiest] == cls]
        hard = HAND_LOSSES[hardest][HAND_LABELS[hardest] == cls]
        assert float(easy.max()) < float(hard.min())


def test_named_quantiles_equal_numeric_extremes():
    assert torch.equal(select_by_loss(HAND_LABELS, HAND_LOSSES, 2, "easiest"),
                       select_by_loss(HAND_LABELS, HAND_LOSSES, 2, 0.0))
    assert torch.equal(select_by_loss(HAND_LABELS, HAND_LOSSES, 2, "hardest"),
                       select_by_loss(HAND_LABELS, HAND_LOSSES, 2, 1))


def test_ties_are_broken_by_position():
    labels = torch.zeros(6, dtype=torch.int64)
    losses = torch.tensor([1.0, 0.5, 1.0, 0.5, 1.0, 0.5])
    # ranking by (loss, position): 1, 3, 5, 0, 2, 4
    assert select_by_loss(labels, losses, 2, "easiest").tolist() == [1, 3]
    assert select_by_loss(labels, losses, 2, "hardest").tolist() == [2, 4]
    assert select_by_loss(labels, losses, 2, 0.5).tolist() == [0, 5]


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.5, 0.6, 0.75, 1.0])
def test_float_quantile_window_is_centred_on_the_class_quantile(q):
    # One class of 9 images with distinct losses in a scrambled order.
    rng = np.random.default_rng(0)
    losses_np = rng.permutation(9).astype(np.float64) * 0.1 + 0.2
    labels = torch.zeros(9, dtype=torch.int64)
    picked = select_by_loss(labels, torch.from_numpy(losses_np), 3, q)
    picked_losses = np.sort(losses_np[picked.numpy()])
    sorted_losses = np.sort(losses_np)
    # Three consecutive values of the sorted class losses...
    start = int(np.searchsorted(sorted_losses, picked_losses[0]))
    assert np.allclose(picked_losses, sorted_losses[start:start + 3])
    # ...whose middle one is the value nearest numpy's q-quantile, unless the window is
    # pushed inwards at an end of the ranking.
    target = np.quantile(losses_np, q)
    nearest = int(np.argmin(np.abs(sorted_losses - target) + np.arange(9) * 1e-12))
    expected_middle = min(max(nearest, 1), 7)
    assert picked_losses[1] == pytest.approx(sorted_losses[expected_middle])


def test_quantile_per_class_with_two_classes():
    labels = torch.tensor([0] * 5 + [1] * 5)
    losses = torch.tensor([5.0, 4, 3, 2, 1, 10, 30, 20, 50, 40])
    # median rank 2 of each class: class 0 loss 3 at position 2; class 1 loss 30 at position 6
    assert select_by_loss(labels, losses, 1, 0.5).tolist() == [2, 6]
    # ipc 3 centred on the median: class 0 losses 2,3,4 -> positions 1,2,3;
    # class 1 losses 20,30,40 -> positions 6,7,9
    assert select_by_loss(labels, losses, 3, 0.5).tolist() == [1, 2, 3, 6, 7, 9]


def test_selection_from_device_labels_and_losses(device: str):
    """select_random and select_by_loss with labels and losses on the device: the hand-made
    positions (off the CPU, the CPU's seeded draw), which index device data."""
    labels, losses = HAND_LABELS.to(device), HAND_LOSSES.to(device)
    for quantile, expected in (("easiest", [1, 2, 5, 8]), ("hardest", [0, 3, 6, 9]),
                               (0.5, [4, 7])):
        positions = select_by_loss(labels, losses, 2 if quantile != 0.5 else 1, quantile)
        assert positions.cpu().tolist() == expected
        assert torch.equal(labels[positions].cpu(), HAND_LABELS[expected])
    positions = select_random(LABELS.to(device), 4, seed=3)
    chosen = LABELS.to(device)[positions].cpu()
    assert [int((chosen == c).sum()) for c in range(3)] == [4, 4, 4]
    assert positions.cpu().tolist() == sorted(set(positions.cpu().tolist()))
    if off_cpu(device):
        assert torch.equal(positions.cpu(), select_random(LABELS, 4, seed=3))


@pytest.mark.parametrize(("losses", "ipc", "quantile", "error", "match"), [
    (HAND_LOSSES[:5], 1, "easiest", ValueError, "shape"),
    (HAND_LOSSES.to(torch.int64), 1, "easiest", TypeError, "floating"),
    (torch.where(torch.arange(10) == 3, float("nan"), HAND_LOSSES), 1, "easiest", ValueError,
     "finite"),
    (HAND_LOSSES, 1, "middle", ValueError, "easiest"),
    (HAND_LOSSES, 1, 1.5, ValueError, r"quantile must be in \[0.0, 1.0\]"),
    (HAND_LOSSES, 1, float("nan"), ValueError, "quantile"),
    (HAND_LOSSES, 6, "easiest", ValueError, "class 0 has 5"),
])
def test_select_by_loss_rejects_bad_arguments(losses, ipc, quantile, error, match):
    with pytest.raises(error, match=match):
        select_by_loss(HAND_LABELS, losses, ipc, quantile)


@pytest.mark.parametrize("name", ["chosen.json", "chosen.txt", "chosen"])
def test_index_file_round_trip(tmp_path: Path, name: str):
    positions = torch.tensor([17, 3, 0, 42])
    path = tmp_path / name
    save_index_file(path, positions)
    loaded = load_index_file(path, num_images=43)
    assert loaded.dtype == torch.int64
    assert loaded.tolist() == [17, 3, 0, 42]
    if name.endswith(".json"):
        assert json.loads(path.read_text()) == [17, 3, 0, 42]
    else:
        assert path.read_text() == "17\n3\n0\n42\n"
    # the atomic write leaves no temporary file behind
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_save_accepts_a_list_and_replaces_an_existing_file(tmp_path: Path):
    path = tmp_path / "idx.txt"
    save_index_file(path, [5, 6])
    save_index_file(path, [1])
    assert load_index_file(path, 10).tolist() == [1]


def test_load_plain_text_with_commas_and_comments(tmp_path: Path):
    path = tmp_path / "idx.txt"
    path.write_text("# chosen by hand\n4, 5 6\n\n  7 # the last one\n")
    assert load_index_file(path, 8).tolist() == [4, 5, 6, 7]


def test_load_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        load_index_file(tmp_path / "nope.txt", 10)


@pytest.mark.parametrize(("content", "match"), [
    ("1\n2.5\nabc\n3\n", r"not integers .*\['2.5', 'abc'\]"),
    ("[1, 2.0, true, \"3\"]", r"not integers .*\[2.0, True, '3'\]"),
    ("[1, 2", "not valid JSON"),
    ("[[1, 2]]", "not integers"),
    ("", "no positions"),
    ("# nothing\n", "no positions"),
    ("[]", "no positions"),
    ("1\n10\n-1\n12\n3\n", r"3 positions outside \[0, 10\) .*\[10, -1, 12\]"),
    ("[4, 1, 4, 2, 1, 4]", r"repeated positions .*\[4, 1\]"),
])
def test_load_rejects_bad_content(tmp_path: Path, content: str, match: str):
    path = tmp_path / "idx.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_index_file(path, 10)


def test_load_json_object_is_rejected(tmp_path: Path):
    path = tmp_path / "idx.json"
    path.write_text('{"positions": [1, 2]}')
    with pytest.raises(ValueError, match="JSON list of integers, got dict"):
        load_index_file(path, 10)


def test_load_checks_num_images(tmp_path: Path):
    path = tmp_path / "idx.txt"
    path.write_text("1\n")
    with pytest.raises(ValueError, match="num_images"):
        load_index_file(path, 0)


@pytest.mark.parametrize(("positions", "error", "match"), [
    (torch.tensor([1.0, 2.0]), TypeError, "integer"),
    (torch.tensor([[1, 2]]), ValueError, "1 dimensions"),
    ([1, 2.5], TypeError, r"\[2.5\]"),
    ([], ValueError, "empty"),
    ([3, -2], ValueError, r"outside .*\[-2\]"),
    (torch.tensor([3, 1, 3]), ValueError, r"repeated .*\[3\]"),
    ("12", TypeError, "sequence"),
])
def test_save_rejects_bad_positions(tmp_path: Path, positions, error, match):
    path = tmp_path / "idx.txt"
    with pytest.raises(error, match=match):
        save_index_file(path, positions)
    assert not path.exists()
