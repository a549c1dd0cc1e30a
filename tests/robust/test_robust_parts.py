"""Balanced study parts, the teacher's logit cache and the method entries of a sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from softlabels.data import augmentation, load_dataset
from softlabels.data.augment import Augment, RandomCrop, RandomFlip
from softlabels.robust import RSLAD, AttackConfig, CropFlipVariants, TeacherLogitCache
from softlabels.robust.methods import METHOD_SETTINGS, canonical_entry, entry_label, parse_entry
from softlabels.robust.splits import study_parts

STILL = AttackConfig(eps=0.0, alpha=0.1, steps=1)

# ------------------------------------------------------------------------ balanced parts


@pytest.fixture(scope="module")
def digits() -> tuple:
    return load_dataset("digits", split="train"), load_dataset("digits", split="test")


def test_balanced_parts_have_the_counts_asked_and_do_not_overlap(digits: tuple) -> None:
    train, test = digits
    parts = study_parts(train, test, per_class=20, val_per_class=5, test_per_class=3)
    assert torch.bincount(parts.train.labels).tolist() == [15] * 10
    assert torch.bincount(parts.val.labels).tolist() == [5] * 10
    assert torch.bincount(parts.test.labels).tolist() == [3] * 10
    assert not set(parts.train.indices.tolist()) & set(parts.val.indices.tolist())
    again = study_parts(train, test, per_class=20, val_per_class=5, test_per_class=3)
    assert torch.equal(again.train.indices, parts.train.indices)  # seeded draws


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"per_class": 10_000}, r"per_class=10000: every class must have 10000 images, but "
                            r"class \d has only \d+ \(the smallest\); lower per_class"),
    ({"test_per_class": 10_000}, r"test_per_class=10000: .* lower test_per_class"),
    ({"per_class": 20, "val_per_class": 20}, r"val_per_class=20: every class must have 20 "
                                             r"images and keep 1 for training"),
])
def test_a_balanced_part_larger_than_the_smallest_class_is_an_error(
        digits: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        study_parts(*digits, **kwargs)


# ------------------------------------------------------------------------ teacher cache


def _teacher(channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3)).eval()


def _images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 3, 6, 6, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("name", "count"), [("none", 1), ("flip", 2), ("flip_crop", 162)])
def test_variants_of_the_presets(name: str, count: int) -> None:
    assert CropFlipVariants.of(augmentation(name, 32)).count == count


def test_other_augmentations_cannot_be_cached() -> None:
    with pytest.raises(ValueError, match="enumerates crop and flip augmentations only"):
        CropFlipVariants.of(Augment(RandomCrop(1), RandomCrop(2)))
    with pytest.raises(ValueError, match="enumerates crop and flip"):
        CropFlipVariants.of(lambda x, g: x.flip(2))


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_cached_logits_are_the_teachers_on_the_augmented_batch(mode: str) -> None:
    teacher, x = _teacher(), _images()
    augment = Augment(RandomCrop(2, padding_mode=mode), RandomFlip())
    cache = TeacherLogitCache.compute(teacher, x, augment, batch_size=2, device="cpu")
    assert cache.logits.shape == (5, 50, 3)
    for seed in range(4):
        plain = augment(x, torch.Generator().manual_seed(seed))
        out = cache.augment(x, torch.Generator().manual_seed(seed))
        assert torch.equal(out, plain)  # the same draws: the same images as without a cache
        labels, logits = cache.lookup(TeacherLogitCache.targets(torch.arange(5) % 3))
        assert labels.tolist() == [0, 1, 2, 0, 1]
        with torch.no_grad():
            torch.testing.assert_close(logits, teacher(plain))


def test_a_distiller_reads_the_cache_and_checks_it_once() -> None:
    teacher, x, y = _teacher(), _images(), torch.arange(5) % 3
    cache = TeacherLogitCache.compute(teacher, x, augmentation("flip"), device="cpu")
    student = _teacher(seed=1)
    batch = cache.augment(x, torch.Generator().manual_seed(0))
    cached = RSLAD(student, teacher, STILL, teacher_cache=cache).objective(
        student, batch, TeacherLogitCache.targets(y))
    direct = RSLAD(student, teacher, STILL)(batch, y)
    for name, value in direct.items():
        torch.testing.assert_close(cached[name], value)
    wrong = TeacherLogitCache(cache.logits + 1.0, cache.variants, augmentation("flip"), {})
    distiller = RSLAD(student, teacher, STILL, teacher_cache=wrong)
    with pytest.raises(ValueError, match="does not hold this teacher's logits"):
        distiller.objective(student, wrong.augment(x, torch.Generator().manual_seed(0)),
                            TeacherLogitCache.targets(y))


def test_lookup_needs_the_caches_augment_and_position_targets() -> None:
    cache = TeacherLogitCache.compute(_teacher(), _images(), None, device="cpu")
    with pytest.raises(ValueError, match="pass the cache's augment"):
        cache.lookup(TeacherLogitCache.targets(torch.zeros(5, dtype=torch.long)))
    cache.augment(_images(), torch.Generator())
    with pytest.raises(ValueError, match=r"targets are \(B, 2\)"):
        cache.lookup(torch.zeros(5, dtype=torch.long))


def test_a_stored_cache_is_reused_only_for_the_same_teacher(tmp_path: Path) -> None:
    path, x, augment = tmp_path / "logits.pt", _images(), augmentation("flip")
    first = TeacherLogitCache.load_or_compute(path, _teacher(), x, augment, device="cpu")
    stamp = path.stat().st_mtime_ns
    again = TeacherLogitCache.load_or_compute(path, _teacher(), x, augment, device="cpu")
    assert path.stat().st_mtime_ns == stamp
    assert torch.equal(again.logits, first.logits)
    other = TeacherLogitCache.load_or_compute(path, _teacher(seed=3), x, augment, device="cpu")
    assert not torch.equal(other.logits, first.logits)  # recomputed for the new weights


# ------------------------------------------------------------------------ method entries


def test_entries_parse_and_have_one_spelling() -> None:
    assert parse_entry("absld:tau_rate=0.03,official_product=true", METHOD_SETTINGS) == (
        "absld", {"tau_rate": 0.03, "official_product": True})
    assert canonical_entry("absld:tau_rate=.030,rate_decay=before", METHOD_SETTINGS) == \
        "absld:rate_decay=before,tau_rate=0.03"
    assert entry_label("absld:tau_rate=0.03") == "absld-tau_rate0.03"


@pytest.mark.parametrize(("entry", "message"), [
    ("madry", "unknown method 'madry'"),
    ("rslad:tau_rate=0.1", "rslad takes distinct FIELD=VALUE"),
    ("absld:tau_rate", "absld takes distinct"),
    ("absld:tau_rate=0.1,tau_rate=0.2", "absld takes distinct"),
])
def test_bad_entries(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_entry(entry, METHOD_SETTINGS)
