"""Tests of the training engine: fit, evaluate, checkpoints and resume."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from softlabels.data import augmentation
from softlabels.engine import (
    NonFiniteLossError,
    TrainConfig,
    evaluate,
    fit,
    load_epoch_checkpoint,
    predict_logits,
)
from softlabels.labels import smooth
from softlabels.models import create_model
from softlabels.runtime import build_seeded

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import (
    TRAIN_TOL,
    assert_on,
    assert_states_close,
    device_fixture,  # noqa: F401  (the device fixture)
    off_cpu,
    quadrant_blobs,
    seeded,
)


def blobs(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three Gaussian blobs drawn as 1x4x4 'images' in [0, 1]: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.rand(3, 16, generator=g)
    x = (centres[y] + 0.08 * torch.randn(n, 16, generator=g)).clamp(0, 1)
    return x.reshape(n, 1, 4, 4), y


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))


CONFIG = TrainConfig(epochs=6, batch_size=32, lr=0.2, seed=1, eval_every=2)


def test_fit_learns_hard_and_soft_labels() -> None:
    x, y = blobs()
    xt, yt = blobs(seed=0)
    for targets in (y, smooth(y, 3, 0.1)):
        result = fit(tiny_model(), x, targets, CONFIG, eval_data=(xt, yt), device="cpu",
                     show_progress=False)
        assert result.final is not None
        assert result.final.accuracy > 0.95
        assert [h["epoch"] for h in result.history] == list(range(1, 7))
        assert [("eval_accuracy" in h) for h in result.history] == [False, True] * 3
        assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_same_seed_same_weights() -> None:
    x, y = blobs()
    a = fit(tiny_model(), x, y, CONFIG, device="cpu", show_progress=False).model
    b = fit(tiny_model(), x, y, CONFIG, device="cpu", show_progress=False).model
    c = fit(tiny_model(), x, y, TrainConfig(epochs=6, batch_size=32, lr=0.2, seed=2),
            device="cpu", show_progress=False).model
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(),
                                                         strict=True))


def test_cosine_and_step_schedules() -> None:
    x, y = blobs(60)
    cosine = fit(tiny_model(), x, y, TrainConfig(epochs=4, lr=1.0), device="cpu",
                 show_progress=False)
    assert [h["lr"] for h in cosine.history] == pytest.approx([1.0, 0.853553, 0.5, 0.146447],
                                                                rel=1e-5)
    step = fit(tiny_model(), x, y, TrainConfig(epochs=4, lr=1.0, schedule="step",
                                               milestones=(1, 3), gamma=0.5),
               device="cpu", show_progress=False)
    assert [h["lr"] for h in step.history] == [1.0, 0.5, 0.5, 0.25]
    adamw = fit(tiny_model(), x, y, TrainConfig(epochs=2, lr=0.01, optimizer="adamw",
                                                schedule="constant"),
                device="cpu", show_progress=False)
    assert [h["lr"] for h in adamw.history] == [0.01, 0.01]


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    x, y = blobs()
    full = fit(tiny_model(), x, y, CONFIG, device="cpu", show_progress=False)
    # An interrupted run: train 3 of 6 epochs by stopping through a failing augmentation.
    calls = {"n": 0}
    steps_per_epoch = -(-x.shape[0] // CONFIG.batch_size)

    def stop_in_epoch_four(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > 3 * steps_per_epoch:
            raise KeyboardInterrupt
        return batch

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), x, y, CONFIG, augment=stop_in_epoch_four, checkpoint_dir=tmp_path,
            device="cpu", show_progress=False)
    resumed = fit(tiny_model(seed=99), x, y, CONFIG, augment=lambda b, g: b,
                  checkpoint_dir=tmp_path, device="cpu", show_progress=False)
    assert resumed.start_epoch == 3
    assert len(resumed.history) == 6
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_a_save_interval_writes_the_first_due_and_last_epochs_and_still_resumes_exactly(
        tmp_path: Path) -> None:
    """With an hour between writes, ``last.pt`` holds epoch 1 (then 4, a kept checkpoint)
    when epoch 5 fails; the resumed run redoes epochs 5-6 and ends where the whole one does."""
    x, y = blobs()
    config = dataclasses.replace(CONFIG, save_interval=3600.0, checkpoint_every=4)
    full = fit(tiny_model(), x, y, CONFIG, device="cpu", show_progress=False)
    steps_per_epoch = -(-x.shape[0] // CONFIG.batch_size)
    seen: list[int] = []

    def stop_in_epoch_five(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seen.append(1)
        if len(seen) == 1:  # after epoch 1's write, only epoch 4 may write
            assert not (tmp_path / "last.pt").exists()
        if len(seen) == steps_per_epoch + 1:
            assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
        if len(seen) == 2 * steps_per_epoch + 1:  # epoch 2 wrote nothing
            assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
        if len(seen) > 4 * steps_per_epoch:
            raise KeyboardInterrupt
        return batch

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), x, y, config, augment=stop_in_epoch_five, checkpoint_dir=tmp_path,
            device="cpu", show_progress=False)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 4
    # Another interval resumes the same checkpoint: the interval is not in the fingerprint.
    resumed = fit(tiny_model(seed=99), x, y, dataclasses.replace(config, save_interval=0.0),
                  augment=lambda b, g: b, checkpoint_dir=tmp_path, device="cpu",
                  show_progress=False)
    assert resumed.start_epoch == 4
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == CONFIG.epochs
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)
    with pytest.raises(ValueError, match="save_interval"):
        TrainConfig(save_interval=-1.0)


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    x, y = blobs(60)
    fit(tiny_model(), x, y, TrainConfig(epochs=1), checkpoint_dir=tmp_path, device="cpu",
        show_progress=False)
    with pytest.raises(ValueError, match=r"differs in \['config.epochs', 'config.lr'\]"):
        fit(tiny_model(), x, y, TrainConfig(epochs=2, lr=0.5), checkpoint_dir=tmp_path,
            device="cpu", show_progress=False)
    # resume=False starts over on purpose.
    fit(tiny_model(), x, y, TrainConfig(epochs=2, lr=0.5), checkpoint_dir=tmp_path,
        resume=False, device="cpu", show_progress=False)


def test_epoch_checkpoints(tmp_path: Path) -> None:
    x, y = blobs(60)
    model = tiny_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, x, y, TrainConfig(epochs=4, checkpoint_every=2), checkpoint_dir=tmp_path,
        device="cpu", show_progress=False)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == [
        "epoch_0000.pt", "epoch_0002.pt", "epoch_0004.pt"]
    zero = load_epoch_checkpoint(tmp_path, 0)
    assert all(torch.equal(zero[k], initial[k]) for k in initial)
    last = load_epoch_checkpoint(tmp_path, 4)
    assert all(torch.equal(last[k], v) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match=r"saved epochs: \[0, 2, 4\]"):
        load_epoch_checkpoint(tmp_path, 3)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"garbage")
    x, y = blobs(30)
    with pytest.raises(ValueError, match="corrupt or not a softlabels checkpoint"):
        fit(tiny_model(), x, y, TrainConfig(epochs=1), checkpoint_dir=tmp_path, device="cpu",
            show_progress=False)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    x, y = blobs(60)
    config = TrainConfig(epochs=3, batch_size=30)
    calls = {"n": 0}

    def poison_in_epoch_two(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = nn.functional.cross_entropy(logits, targets)
        return loss * float("nan") if calls["n"] == 3 else loss

    with pytest.raises(NonFiniteLossError, match="epoch 2, step 0"):
        fit(tiny_model(), x, y, config, loss_fn=poison_in_epoch_two, checkpoint_dir=tmp_path,
            device="cpu", show_progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize(
    ("images", "targets", "error", "message"),
    [
        (torch.rand(4, 16), torch.zeros(4, dtype=torch.int64), ValueError, "4 dimensions"),
        (torch.rand(4, 1, 4, 4), torch.zeros(3, dtype=torch.int64), ValueError, "3 rows"),
        (torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.int32), TypeError, "int64"),
        (torch.rand(4, 1, 4, 4), torch.tensor([0, 1, -2, 0]), ValueError, ">= 0"),
        (torch.rand(4, 1, 4, 4), torch.full((4, 3), 0.5), ValueError, "rows must sum"),
        (torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.int64), ValueError, "empty"),
        (torch.zeros(4, 1, 4, 4, dtype=torch.int64), torch.zeros(4, dtype=torch.int64),
         TypeError, "floating-point"),
    ],
)
def test_fit_bad_data(images, targets, error, message) -> None:
    with pytest.raises(error, match=message):
        fit(tiny_model(), images, targets, TrainConfig(epochs=1), device="cpu",
            show_progress=False)


def test_label_out_of_range_is_caught_not_clamped() -> None:
    x, _ = blobs(8)
    with pytest.raises(ValueError, match="class indices"):
        fit(tiny_model(), x, torch.full((8,), 3), TrainConfig(epochs=1), device="cpu",
            show_progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"epochs": 0}, "epochs must be > 0"), ({"optimizer": "adam"}, "optimizer must be one of"),
     ({"lr": -1.0}, "lr must be > 0"), ({"schedule": "linear"}, "schedule must be one of"),
     ({"milestones": (5,), "epochs": 5}, "milestones must lie"),
     ({"checkpoint_every": -1}, "checkpoint_every must be"), ({"momentum": 2.0}, "momentum")],
)
def test_config_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_evaluate_and_predict() -> None:
    x, y = blobs(90)
    model = tiny_model()
    model.train()
    logits = predict_logits(model, x, batch_size=7, device="cpu")
    assert model.training  # mode restored
    assert logits.shape == (90, 3)
    result = evaluate(model, x, y, batch_size=16, device="cpu")
    assert result.accuracy == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert result.loss == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)
    per_class = [float((logits.argmax(1)[y == c] == c).float().mean()) for c in range(3)]
    assert result.classwise_accuracy.tolist() == pytest.approx(per_class)
    assert result.worst_class_accuracy == pytest.approx(min(per_class))
    with pytest.raises(ValueError, match="class indices"):
        evaluate(model, x, torch.full((90,), 5), device="cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        evaluate(model, x, y, device="tpu")


def test_objective_terms_are_summed_and_logged() -> None:
    x, y = blobs(60)
    seen_models = []

    def objective(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> dict:
        seen_models.append(model)
        logits = model(xb)
        return {"ce": nn.functional.cross_entropy(logits, yb), "l2": 0.01 * logits.pow(2).mean()}

    model = tiny_model()
    result = fit(model, x, y, TrainConfig(epochs=2, batch_size=20), objective=objective,
                 device="cpu", show_progress=False)
    assert all(m is model for m in seen_models)
    for record in result.history:
        assert record["loss"] == pytest.approx(record["ce"] + record["l2"], rel=1e-6)


def test_paired_augment_moves_images_and_dense_targets_together() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 1, 4, 6, generator=g)
    masks = (images[:, 0] > 0.5).long()  # the mask is a function of the pixel values
    calls = []

    def flip_both(xb, yb, generator):
        calls.append(1)
        return xb.flip(-1), yb.flip(-1)

    def objective(model, xb, yb):
        assert torch.equal((xb[:, 0] > 0.5).long(), yb)  # still aligned after the flip
        return model(xb).mean() * 0 + nn.functional.cross_entropy(model(xb), yb)

    conv = nn.Conv2d(1, 2, 1)
    fit(conv, images, masks, TrainConfig(epochs=1, batch_size=4), objective=objective,
        paired_augment=flip_both, device="cpu", show_progress=False)
    assert len(calls) == 2


def test_resume_restores_the_global_rng_used_by_dropout(tmp_path: Path) -> None:
    x, y = blobs(90)

    def dropout_model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Dropout(0.5), nn.ReLU(),
                             nn.Linear(32, 3))

    config = TrainConfig(epochs=4, batch_size=30, lr=0.1, seed=3)
    torch.manual_seed(123)
    full = fit(dropout_model(), x, y, config, device="cpu", show_progress=False)
    calls = {"n": 0}

    def stop_after_two_epochs(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > 6:
            raise KeyboardInterrupt
        return batch

    torch.manual_seed(123)
    model = dropout_model()
    with pytest.raises(KeyboardInterrupt):
        fit(model, x, y, config, augment=stop_after_two_epochs, checkpoint_dir=tmp_path,
            device="cpu", show_progress=False)
    torch.manual_seed(999)  # a different global state must not matter after resuming
    resumed = fit(dropout_model(), x, y, config, augment=lambda b, g: b,
                  checkpoint_dir=tmp_path, device="cpu", show_progress=False)
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_config_rejects_repeated_milestones_and_unit_momentum() -> None:
    with pytest.raises(ValueError, match="milestones must be distinct"):
        TrainConfig(epochs=10, schedule="step", milestones=(5, 5))
    with pytest.raises(ValueError, match="momentum must be < 1"):
        TrainConfig(momentum=1.0)


def test_a_trailing_single_sample_joins_the_previous_batch() -> None:
    x, y = blobs(33)  # 33 = 2 * 16 + 1
    sizes = []

    def objective(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        sizes.append(xb.shape[0])
        return nn.functional.cross_entropy(model(xb), yb)

    torch.manual_seed(0)
    bn_model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    fit(bn_model, x, y, TrainConfig(epochs=1, batch_size=16), objective=objective,
        device="cpu", show_progress=False)
    assert sizes == [16, 17]


# ------------------------------------------------------------------------ devices


@pytest.mark.parametrize("soft", [False, True])
def test_fit_evaluate_and_predict_on_device(device: str, soft: bool) -> None:
    """fit with augmentation and evaluation data on the device (labels there too): the model
    stays there and learns, predict_logits returns CPU tensors (by contract), evaluate's
    accuracy and loss are those of the logits; off the CPU, the CPU's weights and history."""
    x, y = quadrant_blobs(8, channels=3)
    xt, yt = quadrant_blobs(4, channels=3, seed=1)
    targets = smooth(y, 3, 0.1) if soft else y
    config = TrainConfig(epochs=3, batch_size=8, lr=0.05, eval_every=1)

    def run(where: str) -> tuple[nn.Module, object, torch.Tensor, object]:
        model = seeded(lambda: create_model("convnet", 3, 3, 8, width=8, depth=2), 0)
        result = fit(model, x, targets, config, augment=augmentation("flip_crop", 8),
                     eval_data=(xt.to(where), yt.to(where)), device=where,
                     show_progress=False)
        assert result.model is model
        assert all(p.device.type == torch.device(where).type for p in model.parameters())
        logits = predict_logits(model, xt.to(where), batch_size=5, device=where)
        assert_on(logits, "cpu")
        return model, result, logits, evaluate(model, xt, yt.to(where), device=where)

    model, result, logits, evaluation = run(device)
    assert result.history[-1]["loss"] < result.history[0]["loss"]  # the blobs are learnable
    assert [h["lr"] for h in result.history] == pytest.approx([0.05, 0.0375, 0.0125])  # cosine
    assert all("eval_accuracy" in h for h in result.history)
    assert evaluation.accuracy == pytest.approx(float((logits.argmax(1) == yt).double().mean()))
    assert evaluation.loss == pytest.approx(float(nn.functional.cross_entropy(logits, yt)),
                                            rel=1e-5)
    if off_cpu(device):
        model_cpu, result_cpu, logits_cpu, evaluation_cpu = run("cpu")
        # Training loops: rounding differences grow over the steps.
        assert_states_close(model.state_dict(), model_cpu.state_dict(), atol=TRAIN_TOL,
                            rtol=TRAIN_TOL)
        torch.testing.assert_close(logits, logits_cpu, atol=TRAIN_TOL, rtol=TRAIN_TOL)
        assert evaluation.loss == pytest.approx(evaluation_cpu.loss, abs=TRAIN_TOL)
        for record, reference in zip(result.history, result_cpu.history, strict=True):
            assert record["loss"] == pytest.approx(reference["loss"], rel=TRAIN_TOL)
            assert record["lr"] == reference["lr"]


class _InterruptedError(Exception):
    """Raised by an augmentation to stop a fit run part-way, as a crash would."""


def _dropout_net() -> nn.Module:
    """A small classifier with dropout, which draws from the global RNG of its device."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(16, 3))


def test_fit_resumes_on_the_device(device: str, tmp_path: Path) -> None:
    """A run interrupted on the device resumes from its checkpoint (loaded on the CPU) into a
    device model and optimizer, and ends where the uninterrupted run ends, dropout included:
    the resumed process's RNG is reseeded to stand for a new process."""
    x, y = quadrant_blobs(6)
    config = TrainConfig(epochs=3, batch_size=6, lr=0.05)
    torch.manual_seed(0)  # fit's dropout draws from the global RNG of the device
    full = fit(seeded(_dropout_net, 0), x, y, config, device=device, show_progress=False)
    steps = {"n": 0}

    def stop_in_epoch_three(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        steps["n"] += 1
        if steps["n"] > 2 * 3:  # 18 images in batches of 6: three steps per epoch
            raise _InterruptedError
        return batch

    torch.manual_seed(0)
    with pytest.raises(_InterruptedError):
        fit(seeded(_dropout_net, 0), x, y, config, augment=stop_in_epoch_three,
            checkpoint_dir=tmp_path, device=device, show_progress=False)
    torch.manual_seed(1234)  # a new process: the checkpoint must restore what dropout needs
    resumed = fit(seeded(_dropout_net, 9), x, y, config,
                  augment=lambda batch, generator: batch, checkpoint_dir=tmp_path,
                  device=device, show_progress=False)
    assert resumed.start_epoch == 2
    # The same device and the same steps: equal up to the device's non-deterministic sums.
    assert_states_close(resumed.model.state_dict(), full.model.state_dict(), atol=1e-5,
                        rtol=1e-5)
    assert all(p.device.type == torch.device(device).type for p in resumed.model.parameters())


def test_build_seeded_leaves_the_callers_rng_alone(device: str) -> None:
    """build_seeded promises to leave the caller's RNG untouched: on a GPU that includes the
    CUDA generator, which attacks without a generator and dropout draw from."""
    def state() -> torch.Tensor:
        return torch.cuda.get_rng_state() if off_cpu(device) else torch.get_rng_state()

    # Draw first, so the state is not one that seeding could give back by chance (an earlier
    # build_seeded(5) in this process would otherwise leave exactly the state it sets).
    torch.rand(7, device=device)
    before = state()
    first = build_seeded(lambda seed: nn.Linear(4, 3), 5)
    assert torch.equal(state(), before)
    second = build_seeded(lambda seed: nn.Linear(4, 3), 5)
    assert torch.equal(first.weight, second.weight)  # seeded: the same model each time
    assert not torch.equal(first.weight, build_seeded(lambda seed: nn.Linear(4, 3), 6).weight)
