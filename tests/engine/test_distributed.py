"""Two gloo processes compute what one process computes: weights, temperatures, scores.

One spawn of two ranks (``OMP_NUM_THREADS=1``, bounded by a timeout so CI never hangs) runs
every scenario and saves its results; the single-process references run in the test process.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from softlabels.attacks import robust_evaluate, standard_attacks
from softlabels.data import RandomFlip, SegmentationDataset
from softlabels.data.types import DatasetInfo
from softlabels.engine import TrainConfig, evaluate, fit
from softlabels.models import create_model
from softlabels.robust import ABSLD, AttackConfig
from softlabels.seg import evaluate_segmentation

WORLD = 2
N = 37  # uneven: shards of a batch differ in size, and the last batch is short
CONFIG = TrainConfig(epochs=3, batch_size=8, lr=0.05, seed=3, schedule="constant")


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(N, 1, 8, 8, generator=g), torch.arange(N) % 4


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("convnet", 4, 1, 8, width=4, depth=1)


class _Labels(torch.utils.data.Dataset):
    """A dataset whose item 30 has an impossible label (read by one rank only)."""

    def __init__(self, bad: bool) -> None:
        self.x, self.y = _data()
        self.bad = bad

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], torch.tensor(99 if self.bad and i == 30 else int(self.y[i]))


def _scenarios(tmp: Path) -> dict[str, Any]:
    """Everything both the ranks and the single process compute."""
    x, y = _data()
    out: dict[str, Any] = {}
    model = _model()
    fit(model, x, y, CONFIG, augment=RandomFlip(), device="cpu", show_progress=False)
    out["fit"] = model.state_dict()
    out["evaluate"] = evaluate(model, x, y, batch_size=5, device="cpu").classwise_accuracy
    scores = robust_evaluate(model, x, y, standard_attacks(0.05, pgd_steps=3, seed=1),
                             batch_size=7, device="cpu")
    out["robust"] = {name: r.classwise_accuracy for name, r in scores.items()}
    student, teacher = _model(1), _model(2)
    absld = ABSLD(student, teacher, AttackConfig(0.05, 0.02, 2), num_classes=4,
                  generator=torch.Generator().manual_seed(5))
    fit(student, x, y, CONFIG, objective=absld.objective, hooks=[absld], device="cpu",
        show_progress=False)
    out["absld"] = student.state_dict()
    out["tau"] = absld.adv_temperatures.values.clone()
    masks = (x[:, 0] * 3).long().clamp_max(2)
    masks[:, 0, 0] = 255  # an ignored pixel
    segmenter = create_model("unet", 3, 1, 8, base_width=4)
    scenes = SegmentationDataset(x, masks, DatasetInfo("toy", ("a", "b", "c"), (0.5,), (0.3,)),
                                 ignore_index=255)
    out["seg"] = evaluate_segmentation(segmenter, scenes, batch_size=5, device="cpu")
    # Interrupted after 2 of 3 epochs (every rank stops at the same point)...
    stop = _StopAfter(2)
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), x, y, CONFIG, hooks=[stop], checkpoint_dir=tmp / "ckpt", device="cpu",
            show_progress=False)
    return out


class _StopAfter:
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def epoch_end(self, epoch: int) -> None:
        if epoch > self.epochs:
            raise KeyboardInterrupt


def _rank(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        out = _scenarios(Path(tmp))
        errors = {}
        for name, run in (("labels", lambda: fit(_model(), _Labels(bad=True), config=CONFIG,
                                                  device="cpu", show_progress=False)),
                          ("config", lambda: fit(_model(), *_data(), TrainConfig(
                              epochs=1, lr=0.1 * (rank + 1)), device="cpu",
                              show_progress=False)),
                          ("world", lambda: fit(_model(), _data()[0][:1], _data()[1][:1],
                                                CONFIG, device="cpu", show_progress=False))):
            try:
                run()
            except ValueError as err:
                errors[name] = str(err)
        out["errors"] = errors
        torch.save(out, Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    workers = [context.Process(target=_rank, args=(r, port, str(tmp))) for r in range(WORLD)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    alive = [w for w in workers if w.is_alive()]
    for worker in alive:
        worker.kill()
    assert not alive, "a rank hung"
    assert all(w.exitcode == 0 for w in workers), [w.exitcode for w in workers]
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], tmp


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _scenarios(tmp_path_factory.mktemp("one"))


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_ranks_train_the_weights_one_process_trains(ranks: Any, single: Any) -> None:
    outs, _ = ranks
    for out in outs:
        _close(out["fit"], single["fit"])  # flip augmentation and an uneven split included
        _close(out["absld"], single["absld"])
        torch.testing.assert_close(out["tau"], single["tau"])  # risks all-reduced first


@pytest.mark.slow
def test_all_reduced_scores_equal_one_process(ranks: Any, single: Any) -> None:
    for out in ranks[0]:
        assert torch.equal(out["evaluate"].nan_to_num(-1), single["evaluate"].nan_to_num(-1))
        for name, accuracy in single["robust"].items():
            torch.testing.assert_close(out["robust"][name], accuracy)
        # Counts gathered in image order: exact. ECE sums probabilities that other batch
        # shapes round differently, so it is equal up to float rounding.
        exact = {k: v for k, v in single["seg"].items() if not k.startswith("ece")}
        assert str({k: out["seg"][k] for k in exact}) == str(exact)
        for key in ("ece_dataset", "ece_image"):
            assert out["seg"][key] == pytest.approx(single["seg"][key], rel=1e-6)


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process(ranks: Any) -> None:
    x, y = _data()
    model = _model()
    result = fit(model, x, y, CONFIG, hooks=[_StopAfter(CONFIG.epochs)],
                 checkpoint_dir=ranks[1] / "ckpt", device="cpu", show_progress=False)
    assert result.start_epoch == 2
    _close(model.state_dict(), _uninterrupted())


def _uninterrupted() -> dict[str, torch.Tensor]:
    x, y = _data()
    model = _model()
    fit(model, x, y, CONFIG, device="cpu", show_progress=False)
    return model.state_dict()


@pytest.mark.slow
def test_bad_input_on_one_rank_stops_every_rank_with_its_message(ranks: Any) -> None:
    for out in ranks[0]:
        assert "training stopped on every rank: rank " in out["errors"]["labels"]
        assert "[0, 4)" in out["errors"]["labels"]
        assert "99" in out["errors"]["labels"]
        assert "the training config differs between ranks" in out["errors"]["config"]
        assert "2 ranks but only 1 training samples" in out["errors"]["world"]


def test_nccl_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from softlabels.distributed import init_from_environment

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"NCCL .* but CUDA is not available; use --device cpu"):
        init_from_environment("cuda")
