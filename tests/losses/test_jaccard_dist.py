"""sync_dist: two gloo processes on halves of a batch compute what one process computes on
the whole batch (loss, DDP-averaged gradients, fused cross-entropy)."""

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from softlabels.losses import jaccard_metric_loss

sys.path.insert(0, str(Path(__file__).parent))
from jaccard_helpers import (
    SYNC_CASES,
    reference_ce,
    reference_loss,
    sync_dist_worker,
    sync_inputs,
    sync_model,
)

WORLD = 2
TIMEOUT_S = 120  # a hung collective fails the test instead of the CI job


def run_ranks(folder: Path) -> list[list[dict]]:
    context = mp.get_context("spawn")
    ranks = [context.Process(target=sync_dist_worker, args=(rank, WORLD, str(folder)))
             for rank in range(WORLD)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(TIMEOUT_S)
    stuck = [process for process in ranks if process.is_alive()]
    for process in stuck:
        process.kill()
        process.join()
    assert not stuck, f"sync_dist ranks still running after {TIMEOUT_S} s"
    assert [process.exitcode for process in ranks] == [0] * WORLD
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(WORLD)]


def test_sync_dist_equals_one_process_on_the_global_batch(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the ranks
    results = run_ranks(tmp_path)
    data = sync_inputs(WORLD)
    for index, case in enumerate(SYNC_CASES):
        options = {k: v for k, v in case.items() if k not in ("target", "keep")}
        keep = data["keep"] if case.get("keep") else None
        model = sync_model()
        logits = model(data["images"])
        logits.retain_grad()
        loss = jaccard_metric_loss(logits, data[case["target"]], keep=keep, **options)
        loss.backward()
        # Independent of the fused code: the textbook formula on the whole batch.
        expected = reference_loss(logits.detach().double(), data[case["target"]].double()
                                  if case["target"] == "soft" else data["labels"], keep=keep,
                                  **options)
        assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
        for rank, rank_results in enumerate(results):
            got = rank_results[index]
            assert got["loss"].item() == pytest.approx(loss.item(), abs=1e-6)
            torch.testing.assert_close(got["weight_grad"], model.weight.grad, atol=1e-6,
                                       rtol=1e-5)
            # Each rank's own gradient is WORLD times its share: DDP divides by WORLD.
            half = logits.grad[rank * 2:rank * 2 + 2]
            torch.testing.assert_close(got["logits_grad"], WORLD * half, atol=1e-6, rtol=1e-5)
    logits = sync_model()(data["images"]).detach()
    for rank_results in results:
        assert rank_results[-2]["ce"].item() == pytest.approx(
            reference_ce(logits, data["labels"], ignore_index=255).item(), abs=1e-6)
        assert rank_results[-2]["metric"].item() == pytest.approx(
            jaccard_metric_loss(logits, data["labels"], ignore_index=255).item(), abs=1e-6)
    assert "another process" in results[0][-1]["error"]
    assert "never clamped" in results[-1][-1]["error"]
