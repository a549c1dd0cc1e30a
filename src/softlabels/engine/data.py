"""What the engine reads: tensors, a map-style ``Dataset`` or a ``DataLoader``, as batches.

One rule orders every epoch, whatever holds the data: a permutation drawn from the training
generator, cut into batches of ``batch_size`` (a last batch of one sample joins the one
before, which BatchNorm needs). Tensors are indexed on the device they live on (data that
fits stays there: no per-batch host copy); a ``Dataset`` is read item by item at the same
positions, in this process or in ``DataLoader`` worker processes that decode while the model
trains, into pinned memory copied without blocking. So a dataset gives the batches, and with
the same generator the same augmentation and weights, as its tensors would. A user's own
``DataLoader`` is read as it is (its sampler decides the order). Under ``torchrun`` each rank
reads its :class:`~softlabels.distributed.Shard` of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .._checks import check_float, check_ndim
from ..distributed import Shard, shard_rows, world

__all__ = ["Batch", "Source", "batch_bounds", "from_torch_dataset", "make_source"]

Data = Tensor | Dataset | DataLoader


@dataclass(frozen=True)
class Batch:
    """This rank's rows of one global batch: images, targets, and where they sit in it."""

    x: Tensor
    y: Tensor
    shard: Shard


def batch_bounds(total: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch of a permutation of ``total`` items; a last batch of one
    item joins the batch before it (a batch of one breaks BatchNorm)."""
    starts = list(range(0, total, batch_size))
    if total % batch_size == 1 and len(starts) > 1:
        starts.pop()
    ends = [*starts[1:], total]
    return list(zip(starts, ends, strict=True))


class Source:
    """Batches of (images, targets) for training (:meth:`epoch`) and evaluation
    (:meth:`ordered`)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def num_batches(self, batch_size: int) -> int:
        """Optimiser steps per epoch."""
        return len(batch_bounds(len(self), batch_size))

    def epoch(self, generator: torch.Generator, batch_size: int, device: torch.device
              ) -> Iterator[Batch]:
        """One epoch in the order ``generator`` draws (its first draw is the permutation)."""
        raise NotImplementedError

    def ordered(self, batch_size: int, device: torch.device, *, split: str = "none"
                ) -> Iterator[Batch]:
        """Every item in order, in batches of ``batch_size``.

        ``split``: ``"none"`` (every rank reads everything), ``"data"`` (each rank reads its
        contiguous part of the data: scores from counts) or ``"batch"`` (each rank reads its
        shard of every batch: per-batch randomness such as an attack's stays aligned).
        """
        total = len(self)
        part = shard_rows(total) if split == "data" else Shard(0, total, total)
        shards, positions = [], []
        for start in range(part.start, part.stop, batch_size):
            end = min(start + batch_size, part.stop)
            shard = shard_rows(end - start) if split == "batch" else \
                Shard(0, end - start, end - start)
            shards.append(shard)
            positions.append(list(range(start + shard.start, start + shard.stop)))
        for (x, y), shard in zip(self._read(positions, device), shards, strict=True):
            yield Batch(x, y, shard)

    def _read(self, batches: list[list[int]], device: torch.device
              ) -> Iterator[tuple[Tensor, Tensor]]:
        """The items at each list of positions, as batches on ``device``."""
        raise NotImplementedError

    def sample(self) -> tuple[Tensor, Tensor]:
        """A batch of the first (up to) two items, on the CPU, for checks and probes."""
        raise NotImplementedError


class _Tensors(Source):
    def __init__(self, images: Tensor, targets: Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # Moved once: a dataset that fits on the device is indexed there every step.
        if self.images.device != device:
            self.images, self.targets = self.images.to(device), self.targets.to(device)
        return self.images, self.targets

    def epoch(self, generator: torch.Generator, batch_size: int, device: torch.device
              ) -> Iterator[Batch]:
        x_all, y_all = self._on(device)
        order = torch.randperm(len(self), generator=generator).to(device)
        for start, end in batch_bounds(len(self), batch_size):
            shard = shard_rows(end - start)
            rows = order[start + shard.start:start + shard.stop]
            yield Batch(x_all[rows], y_all[rows], shard)

    def _read(self, batches: list[list[int]], device: torch.device
              ) -> Iterator[tuple[Tensor, Tensor]]:
        for positions in batches:  # contiguous runs: slices, not gathers
            rows = slice(positions[0], positions[-1] + 1) if positions else slice(0, 0)
            yield self.images[rows].to(device), self.targets[rows].to(device)

    def sample(self) -> tuple[Tensor, Tensor]:
        return self.images[:2].cpu(), self.targets[:2].cpu()


class _FixedBatches(torch.utils.data.Sampler[list[int]]):
    """A batch sampler whose batches the engine sets before each pass."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Items(Source):
    """A map-style dataset read at the engine's positions, optionally by worker processes."""

    def __init__(self, dataset: Dataset, num_workers: int) -> None:
        self.dataset, self.num_workers = dataset, num_workers
        self._sampler = _FixedBatches()
        self._loader: DataLoader | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _read(self, batches: list[list[int]], device: torch.device
              ) -> Iterator[tuple[Tensor, Tensor]]:
        pin = device.type == "cuda"
        if self.num_workers == 0 or not all(batches):
            for batch in batches:
                x, y = (collate([self.dataset[i] for i in batch], batch) if batch else
                        tuple(t[:0] for t in self.sample()))  # a rank with no row here
                check_batch(x, y, f"the batch of dataset items {batch[:3]}...")
                yield x.to(device), y.to(device)
            return
        if self._loader is None:
            self._loader = DataLoader(self.dataset, batch_sampler=self._sampler,
                                      num_workers=self.num_workers, pin_memory=pin,
                                      collate_fn=_collate_items, persistent_workers=True)
        self._sampler.batches = batches
        for batch, (x, y) in zip(batches, self._loader, strict=True):
            check_batch(x, y, f"the batch of dataset items {batch[:3]}...")
            yield x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)

    def epoch(self, generator: torch.Generator, batch_size: int, device: torch.device
              ) -> Iterator[Batch]:
        order = torch.randperm(len(self), generator=generator).tolist()
        bounds = batch_bounds(len(self), batch_size)
        shards = [shard_rows(end - start) for start, end in bounds]
        batches = [order[start + s.start:start + s.stop]
                   for (start, _), s in zip(bounds, shards, strict=True)]
        for (x, y), shard in zip(self._read(batches, device), shards, strict=True):
            yield Batch(x, y, shard)


    def sample(self) -> tuple[Tensor, Tensor]:
        positions = list(range(min(2, len(self))))
        return collate([self.dataset[i] for i in positions], positions)


class _Loader(Source):
    """A user's DataLoader, read in its own order; under ``torchrun`` its sampler shards."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader.dataset)  # type: ignore[arg-type]

    def num_batches(self, batch_size: int) -> int:
        return len(self.loader)

    def _batches(self, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        for number, batch in enumerate(self.loader):
            if not isinstance(batch, list | tuple) or len(batch) != 2:
                raise ValueError(f"DataLoader batch {number} must be an (images, targets) pair, "
                                 f"got {type(batch).__name__}")
            x, y = batch
            check_batch(x, y, f"DataLoader batch {number}")
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def epoch(self, generator: torch.Generator, batch_size: int, device: torch.device
              ) -> Iterator[Batch]:
        size = world().size
        for x, y in self._batches(device):
            # The global batch is unknown here: each rank's share counts alike, as in DDP.
            rows = int(x.shape[0])
            yield Batch(x, y, Shard(world().rank * rows, (world().rank + 1) * rows,
                                    rows * size))

    def ordered(self, batch_size: int, device: torch.device, *, split: str = "none"
                ) -> Iterator[Batch]:
        for x, y in self._batches(device):  # the loader's sampler shards, if anything does
            yield Batch(x, y, Shard(0, int(x.shape[0]), int(x.shape[0])))

    def sample(self) -> tuple[Tensor, Tensor]:
        x, y = next(iter(self._batches(torch.device("cpu"))))
        return x[:2], y[:2]


def make_source(data: Data, targets: Tensor | None = None, *, num_workers: int = 0,
                name: str = "images") -> Source:
    """The :class:`Source` of ``data``: tensors with ``targets``, or a dataset or loader
    that yields (image, target) pairs itself. ``targets`` given with a dataset replace its
    own, row ``i`` for item ``i`` (soft labels for a streamed split, say).

    Raises:
        TypeError: ``data`` is none of these, or ``targets`` is given with a DataLoader.
        ValueError: ``targets`` is missing for tensors or does not have one row per item,
            or ``num_workers < 0``.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if isinstance(data, Tensor):
        if targets is None:
            raise ValueError(f"{name} is a tensor: pass its targets too")
        return _Tensors(data, targets)
    if isinstance(data, DataLoader):
        if targets is not None:
            raise TypeError("targets come from the DataLoader's batches; pass targets=None")
        return _Loader(data)
    if targets is not None and (not isinstance(targets, Tensor)
                                or targets.shape[:1] != (len(data),)):  # type: ignore[arg-type]
        raise ValueError(f"targets must be a tensor with one row per item of the "
                         f"{type(data).__name__} ({len(data)}), got "  # type: ignore[arg-type]
                         f"{getattr(targets, 'shape', type(targets).__name__)}")
    tensors = getattr(data, "tensors", None)
    if callable(tensors):  # softlabels' own datasets hold tensors: index them directly
        images, own = tensors()
        return _Tensors(images, own if targets is None else targets)
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        items = data if targets is None else _Retargeted(data, targets)
        return _Items(items, num_workers)  # type: ignore[arg-type]
    raise TypeError(f"{name} must be a tensor, a map-style Dataset or a DataLoader, got "
                    f"{type(data).__name__}")


def check_batch(x: Any, y: Any, where: str) -> None:
    """Images float (B, C, H, W), finite and in [0, 1], and one target per image."""
    check_float(f"images of {where}", x)
    check_ndim(f"images of {where}", x, (4,))
    if not isinstance(y, Tensor) or y.shape[:1] != x.shape[:1]:
        raise ValueError(f"{where} must hold one target per image, got "
                         f"{getattr(y, 'shape', type(y).__name__)} for {x.shape[0]} images")
    if x.numel():
        # One pass: NaN fails both comparisons and an infinity the bounds, so the extremes
        # alone prove every value finite and in [0, 1] (a separate isfinite pass cost a
        # streamed ImageNet batch about 0.4 s).
        low, high = (float(v) for v in torch.aminmax(x.detach()))
        if not (low >= 0.0 and high <= 1.0):
            raise ValueError(f"images of {where} must be finite and in [0, 1], got values in "
                             f"[{low:g}, {high:g}]")


def collate(items: Sequence[Any], positions: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Stack dataset items ``(image (C, H, W), target)`` into a batch, checking each.

    A target is a class index (int or 0-d int tensor), a soft label (K,) or a mask (H, W).

    Raises:
        ValueError / TypeError: an item that is not a pair, or whose image or target differs
            in shape or kind from the first item; the message names the dataset index.
    """
    images, targets = [], []
    for item, position in zip(items, positions, strict=True):
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ValueError(f"dataset item {position} must be an (image, target) pair, got "
                             f"{type(item).__name__}")
        image, target = item
        if not isinstance(image, Tensor) or not image.is_floating_point() or image.ndim != 3:
            raise TypeError(f"dataset item {position}: the image must be a float (C, H, W) "
                            f"tensor, got {_describe(image)}")
        target = torch.as_tensor(target)
        if images and (image.shape != images[0].shape or target.shape != targets[0].shape
                       or target.dtype != targets[0].dtype):
            raise ValueError(f"dataset item {position} has image {tuple(image.shape)} and "
                             f"target {_describe(target)}, item {positions[0]} has "
                             f"{tuple(images[0].shape)} and {_describe(targets[0])}")
        images.append(image)
        targets.append(target)
    x, y = torch.stack(images), torch.stack(targets)
    if not y.is_floating_point():
        y = y.long()
    return x, y


def _collate_items(items: Sequence[Any]) -> tuple[Tensor, Tensor]:
    return collate(items, list(range(len(items))))


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} {tuple(value.shape)}"
    return type(value).__name__


@dataclass(frozen=True)
class _Retargeted(Dataset):
    """A dataset's images with other targets (one row per item)."""

    dataset: Any
    targets: Tensor

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.dataset[index][0], self.targets[index]


@dataclass(frozen=True)
class _Adapted(Dataset):
    """A dataset of (image, label) pairs from any indexable dataset (see
    :func:`from_torch_dataset`)."""

    dataset: Any
    image_key: str
    label_key: str

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        item = self.dataset[index]
        if isinstance(item, dict):
            image, label = item[self.image_key], item[self.label_key]
        else:
            image, label = item[0], item[1]
        return _as_image(image, index), torch.as_tensor(label)


def from_torch_dataset(dataset: Any, *, image_key: str = "image", label_key: str = "label"
                       ) -> Dataset:
    """Adapt a torchvision-style ``(image, label)`` or HF-style ``{"image", "label"}`` dataset.

    Images may be PIL images, NumPy arrays (H, W[, C]) of uint8 or floats, or tensors (C, H, W);
    they become float32 (C, H, W) in [0, 1]. Nothing of torchvision or HF is imported.

    Example:
        >>> pairs = [(torch.rand(1, 4, 4), 0), (torch.rand(1, 4, 4), 1)]
        >>> x, y = from_torch_dataset(pairs)[1]
        >>> tuple(x.shape), int(y)
        ((1, 4, 4), 1)
    """
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TypeError(f"dataset must be indexable with a length, got "
                        f"{type(dataset).__name__}")
    return _Adapted(dataset, image_key, label_key)


def _as_image(image: Any, index: int) -> Tensor:
    if isinstance(image, Tensor):
        tensor = image
    else:
        import numpy as np

        array = np.asarray(image)  # a PIL image converts through the array protocol
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ValueError(f"dataset item {index}: an image must be (H, W) or (H, W, C), "
                             f"got shape {array.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if not tensor.is_floating_point():
        tensor = tensor.float() / 255.0
    return tensor.float()
