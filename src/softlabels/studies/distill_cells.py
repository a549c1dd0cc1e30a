"""The cells of ``softlabels distill``: experts, their test accuracy, DM images, students.

Every function here computes from the config, the cell's key and the artifacts of earlier
stages in the run folder (expert checkpoints, DM images, selections), so a cell gives the same
row in any process; see :mod:`softlabels.studies.distill` for the plan.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._io import torch_load, torch_save
from ..data import augmentation
from ..distill import (
    dataset_bytes,
    load_index_file,
    make_labels,
    save_index_file,
    select_by_loss,
    select_random,
    train_students,
)
from ..distill.dm import distribution_matching
from ..distill.experts import train_experts
from ..distill.grid import Cell as GridCell
from ..distill.learned import learn_labels
from ..distilled import DistilledSet, load_distilled
from ..labels import entropy, js_distance, smooth
from ..runtime import resolve_device
from ..store import LabelMetadata, LabelStore
from .distill_data import Context, context, inputs_digest
from .sweep import Cell

if TYPE_CHECKING:
    from .distill import DistillStudyConfig

__all__ = ["check", "resolve_student_backend", "run_cell"]

NEEDS_EXPERT = frozenset({"teacher", "smooth", "topk", "swap", "shuffle"})
# The study's label modes that make_labels (a building block) spells otherwise.
_MAKE_LABELS_MODE = {"teacher": "expert"}
# Start of learned labels: smoothed true labels, so both the top class and the others can move.
_LEARNED_INIT_EPS = 0.3


def check(config: DistillStudyConfig) -> DistillStudyConfig:
    """Check the selections, the label file and the image file against the data before
    anything trains; returns the config with the experts' length and candidate epochs
    resolved for this dataset (:meth:`DistillStudyConfig.resolve_experts`)."""
    ctx = context(config, Path(config.out))
    config = config.resolve_experts(len(ctx.pool))
    ctx.config = config
    classes = ctx.pool.num_classes
    if {"topk", "swap"} & set(config.labels + config.dm_labels) and max(config.k) > classes:
        raise ValueError(f"k must be at most the {classes} classes of {config.dataset} for "
                         f"the topk and swap labels, got {list(config.k)}")
    if "file" in config.images:
        _file_images(ctx)
    if config.images == ("file",) and not config.select_epoch:
        return config  # no real image is selected
    for ipc in config.ipc:
        select_random(ctx.pool.labels, ipc, config.selection_seed)  # enough images per class
        if config.index_file is not None:
            positions = _index_file_positions(ctx, ipc)
        elif config.selection == "random":
            positions = select_random(ctx.pool.labels, ipc, config.selection_seed)
        else:
            continue  # loss-ranked images need the experts; they are checked as they are made
        if "file" in config.labels and "random" in config.images:
            _file_labels(ctx, ctx.pool.indices[positions])
    return config


def run_cell(config: DistillStudyConfig, cell: Cell, folder: Path, *,
             show_progress: bool | None = None) -> dict[str, Any]:
    """Compute one cell of the distillation sweep; returns its row."""
    began = time.perf_counter()
    ctx = context(config, folder)
    phase = cell.key["phase"]
    if phase == "expert":
        row = _train_expert(ctx, cell.key["seed"], show_progress)
    elif phase == "expert_test":
        logits = ctx.experts().logits(cell.key["expert_epoch"], ctx.seen("test"))
        row = {"accuracy": float((logits.argmax(1) == ctx.test.labels).float().mean())}
    elif phase == "dm":
        row = _dm_images(ctx, cell.key["ipc"], show_progress)[1]
    else:
        row = _students(ctx, GridCell(**cell.key), show_progress)
    return {**row, "seconds": time.perf_counter() - began}


def _train_expert(ctx: Context, seed: int, show_progress: bool | None) -> dict[str, Any]:
    config = ctx.config
    augment = augmentation(config.expert_augment, min(ctx.pool.image_size))
    ctx.save_zca()
    experts = train_experts(ctx.build, ctx.seen("pool"), ctx.pool.labels, config.expert_config(),
                            [seed], ctx.folder / "experts", augment=augment,
                            device=config.device,
                            checkpoints_per_epoch=config.expert_checkpoints_per_epoch,
                            early_epochs=config.expert_early_epochs,
                            logger=config.logger, pixels=ctx.zca is None,
                            show_progress=show_progress)
    return {"saved_epochs": len(experts.saved_epochs())}


def _positions(ctx: Context, ipc: int) -> Tensor:
    """Pool positions of the real images at ``ipc``; saved to ``selection/ipc{n}.json``.

    Deterministic for a given config and experts, so cells that compute it at the same time
    write the same file.
    """
    config, pool = ctx.config, ctx.pool
    path = ctx.folder / "selection" / f"ipc{ipc}.json"
    if config.index_file is not None:
        positions = _index_file_positions(ctx, ipc)
    elif config.selection == "random":
        positions = select_random(pool.labels, ipc, config.selection_seed)
    elif path.exists():
        return load_index_file(path, len(pool))
    else:
        logits = ctx.experts().logits(config.expert_epochs, ctx.seen("pool"))
        losses = torch.nn.functional.cross_entropy(logits, pool.labels, reduction="none")
        positions = select_by_loss(pool.labels, losses, ipc, config.selection)
    save_index_file(path, positions)
    return positions


def _index_file_positions(ctx: Context, ipc: int) -> Tensor:
    """Positions in the training split from the user's file, mapped into the pool."""
    config, pool = ctx.config, ctx.pool
    wanted = load_index_file(config.index_file, len(pool) + len(ctx.val))  # type: ignore[arg-type]
    lookup = {int(index): position for position, index in enumerate(pool.indices.tolist())}
    held_out = [int(i) for i in wanted if int(i) not in lookup]
    if held_out:
        raise ValueError(f"index file {config.index_file!r} names training images held out "
                         f"for validation (first few: {held_out[:5]}); pick others")
    positions = torch.tensor([lookup[int(i)] for i in wanted], dtype=torch.int64)
    counts = torch.bincount(pool.labels[positions], minlength=pool.num_classes).tolist()
    if any(c != ipc for c in counts):
        raise ValueError(f"index file {config.index_file!r} holds {counts} images per class; "
                         f"--ipc is {ipc}")
    return positions.sort().values


def _dm_images(ctx: Context, ipc: int, show_progress: bool | None
               ) -> tuple[Tensor, dict[str, Any]]:
    """DM images at ``ipc``, initialised from the selected real images; kept under ``dm/``."""
    config = ctx.config
    path = ctx.folder / "dm" / f"ipc{ipc}.pt"
    if not path.exists():
        positions = _positions(ctx, ipc)
        # Making DM images can take an hour; a killed run continues from its last checkpoint.
        partial = path.with_name(f"ipc{ipc}.partial.pt")
        partial.parent.mkdir(exist_ok=True)
        result = distribution_matching(
            ctx.build_for_pixels, ctx.pool.images, ctx.pool.labels, ctx.pool.images[positions],
            ctx.pool.labels[positions], iterations=config.dm_iterations, lr=config.dm_lr,
            batch_real=config.dm_batch_real, seed=config.selection_seed, device=config.device,
            checkpoint=partial, show_progress=show_progress,
            channel_lr_scale=([s * s for s in ctx.pool.info.std]
                              if config.dm_lr_space == "normalized" else None))
        torch_save(path, {"images": result.images, "labels": result.labels,
                          "losses": torch.tensor(result.losses)})
        partial.unlink(missing_ok=True)  # under torchrun every rank made the same file
    saved = torch_load(path)
    losses = saved["losses"]
    return saved["images"], {"dm_loss_first": float(losses[0]), "dm_loss_last": float(losses[-1])}


def _students(ctx: Context, cell: GridCell, show_progress: bool | None) -> dict[str, Any]:
    """Label the cell's images, train its students, score them (validation for ``select``)."""
    config, pool = ctx.config, ctx.pool
    if cell.images == "file":
        given = _file_images(ctx)
        images, hard, indices = given.images, given.labels, torch.arange(len(given.labels))
    else:
        positions = _positions(ctx, cell.ipc)
        hard = pool.labels[positions]
        if cell.images == "dm":
            images = _dm_images(ctx, cell.ipc, show_progress)[0]
            indices = torch.arange(images.shape[0])
        else:
            images, indices = pool.images[positions], pool.indices[positions]
    seen = ctx.seen(images)  # pixels, or their whitening under --zca
    targets, extra = _labels(ctx, cell, seen, hard, indices, show_progress)
    store = LabelStore(indices, targets, LabelMetadata(
        source=cell.labels, dataset=config.dataset,
        split="train" if cell.images == "random" else f"{cell.images}-ipc{cell.ipc}",
        temperature=cell.temperature, class_names=pool.info.class_names,
        extra={"cell": cell.key(), "zca": inputs_digest(ctx)}))
    store.save(ctx.folder / "labels" / f"{cell.name()}.safetensors", mode="fp32")
    evaluation = ctx.val if cell.phase == "select" else ctx.test  # never test for selection
    backend = resolve_student_backend(config.student_backend, config.device)
    vectorize = backend != "sequential"
    result = train_students(ctx.build, seen, targets, config.student_config(),
                            config.seeds, augment=augmentation(config.student_augment,
                                                               min(pool.image_size)),
                            eval_data=(ctx.seen("val" if cell.phase == "select" else "test"),
                                       evaluation.labels),
                            device=config.device, vectorize=vectorize,
                            backend=backend if vectorize else "auto", pixels=ctx.zca is None,
                            show_progress=show_progress)
    label_bytes = _label_bytes(store, cell)
    return {"seeds": list(config.seeds),
            "eval_split": "val" if cell.phase == "select" else "test",
            "final": result.final_accuracy, "best": result.best_accuracy,
            **result.summary(), "num_images": int(images.shape[0]),
            "label_entropy": float(entropy(targets).mean()),
            "label_bytes_per_image": label_bytes,
            "bytes": dataset_bytes(int(images.shape[0]), tuple(images.shape[1:]), label_bytes),
            "bytes_fp32": dataset_bytes(int(images.shape[0]), tuple(images.shape[1:]),
                                        store.report("fp32").bytes_per_image),
            "backend": result.backend, **extra}


def resolve_student_backend(backend: str, device: str) -> str:
    """What ``--student-backend`` means on ``device``: ``auto`` is ``sequential`` on a CPU
    (measured faster there) and the vectorised ``auto`` of
    :func:`~softlabels.distill.train_students` (grouped for a ConvNet, else vmap) elsewhere;
    any other value is itself."""
    if backend != "auto":
        return backend
    return "sequential" if resolve_device(device).type == "cpu" else "auto"


def _labels(ctx: Context, cell: GridCell, images: Tensor, hard: Tensor, indices: Tensor,
            show_progress: bool | None) -> tuple[Tensor, dict[str, Any]]:
    """(N, K) labels of the cell and extra row fields."""
    config, num_classes = ctx.config, ctx.pool.num_classes
    if cell.labels == "file" and cell.images == "file":
        return _file_images(ctx).soft_labels, {}  # type: ignore[return-value]  # checked
    if cell.labels == "file":
        return _file_labels(ctx, indices), {}
    if cell.labels == "learned":
        return _learned_labels(ctx, images, hard, show_progress)
    logits = (ctx.experts().logits(cell.expert_epoch, images)  # type: ignore[arg-type]
              if cell.labels in NEEDS_EXPERT else None)
    targets = make_labels(_MAKE_LABELS_MODE.get(cell.labels, cell.labels), hard=hard,
                          logits=logits, num_classes=num_classes,
                          temperature=cell.temperature or 1.0, k=cell.k,
                          seed=config.selection_seed, renormalize=config.topk_renormalize)
    return targets, {}


def _file_labels(ctx: Context, indices: Tensor) -> Tensor:
    """The user's LabelStore, checked against this dataset."""
    path = ctx.config.label_file
    store = LabelStore.load(path)  # type: ignore[arg-type]  # refuses corrupt files
    if store.num_classes != ctx.pool.num_classes:
        raise ValueError(f"label store {path!r} has {store.num_classes} classes but dataset "
                         f"{ctx.config.dataset!r} has {ctx.pool.num_classes}")
    stored = store.metadata.dataset
    if stored and stored != ctx.config.dataset:
        raise ValueError(f"label store {path!r} was made for dataset {stored!r}, not "
                         f"{ctx.config.dataset!r}")
    made_for = store.metadata.extra.get("zca")  # an older store holds none: raw pixels
    if made_for != inputs_digest(ctx):
        inputs = {None: "raw pixels"}
        raise ValueError(
            f"label store {path!r} was made for "
            f"{inputs.get(made_for, f'ZCA-whitened inputs (digest {str(made_for)[:12]})')}, "
            f"but this run's models see "
            f"{inputs.get(inputs_digest(ctx), 'ZCA-whitened inputs')}: its labels would not "
            "fit them (use --zca as the run that made it, or not)")
    try:
        return store.labels_for(indices)
    except ValueError as err:
        raise ValueError(f"label store {path!r} does not cover the selected training images: "
                         f"{err}") from err


def _file_images(ctx: Context) -> DistilledSet:
    """The user's distilled images (``--image-file``), checked against the dataset."""
    config, pool = ctx.config, ctx.pool
    path = config.image_file
    given = _read_image_file(path, pool.num_classes)  # type: ignore[arg-type]  # checked
    if tuple(given.images.shape[1:]) != tuple(pool.images.shape[1:]):
        raise ValueError(f"image file {path!r} holds images of shape (C, H, W) = "
                         f"{tuple(given.images.shape[1:])} but dataset {config.dataset!r} has "
                         f"{tuple(pool.images.shape[1:])}")
    if given.num_classes != pool.num_classes:
        raise ValueError(f"image file {path!r} has {given.num_classes} classes but dataset "
                         f"{config.dataset!r} has {pool.num_classes}")
    counts = torch.bincount(given.labels, minlength=pool.num_classes).tolist()
    if any(c != config.ipc[0] for c in counts):
        raise ValueError(f"image file {path!r} holds {counts} images per class; --ipc is "
                         f"{config.ipc[0]} (give the number of images of every class)")
    if "file" in config.labels and given.soft_labels is None:
        raise ValueError(f"label mode 'file' on file images uses the soft labels inside "
                         f"{path!r}, which has none (it needs a soft_labels array)")
    return given


@functools.lru_cache(maxsize=2)
def _read_image_file(path: str, num_classes: int) -> DistilledSet:
    return load_distilled(path, num_classes)


def _learned_labels(ctx: Context, images: Tensor, hard: Tensor, show_progress: bool | None
                    ) -> tuple[Tensor, dict[str, Any]]:
    """Labels learnt through an unrolled student, and their JS distance to expert labels."""
    config, pool = ctx.config, ctx.pool
    init = smooth(hard, pool.num_classes, _LEARNED_INIT_EPS)
    learned = learn_labels(ctx.build, images, init, ctx.seen("pool"), pool.labels,
                           outer_steps=config.learned_steps, inner_steps=config.learned_unroll,
                           inner_lr=config.learned_inner_lr, label_lr=config.learned_lr,
                           seed=config.selection_seed, device=config.device,
                           show_progress=show_progress)
    extra: dict[str, Any] = {"learned_loss_first": learned.losses[0],
                             "learned_loss_last": learned.losses[-1]}
    # Distance of the learned (and, for reference, the starting) labels to the expert labels
    # of every saved epoch: the paper finds the learned ones closest to early epochs.
    experts = ctx.experts()
    learned_js, init_js = {}, {}
    for epoch in experts.saved_epochs():
        expert = experts.logits(epoch, images).softmax(1)
        learned_js[str(epoch)] = float(js_distance(learned.labels, expert).mean())
        init_js[str(epoch)] = float(js_distance(init, expert).mean())
    extra["js_to_expert"], extra["js_init_to_expert"] = learned_js, init_js
    return learned.labels, extra


def _label_bytes(store: LabelStore, cell: GridCell) -> float:
    """Bytes per image of the labels as the study counts them for the Pareto frontier.

    Hard labels count one class index (1 byte for C <= 256); top-k labels their top-k encoding
    (fp16 values + class ids); other soft labels fp16.
    """
    if cell.labels == "hard" or (cell.labels == "topk" and cell.k == 0):
        return 1.0
    if cell.labels == "topk":
        return store.report("topk", k=cell.k).bytes_per_image
    return store.report("fp16").bytes_per_image
