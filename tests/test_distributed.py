"""run_on_ranks: results in rank order, real collectives, and nothing left behind after a failure."""

import multiprocessing
import os
import tempfile
import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

from helpers.distributed import RemoteTraceback, WorkerError, default_start_method, run_on_ranks
from helpers.sync_batch_norm import data_parallel_forward


@pytest.fixture
def private_tempdir(tmp_path, monkeypatch):
    """Point tempfile at an empty folder, so that a rendezvous folder left behind shows up."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield tmp_path
    assert list(tmp_path.iterdir()) == [], "the rendezvous folder was left behind"
    assert multiprocessing.active_children() == [], "a worker process was left behind"


def rank_and_sum(value: float) -> tuple[int, int, float]:
    total = torch.tensor([value])
    dist.all_reduce(total)
    return dist.get_rank(), dist.get_world_size(), total.item()


def fail_on_rank_one() -> None:
    if dist.get_rank() == 1:
        raise ValueError("planted failure on rank 1")
    dist.barrier()  # the other ranks wait for rank 1, which never arrives


def die_on_rank_one() -> None:
    if dist.get_rank() == 1:
        os._exit(3)
    dist.barrier()


def hang_on_rank_one() -> None:
    if dist.get_rank() == 1:
        time.sleep(60)
    dist.barrier()


class UnpicklableError(Exception):
    def __init__(self, a, b):  # pickling re-creates it with one argument, which fails
        super().__init__(f"{a} {b}")


def raise_unpicklable() -> None:
    raise UnpicklableError("no", "pickle")


def test_results_come_back_in_rank_order_after_a_real_all_reduce(private_tempdir):
    results = run_on_ranks(rank_and_sum, 3, [(1.0,), (2.0,), (4.0,)])
    assert results == [(0, 3, 7.0), (1, 3, 7.0), (2, 3, 7.0)]


def test_a_worker_exception_is_raised_in_the_parent_with_its_traceback(private_tempdir):
    with pytest.raises(ValueError, match="planted failure on rank 1") as caught:
        run_on_ranks(fail_on_rank_one, 3, timeout_s=30)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "rank 1" in str(cause) and "fail_on_rank_one" in str(cause)


def test_a_worker_that_dies_is_reported_and_the_others_stopped(private_tempdir):
    with pytest.raises(WorkerError, match="rank 1 exited with code 3"):
        run_on_ranks(die_on_rank_one, 2, timeout_s=30)


def test_a_hanging_worker_times_out_and_is_stopped(private_tempdir):
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ranks \[0, 1\] did not finish"):
        run_on_ranks(hang_on_rank_one, 2, timeout_s=2)
    assert time.monotonic() - start < 15


def test_an_exception_that_does_not_pickle_still_reports_the_traceback(private_tempdir):
    with pytest.raises(WorkerError, match="rank 0 failed") as caught:
        run_on_ranks(raise_unpicklable, 1)
    assert "UnpicklableError: no pickle" in str(caught.value.__cause__)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="world_size must be at least 1"):
        run_on_ranks(rank_and_sum, 0)
    with pytest.raises(ValueError, match="args_per_rank has 1 entries for world_size 2"):
        run_on_ranks(rank_and_sum, 2, [(1.0,)])


def test_fork_is_the_default_where_the_platform_has_it():
    assert default_start_method() == ("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def test_spawn_runs_an_importable_worker(private_tempdir):
    shards = torch.randn(2, 3, 2, 4, generator=torch.Generator().manual_seed(0)).unbind(0)
    results = run_on_ranks(
        data_parallel_forward, 2, [(nn.BatchNorm1d(2), shard) for shard in shards], start_method="spawn"
    )
    for shard, result in zip(shards, results, strict=True):
        torch.testing.assert_close(result["output"], nn.BatchNorm1d(2)(shard).detach())
