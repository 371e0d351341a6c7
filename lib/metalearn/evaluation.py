"""Evaluation: test-time learning curves over many tasks, with confidence intervals."""
from __future__ import annotations

import math

import scipy.stats
import torch
from torch import Tensor, nn
from torch.func import vmap

from .core import InnerLoop, LossFn, adapt_path, mse
from .models import Params, forward


def mean_ci95(values) -> tuple[float, float]:
    """Mean and 95% confidence half-width (Student t) of a 1-D sample."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = values.numel()
    if n == 0:
        raise ValueError("cannot summarise an empty sample")
    mean = values.mean().item()
    if n == 1:
        return mean, math.nan
    half = scipy.stats.t.ppf(0.975, n - 1) * values.std(unbiased=True).item() / math.sqrt(n)
    return mean, half


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
