"""Datasets and DataLoaders in, not only tensors: the same batches, weights and scores."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from softlabels.attacks import robust_evaluate, standard_attacks
from softlabels.data import RandomFlip, load_dataset, stream_dataset
from softlabels.data.types import DatasetInfo, ImageDataset
from softlabels.distill import train_students
from softlabels.engine import TrainConfig, evaluate, fit, from_torch_dataset, predict_logits

CONFIG = TrainConfig(epochs=2, batch_size=16, lr=0.1, seed=4)


def _tensors(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 6, 6, generator=g), torch.arange(n) % 3


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


class _Items(Dataset):
    """A plain map-style dataset over the same tensors (no ``tensors()`` shortcut)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def _trained(data: object, targets: torch.Tensor | None = None, **options: object) -> dict:
    model = _model()
    fit(model, data, targets, CONFIG, augment=RandomFlip(), device="cpu",
        show_progress=False, **options)  # type: ignore[arg-type]
    return model.state_dict()


def _equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_a_dataset_trains_exactly_the_weights_of_its_tensors() -> None:
    x, y = _tensors()
    reference = _trained(x, y)
    info = DatasetInfo("toy", ("a", "b", "c"), (0.5,), (0.25,))
    assert _equal(_trained(ImageDataset(x, y, info)), reference)
    assert _equal(_trained(_Items(x, y)), reference)
    assert _equal(_trained(_Items(x, y), num_workers=2), reference)  # decoded in workers
    pairs = [(x[i].permute(1, 2, 0).numpy(), int(y[i])) for i in range(len(x))]  # (H, W, C)
    assert _equal(_trained(from_torch_dataset(pairs)), reference)
    assert not _equal(_trained(x, y.roll(1)), reference)  # the comparison can fail


def test_a_dataloader_is_read_in_its_own_order() -> None:
    x, y = _tensors()
    loader = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    result = fit(_model(), loader, config=TrainConfig(epochs=3, lr=0.1), device="cpu",
                 show_progress=False)
    assert len(result.history) == 3
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_evaluation_reads_datasets_like_tensors() -> None:
    x, y = _tensors()
    model = _model()
    assert torch.equal(predict_logits(model, _Items(x, y), batch_size=7, device="cpu"),
                       predict_logits(model, x, batch_size=7, device="cpu"))
    by_items = evaluate(model, _Items(x, y), batch_size=7, device="cpu")
    by_tensors = evaluate(model, x, y, device="cpu")
    assert by_items.accuracy == by_tensors.accuracy
    assert by_items.classwise_accuracy.tolist() == by_tensors.classwise_accuracy.tolist()
    attacks = standard_attacks(0.05, pgd_steps=2, seed=3)
    on_items = robust_evaluate(model, _Items(x, y), None, attacks, batch_size=9, device="cpu")
    on_tensors = robust_evaluate(model, x, y, attacks, batch_size=9, device="cpu")
    assert {k: r.accuracy for k, r in on_items.items()} == {
        k: r.accuracy for k, r in on_tensors.items()}


def test_students_take_a_dataset() -> None:
    x, y = _tensors(12)
    def build(seed: int) -> nn.Module:
        return _model()
    config = TrainConfig(epochs=2, batch_size=12)
    on_items = train_students(build, _Items(x, y), None, config, [0, 1], vectorize=False,
                              eval_data=_Items(x, y), device="cpu", show_progress=False)
    on_tensors = train_students(build, x, y, config, [0, 1], vectorize=False,
                                eval_data=(x, y), device="cpu", show_progress=False)
    assert on_items.final_accuracy == on_tensors.final_accuracy


def test_bf16_autocast_trains_on_the_cpu() -> None:
    x, y = _tensors()
    model = _model()
    result = fit(model, x, y, TrainConfig(epochs=4, lr=0.1, precision="bf16"), device="cpu",
                 show_progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    reference = _trained(x, y)
    assert not _equal(model.state_dict(), reference)


def test_channels_last_and_history_csv(tmp_path: Path) -> None:
    x, y = _tensors()
    model = _model()
    fit(model, x, y, TrainConfig(epochs=2, channels_last=True, eval_every=1), eval_data=(x, y),
        checkpoint_dir=tmp_path, device="cpu", show_progress=False)
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "lr", "eval_accuracy", "seconds"} <= set(rows[0])
    assert 0.0 <= float(rows[1]["eval_accuracy"]) <= 1.0


@pytest.mark.parametrize(("data", "message"), [
    ([(torch.rand(1, 6, 6), 0), (torch.rand(1, 5, 6), 1)], "dataset item 1 has image"),
    ([(torch.zeros(1, 6, 6, dtype=torch.uint8), 0)] * 2, "must be a float"),
    ([(torch.rand(1, 6, 6) * 3, 0)] * 2, r"finite and in \[0, 1\]"),
    ([torch.rand(1, 6, 6)] * 2, "must be an \\(image, target\\) pair"),
])
def test_bad_dataset_items_are_named(data: list, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        fit(_model(), data, config=CONFIG, device="cpu", show_progress=False)


def test_out_of_range_labels_from_a_dataloader() -> None:
    x, y = _tensors()
    loader = DataLoader(TensorDataset(x, y + 5), batch_size=10)
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 3\)"):
        fit(_model(), loader, config=CONFIG, device="cpu", show_progress=False)


def test_settings_that_cannot_run() -> None:
    x, y = _tensors()
    with pytest.raises(ValueError, match="precision fp16 needs CUDA"):
        fit(_model(), x, y, TrainConfig(precision="fp16"), device="cpu", show_progress=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match=r"targets must be a tensor with one row per item of "
                                         r"the _Items \(50\)"):
        fit(_model(), _Items(x, y), y[:3], CONFIG, device="cpu", show_progress=False)
    with pytest.raises(TypeError, match="targets come from the DataLoader"):
        fit(_model(), DataLoader(TensorDataset(x, y)), y, CONFIG, device="cpu",
            show_progress=False)


def test_targets_given_with_a_dataset_replace_its_own() -> None:
    x, y = _tensors()
    soft = torch.softmax(torch.randn(len(x), 3, generator=torch.Generator().manual_seed(2)), 1)
    assert _equal(_trained(_Items(x, y), soft), _trained(x, soft))


def test_a_streamed_imagefolder_trains_like_the_decoded_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for name in ("cat", "dog"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    decoded = load_dataset("imagefolder", tmp_path, "train", cache_dir=False)
    streamed = stream_dataset("imagefolder", tmp_path, "train")
    assert streamed.info == decoded.info.__class__(**{**decoded.info.__dict__,
                                                     "mean": streamed.info.mean,
                                                     "std": streamed.info.std})
    np.testing.assert_allclose(streamed.info.mean, decoded.info.mean, atol=1e-6)
    torch.manual_seed(0)
    a = nn.Sequential(nn.Flatten(), nn.Linear(108, 2))
    b = nn.Sequential(nn.Flatten(), nn.Linear(108, 2))
    b.load_state_dict(a.state_dict())
    config = TrainConfig(epochs=2, batch_size=5)
    fit(a, decoded, config=config, device="cpu", show_progress=False)
    fit(b, streamed, config=config, num_workers=1, device="cpu", show_progress=False)
    assert _equal(a.state_dict(), b.state_dict())
    with pytest.raises(ValueError, match="cannot stream"):
        stream_dataset("mnist", tmp_path)


@pytest.mark.data
def test_a_streamed_camvid_split_equals_the_decoded_one(test_data_root: Path) -> None:
    from softlabels.data import load_segmentation, stream_segmentation
    from softlabels.seg import evaluate_segmentation

    streamed = stream_segmentation("camvid", test_data_root / "camvid", "val")
    decoded = load_segmentation("camvid", test_data_root / "camvid", "val", cache_dir=False)
    assert len(streamed) == len(decoded) == 101
    assert streamed.info == decoded.info
    for i in (0, 50, 100):
        image, mask = streamed[i]
        assert torch.equal(image, decoded.images[i])
        assert torch.equal(mask, decoded.masks[i])
    model = nn.Conv2d(3, 11, 1)
    first = streamed.subset(torch.arange(6))
    assert evaluate_segmentation(model, first, device="cpu") == evaluate_segmentation(
        model, decoded.subset(torch.arange(6)), device="cpu")


def test_tensorboard_logs_the_history_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = _tensors()
    fit(_model(), x, y, TrainConfig(epochs=3), checkpoint_dir=tmp_path, logger="tensorboard",
        device="cpu", show_progress=False)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"loss", "lr", "seconds"} <= set(events.Tags()["scalars"])
    losses = [e.value for e in events.Scalars("loss")]
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert losses == pytest.approx([float(r["loss"]) for r in rows])
    with pytest.raises(ValueError, match="logger must be one of"):
        fit(_model(), x, y, TrainConfig(epochs=1), checkpoint_dir=tmp_path / "b",
            logger="wandb", device="cpu", show_progress=False)
