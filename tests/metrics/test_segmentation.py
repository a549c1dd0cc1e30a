"""Tests of the segmentation metrics (mIoU / mDice / mAcc at three levels, worst case)."""

from __future__ import annotations

import doctest
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion

import softlabels.metrics.segmentation as segmentation_module
import softlabels.metrics.segmentation_scores as scores_module
from softlabels.metrics import (
    SegmentationMetrics,
    macc,
    mdice,
    miou,
    per_image_scores,
    segmentation_confusion,
    segmentation_metrics,
    worst_case,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import assert_close_on, device_fixture  # noqa: F401

IGNORE = 255

# Two 2x3 images, three classes; pixel (1, 1) of image 1 is ignored (its prediction, 1, must
# not count as a false positive of class 1). Counts and scores below are worked out by hand.
TARGET = torch.tensor([[[0, 0, 1], [1, 2, 2]],
                       [[0, 0, 0], [0, IGNORE, 1]]])
PRED = torch.tensor([[[0, 1, 1], [1, 2, 0]],
                     [[0, 0, 2], [0, 1, 0]]])
TP = [[1, 2, 1], [3, 0, 0]]
FP = [[1, 1, 0], [1, 0, 1]]
FN = [[1, 0, 1], [1, 1, 0]]

# Per image and class (c: TP/FP/FN -> IoU, Dice, Acc):
#   image 0: c0 1/1/1 -> 1/3, 1/2, 1/2;  c1 2/1/0 -> 2/3, 4/5, 1;  c2 1/0/1 -> 1/2, 2/3, 1/2
#   image 1: c0 3/1/1 -> 3/5, 3/4, 3/4;  c1 0/0/1 -> 0, 0, 0;  c2 0/1/0 -> only predicted
# Dataset sums: c0 4/2/2, c1 2/1/1, c2 1/1/1.
EXPECTED: dict[str, Any] = {
    "miou_dataset": (1 / 2 + 1 / 2 + 1 / 3) / 3,                      # 4/9
    "miou_image": ((1 / 3 + 2 / 3 + 1 / 2) / 3 + (3 / 5 + 0) / 2) / 2,  # (1/2 + 3/10) / 2
    "miou_class": ((1 / 3 + 3 / 5) / 2 + (2 / 3 + 0) / 2 + 1 / 2) / 3,  # 13/30
    "mdice_dataset": (2 / 3 + 2 / 3 + 1 / 2) / 3,
    "mdice_image": ((1 / 2 + 4 / 5 + 2 / 3) / 3 + (3 / 4 + 0) / 2) / 2,
    "mdice_class": ((1 / 2 + 3 / 4) / 2 + (4 / 5 + 0) / 2 + 2 / 3) / 3,
    "macc_dataset": (4 / 6 + 2 / 3 + 1 / 2) / 3,
    "macc_image": ((1 / 2 + 1 + 1 / 2) / 3 + (3 / 4 + 0) / 2) / 2,
    "macc_class": ((1 / 2 + 3 / 4) / 2 + (1 + 0) / 2 + 1 / 2) / 3,
    "pixel_accuracy": 7 / 11,
    "iou_per_class": [1 / 2, 1 / 2, 1 / 3],
    "num_images": 2,
}


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Exact equality of two result dicts, NaN equal to NaN."""
    assert a.keys() == b.keys()
    for key in a:
        x, y = np.asarray(a[key], dtype=float), np.asarray(b[key], dtype=float)
        assert np.array_equal(x, y, equal_nan=True), (key, a[key], b[key])


def _assert_close(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = np.asarray(a[key], dtype=float), np.asarray(b[key], dtype=float)
        assert np.allclose(x, y, rtol=1e-12, atol=1e-12, equal_nan=True), (key, a[key], b[key])


def test_confusion_counts_by_hand() -> None:
    tp, fp, fn = segmentation_confusion(PRED, TARGET, 3, ignore_index=IGNORE)
    assert tp.dtype == fp.dtype == fn.dtype == torch.int64
    assert (tp.tolist(), fp.tolist(), fn.tolist()) == (TP, FP, FN)


def test_every_level_by_hand() -> None:
    result = segmentation_metrics(PRED, TARGET, 3, ignore_index=IGNORE, q=50)
    expected = dict(EXPECTED)
    # q = 50 of 2 images keeps floor(1) = 1 image: the worse per-image mIoU, 3/10. Per class:
    # c0 min(1/3, 3/5), c1 min(2/3, 0), c2 1/2 (one image) -> (1/3 + 0 + 1/2) / 3 = 5/18.
    expected["miou_image_worst"] = 3 / 10
    expected["miou_class_worst"] = 5 / 18
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12), key
    assert result["miou_dataset"] == pytest.approx(4 / 9)
    assert result["miou_image"] == pytest.approx(0.4)
    assert result["miou_class"] == pytest.approx(13 / 30)


def test_functional_levels_from_counts() -> None:
    tp, fp, fn = torch.tensor(TP), torch.tensor(FP), torch.tensor(FN)
    for level in ("dataset", "image", "class"):
        assert miou(tp, fp, fn, level) == pytest.approx(EXPECTED[f"miou_{level}"])
        assert mdice(tp, fp, fn, level=level) == pytest.approx(EXPECTED[f"mdice_{level}"])
        assert macc(tp, fp, fn, level=level) == pytest.approx(EXPECTED[f"macc_{level}"])
    # float counts are accepted as well (e.g. summed from elsewhere)
    assert miou(tp.double(), fp.float(), fn, "image") == pytest.approx(0.4)
    assert per_image_scores(tp, fp, fn).tolist() == pytest.approx([1 / 2, 3 / 10])
    assert per_image_scores(tp, fp, fn, "dice").tolist() == pytest.approx([59 / 90, 3 / 8])
    assert per_image_scores(tp, fp, fn, "acc").tolist() == pytest.approx([2 / 3, 3 / 8])


def test_worst_case_q_extremes() -> None:
    low = segmentation_metrics(PRED, TARGET, 3, ignore_index=IGNORE, q=5.0)
    assert low["miou_image_worst"] == pytest.approx(3 / 10)  # at least one image
    assert low["miou_class_worst"] == pytest.approx(5 / 18)
    full = segmentation_metrics(PRED, TARGET, 3, ignore_index=IGNORE, q=100)
    assert full["miou_image_worst"] == pytest.approx(0.4)  # = mIoU^I
    assert full["miou_class_worst"] == pytest.approx(13 / 30)  # = mIoU^C


def test_worst_case_counts_floor_of_q_percent() -> None:
    scores = torch.tensor([0.5, 0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    assert worst_case(scores, q=30) == pytest.approx(0.1)  # floor(1.5) = 1 value
    assert worst_case(scores, q=40) == pytest.approx(0.15)  # 2 values
    assert worst_case(scores, q=1) == pytest.approx(0.1)  # floor(0.05) -> at least 1
    assert worst_case(scores, q=100) == pytest.approx(0.3)
    # 29% of 100 is 29 values, although 0.29 * 100 = 28.999... in floating point.
    hundred = torch.arange(100, dtype=torch.float64) / 100
    assert worst_case(hundred, q=29) == pytest.approx(0.14)  # mean of 0.00 .. 0.28
    with_nan = torch.tensor([float("nan"), 0.8, 0.2, float("nan")])
    assert worst_case(with_nan, q=50) == pytest.approx(0.2)  # NaN images are skipped
    assert math.isnan(worst_case(torch.full((3,), float("nan")), q=50))
    assert math.isnan(worst_case(torch.zeros(0), q=50))


def test_image_level_averages_ground_truth_classes_only() -> None:
    # One image, all class 0; half the pixels predicted as class 1 (absent from the GT).
    target = torch.zeros(1, 2, 2, dtype=torch.int64)
    pred = torch.tensor([[[0, 0], [1, 1]]])
    result = segmentation_metrics(pred, target, 2)
    assert result["iou_per_class"] == [0.5, 0.0]
    assert result["miou_dataset"] == pytest.approx(0.25)  # a predicted-only class scores 0
    assert result["miou_image"] == pytest.approx(0.5)  # ... but is not one of the image's classes
    assert result["miou_class"] == pytest.approx(0.5)
    assert result["mdice_image"] == pytest.approx(2 / 3)
    assert result["macc_dataset"] == pytest.approx(0.5)  # class 1 has no GT, so no accuracy
    assert result["pixel_accuracy"] == pytest.approx(0.5)


def test_fully_ignored_image_contributes_nothing() -> None:
    ignored_target = torch.full((1, 2, 3), IGNORE)
    garbage_pred = torch.tensor([[[2, 2, 2], [1, 1, 1]]])
    metrics = SegmentationMetrics(3, ignore_index=IGNORE, q=50)
    metrics.update(PRED, TARGET)
    before = metrics.compute()
    metrics.update(garbage_pred, ignored_target)
    after = metrics.compute()
    assert after.pop("num_images") == 3
    before.pop("num_images")
    _assert_same(before, after)
    tp, fp, fn = metrics.counts()
    assert tp[2].sum() == fp[2].sum() == fn[2].sum() == 0
    assert math.isnan(float(per_image_scores(tp, fp, fn)[2]))


def test_only_ignored_or_no_input_gives_nan() -> None:
    nan_keys = [k for k in EXPECTED if k not in ("iou_per_class", "num_images")]
    nan_keys += ["miou_image_worst", "miou_class_worst"]
    cases = [
        (torch.zeros(0, 4, 4, dtype=torch.int64), torch.zeros(0, 4, 4, dtype=torch.int64), 0),
        (torch.zeros(2, 0, 5, dtype=torch.int64), torch.zeros(2, 0, 5, dtype=torch.int64), 2),
        (torch.zeros(1, 2, 2, dtype=torch.int64), torch.full((1, 2, 2), IGNORE), 1),
        (torch.zeros(0, 3, 4, 4), torch.zeros(0, 4, 4, dtype=torch.int64), 0),
    ]
    for pred, target, images in cases:
        result = segmentation_metrics(pred, target, 3, ignore_index=IGNORE)
        assert result["num_images"] == images
        for key in nan_keys:
            assert math.isnan(result[key]), key
        assert all(math.isnan(v) for v in result["iou_per_class"])
    fresh = SegmentationMetrics(3).compute()
    assert fresh["num_images"] == 0
    assert math.isnan(fresh["miou_dataset"])
    assert math.isnan(fresh["miou_image_worst"])


def test_classes_absent_from_batch_are_nan_per_class_and_skipped() -> None:
    target = torch.tensor([[[0, 0], [2, 2]]])
    result = segmentation_metrics(target.clone(), target, 5)
    assert result["iou_per_class"][0] == result["iou_per_class"][2] == 1.0
    assert all(math.isnan(result["iou_per_class"][c]) for c in (1, 3, 4))
    for key in ("miou_dataset", "miou_image", "miou_class", "mdice_class", "macc_dataset"):
        assert result[key] == 1.0, key


def test_scores_match_class_map_for_logits_and_probabilities() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (3, 5, 6), generator=g)
    target[0, 0, :3] = IGNORE
    by_class = segmentation_metrics(logits.argmax(1), target, 4, ignore_index=IGNORE)
    _assert_same(by_class, segmentation_metrics(logits, target, 4, ignore_index=IGNORE))
    _assert_same(by_class, segmentation_metrics(logits.softmax(1).half(), target, 4,
                                                ignore_index=IGNORE))


def test_perfect_prediction_scores_one_everywhere() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (4, 6, 7), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = IGNORE
    pred = torch.where(target == IGNORE, torch.randint(0, 4, target.shape, generator=g), target)
    result = segmentation_metrics(pred, target, 4, ignore_index=IGNORE, q=5)
    for key, value in result.items():
        if key == "num_images":
            assert value == 4
        elif key == "iou_per_class":
            assert value == [1.0] * 4
        else:
            assert value == 1.0, key


def test_prediction_at_ignored_pixels_changes_nothing() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (3, 5, 5), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.3] = IGNORE
    pred = torch.randint(0, 3, target.shape, generator=g)
    reference = segmentation_metrics(pred, target, 3, ignore_index=IGNORE)
    for value in range(3):
        changed = pred.masked_fill(target == IGNORE, value)
        _assert_same(reference, segmentation_metrics(changed, target, 3, ignore_index=IGNORE))
    # Sanity: the same change at a kept pixel does change the result.
    kept = (target != IGNORE).nonzero()[0]
    changed = pred.clone()
    truth = target[tuple(kept)]
    # flip the pixel between right and wrong
    changed[tuple(kept)] = truth if changed[tuple(kept)] != truth else (truth + 1) % 3
    changed_result = segmentation_metrics(changed, target, 3, ignore_index=IGNORE)
    assert changed_result["pixel_accuracy"] != reference["pixel_accuracy"]


def test_keep_mask_is_equivalent_to_ignore_index() -> None:
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    pred = torch.randint(0, 3, target.shape, generator=g)
    keep = torch.rand(target.shape, generator=g) > 0.25
    ignored = target.masked_fill(~keep, IGNORE)
    _assert_same(segmentation_metrics(pred, ignored, 3, ignore_index=IGNORE),
                 segmentation_metrics(pred, target, 3, keep=keep))


@given(st.integers(1, 4), st.integers(0, 10_000))
@settings(max_examples=20, deadline=None)
def test_streaming_equals_one_update(chunks: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 4, (7, 3, 4), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = -1
    logits = torch.randn(7, 4, 3, 4, generator=g)
    stream = SegmentationMetrics(4, ignore_index=-1, q=30)
    for part_logits, part_target in zip(logits.tensor_split(chunks), target.tensor_split(chunks),
                                        strict=True):
        stream.update(part_logits, part_target)
    _assert_close(stream.compute(), segmentation_metrics(logits, target, 4, ignore_index=-1, q=30))


def test_reset_forgets_state() -> None:
    metrics = SegmentationMetrics(3, ignore_index=IGNORE)
    metrics.update(torch.zeros(2, 2, 3, dtype=torch.int64), TARGET)
    metrics.reset()
    metrics.update(PRED, TARGET)
    assert metrics.num_images == 2
    assert metrics.compute()["miou_dataset"] == pytest.approx(4 / 9)


def test_one_and_two_classes() -> None:
    one = torch.zeros(2, 3, 3, dtype=torch.int64)
    result = segmentation_metrics(one, one, 1)
    assert result["miou_dataset"] == result["miou_image"] == result["miou_class"] == 1.0
    assert result["iou_per_class"] == [1.0]
    # C = 2: two ordinary classes, background included.
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1]]])
    two = segmentation_metrics(pred, target, 2)
    assert two["iou_per_class"] == pytest.approx([1 / 2, 2 / 3])
    assert two["miou_image"] == pytest.approx(7 / 12)
    assert two["mdice_dataset"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert two["macc_dataset"] == pytest.approx((1 / 2 + 1) / 2)


# ----------------------------------------------------------------------------- devices


def _hand_batch_with_keep() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PRED as logits and TARGET with the ignored pixel removed by ``keep`` instead, plus a
    third image without any kept pixel: the same counts and scores as the hand example
    (which a fully ignored image does not change), and three images."""
    logits = 2.0 * F.one_hot(torch.cat([PRED, torch.zeros(1, 2, 3, dtype=torch.int64)]),
                             3).movedim(-1, 1).float()
    target = torch.cat([TARGET, torch.full((1, 2, 3), IGNORE)])
    target[1, 1, 1] = 2  # some class, removed by keep
    keep = torch.ones(3, 2, 3, dtype=torch.bool)
    keep[1, 1, 1] = False
    return logits, target, keep


def test_counts_and_scores_on_device(device: str) -> None:
    """segmentation_confusion, the mIoU family, per-image and worst-case scores, and the
    SegmentationMetrics accumulator fed device logits and class maps with keep masks on the
    device or the CPU: the hand-worked counts and scores; counts on the target's device,
    accumulated state on the CPU."""
    logits_cpu, target_cpu, keep_cpu = _hand_batch_with_keep()
    logits, target, keep = (t.to(device) for t in (logits_cpu, target_cpu, keep_cpu))
    counts = segmentation_confusion(logits, target, 3, IGNORE, keep=keep)
    for value, expected in zip(counts, (TP, FP, FN), strict=True):
        assert_close_on(value, torch.tensor([*expected, [0, 0, 0]]), device, atol=0, rtol=0)
    for level in ("dataset", "image", "class"):
        for score, prefix in ((miou, "miou"), (mdice, "mdice"), (macc, "macc")):
            assert score(*counts, level=level) == pytest.approx(EXPECTED[f"{prefix}_{level}"])
    per_image = per_image_scores(*counts)
    torch.testing.assert_close(per_image, torch.tensor([1 / 2, 3 / 10, math.nan],
                                                       dtype=torch.float64), equal_nan=True)
    assert worst_case(per_image.to(device), 50) == pytest.approx(3 / 10)

    # q = 50 of the 2 images with kept pixels: see test_every_level_by_hand.
    expected = {**EXPECTED, "miou_image_worst": 3 / 10, "miou_class_worst": 5 / 18,
                "num_images": 3}
    metrics = SegmentationMetrics(3, ignore_index=IGNORE, q=50)
    metrics.update(logits[:2], target[:2], keep=keep_cpu[:2])  # keep moved by the library
    metrics.update(logits[2:].argmax(1), target[2:], keep=keep[2:])
    assert all(t.device.type == "cpu" for t in metrics.counts())  # state kept on the CPU
    # Masks and keep left on the CPU, as an evaluation loop that moves only the images has.
    masks_on_cpu = SegmentationMetrics(3, ignore_index=IGNORE, q=50)
    masks_on_cpu.update(logits, target_cpu, keep=keep_cpu)
    for result in (metrics.compute(), masks_on_cpu.compute(),
                   segmentation_metrics(logits, target, 3, IGNORE, 50, keep=keep)):
        assert result.keys() == expected.keys()
        for key, value in expected.items():
            assert result[key] == pytest.approx(value, rel=1e-12), key


# ----------------------------------------------------------------------------- cross-checks


def _naive(pred: np.ndarray, target: np.ndarray, c: int, ignore: int, q: int) -> dict[str, Any]:
    """Plain-loop reference for the image- and class-level definitions of refs.md."""
    per_image: list[dict[int, tuple[int, int, int]]] = []
    for p_img, t_img in zip(pred, target, strict=True):
        kept = t_img != ignore
        p, t = p_img[kept], t_img[kept]
        counts = {}
        for k in range(c):
            if (t == k).any():  # classes present in this image's ground truth
                tp = int(((t == k) & (p == k)).sum())
                fp = int(((t != k) & (p == k)).sum())
                fn = int(((t == k) & (p != k)).sum())
                counts[k] = (tp, fp, fn)
        per_image.append(counts)

    def score(name: str, tp: int, fp: int, fn: int) -> float:
        return {"iou": tp / (tp + fp + fn), "dice": 2 * tp / (2 * tp + fp + fn),
                "acc": tp / (tp + fn)}[name]

    def lowest(values: list[float]) -> float:
        k = max(1, q * len(values) // 100)
        return sum(sorted(values)[:k]) / k

    out: dict[str, Any] = {}
    for name in ("iou", "dice", "acc"):
        images = [sum(score(name, *v) for v in d.values()) / len(d) for d in per_image if d]
        out[f"{name}_image"] = sum(images) / len(images) if images else math.nan
        classes = []
        class_worst = []
        for k in range(c):
            values = [score(name, *d[k]) for d in per_image if k in d]
            if values:
                classes.append(sum(values) / len(values))
                class_worst.append(lowest(values))
        out[f"{name}_class"] = sum(classes) / len(classes) if classes else math.nan
        if name == "iou":
            out["image_worst"] = lowest(images) if images else math.nan
            out["class_worst"] = sum(class_worst) / len(class_worst) if classes else math.nan
    return out


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5), st.integers(1, 6),
       st.integers(1, 100), st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_matches_sklearn_and_naive_loops(b: int, h: int, w: int, c: int, q: int,
                                         seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.15] = IGNORE
    pred = torch.randint(0, c, (b, h, w), generator=g)
    result = segmentation_metrics(pred, target, c, ignore_index=IGNORE, q=q)

    t_np, p_np = target.numpy(), pred.numpy()
    kept = t_np != IGNORE
    matrix = (sk_confusion(t_np[kept], p_np[kept], labels=list(range(c))).astype(float)
              if kept.any() else np.zeros((c, c)))
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    np.testing.assert_allclose(result["iou_per_class"], iou, rtol=1e-12, equal_nan=True)
    expected_d = np.nanmean(iou) if np.isfinite(iou).any() else math.nan
    assert result["miou_dataset"] == pytest.approx(expected_d, rel=1e-12, nan_ok=True)
    accuracy = tp.sum() / matrix.sum() if matrix.sum() else math.nan
    assert result["pixel_accuracy"] == pytest.approx(accuracy, rel=1e-12, nan_ok=True)

    naive = _naive(p_np, t_np, c, IGNORE, q)
    for name, prefix in (("iou", "miou"), ("dice", "mdice"), ("acc", "macc")):
        for level in ("image", "class"):
            assert result[f"{prefix}_{level}"] == pytest.approx(
                naive[f"{name}_{level}"], rel=1e-12, nan_ok=True), (prefix, level)
    assert result["miou_image_worst"] == pytest.approx(naive["image_worst"], rel=1e-12,
                                                       nan_ok=True)
    assert result["miou_class_worst"] == pytest.approx(naive["class_worst"], rel=1e-12,
                                                       nan_ok=True)


# ----------------------------------------------------------------------------- bad input


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 2, 3\).*\(2, 3, 2\)"):
        segmentation_metrics(torch.zeros(2, 3, 2, dtype=torch.int64), TARGET, 3,
                             ignore_index=IGNORE)
    with pytest.raises(ValueError, match=r"\(2, 3, 2, 3\).*\(2, 2, 3\).*\(2, 4, 2, 3\)"):
        segmentation_metrics(torch.zeros(2, 4, 2, 3), TARGET, 3, ignore_index=IGNORE)
    with pytest.raises(ValueError, match="target must have shape"):
        segmentation_metrics(torch.zeros(6, dtype=torch.int64), torch.zeros(6, dtype=torch.int64),
                             3)
    with pytest.raises(ValueError, match="keep must have the shape"):
        segmentation_metrics(PRED, TARGET, 3, ignore_index=IGNORE,
                             keep=torch.ones(2, 3, 2, dtype=torch.bool))


def test_out_of_range_labels_are_errors_not_clamped() -> None:
    with pytest.raises(ValueError, match="target must hold class indices"):
        segmentation_metrics(PRED, TARGET, 3)  # 255 without ignore_index
    with pytest.raises(ValueError, match=r"target.*\[3\]"):
        segmentation_metrics(PRED, TARGET.masked_fill(TARGET == IGNORE, 3), 3,
                             ignore_index=IGNORE)
    with pytest.raises(ValueError, match=r"target.*\[-1"):
        segmentation_metrics(PRED, TARGET.masked_fill(TARGET == 1, -1), 3, ignore_index=IGNORE)
    with pytest.raises(ValueError, match=r"pred must hold class indices.*e\.g\. \[3"):
        segmentation_metrics(PRED.masked_fill(PRED == 2, 3), TARGET, 3, ignore_index=IGNORE)
    with pytest.raises(ValueError, match="pred must hold class indices"):  # even where ignored
        segmentation_metrics(PRED.masked_fill(TARGET == IGNORE, IGNORE), TARGET, 3,
                             ignore_index=IGNORE)
    with pytest.raises(ValueError, match="ignore_index must lie outside"):
        segmentation_metrics(PRED, TARGET, 3, ignore_index=2)


def test_wrong_dtypes() -> None:
    with pytest.raises(TypeError, match="target must be an int64"):
        segmentation_metrics(PRED, TARGET.int(), 3, ignore_index=IGNORE)
    with pytest.raises(TypeError, match="target must be an int64"):
        segmentation_metrics(PRED, TARGET.float(), 3, ignore_index=IGNORE)
    with pytest.raises(TypeError, match="pred must be int64"):
        segmentation_metrics(PRED.int(), TARGET, 3, ignore_index=IGNORE)
    with pytest.raises(TypeError, match="pred must be int64"):
        segmentation_metrics(PRED > 0, TARGET, 3, ignore_index=IGNORE)
    with pytest.raises(TypeError, match=r"pred must be a torch\.Tensor"):
        segmentation_metrics(PRED.tolist(), TARGET, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keep must be a bool"):
        segmentation_metrics(PRED, TARGET, 3, ignore_index=IGNORE, keep=torch.ones(2, 2, 3))
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        SegmentationMetrics(3, ignore_index=255.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="num_classes must be an int"):
        SegmentationMetrics(3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes must be > 0"):
        SegmentationMetrics(0)


def test_nan_logits_are_rejected() -> None:
    logits = torch.zeros(2, 3, 2, 3)
    logits[0, 1, 0, 0] = math.nan
    with pytest.raises(ValueError, match="pred must be finite"):
        segmentation_metrics(logits, TARGET, 3, ignore_index=IGNORE)


@pytest.mark.parametrize("q", [0, -5, 100.5, 1000, math.nan])
def test_q_outside_range(q: float) -> None:
    with pytest.raises(ValueError, match=r"q must be a percentage in \(0, 100\]"):
        SegmentationMetrics(3, q=q)
    with pytest.raises(ValueError, match="q must be"):
        worst_case(torch.ones(3), q=q)
    with pytest.raises(ValueError, match="q must be"):
        segmentation_metrics(PRED, TARGET, 3, ignore_index=IGNORE, q=q)


def test_q_wrong_type() -> None:
    with pytest.raises(TypeError, match="q must be a number"):
        SegmentationMetrics(3, q="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="q must be a number"):
        SegmentationMetrics(3, q=True)


def test_bad_counts_and_level() -> None:
    tp, fp, fn = torch.tensor(TP), torch.tensor(FP), torch.tensor(FN)
    with pytest.raises(ValueError, match="level must be one of"):
        miou(tp, fp, fn, level="pixel")
    with pytest.raises(ValueError, match=r"fp must have the shape of tp \(2, 3\)"):
        miou(tp, fp[:, :2], fn)
    with pytest.raises(ValueError, match="fn must hold non-negative"):
        mdice(tp, fp, -fn)
    with pytest.raises(ValueError, match=r"tp must have shape \(N, C\)"):
        macc(tp[0], fp[0], fn[0])
    with pytest.raises(TypeError, match="tp must be an integer or floating-point"):
        miou(tp > 0, fp, fn)
    with pytest.raises(ValueError, match="score must be one of"):
        per_image_scores(tp, fp, fn, score="f1")
    with pytest.raises(TypeError, match="per_image_scores must be a floating-point"):
        worst_case(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="per_image_scores must have shape"):
        worst_case(torch.ones(2, 2))


@pytest.mark.parametrize("module", [segmentation_module, scores_module])
def test_doctests(module: object) -> None:
    failures, tried = doctest.testmod(module, extraglobs={"torch": torch})
    assert tried > 0
    assert failures == 0
