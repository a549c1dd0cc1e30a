"""Adversarial attacks in pixel space and class-wise robust evaluation.

Inputs and outputs are float images in [0, 1]; models carry their own normalisation, so an
epsilon is in pixel units (8/255 on CIFAR-10, 0.3 on MNIST). Every attack:

* puts the model in eval mode while it runs and restores its mode afterwards;
* differentiates only with respect to the input (``torch.autograd.grad``), so no gradient
  ever lands in the model's parameters' ``.grad``;
* returns a detached tensor inside the epsilon ball around ``x`` and inside [0, 1];
* runs in the dtype of the model's parameters (a float16 or float64 ``x`` for a float32
  model is converted for the forward passes) and returns the dtype of ``x``;
* checks everything it is given before the first gradient step, including the model's
  logits on ``x``: ``y`` must lie in [0, K) for a K-class model.

``eps = 0`` is valid and returns ``x`` unchanged (after the checks).

Losses the attacker maximises (summed over the batch, so each image's step does not depend on
the batch size):

* ``"ce"``: cross-entropy against the true labels (Madry et al.'s PGD);
* ``"cw"``: the Carlini-Wagner margin ``-max(z_y - max_{j != y} z_j + confidence, 0)``
  (CW-inf in the robust-fairness papers, confidence 50);
* ``"kl"``: ``KL(target_probs || softmax(z))`` against a soft target, the inner maximisation
  of RSLAD/ABSLD (with ``target_probs`` the teacher's soft labels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ._attack_checks import (
    check_attack_input,
    check_evaluation_input,
    check_logits_of,
    check_radius,
    check_step,
    model_dtype,
)
from ._checks import (
    check_bool,
    check_choice,
    check_hard_labels,
    check_number,
    check_positive_int,
    check_seed,
)
from .distributed import all_reduce_sum, draw_rows, sharded
from .engine.data import make_source
from .labels import validate
from .metrics import classwise_from_confusion, nsd, worst_class_accuracy
from .runtime import resolve_device

__all__ = [
    "ATTACK_LOSSES",
    "RobustResult",
    "autoattack",
    "fgsm",
    "pgd",
    "robust_evaluate",
    "standard_attacks",
]

ATTACK_LOSSES = ("ce", "cw", "kl")
NORMS = ("linf", "l2")
RANDOM_STARTS = ("uniform", "normal", "none")

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]

# Scale of the Gaussian start of TRADES/RSLAD/ABSLD (x + 0.001 * N(0, I)).
_NORMAL_START_SCALE = 0.001


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, loss: str = "ce",
         target_probs: Tensor | None = None, confidence: float = 50.0) -> Tensor:
    """One signed-gradient step of size ``eps`` (Goodfellow et al.), L-inf.

    Args:
        model: maps (B, C, H, W) in [0, 1] to (B, K) logits.
        x: float (B, C, H, W) clean images in [0, 1].
        y: int64 (B,) true labels.
        eps: L-inf radius >= 0 (0 returns ``x`` unchanged).
        loss: see :data:`ATTACK_LOSSES`.
        target_probs: float (B, K) soft target, required for ``loss="kl"``.
        confidence: the CW margin's confidence.

    Returns:
        float (B, C, H, W) adversarial images in [0, 1], detached.
    """
    return pgd(model, x, y, eps, alpha=eps, steps=1, random_start="none", loss=loss,
               target_probs=target_probs, confidence=confidence)


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int, *,
        random_start: bool | str = True, loss: str = "ce", target_probs: Tensor | None = None,
        norm: str = "linf", confidence: float = 50.0,
        generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient ascent on ``loss`` inside the ``norm`` ball of radius ``eps``.

    Args:
        model: maps (B, C, H, W) in [0, 1] to (B, K) logits.
        x: float (B, C, H, W) clean images in [0, 1].
        y: int64 (B,) true labels in [0, K) (used by ``"ce"`` and ``"cw"``).
        eps: radius >= 0 (L-inf: per pixel; L2: per image); 0 returns ``x`` unchanged.
        alpha: step size > 0 (may be 0 when ``eps`` is 0).
        steps: number of steps >= 1.
        random_start: ``True`` or ``"uniform"`` (uniform in the ball, Madry et al.),
            ``"normal"`` (``x + 0.001 * N(0, I)``, TRADES/RSLAD), ``False`` or ``"none"``.
        loss: see :data:`ATTACK_LOSSES`.
        target_probs: float (B, K) soft target, required for ``loss="kl"``.
        norm: ``"linf"`` (signed gradient steps) or ``"l2"`` (normalised gradient steps).
        confidence: the CW margin's confidence.
        generator: draws the random start on its own device (so a CPU generator gives the
            same start on every device); ``None`` uses the global RNG on ``x``'s device.

    Returns:
        float (B, C, H, W) adversarial images in [0, 1] in the dtype of ``x``, detached, with
        ``||x_adv - x|| <= eps`` in ``norm`` (up to the rounding of that dtype).

    Raises:
        ValueError: ``eps < 0``, ``alpha <= 0``, ``steps < 1``, inputs outside [0, 1] or not
            finite, labels outside [0, K), mismatched shapes, ``loss="kl"`` without
            ``target_probs``, a model whose logits are not a finite (B, K) tensor.
        TypeError: a non-tensor, integer images or labels of another dtype than int64.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])
        >>> adv = pgd(model, x, y, eps=0.1, alpha=0.05, steps=5)
        >>> bool((adv - x).abs().max() <= 0.1 + 1e-6)
        True
    """
    check_attack_input(x, y, eps, alpha, steps)
    # Python ints beyond int64 (a valid but huge radius) would overflow inside torch.
    eps, alpha = float(eps), float(alpha)
    check_choice("loss", loss, ATTACK_LOSSES)
    check_choice("norm", norm, NORMS)
    start = _start_kind(random_start)
    confidence = check_number("confidence", confidence)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    if loss == "kl":
        if target_probs is None:
            raise ValueError('loss="kl" needs target_probs (the soft target to move away from)')
        validate(target_probs, name="target_probs")
        if target_probs.ndim != 2 or target_probs.shape[0] != x.shape[0]:
            raise ValueError(f"target_probs must be (B, K) with B = {x.shape[0]} images, got "
                             f"shape {tuple(target_probs.shape)}")
    clean = x.detach().to(model_dtype(model, x))
    if target_probs is not None:
        target_probs = target_probs.detach().to(clean.dtype)
    objective = partial(_attack_loss, loss, y=y, target_probs=target_probs,
                        confidence=confidence)
    with _eval_mode(model):
        if eps == 0 or x.shape[0] == 0:  # nothing moves: check, then return x
            with torch.no_grad():
                logits = model(clean)
            check_logits_of(logits, y.shape[0], target_probs)
            check_hard_labels("y", y, int(logits.shape[1]))
            return x.detach().clone()
        adv = _random_start(clean, eps, start, norm, generator)
        for step in range(steps):
            adv.requires_grad_(True)
            logits = model(adv)
            if step == 0:  # checked on the first step's forward: no extra pass
                check_logits_of(logits, y.shape[0], target_probs)
                check_hard_labels("y", y, int(logits.shape[1]))
            (grad,) = torch.autograd.grad(objective(logits), adv)
            adv = _project(clean, _ascend(adv.detach(), grad, alpha, norm), eps, norm)
    if not bool(torch.isfinite(adv).all()):
        raise ValueError("the attack produced non-finite images: the model's gradient with "
                         "respect to x is not finite")
    return adv.detach().to(x.dtype)


@dataclass
class RobustResult:
    """Accuracy under one attack.

    Attributes:
        accuracy: overall accuracy in [0, 1].
        classwise_accuracy: float (K,) per-class accuracy (NaN for a class absent from the data).
        worst_class_accuracy: the lowest per-class accuracy.
        nsd: normalized standard deviation of the per-class accuracy (sample std / mean); NaN
            when fewer than two classes have samples or every class has accuracy 0 (undefined).
    """

    accuracy: float
    classwise_accuracy: Tensor
    worst_class_accuracy: float
    nsd: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (the class-wise accuracies as a list)."""
        return {"accuracy": self.accuracy,
                "classwise_accuracy": self.classwise_accuracy.tolist(),
                "worst_class_accuracy": self.worst_class_accuracy, "nsd": self.nsd}


def standard_attacks(eps: float, *, pgd_steps: int = 20, alpha: float | None = None,
                     cw_confidence: float = 50.0, seed: int = 0,
                     include_autoattack: bool = False) -> dict[str, Attack | None]:
    """The evaluation suite of the robust-fairness papers, as ``{name: attack}``.

    ``clean`` (no attack, ``None``), ``fgsm`` (one ``eps`` step), ``pgd{N}`` (``N`` steps of
    ``alpha``, default ``eps / 4``, random start) and ``cw`` (PGD on the CW margin); with
    ``include_autoattack``, ``autoattack`` (standard version, through torchattacks).
    ``eps = 0`` is valid: every attack then returns its input (a sanity baseline equal to
    ``clean``). Every argument is checked here, before any attack runs.
    """
    check_radius(eps)
    check_positive_int("pgd_steps", pgd_steps)
    if alpha is not None:
        check_step(alpha, eps)
    check_number("cw_confidence", cw_confidence)
    check_seed("seed", seed)
    check_bool("include_autoattack", include_autoattack)
    step = alpha if alpha is not None else eps / 4
    generator = torch.Generator().manual_seed(seed)

    def pgd_attack(loss: str) -> Attack:
        def attack(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
            local = torch.Generator().manual_seed(
                int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            return pgd(model, x, y, eps, step, pgd_steps, loss=loss, confidence=cw_confidence,
                       generator=local)
        return attack

    attacks: dict[str, Attack | None] = {
        "clean": None,
        "fgsm": lambda model, x, y: fgsm(model, x, y, eps),
        f"pgd{pgd_steps}": pgd_attack("ce"),
        "cw": pgd_attack("cw"),
    }
    if include_autoattack:
        attacks["autoattack"] = partial(autoattack, eps=eps, seed=seed)
    return attacks


def autoattack(model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int = 0,
               version: str = "standard") -> Tensor:
    """AutoAttack (Croce and Hein) L-inf through ``torchattacks``.

    ``torchattacks`` is optional: install it with ``pip install --no-deps torchattacks==3.5.1``
    (its wheel pins packages that would replace torch; its code needs only torch and scipy).

    Raises:
        ImportError: torchattacks is not installed (the message says how to install it).
    """
    try:
        import torchattacks
    except ImportError as err:
        raise ImportError("AutoAttack needs torchattacks: pip install --no-deps "
                          "torchattacks==3.5.1") from err
    check_attack_input(x, y, eps, 1.0, 1)
    check_choice("version", version, ("standard", "plus", "rand"))  # torchattacks' versions
    if x.shape[0] == 0:  # a rank without rows in this batch
        return x.clone()
    with _eval_mode(model):
        num_classes = int(model(x[:1]).shape[1])
        attack = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version=version,
                                         n_classes=num_classes, seed=seed)
        return attack(x, y).detach()


def robust_evaluate(model: nn.Module, images: Tensor | Dataset | DataLoader,
                    labels: Tensor | None, attacks: Mapping[str, Attack | None], *,
                    num_classes: int | None = None, batch_size: int = 256,
                    device: str | torch.device = "auto") -> dict[str, RobustResult]:
    """Accuracy, class-wise accuracy, worst-class accuracy and NSD under each attack.

    Args:
        model: maps (B, C, H, W) in [0, 1] to (B, K) logits.
        images: float (N, C, H, W) in [0, 1], N >= 1 (converted to the model's dtype); or a
            dataset or loader of (image, label) pairs (then ``labels`` is None).
        labels: int64 (N,) in [0, K) for tensor ``images``.
        attacks: ``{name: attack(model, x, y) -> x_adv}``; ``None`` scores the clean images
            (see :func:`standard_attacks`).
        num_classes: K; read from the model's output when omitted, checked against it when
            given.
        batch_size: images per attack batch.
        device: where to run; the model's mode is restored afterwards.

    Returns:
        ``{name: RobustResult}`` in the order of ``attacks``. Under ``torchrun`` each rank
        attacks its shard of every batch (per-image random starts as one process draws them)
        and the counts are all-reduced, so every rank returns the single-process scores
        (AutoAttack's own randomness aside).

    Every argument, and the model's output on the first image, is checked before any attack
    runs, so a bad label fails in a second rather than after the attacks.
    """
    if isinstance(images, Tensor):
        check_evaluation_input(images, labels, attacks, batch_size)  # type: ignore[arg-type]
    elif labels is not None:
        raise TypeError("labels come from the dataset itself; pass labels=None")
    source = make_source(images, labels)
    sample_x, sample_y = source.sample()
    check_evaluation_input(sample_x, sample_y, attacks, batch_size)
    target = resolve_device(device)
    model.to(target)
    dtype = model_dtype(model, sample_x)
    with _eval_mode(model), torch.no_grad():
        logits = model(sample_x[:1].to(target, dtype))
    check_logits_of(logits, 1, None)
    width = int(logits.shape[1])
    if num_classes is None:
        num_classes = width
    elif check_positive_int("num_classes", num_classes) != width:
        raise ValueError(f"num_classes={num_classes} but the model outputs {width} logits")
    if labels is not None:
        check_hard_labels("labels", labels, num_classes)
    counts = torch.zeros(len(attacks), num_classes * num_classes, dtype=torch.int64)
    with _eval_mode(model):
        for batch in source.ordered(batch_size, target, split="batch"):
            x, y = batch.x.to(dtype), check_hard_labels("labels", batch.y, num_classes)
            for row, attack in enumerate(attacks.values()):
                with sharded(batch.shard):  # every rank calls every attack, rows or not
                    adv = x if attack is None else attack(model, x, y)
                with torch.no_grad():
                    predicted = model(adv.to(dtype)).argmax(1)
                counts[row] += torch.bincount(y * num_classes + predicted,
                                              minlength=num_classes ** 2).cpu()
    all_reduce_sum(counts)
    results = {}
    for row, name in enumerate(attacks):
        confusion = counts[row].view(num_classes, num_classes)
        per_class = classwise_from_confusion(confusion)
        results[name] = RobustResult(float(confusion.diagonal().sum() / confusion.sum()),
                                     per_class, worst_class_accuracy(per_class),
                                     _nsd_or_nan(per_class))
    return results


# --------------------------------------------------------------------------- internals


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _nsd_or_nan(per_class: Tensor) -> float:
    # A one-class evaluation set has no spread across classes: undefined, not an error after
    # every attack has run.
    return nsd(per_class) if int((~per_class.isnan()).sum()) >= 2 else math.nan


def _start_kind(random_start: bool | str) -> str:
    if random_start is True:
        return "uniform"
    if random_start is False:
        return "none"
    return check_choice("random_start", random_start, RANDOM_STARTS)


def _attack_loss(loss: str, logits: Tensor, *, y: Tensor, target_probs: Tensor | None,
                 confidence: float) -> Tensor:
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    if loss == "kl":
        return F.kl_div(F.log_softmax(logits, 1), target_probs, reduction="sum")
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return -(true - others.amax(1) + confidence).clamp_min(0).sum()


def _random_start(x: Tensor, eps: float, kind: str, norm: str,
                  generator: torch.Generator | None) -> Tensor:
    if kind == "none" or eps == 0:
        return x.clone()
    if kind == "normal":
        noise = _NORMAL_START_SCALE * _draw(torch.randn, x.shape, generator, x)
        return _project(x, x + noise, eps, norm)
    if norm == "linf":
        noise = (2 * _draw(torch.rand, x.shape, generator, x) - 1) * eps
    else:  # uniform in the L2 ball: a random direction and a radius ~ eps * u^(1/d)
        direction = _draw(torch.randn, x.shape, generator, x)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(
            -1, *[1] * (x.ndim - 1))
        dims = x[0].numel()
        radius = eps * _draw(torch.rand, (x.shape[0],), generator, x) ** (1.0 / dims)
        noise = direction * radius.view(-1, *[1] * (x.ndim - 1))
    return (x + noise).clamp(0.0, 1.0)


def _draw(sample: Callable[..., Tensor], shape: tuple[int, ...] | torch.Size,
          generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``sample(shape)`` drawn on the generator's device, moved to ``like``'s device and dtype.

    Drawing where the generator lives lets a CPU generator seed attacks on a GPU, and gives the
    same random start on every device.
    """
    device = generator.device if generator is not None else like.device
    # One draw per image: under data-parallel training each rank keeps its rows of the
    # global batch's draw, so a sample gets the same start for any number of ranks.
    draws = draw_rows(sample, tuple(shape), generator, device=device, dtype=like.dtype)
    return draws.to(like.device)


def _ascend(adv: Tensor, grad: Tensor, alpha: float, norm: str) -> Tensor:
    if norm == "linf":
        return adv + alpha * grad.sign()
    length = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.ndim - 1))
    return adv + alpha * grad / length


def _project(x: Tensor, adv: Tensor, eps: float, norm: str) -> Tensor:
    delta = adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        length = delta.flatten(1).norm(dim=1).view(-1, *[1] * (delta.ndim - 1))
        delta = delta * (eps / length.clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)
