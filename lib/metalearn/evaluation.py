"""Evaluation: test-time learning curves over many tasks, with confidence intervals."""
from __future__ import annotations

import math

import numpy as np
import scipy.stats
import torch
from torch import Tensor, nn
from torch.func import vmap
from tqdm import tqdm

from .core import (InnerLoop, InnerOptimizer, LossFn, adapt_path, cross_entropy, mse, nil_logits, optimize_path,
                   predict, query_outputs)
from .models import Params, forward

HEADS = ("adapt", "nil")
#: The version of the numerics of testing (adaptation at test time, the NIL head, scores): bump it
#: with any change that alters a test score; tests/test_numerics.py fails until you do. Scores
#: saved by the pipeline are keyed by it (metalearn.fewshot.score_runs), trained models are not.
NUMERICS = 1


def mean_ci95(values) -> tuple[float, float]:
    """Mean and 95% confidence half-width (Student t) of a 1-D sample."""
    if not isinstance(values, torch.Tensor):
        values = np.array(values, dtype=np.float64)  # a writable float64 copy (pandas hands out read-only arrays)
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = values.numel()
    if n == 0:
        raise ValueError("cannot summarise an empty sample")
    mean = values.mean().item()
    if n == 1:
        return mean, math.nan
    half = scipy.stats.t.ppf(0.975, n - 1) * values.std(unbiased=True).item() / math.sqrt(n)
    return mean, half


def paired_over_seeds(a: Tensor, b: Tensor) -> dict:
    """Method a minus method b on the same tasks, trained with the same seeds: a, b [S seeds, T tasks]
    -> {difference: the mean, ci95: the 95% half-width over tasks of the per-task difference of the
    means over seeds (the tasks' noise, seeds fixed), ci95 over seeds: over the seeds' own mean
    differences (NaN with one seed), per seed: [S]}."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"need two [seeds, tasks] tables of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    d = a - b
    mean, ci = mean_ci95(d.mean(0))
    _, over_seeds = mean_ci95(d.mean(1))
    return {"difference": mean, "ci95": ci, "ci95 over seeds": over_seeds, "per seed": d.mean(1).tolist()}


def learning_curves(model: nn.Module, params: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor,
                    inner: InnerLoop, loss_fn: LossFn = mse, chunk: int = 500) -> Tensor:
    """Query loss of each task after 0, 1, ..., ``inner.steps`` adaptation steps.

    xs, ys: support sets [T, K, ...]; xq, yq: query sets [T, Q, ...].
    Returns [T, steps + 1]. Tasks run under ``torch.vmap`` in chunks of ``chunk``;
    no graph is kept (``params`` are detached first).
    """
    params = {k: v.detach() for k, v in params.items()}

    def one_task(xs_t, ys_t, xq_t, yq_t):
        losses = [loss_fn(forward(model, params, xq_t), yq_t)]
        for adapted in adapt_path(model, params, xs_t, ys_t, inner, loss_fn):
            losses.append(loss_fn(forward(model, adapted, xq_t), yq_t))
        return torch.stack(losses)

    curves = [vmap(one_task)(*(t[i:i + chunk] for t in (xs, ys, xq, yq))) for i in range(0, len(xs), chunk)]
    return torch.cat(curves).detach()


def predictions_after(model: nn.Module, params: Params, xs: Tensor, ys: Tensor, x: Tensor,
                      inner: InnerLoop, steps: list[int], loss_fn: LossFn = mse) -> dict[int, Tensor]:
    """One task's predictions at ``x`` after each number of steps in ``steps`` (for plots).

    xs, ys: support set [K, ...]; x: [n, ...]. Returns {steps: predictions [n, ...]}.
    """
    params = {k: v.detach() for k, v in params.items()}
    out = {0: forward(model, params, x).detach()} if 0 in steps else {}
    for step, adapted in enumerate(adapt_path(model, params, xs, ys, inner, loss_fn), start=1):
        if step in steps:
            out[step] = forward(model, adapted, x).detach()
    return out


def each_task(progress: str | None, *tensors: Tensor):
    """The tasks of ``tensors`` [T, ...] one by one (a tuple per task), with a progress bar when
    ``progress`` names one (refreshed at most every 5 s, so long loops are never silent)."""
    return tqdm(zip(*tensors), total=len(tensors[0]), desc=progress, mininterval=5, disable=progress is None)


def few_shot(model: nn.Module, params: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor,
             inner: InnerLoop, bn: str = "transductive", head: str = "adapt",
             loss_fn: LossFn = cross_entropy, every_step: bool = True, progress: str | None = None) -> dict[str, Tensor]:
    """Query loss and accuracy of each classification task at test time.

    xs, ys: support sets [T, N*K, C, H, W] / [T, N*K]; xq, yq: queries [T, N*Q, ...] / [T, N*Q].
    ``head="adapt"``: adapt with ``inner`` (its mask freezes layers) and measure after
    0, 1, ..., ``inner.steps`` steps -> {"loss", "accuracy"}: [T, steps + 1]; without
    ``every_step``, before adapting and after the last step only: [T, 2].
    ``head="nil"``: no head and no adaptation: the cosine similarity of the query's
    penultimate features to the support's weights the support labels
    (:func:`core.nil_logits`) -> [T, 1]. ``bn``: see :func:`core.predict`.
    Tasks run in a Python loop (on CPU faster than ``vmap``); no graph is kept. ``progress``:
    a progress bar over the tasks with that description.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    params = {k: v.detach() for k, v in params.items()}
    n_way = int(ys.max()) + 1
    losses, accuracies = [], []
    for xs_t, ys_t, xq_t, yq_t in each_task(progress, xs, ys, xq, yq):
        if head == "nil":
            with torch.no_grad():
                support = forward(model, params, xs_t, features=True)
                query = predict(model, params, xq_t, xs_t, bn, features=True)
                outputs = [nil_logits(query, support, ys_t, n_way)]
        else:
            outputs = [out.detach() for out in query_outputs(model, params, xs_t, ys_t, xq_t, inner, loss_fn, bn,
                                                              every_step=every_step)]
            if not every_step:
                with torch.no_grad():
                    outputs.insert(0, predict(model, params, xq_t, xs_t, bn))
        losses.append(torch.stack([loss_fn(out, yq_t) for out in outputs]))
        accuracies.append(torch.stack([(out.argmax(-1) == yq_t).float().mean() for out in outputs]))
    return {"loss": torch.stack(losses), "accuracy": torch.stack(accuracies)}


def optimized_mse(model: nn.Module, params: Params, x: Tensor, y: Tensor, fit: Tensor, optimizer: InnerOptimizer,
                  steps: int, progress: str | None = None) -> Tensor:
    """Reptile's test time on regression tasks: each task adapts with ``steps`` steps of ``optimizer``
    (fresh state per task), every step on its fit points, and is scored by the MSE over all its
    points. x [T, n, d], y [T, n, 1], fit [T, k] (indices into the n points) -> MSE [T, steps + 1],
    after 0..steps steps."""
    params = {k: v.detach() for k, v in params.items()}
    curves = []
    for x_t, y_t, fit_t in each_task(progress, x, y, fit):
        with torch.no_grad():
            curve = [mse(forward(model, params, x_t), y_t).item()]
        # the yielded tensors are updated in place by the next step: use each one at once
        for phi, _ in optimize_path(model, params, x_t, y_t, fit_t.expand(steps, -1), optimizer):
            with torch.no_grad():
                curve.append(mse(forward(model, phi, x_t), y_t).item())
        curves.append(curve)
    return torch.tensor(curves)


def few_shot_optimized(model: nn.Module, params: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor,
                       optimizer: InnerOptimizer, steps: int, bn: str = "transductive",
                       loss_fn: LossFn = cross_entropy, every_step: bool = True,
                       progress: str | None = None) -> dict[str, Tensor]:
    """As :func:`few_shot` with ``head="adapt"``, but each task adapts with ``steps`` steps
    of ``optimizer`` (fresh state per task) on its whole support set: Reptile's test time.
    Returns {"loss", "accuracy"}: [T, steps + 1] (without ``every_step``: [T, 2])."""
    params = {k: v.detach() for k, v in params.items()}
    losses, accuracies = [], []
    for xs_t, ys_t, xq_t, yq_t in each_task(progress, xs, ys, xq, yq):
        batches = torch.arange(len(xs_t)).expand(steps, -1)
        with torch.no_grad():
            outputs = [predict(model, params, xq_t, xs_t, bn)]
        # the yielded tensors are updated in place by the next step: use each one at once
        for step, (phi, _) in enumerate(optimize_path(model, params, xs_t, ys_t, batches, optimizer,
                                                      loss_fn=loss_fn), start=1):
            if every_step or step == steps:
                with torch.no_grad():
                    outputs.append(predict(model, phi, xq_t, xs_t, bn))
        losses.append(torch.stack([loss_fn(out, yq_t) for out in outputs]))
        accuracies.append(torch.stack([(out.argmax(-1) == yq_t).float().mean() for out in outputs]))
    return {"loss": torch.stack(losses), "accuracy": torch.stack(accuracies)}
