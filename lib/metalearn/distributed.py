"""Data-parallel meta-training over the tasks of a meta-batch, with ``torch.distributed``.

Every rank holds the same model and the same task generator (same seed), so every rank draws
the same meta-batch; rank r adapts only its share of the tasks (:meth:`Group.share`), and the
ranks exchange one row per task (:meth:`Group.gather`, an ``all_gather``): the MAML family's
per-task meta-gradient, Reptile's adapted weights. Every rank then combines the rows in task
order and takes the same outer step, so the models stay equal on every rank and the numbers
do not depend on how many ranks there are (each rank computes a task exactly as one process
would, and the combination is the same sum in the same order).

:func:`run_ranks` runs a training loop on ``workers`` local ranks: this process is rank 0 and
forks the others (they share the data copy-on-write, and the threads are divided among the
ranks: on 2 cores, two 1-thread processes beat one 2-thread process on small convolutions).
Launched by ``torchrun`` (``WORLD_SIZE`` set), it uses the launcher's ranks instead, on any
number of processes or machines (``gloo`` on CPU, ``nccl`` on GPUs). Only rank 0 writes.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from datetime import timedelta
from functools import reduce
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    """This process's place among ``world`` ranks (``world`` 1: alone, no process group)."""

    rank: int = 0
    world: int = 1

    @property
    def writes(self) -> bool:
        """Whether this rank writes checkpoints, models and progress (rank 0 only)."""
        return self.rank == 0

    def share(self, n_tasks: int) -> range:
        """The tasks this rank computes: a contiguous block, sizes differing by at most one
        (ranks beyond ``n_tasks`` would idle: refused)."""
        if self.world > n_tasks:
            raise ValueError(f"{self.world} ranks for {n_tasks} tasks: at least one rank would have no task")
        return range(self.rank * n_tasks // self.world, (self.rank + 1) * n_tasks // self.world)

    def gather(self, rows: Tensor, n_tasks: int) -> Tensor:
        """Every rank's rows [len(share), D] -> all tasks' rows [n_tasks, D], in task order, on
        every rank (the shares are padded to equal size for the exchange)."""
        if self.world == 1:
            return rows
        size = -(-n_tasks // self.world)
        padded = torch.zeros(size, rows.shape[1], dtype=rows.dtype, device=rows.device)
        padded[:len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([part[:len(Group(r, self.world).share(n_tasks))] for r, part in enumerate(parts)])


def ordered_sum(rows: Tensor) -> Tensor:
    """rows [T, D] -> [D]: ``((rows[0] + rows[1]) + rows[2]) + ...``, an order fixed whatever the
    threads or ranks (``Tensor.sum`` may group the terms differently)."""
    return reduce(torch.add, rows.unbind(0))


def ranks(workers: int) -> int:
    """How many ranks a run asked for ``workers`` trains on: the launcher's world size under
    ``torchrun``, else ``workers``."""
    if dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1")) if launched() else workers


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` (or already in a group)."""
    return dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) > 1


def run_ranks(workers: int, loop: Callable[[Group | None], T]) -> T:
    """``loop(group)`` on ``workers`` ranks; returns rank 0's result.

    ``workers`` 1 (and not launched by ``torchrun``): ``loop(None)`` in this process, the plain
    single-process path. Otherwise this process is rank 0 and forks ranks 1..workers-1 (or, under
    ``torchrun``, joins the launcher's ranks and ignores ``workers``). A rank that fails or dies
    ends the run with a :class:`RuntimeError` naming it; whatever rank 0 checkpointed stays.
    """
    if launched():
        return _under_launcher(loop)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return loop(None)
    threads = torch.get_num_threads()
    store_dir = tempfile.mkdtemp(prefix="metalearn-ranks-")
    store = os.path.join(store_dir, "store")
    context = multiprocessing.get_context("fork")
    children = []
    for rank in range(1, workers):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(rank, workers, store, threads, loop, send), daemon=True)
        process.start()
        send.close()
        children.append((rank, process, receive))
    torch.set_num_threads(max(1, threads // workers))
    try:
        dist.init_process_group("gloo", store=dist.FileStore(store, workers), rank=0, world_size=workers,
                                timeout=timedelta(minutes=30))
        try:
            result = loop(Group(0, workers))
        except Exception as error:
            failed = _failures(children, wait=2)
            if failed:
                raise RuntimeError(f"rank {failed}: the run stopped (rank 0 kept its last checkpoint; "
                                   "run again to resume)") from error
            raise
        failed = _failures(children, wait=60)
        if failed:
            raise RuntimeError(f"rank {failed}")
        return result
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for _, process, _ in children:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        torch.set_num_threads(threads)
        shutil.rmtree(store_dir, ignore_errors=True)


def _child(rank: int, world: int, store: str, threads: int, loop: Callable, send) -> None:
    """A forked rank: runs ``loop`` silently, reports an error's traceback to rank 0, exits."""
    code = 0
    try:
        sys.stdout = sys.stderr = open(os.devnull, "w")  # a forked notebook kernel's streams are not ours
        torch.set_num_threads(max(1, threads // world))
        dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world,
                                timeout=timedelta(minutes=30))
        loop(Group(rank, world))
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - every failure goes to rank 0
        send.send(traceback.format_exc())
        code = 1
    send.close()
    os._exit(code)


def _failures(children, wait: float) -> str:
    """'<rank> of <world> failed: <its last error line>' for the first forked rank that failed or
    died ('' if none did, or none ended within ``wait`` seconds each)."""
    for rank, process, receive in children:
        process.join(timeout=wait)
        if process.exitcode in (0, None):
            continue
        world = len(children) + 1
        try:
            return f"{rank} of {world} failed: {receive.recv().strip().splitlines()[-1]}"
        except EOFError:  # it sent nothing: killed
            return f"{rank} of {world} died (exit code {process.exitcode})"
    return ""


def _under_launcher(loop: Callable[[Group], T]) -> T:
    """``loop`` on the ranks ``torchrun`` started (``gloo`` on CPU, ``nccl`` with CUDA)."""
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return loop(Group(dist.get_rank(), dist.get_world_size()))
