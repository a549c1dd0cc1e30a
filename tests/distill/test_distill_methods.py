"""Experts, Distribution Matching, learned labels and the sweep grid."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softlabels.distill.dm import distribution_matching
from softlabels.distill.experts import Experts, train_experts
from softlabels.distill.grid import Cell, cells_for
from softlabels.distill.learned import learn_labels
from softlabels.engine import TrainConfig, load_epoch_checkpoint
from softlabels.labels import one_hot, validate
from softlabels.models import create_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import (
    TRAIN_TOL,
    assert_close_on,
    assert_on,
    device_fixture,  # noqa: F401  (the device fixture)
    gen,
    off_cpu,
    quadrant_blobs,
    tiny_convnet,
)


def _convnet(seed: int) -> nn.Module:
    return create_model("convnet", 3, 1, 8, width=4, depth=1)


def _blobs(n_per_class: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 8x8 images, each a bright quadrant plus noise."""
    return quadrant_blobs(n_per_class, seed=seed, noise=0.2, bright=0.7)


# ------------------------------------------------------------------------------- grid


def test_grid_varies_each_mode_only_along_its_axes() -> None:
    cells = cells_for("test", "random", 10, ["hard", "teacher", "topk", "learned"], [5, 20],
                      [1.0, 2.0], [1, 3])
    counts = {mode: sum(c.labels == mode for c in cells)
              for mode in ("hard", "teacher", "topk", "learned")}
    assert counts == {"hard": 1, "teacher": 4, "topk": 8, "learned": 1}
    hard = next(c for c in cells if c.labels == "hard")
    assert (hard.expert_epoch, hard.temperature, hard.k) == (None, None, None)
    assert len({c.name() for c in cells}) == len(cells)


def test_cell_name_is_file_safe() -> None:
    cell = Cell("select", "dm", 3, "swap", 7, 1.5, 2)
    assert cell.name() == "select-dm-ipc3-swap-e7-T1.5-k2"
    assert cell.key() == {"phase": "select", "images": "dm", "ipc": 3, "labels": "swap",
                          "expert_epoch": 7, "temperature": 1.5, "k": 2}


# ------------------------------------------------------------------------------- experts


def test_experts_keep_every_epoch_and_resume(tmp_path: Path) -> None:
    x, y = _blobs()
    config = TrainConfig(epochs=3, batch_size=12, lr=0.1)
    experts = train_experts(_convnet, x, y, config, [0, 1], tmp_path, device="cpu",
                            show_progress=False)
    assert experts.saved_epochs() == [0, 1, 2, 3]
    stamp = (tmp_path / "seed0" / "epoch_0003.pt").stat().st_mtime_ns
    again = train_experts(_convnet, x, y, config, [0, 1], tmp_path, device="cpu",
                          show_progress=False)
    assert (tmp_path / "seed0" / "epoch_0003.pt").stat().st_mtime_ns == stamp  # not retrained
    # The ensemble's logits are the mean of each expert's logits.
    single = [Experts(_convnet, tmp_path, [s], device="cpu").logits(2, x) for s in (0, 1)]
    torch.testing.assert_close(again.logits(2, x), (single[0] + single[1]) / 2)
    # Different seeds give different experts.
    assert not torch.allclose(single[0], single[1])


def test_missing_expert_epoch_lists_saved_ones(tmp_path: Path) -> None:
    x, y = _blobs()
    experts = train_experts(_convnet, x, y, TrainConfig(epochs=2, batch_size=12), [0],
                            tmp_path, device="cpu", show_progress=False)
    (tmp_path / "seed0" / "epoch_0001.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"epoch 1 .*saved epochs: \[0, 2\]"):
        experts.logits(1, x)
    assert experts.saved_epochs() == [0, 2]


def test_early_checkpoints_inside_an_epoch(tmp_path: Path) -> None:
    x, y = _blobs()  # 36 images, batch 9: 4 optimizer steps per epoch
    config = TrainConfig(epochs=2, batch_size=9, lr=0.1, momentum=0.0, weight_decay=0.0,
                         schedule="constant")
    experts = train_experts(_convnet, x, y, config, [0], tmp_path, device="cpu",
                            checkpoints_per_epoch=4, early_epochs=1, show_progress=False)
    (tmp_path / "seed0" / "epoch_best.pt").write_bytes(b"")  # a user's file is ignored
    assert experts.saved_epochs() == [0, 0.25, 0.5, 0.75, 1, 2]
    assert (tmp_path / "seed0" / "epoch_0000.5000.pt").is_file()
    # 0.75 is the weights after step 3 of 4: one plain SGD step on epoch 1's last batch (the
    # data order is fit's first randperm from a generator seeded with the expert's seed) must
    # give the epoch-1 weights.
    model = experts.model(0, 0.75).train()
    last_batch = torch.randperm(36, generator=torch.Generator().manual_seed(0))[27:]
    F.cross_entropy(model(x[last_batch]), y[last_batch]).backward()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter -= 0.1 * parameter.grad
    for name, value in experts.model(0, 1).state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value)
    # A fraction that was not saved is named with the ones that were.
    with pytest.raises(FileNotFoundError, match=r"epoch 1.5 .*\[0, 0.25, 0.5, 0.75, 1, 2\]"):
        experts.logits(1.5, x)


def test_early_checkpoints_bad_requests(tmp_path: Path) -> None:
    x, y = _blobs()
    config = TrainConfig(epochs=1, batch_size=9)
    train_experts(_convnet, x, y, config, [0], tmp_path / "plain", device="cpu",
                  show_progress=False)
    with pytest.raises(ValueError, match=r"lacks the early checkpoints \[0.5\]"):
        train_experts(_convnet, x, y, config, [0], tmp_path / "plain", device="cpu",
                      checkpoints_per_epoch=2, early_epochs=1, show_progress=False)
    with pytest.raises(ValueError, match="only 4 optimizer steps"):
        train_experts(_convnet, x, y, config, [0], tmp_path / "fine", device="cpu",
                      checkpoints_per_epoch=5, early_epochs=1, show_progress=False)
    with pytest.raises(ValueError, match="checkpoints_per_epoch"):
        train_experts(_convnet, x, y, config, [0], tmp_path / "zero", device="cpu",
                      checkpoints_per_epoch=0, show_progress=False)


# ------------------------------------------------------------------------------- DM


class _FixedEmbedder(nn.Module):
    """The same network whatever the seed, so DM's objective is a fixed function."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(123)
        self.proj = nn.Linear(64, 16)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(x.flatten(1)))


def test_dm_lowers_the_embedding_gap_and_keeps_the_contract() -> None:
    x, y = _blobs(20)
    init = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    init_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    result = distribution_matching(lambda seed: _FixedEmbedder(), x, y, init, init_labels,
                                   iterations=60, lr=0.5, batch_real=20, strategy="none",
                                   device="cpu", show_progress=False)
    assert result.images.shape == init.shape
    assert float(result.images.min()) >= 0.0
    assert float(result.images.max()) <= 1.0
    assert result.losses[-1] < 0.25 * result.losses[0]
    assert torch.equal(result.labels, init_labels)
    assert torch.equal(init, torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)))


def test_dm_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    x, y = _blobs(8)
    init, labels = x[::8], y[::8]
    def run(iterations: int, checkpoint: Path | None, **changes: float) -> object:
        options = {"iterations": iterations, "batch_real": 4, "device": "cpu",
                   "checkpoint": checkpoint, "checkpoint_every": 2, "show_progress": False,
                   **changes}
        return distribution_matching(_convnet, x, y, init, labels, **options)

    whole = run(7, None)  # fresh networks, real batches and DSA draws at every step
    cut = tmp_path / "dm.pt"
    run(3, cut)  # "killed" after 3 iterations: the checkpoint holds step 3
    resumed = run(7, cut)
    torch.testing.assert_close(resumed.images, whole.images, rtol=0, atol=1e-6)
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-6)
    assert torch.load(cut)["step"] == 7
    with pytest.raises(ValueError, match=r"other \['lr'\]"):
        run(8, cut, lr=0.5)


@pytest.mark.parametrize(("case", "error", "match"), [
    ("missing class", ValueError, "no real images"),
    ("no embed", TypeError, "has no embed"),
    ("shape", ValueError, "init_images are"),
])
def test_dm_bad_input(case: str, error: type, match: str) -> None:
    x, y = _blobs(4)
    init, labels = x[:3].clone(), torch.tensor([0, 1, 2])
    build = _convnet
    real_labels = y
    if case == "missing class":
        real_labels = torch.where(y == 2, 0, y)
    elif case == "no embed":
        def build(seed: int) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    else:
        init = torch.rand(3, 1, 6, 6)
    with pytest.raises(error, match=match):
        distribution_matching(build, x, real_labels, init, labels, iterations=1, device="cpu",
                              show_progress=False)


# ------------------------------------------------------------------------------- learned


def test_learned_labels_lower_the_unrolled_students_real_loss() -> None:
    x, y = _blobs(16)
    images = x[::8]
    init = one_hot(y[::8], 3) * 0.4 + 0.2

    def build(seed: int) -> nn.Module:  # one fixed student: the outer loss is deterministic
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

    def unrolled_loss(labels: torch.Tensor) -> float:
        model = build(0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(5):
            optimizer.zero_grad()
            loss = -(labels * F.log_softmax(model(images), 1)).sum(1).mean()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return float(F.cross_entropy(model(x), y))

    result = learn_labels(build, images, init, x, y, outer_steps=30, inner_steps=5,
                          inner_lr=0.5, label_lr=0.1, batch_real=len(x), device="cpu",
                          show_progress=False)
    assert result.labels.shape == init.shape
    torch.testing.assert_close(result.labels.sum(1), torch.ones(len(images)))
    assert unrolled_loss(result.labels) < unrolled_loss(init) - 0.01
    assert result.losses[-1] < result.losses[0]


def test_learned_labels_check_their_input() -> None:
    x, y = _blobs(4)
    with pytest.raises(ValueError, match="init_labels"):
        learn_labels(_convnet, x[:3], torch.full((3, 3), 0.5), x, y, device="cpu")
    with pytest.raises(ValueError, match="real_labels"):
        learn_labels(_convnet, x[:3], torch.full((3, 3), 1 / 3), x, y[:-1], device="cpu")


# ------------------------------------------------------------------------------- devices


def test_experts_on_device(device: str, tmp_path: Path) -> None:
    """train_experts and Experts.logits on the device: every epoch saved, logits on the CPU
    (by contract) that are the saved epoch's model's, the ensemble the mean of its experts;
    off the CPU, the CPU's experts."""
    x, y = quadrant_blobs(4)
    config = TrainConfig(epochs=2, batch_size=6, lr=0.05)

    def run(where: str) -> torch.Tensor:
        experts = train_experts(tiny_convnet, x, y, config, [0, 1], tmp_path / where,
                                device=where, show_progress=False)
        assert experts.saved_epochs() == [0, 1, 2]
        logits = experts.logits(2, x.to(where), batch_size=5)
        assert_on(logits, "cpu")
        return logits

    logits = run(device)
    single = []
    for seed in (0, 1):
        model = tiny_convnet(seed)
        model.load_state_dict(load_epoch_checkpoint(tmp_path / device / f"seed{seed}", 2))
        with torch.no_grad():
            single.append(model.eval()(x))
        torch.testing.assert_close(Experts(tiny_convnet, tmp_path / device, [seed],
                                           device=device).logits(2, x), single[-1])
    torch.testing.assert_close(logits, (single[0] + single[1]) / 2)
    if off_cpu(device):
        # A training loop: rounding differences grow over the steps.
        torch.testing.assert_close(logits, run("cpu"), atol=TRAIN_TOL, rtol=TRAIN_TOL)


@pytest.mark.parametrize("data_on_device", [False, True])
def test_dm_on_device(device: str, data_on_device: bool) -> None:
    """distribution_matching on the device, real data on the CPU or the device. With a fixed
    embedder, no augmentation and one image per class repeated (so every real batch has one
    mean), the first loss and SGD step are the formula's; with a ConvNet and DSA the images
    stay images and move; off the CPU, the CPU's images and losses. Images come back on the
    CPU, by contract."""
    base = torch.rand(3, 1, 8, 8, generator=gen(1))
    x, y = base.repeat_interleave(4, 0), torch.arange(3).repeat_interleave(4)
    init, init_labels = torch.rand(6, 1, 8, 8, generator=gen(2)), torch.tensor([0, 0, 1, 1, 2, 2])
    data = [t.to(device) if data_on_device else t for t in (x, y, init, init_labels)]
    result = distribution_matching(lambda seed: _FixedEmbedder(), *data, iterations=1, lr=0.5,
                                   batch_real=4, strategy="none", device=device,
                                   show_progress=False)
    net, synthetic = _FixedEmbedder(), init.clone().requires_grad_(True)
    loss = sum((net.embed(base[c:c + 1]).mean(0) - net.embed(synthetic[2 * c:2 * c + 2]).mean(0)
                ).pow(2).sum() for c in range(3))
    loss.backward()
    assert result.losses == pytest.approx([float(loss.detach())], rel=1e-5)
    # The first SGD step is momentum-free; then the pixels are clamped to [0, 1].
    assert_close_on(result.images, (init - 0.5 * synthetic.grad).clamp(0, 1), "cpu")
    assert torch.equal(result.labels.cpu(), init_labels)

    blobs, labels = quadrant_blobs(6)
    start = blobs[::6].clone()

    def run(where: str, move: bool) -> object:
        tensors = [t.to(where) if move else t for t in (blobs, labels, start, labels[::6])]
        return distribution_matching(tiny_convnet, *tensors, iterations=3, batch_real=4,
                                     device=where, show_progress=False)

    trained = run(device, data_on_device)
    assert_on(trained.images, "cpu")
    assert 0.0 <= float(trained.images.min()) <= float(trained.images.max()) <= 1.0
    assert not torch.equal(trained.images, start)
    assert all(math.isfinite(v) and v > 0 for v in trained.losses)
    if off_cpu(device):
        expected = run("cpu", False)
        assert_close_on(trained.images, expected.images, "cpu", atol=1e-4, rtol=1e-4)
        assert trained.losses == pytest.approx(expected.losses, rel=1e-4)


def test_learn_labels_on_device(device: str) -> None:
    """learn_labels with images, labels and real data on the device and a fixed linear
    student; the real data one image repeated, so every real batch is the same. One outer
    step is the documented unroll by hand: inner_steps SGD steps on softmax(label logits),
    the real cross-entropy, Adam's first step (lr * g / (|g| + eps)) on the label logits.
    Labels come back on the CPU as probabilities; off the CPU, the CPU's."""
    x, y = _blobs(4)
    images, init = x[::4], one_hot(y[::4], 3) * 0.4 + 0.2
    real, real_labels = x[:1].repeat(6, 1, 1, 1), y[:1].repeat(6)

    def build(seed: int) -> nn.Module:  # one fixed student: the outer loss is deterministic
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

    def run(where: str) -> object:
        return learn_labels(build, images.to(where), init.to(where), real.to(where),
                            real_labels.to(where), outer_steps=1, inner_steps=3, inner_lr=0.5,
                            label_lr=0.1, batch_real=6, device=where, show_progress=False)

    result = run(device)
    label_logits = init.log().requires_grad_(True)
    weight, bias = (p.detach().requires_grad_(True) for p in build(0)[1].parameters())
    for _ in range(3):
        logits = images.flatten(1) @ weight.T + bias
        inner = -(label_logits.softmax(1) * F.log_softmax(logits, 1)).sum(1).mean()
        grad_w, grad_b = torch.autograd.grad(inner, (weight, bias), create_graph=True)
        weight, bias = weight - 0.5 * grad_w, bias - 0.5 * grad_b
    outer = F.cross_entropy(real[:1].flatten(1) @ weight.T + bias, real_labels[:1])
    (grad,) = torch.autograd.grad(outer, label_logits)
    expected = (init.log() - 0.1 * grad / (grad.abs() + 1e-8)).softmax(1)
    assert result.losses == pytest.approx([float(outer.detach())], rel=1e-5)
    assert_close_on(result.labels, expected, "cpu", atol=1e-5, rtol=1e-4)
    validate(result.labels)
    if off_cpu(device):
        expected_run = run("cpu")
        assert_close_on(result.labels, expected_run.labels, "cpu", atol=1e-5, rtol=1e-5)
        assert result.losses == pytest.approx(expected_run.losses, rel=1e-5)
