"""Resumable training: a model, its optimiser, the task RNG, and checkpoints.

A :class:`Run` is keyed by its name, its settings and :data:`NUMERICS`, the version of the
study's numerics, never by the source of presentation code: a refactor that leaves every
number unchanged keeps the key (and so the checkpoints and shipped models), and a change
that alters numbers bumps :data:`NUMERICS` (``tests/test_numerics.py`` fails until it is
bumped: it holds fingerprints of small runs of every kind). Checkpoints are written
atomically every ``checkpoint_every`` iterations to ``data/work/`` (not a DVC
output: DVC deletes outputs before it reruns a stage, and a killed stage must find
its checkpoint). A run killed at any moment and started again continues from the
last checkpoint and ends with exactly the numbers of an uninterrupted run, because
every random draw comes from the run's own ``torch.Generator``, saved with it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from . import paths, store
from .hardware import describe
from .batched import CapturedStep
from .core import meta_loss, mse, optimize, reptile_update, task_meta_gradients
from .distributed import Group, ordered_sum
from .models import flat, forward, init_model, unflat


#: The version of the study's numerics: every trained weight, training history and test score
#: is a function of a run's settings and of this number. Bump it with any change that alters a
#: number a run produces (tests/test_numerics.py fails until you do); a refactor that leaves
#: the numbers bit for bit as they were keeps it, and so keeps every checkpoint and shipped model.
NUMERICS = 1


def run_key(name: str, config: dict) -> str:
    """A file-name-safe key for the run ``name`` with ``config`` (JSON-able settings) under
    the current :data:`NUMERICS`."""
    text = json.dumps(config, sort_keys=True, default=str) + f"numerics {NUMERICS}"
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class Run:
    """Training state that survives a kill: ``model``, ``optimizer`` (optional), ``gen``
    (the RNG for tasks), ``extra`` (any other state, e.g. Reptile's inner-optimiser
    state), ``iteration``, ``history`` (one dict of metrics per logged iteration) and ``seconds`` (wall
    time of the iterations done, over every execution that continued the run).
    ``writes`` False: checkpoints are not written and progress is not shown (a data-parallel
    rank other than 0, :mod:`metalearn.distributed`); it still resumes from rank 0's."""

    def __init__(self, name: str, config: dict, model: nn.Module, seed: int,
                 optimizer: torch.optim.Optimizer | None = None, checkpoint_every: int = 500,
                 work_dir: Path | None = None, writes: bool = True):
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.name = name
        self.model = model
        self.optimizer = optimizer
        self.gen = torch.Generator().manual_seed(seed)
        self.extra: dict[str, Any] = {}
        self.iteration = 0
        self.history: list[dict] = []
        self.window: dict[str, list[float]] = {}
        self.seconds = 0.0  # wall time spent in train(), over every execution that continued this run
        self.checkpoint_every = checkpoint_every
        self.writes = writes  # False: a rank other than 0 of a data-parallel run (no checkpoints, no progress)
        self.path = (work_dir or paths.WORK) / f"{run_key(name, config)}.pt"
        self.resumed_from = 0
        if self.path.exists():
            self._load()
            self.resumed_from = self.iteration

    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "gen": self.gen.get_state(),
            "extra": self.extra,
            "iteration": self.iteration,
            "history": self.history,
            "window": self.window,
            "seconds": self.seconds,
        }

    def save(self) -> None:
        if not self.writes:
            return
        with paths.atomic_write(self.path, "wb") as handle:
            torch.save(self._state(), handle)

    def _load(self) -> None:
        state = torch.load(self.path, weights_only=False)
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["gen"])
        self.extra = state["extra"]
        self.iteration = state["iteration"]
        self.history = state["history"]
        self.window = state["window"]
        self.seconds = state.get("seconds", 0.0)

    def train(self, n_iterations: int, step: Callable[["Run"], dict | None], log_every: int = 100,
              desc: str | None = None) -> list[dict]:
        """Call ``step(run)`` until ``n_iterations`` iterations are done; returns the history.

        ``step`` draws its tasks from ``run.gen`` and returns a dict of metrics (or
        None). Every ``log_every``-th iteration, the mean of each metric over the
        iterations since the last log goes to the history (metrics returned only now
        and then, e.g. a validation score, are averaged over the times they came).
        """
        with tqdm(total=n_iterations, initial=self.iteration, desc=desc or self.name,
                  mininterval=2.0, smoothing=0.05, disable=not self.writes) as bar:
            while self.iteration < n_iterations:
                start = time.perf_counter()
                metrics = step(self)
                bad = {k: v for k, v in (metrics or {}).items() if isinstance(v, float) and not math.isfinite(v)}
                if bad:
                    raise FloatingPointError(f"run '{self.name}' diverged at iteration {self.iteration + 1}: {bad}; "
                                             "lower its step sizes")
                self.iteration += 1
                for key, value in (metrics or {}).items():
                    self.window.setdefault(key, []).append(value)
                if self.window and (self.iteration % log_every == 0 or self.iteration == n_iterations):
                    self.history.append({"iteration": self.iteration,
                                         **{k: sum(v) / len(v) for k, v in self.window.items()}})
                    self.window = {}
                self.seconds += time.perf_counter() - start
                if self.iteration % self.checkpoint_every == 0 or self.iteration == n_iterations:
                    self.save()
                bar.update(1)
        return self.history


def reuse_or_train(record: str, name: str, config: dict, train: Callable[[], tuple[Any, dict]]) -> tuple[Any, dict]:
    """The trained state of the run ``name`` with ``config``: from an earlier execution of the
    stage when it left ``<record>.json`` (and the state in ``<record>.pt``) for the same run,
    settings and :data:`NUMERICS` (:mod:`metalearn.store`: the committed models), else
    ``train()``'s (state, JSON-able details), saved there. ``record`` is relative to the root
    without suffix, e.g. ``data/models/nav/maml-seed0``. Returns (state, record)."""
    identity = {"run": name, **config, "numerics": NUMERICS}
    found = store.find(f"{record}.json", identity)
    if found is not None:
        print(f"{name}: trained state of an earlier execution (same settings and numerics)")
        return torch.load(paths.output(f"{record}.pt"), weights_only=True), found
    state, details = train()
    with paths.atomic_write(paths.output(f"{record}.pt"), "wb") as handle:
        torch.save(state, handle)
    return state, store.save(f"{record}.json", identity, [f"{record}.pt"], hardware=describe(), **details)


def cleanup_stale(name: str, keep: Path, work_dir: Path | None = None) -> None:
    """Remove the checkpoints of ``name`` other than ``keep`` (older settings or code)."""
    for file in (work_dir or paths.WORK).glob(f"{name}-*.pt"):
        if file != keep:
            os.remove(file)


# --- one iteration of each kind of training; ``sample(gen)`` draws a batch of tasks ----

def maml_step(run: Run, sample: Callable, inner, loss_fn=None, path: str = "loop",
              bn: str = "transductive", group: Group | None = None, captured: CapturedStep | None = None) -> dict:
    """One meta-iteration of MAML / FOMAML / ANIL (``inner`` from :func:`core.inner_loop`).

    ``sample(gen)`` returns a :class:`tasks.Batch` (support [T, K, ...], query [T, Q, ...]).
    Logs the query loss after adaptation, averaged over the meta-batch, and for
    classification (integer labels) the query accuracy. The optimiser steps only the
    parameters it was given (e.g. the head alone for random features).

    ``group`` (:mod:`metalearn.distributed`): this rank computes the meta-gradients of its share
    of the tasks one by one (:func:`core.task_meta_gradients`), the ranks exchange them, and
    every rank steps with their mean summed in task order: the same numbers for any number of
    ranks, equal to the plain path (``group`` None, autograd's order) to rounding.

    ``captured`` (:class:`batched.CapturedStep` of ``run.model`` and ``run.optimizer``, kept by
    the caller across iterations): the batched meta-iteration it computes, on a GPU replayed as
    one CUDA graph; ``inner``, ``loss_fn``, ``path`` and ``bn`` are then its own.
    """
    batch = sample(run.gen)
    params = dict(run.model.named_parameters())
    if captured is not None:
        if group is not None:
            raise ValueError("a captured step runs the whole meta-batch in one process: no ranks with it")
        loss, predictions = captured(batch.xs, batch.ys, batch.xq, batch.yq)
    elif group is None:
        loss, predictions = meta_loss(run.model, params, batch.xs, batch.ys, batch.xq, batch.yq, inner,
                                      loss_fn or mse, path=path, bn=bn)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
    if group is None:
        metrics = {"loss": loss.item()}
        if not batch.yq.is_floating_point():
            metrics["accuracy"] = (predictions.argmax(-1) == batch.yq).float().mean().item()
        return metrics
    n_tasks, mine = len(batch.xs), group.share(len(batch.xs))
    classify = not batch.yq.is_floating_point()
    grads, losses, predictions = task_meta_gradients(run.model, params, batch.xs, batch.ys, batch.xq, batch.yq,
                                                     inner, loss_fn or mse, bn, mine)
    hits = (predictions.argmax(-1) == batch.yq[mine]).flatten(1).to(grads.dtype).mean(1) if classify else 0 * losses
    # one row per task: meta-gradient [P], loss, accuracy; all tasks' rows on every rank, in task order
    rows = group.gather(torch.cat([grads, losses[:, None].to(grads.dtype), hits[:, None]], 1), n_tasks)
    mean = ordered_sum(rows) / n_tasks
    for p, g in zip(params.values(), unflat(mean[:-2], params).values()):
        p.grad = g.clone()
    run.optimizer.step()
    return {"loss": mean[-2].item(), **({"accuracy": mean[-1].item()} if classify else {})}


def supervised_step(run: Run, sample: Callable, loss_fn=None) -> dict:
    """One step of plain training on all tasks' points at once (the pretrained baseline).

    ``sample(gen)`` returns (x [B, ...], y [B, ...]).
    """
    x, y = sample(run.gen)
    loss = (loss_fn or mse)(run.model(x), y)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return {"loss": loss.item()}


def reptile_step(run: Run, sample: Callable, optimizer, step_size: float, keep_state: bool,
                 loss_fn=None, group: Group | None = None) -> dict:
    """One Reptile meta-iteration over the tasks that ``sample(gen)`` returns.

    ``sample(gen)`` returns a list of (x [n, ...], y [n, ...], batches [k, b]) per task.
    The inner optimiser's state continues across tasks when ``keep_state`` (kept in
    ``run.extra['inner_state']``, so it is checkpointed), else starts fresh per task.
    Logs the mean inner loss of the last inner step before the update.
    ``group``: this rank adapts its share of the tasks and the ranks exchange the adapted
    weights (:mod:`metalearn.distributed`); the update is the same computation on the same
    numbers as in one process. Tasks that continue one optimiser state run in one process only.
    """
    loss_fn = loss_fn or mse
    group = group or Group()
    if keep_state and group.world > 1:
        raise ValueError("Reptile with one inner-optimiser state across tasks (keep_state) adapts the tasks one "
                         "after another: it cannot be shared among ranks")
    theta = {k: v.detach() for k, v in run.model.named_parameters()}
    tasks = sample(run.gen)
    rows = []
    for x, y, batches in (tasks[t] for t in group.share(len(tasks))):
        state = run.extra.get("inner_state") if keep_state else None
        phi, state = optimize(run.model, theta, x, y, batches, optimizer, state, loss_fn)
        if keep_state:
            run.extra["inner_state"] = state
        with torch.no_grad():
            loss = loss_fn(forward(run.model, phi, x), y)
        weights = flat(phi)
        rows.append(torch.cat([weights, loss.reshape(1).to(weights.dtype)]))  # adapted weights [P], loss
    rows = group.gather(torch.stack(rows), len(tasks))
    new = reptile_update(theta, [unflat(row[:-1], theta) for row in rows], step_size)
    with torch.no_grad():
        for name, p in run.model.named_parameters():
            p.copy_(new[name])
    return {"loss": sum(row[-1].item() for row in rows) / len(rows)}


def train_reptile(name: str, config: dict, model: nn.Module, seed: int, sample: Callable,
                  optimizer, iterations: int, meta_step: float, keep_state: bool,
                  snapshot_at: tuple[int, ...] = (), checkpoint_every: int = 500,
                  work_dir: Path | None = None, record: str | None = None) -> dict:
    """A whole (resumable) Reptile run; the outer step anneals linearly from ``meta_step`` to 0
    (as in the Reptile code). Returns the final parameters, the history, and copies of the
    parameters after each iteration count in ``snapshot_at``. Picklable arguments in, so
    several runs can go to a process pool. With ``record``, the result is saved there and a
    later execution with the same settings takes it from there (:func:`reuse_or_train`)."""
    def fit() -> tuple[dict, dict]:
        run = Run(name, config, model, seed, checkpoint_every=checkpoint_every, work_dir=work_dir)
        cleanup_stale(name, run.path, work_dir)

        def step(run: Run) -> dict:
            metrics = reptile_step(run, sample, optimizer, meta_step * (1 - run.iteration / iterations), keep_state)
            if run.iteration + 1 in snapshot_at:
                run.extra.setdefault("snapshots", {})[run.iteration + 1] = {
                    k: v.detach().clone() for k, v in run.model.named_parameters()}
            return metrics

        history = run.train(iterations, step, log_every=max(1, iterations // 100), desc=name)
        return ({"params": {k: v.detach() for k, v in run.model.named_parameters()},
                 "snapshots": run.extra.get("snapshots", {})}, {"history": history})

    if record is None:
        state, details = fit()
    else:
        identity = {**config, "seed": seed, "iterations": iterations, "meta_step": meta_step, "keep_state": keep_state,
                    "snapshot_at": list(snapshot_at), "optimizer": repr(optimizer)}
        state, details = reuse_or_train(record, name, identity, fit)
    return {**state, "history": details["history"]}


def train_independent(factory: Callable[[], nn.Module], family, n_models: int, steps: int, lr: float,
                      seed: int, weight: float = 0.0, anchor: dict | None = None,
                      n_points: int = 100) -> tuple[dict, torch.Tensor]:
    """Train ``n_models`` regressors at once (``torch.vmap``), each from its own initialisation
    (seeds ``seed``, ``seed + 1``, ...) on its own task of ``family``, with fresh points every step.

    The loss adds ``weight * ||theta - anchor||^2`` (``anchor`` None: plain l2 weight decay).
    Returns the parameters stacked over models ({name: [M, ...]}) and each model's own-task
    MSE at the last step [M] (the MAML paper's multi-task baseline, Appendix C.1).
    """
    nets = [init_model(factory, seed + i) for i in range(n_models)]
    params, _ = torch.func.stack_module_state(nets)
    params = {k: v.requires_grad_() for k, v in params.items()}
    gen = torch.Generator().manual_seed(seed)
    task = family.sample_tasks(n_models, gen)
    opt = torch.optim.Adam(params.values(), lr=lr)
    predict = torch.func.vmap(lambda p, x: forward(nets[0], p, x))
    for _ in range(steps):
        x = family.sample_x(n_models, n_points, gen)
        loss = ((predict(params, x) - family(task, x)) ** 2).mean((1, 2))
        centre = anchor or {k: 0.0 for k in params}
        penalty = sum(((v - centre[k]) ** 2).flatten(1).sum(1) for k, v in params.items())
        opt.zero_grad(set_to_none=True)
        (loss + weight * penalty).sum().backward()
        opt.step()
    return {k: v.detach() for k, v in params.items()}, loss.detach()
