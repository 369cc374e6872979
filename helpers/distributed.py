"""Run a function on W CPU processes joined by ``torch.distributed`` (gloo), and always clean up.

``run_on_ranks(fn, world_size, args_per_rank)`` starts one process per rank, joins them in a
process group whose rendezvous is a file in a fresh temporary directory (never a fixed port, so
that two notebooks can run at once), calls ``fn(*args_per_rank[rank])`` on each rank and returns
the results in rank order. Whatever happens — a worker raises, dies or hangs — every process is
stopped and the directory removed before the call returns or raises; a worker's exception is
re-raised in the parent with the worker's traceback attached as its cause.

Processes start with ``fork`` where the platform has it (Linux, macOS): the children inherit the
parent's objects, so a class defined in a notebook cell — and any later change to it — is what
the workers run, and nothing is imported again. Elsewhere (Windows) they start with ``spawn``,
and ``fn`` and its arguments must then be importable and picklable. Each worker runs PyTorch
with one thread, as DataLoader workers do: a forked child must not reuse the parent's OpenMP
thread pool, and W processes on a few cores gain nothing from more threads.
"""

import multiprocessing
import os
import pickle
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 120.0
_GRACE_S = 5.0  # how long a stopped worker may take to exit before it is killed
_REPORT_S = 1.0  # after a first failure, how long to wait for the other ranks' reports


class WorkerError(RuntimeError):
    """A worker process failed without an exception that could be sent back (e.g. it died)."""


class RemoteTraceback(Exception):
    """The traceback of a worker's exception, attached as the ``__cause__`` of the re-raised one."""

    def __init__(self, rank: int, text: str) -> None:
        super().__init__(f"\n\nTraceback in rank {rank}:\n{text}")


def default_start_method() -> str:
    """``fork`` where the platform offers it, otherwise ``spawn``."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _worker(fn: Callable[..., Any], rank: int, world_size: int, init_file: str, args: tuple, conn: Connection) -> None:
    """Body of one rank: join the group, run ``fn``, send ("ok", result) or ("error", ...)."""
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
        message = ("ok", fn(*args))
    except BaseException as error:  # noqa: BLE001 - every failure must reach the parent
        # The time tells the parent which failure came first: the others are often only peers
        # that lost their connection to the failed rank.
        message = ("error", (_sendable(error), traceback.format_exc(), time.time()))
    try:
        payload = pickle.dumps(message)
    except Exception:  # noqa: BLE001 - a result that does not pickle is a failure too
        payload = pickle.dumps(("error", (None, traceback.format_exc(), time.time())))
    # Plain pickle, not the connection's own: torch registers reducers that pass tensors as
    # shared-memory file descriptors, which vanish when this process exits.
    conn.send_bytes(payload)
    conn.close()
    if dist.is_initialized():
        dist.destroy_process_group()


def _sendable(error: BaseException) -> BaseException | None:
    """The exception itself if it survives pickling (so the parent can raise it), else None."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any failure means: send the traceback text only
        return None
    return error


def _stop(processes: list) -> None:
    """Terminate the processes still running, kill those that ignore it, reap all of them."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + _GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
        process.close()


def run_on_ranks(
    fn: Callable[..., Any],
    world_size: int,
    args_per_rank: Sequence[tuple] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    start_method: str | None = None,
) -> list[Any]:
    """Call ``fn(*args_per_rank[rank])`` on ``world_size`` gloo processes; return results by rank."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if args_per_rank is None:
        args_per_rank = [()] * world_size
    if len(args_per_rank) != world_size:
        raise ValueError(f"args_per_rank has {len(args_per_rank)} entries for world_size {world_size}")
    context = multiprocessing.get_context(start_method or default_start_method())
    with tempfile.TemporaryDirectory(prefix="rendezvous-") as directory:
        init_file = os.path.join(directory, "store")
        processes, receivers = [], {}
        try:
            for rank in range(world_size):
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker,
                    args=(fn, rank, world_size, init_file, tuple(args_per_rank[rank]), sender),
                    daemon=True,
                )
                process.start()
                sender.close()
                processes.append(process)
                receivers[receiver] = rank
            return _collect(receivers, processes, timeout_s)
        finally:
            for receiver in receivers:
                receiver.close()
            _stop(processes)


def _collect(receivers: dict[Connection, int], processes: list, timeout_s: float) -> list[Any]:
    """Receive every rank's result; raise the first failure, a silent death or the timeout."""
    results: dict[int, Any] = {}
    failures: list[tuple[float, int, BaseException | None, str]] = []
    pending = dict(receivers)
    deadline = time.monotonic() + timeout_s
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if failures:
                break
            raise TimeoutError(f"ranks {sorted(pending.values())} did not finish within {timeout_s} s")
        for receiver in wait(list(pending), timeout=remaining):
            rank = pending.pop(receiver)
            try:
                status, payload = pickle.loads(receiver.recv_bytes())
            except EOFError:
                processes[rank].join(_GRACE_S)
                raise WorkerError(f"rank {rank} exited with code {processes[rank].exitcode} without a result") from None
            if status == "error":
                error, text, when = payload
                failures.append((when, rank, error, text))
                # Give the other ranks a moment to report, then raise the earliest failure.
                deadline = min(deadline, time.monotonic() + _REPORT_S)
            else:
                results[rank] = payload
    if failures:
        _, rank, error, text = min(failures, key=lambda failure: failure[0])
        cause = RemoteTraceback(rank, text)
        if error is None:
            raise WorkerError(f"rank {rank} failed") from cause
        raise error from cause
    return [results[rank] for rank in range(len(processes))]
