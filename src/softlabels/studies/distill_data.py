"""What every cell of ``softlabels distill`` reads: the splits, the model builder, the experts,
and the inputs the models see (ZCA-whitened with ``--zca``, as the official CIFAR-10 runs).

With ZCA the transform is fitted on the whole training split (unsupervised, as the official
code fits it on the 50,000 training images), saved in the run folder as ``zca.pt`` and its
digest recorded in every label store, so labels made for whitened inputs are never used with
raw ones. Experts and students then see whitened tensors (DSA augments them), their models
normalise nothing (whitening standardises), and images stay pixels everywhere else: selection
indices, DM's optimisation, exports.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor, nn

from .._io import torch_load, torch_save
from ..data import ImageDataset, load_dataset
from ..data.split import train_val_split
from ..data.zca import ZCA, fit_zca
from ..distill.experts import Experts
from .common import model_builder

if TYPE_CHECKING:
    from .distill import DistillStudyConfig

__all__ = ["Context", "context", "inputs_digest"]


@dataclass(frozen=True)
class _Splits:
    pool: ImageDataset
    val: ImageDataset
    test: ImageDataset
    zca: ZCA | None
    seen: dict[str, Tensor]  # the inputs models see of "pool", "val" and "test"


@functools.lru_cache(maxsize=2)
def _splits(dataset: str, data_root: str | None, val_fraction: float,
            zca_eps: float | None) -> _Splits:
    """(pool, validation, test) and the models' inputs of each, once per process."""
    full = load_dataset(dataset, data_root, split="train")
    test = load_dataset(dataset, data_root, split="test")
    train_positions, val_positions = train_val_split(full.labels, val_fraction, seed=0)
    pool, val = full.subset(train_positions), full.subset(val_positions)
    zca = fit_zca(full.images, zca_eps) if zca_eps is not None else None
    seen = {name: (zca(split.images) if zca is not None else split.images)
            for name, split in (("pool", pool), ("val", val), ("test", test))}
    return _Splits(pool, val, test, zca, seen)


@dataclass
class Context:
    """What a cell needs: the config, the folder, the data, the model builder, the experts."""

    config: DistillStudyConfig
    folder: Path
    splits: _Splits

    @property
    def pool(self) -> ImageDataset:
        """The training pool (the training split less the validation split), pixels."""
        return self.splits.pool

    @property
    def val(self) -> ImageDataset:
        """The validation split (``--select-epoch`` scores on it), pixels."""
        return self.splits.val

    @property
    def test(self) -> ImageDataset:
        """The test split, pixels."""
        return self.splits.test

    @property
    def zca(self) -> ZCA | None:
        """The whitening of ``--zca``, or None."""
        return self.splits.zca

    def seen(self, images: Tensor | str) -> Tensor:
        """What the models see of float (N, C, H, W) pixels, or of the split named."""
        if isinstance(images, str):
            return self.splits.seen[images]
        return self.zca(images) if self.zca is not None else images

    def build(self, seed: int) -> nn.Module:
        """A fresh model; callers seed it through :func:`~softlabels.runtime.build_seeded`.

        Under ZCA its input normalisation is the identity (whitened inputs are standardised).
        """
        spec = self.pool
        if self.zca is not None:
            channels = self.pool.in_channels
            info = dataclasses.replace(self.pool.info, mean=(0.0,) * channels,
                                       std=(1.0,) * channels)
            spec = dataclasses.replace(self.pool, info=info)
        return model_builder(self.config.model, self.config.model_args, spec)(seed)

    def build_for_pixels(self, seed: int) -> nn.Module:
        """A fresh model normalising raw pixels with the dataset's statistics (DM's random
        embedding networks, which optimise pixels also under ``--zca``)."""
        return model_builder(self.config.model, self.config.model_args, self.pool)(seed)

    def experts(self) -> Experts:
        """The trained experts (the ``experts`` stage made their checkpoints)."""
        return Experts(self.build, self.folder / "experts", list(range(self.config.experts)),
                       device=self.config.device)

    def save_zca(self) -> None:
        """Keep the whitening with the run (``zca.pt``); refuse a folder whitened otherwise."""
        if self.zca is None:
            return
        path = self.folder / "zca.pt"
        if path.exists():
            stored = ZCA.from_state(torch_load(path))
            if stored.digest() != self.zca.digest():
                raise ValueError(f"{str(path)!r} holds another whitening (digest "
                                 f"{stored.digest()[:12]}, this run's {self.zca.digest()[:12]})")
            return
        torch_save(path, self.zca.state_dict())


def context(config: DistillStudyConfig, folder: Path) -> Context:
    """The cell context of ``config`` (data loaded and whitened once per process)."""
    return Context(config, folder, _splits(config.dataset, config.data_root,
                                           config.val_fraction,
                                           config.zca_eps if config.zca else None))


def inputs_digest(ctx: Context) -> str | None:
    """The identity of the models' inputs: the ZCA digest, or None for raw pixels."""
    return ctx.zca.digest() if ctx.zca is not None else None

