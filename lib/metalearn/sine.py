"""The MAML paper's sinusoid regression (Sec. 5.1, M-sine) beyond MAML itself: the multi-task
baselines of its Table 2 (regressors trained on one task each, their parameters averaged;
Appendix C.1) and the test-time fine-tuning curves, each method with its own step size (MAML
its training step; a baseline the step that does best on validation tasks, the paper's
"automatically tuned step size").

    averaged, errors, chosen = sine.multitask_baselines(lambda: models.mlp([1, 40, 40, 1]), family, ...)
    table = sine.finetune_table(net, {"maml": ..., "multitask-l2": averaged["l2"]}, val, test, 10,
                                candidates=[0.001, 0.01, 0.1], fixed={"maml": 0.01})

Parameters are functional (``{name: tensor}``, :mod:`metalearn.models`); batches are
:class:`metalearn.tasks.Batch` of T tasks (support xs, ys [T, K, 1]; queries xq, yq [T, Q, 1]).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from . import core, evaluation, tasks, training
from .models import Params

#: the Table 2 baselines: plain average, l2 weight decay, l2 towards the mean of earlier regressors
VARIANTS = ("noreg", "l2", "regmean")


def averaged_regressors(factory: Callable[[], nn.Module], family, n: int, steps: int, lr: float, seed: int,
                        weight: float = 0.0, anchored: bool = False, groups: int = 1,
                        first_anchor: Params | None = None) -> tuple[Params, Tensor]:
    """The parameters of ``n`` regressors averaged, each trained on its own task of ``family``
    (:func:`training.train_independent`; regressor i from seed ``seed + i``), in ``groups``
    sequential groups. The loss adds ``weight`` times the squared distance to the origin (l2), or
    with ``anchored`` to the mean of the regressors of the groups before (the first group goes
    to ``first_anchor`` if given, else is not penalised: it has no mean yet).

    Returns:
        the averaged parameters ({name: tensor}), and each regressor's own-task MSE at its last
        step [n], in order.
    """
    stacks, errors, anchor = [], [], first_anchor
    for members in torch.arange(n).chunk(groups):
        penalised = not anchored or anchor is not None
        params, error = training.train_independent(factory, family, len(members), steps, lr, seed=seed + int(members[0]),
                                                   weight=weight if penalised else 0.0,
                                                   anchor=anchor if anchored else None)
        stacks.append(params)
        errors.append(error)
        anchor = {k: torch.cat([s[k] for s in stacks]).mean(0) for k in params}
    return {k: torch.cat([s[k] for s in stacks]).mean(0) for k in stacks[0]}, torch.cat(errors)


def multitask_baselines(factory: Callable[[], nn.Module], family, n: int, pilot: int, groups: int, steps: int,
                        lr: float, weights: Sequence[float], max_error: float,
                        seed: int) -> tuple[dict[str, Params], dict[str, Tensor], dict[str, float]]:
    """The three baselines of :data:`VARIANTS`, ``n`` regressors each (:func:`averaged_regressors`,
    seeds from ``seed + 100``). A penalty is set as the paper says, "as high as possible without
    significantly deterring performance": the largest of ``weights`` whose ``pilot`` regressors
    (seeds from ``seed + 5000``) keep a mean own-task MSE of at most ``max_error`` (0 if none
    does; the reg-to-mean pilot goes towards the unregularised average). Reg-to-mean trains in
    ``groups`` sequential groups.

    Returns:
        ({variant: averaged parameters}, {variant: own-task MSE of each regressor [n]},
        {variant: penalty weight chosen}).
    """
    averaged, errors, chosen = {}, {}, {"noreg": 0.0}
    averaged["noreg"], errors["noreg"] = averaged_regressors(factory, family, n, steps, lr, seed + 100)
    for variant, anchored in [("l2", False), ("regmean", True)]:
        ok = [w for w in weights
              if averaged_regressors(factory, family, pilot, steps, lr, seed + 5000, w, anchored,
                                     first_anchor=averaged["noreg"])[1].mean() <= max_error]
        chosen[variant] = max(ok, default=0.0)
        averaged[variant], errors[variant] = averaged_regressors(factory, family, n, steps, lr, seed + 100,
                                                                 chosen[variant], anchored,
                                                                 groups=groups if anchored else 1)
    return averaged, errors, chosen


def pooled_batch(family, n_tasks: int, points: int, gen: torch.Generator,
                 oracle: bool = False) -> tuple[Tensor, Tensor]:
    """One training step's batch of the baselines trained on all tasks at once (the MAML paper's
    "pretrained on all tasks" network, and the oracle): ``points`` points of each of ``n_tasks``
    fresh tasks of ``family`` (drawn as :meth:`metalearn.tasks.SineFamily.batch` draws support
    sets), pooled into one regression batch: inputs [n_tasks * points, 1] (the oracle's with the
    task's amplitude and phase appended, [n_tasks * points, 3]), targets [n_tasks * points, 1]."""
    b = family.batch(n_tasks, points, 0, gen)
    x = tasks.with_task_input(b.xs, b.task) if oracle else b.xs
    return x.reshape(-1, x.shape[-1]), b.ys.reshape(-1, 1)


def finetune_curves(model: nn.Module, params: Params, batch: tasks.Batch, steps: int, lr: float) -> Tensor:
    """Query MSE of each task of ``batch`` after 0..``steps`` plain gradient steps of size ``lr``
    on its support set (:func:`evaluation.learning_curves`) -> [T, steps + 1]."""
    return evaluation.learning_curves(model, params, batch.xs, batch.ys, batch.xq, batch.yq,
                                      core.InnerLoop(steps=steps, lr=lr))


def tuned_step(model: nn.Module, params: Params, val: tasks.Batch, steps: int, candidates: Sequence[float]) -> float:
    """The step size of ``candidates`` with the lowest mean query MSE over ``val``'s tasks after
    ``steps`` steps (a diverging one, NaN or infinite, is never chosen unless all are; the first
    on a tie)."""
    return min(candidates, key=lambda c: finetune_curves(model, params, val, steps, c)[:, -1].mean().nan_to_num(math.inf))


def finetune_table(model: nn.Module, methods: dict[str, Params], val: tasks.Batch, test: tasks.Batch, steps: int,
                   candidates: Sequence[float], fixed: dict[str, float]) -> pd.DataFrame:
    """Each method's test-time fine-tuning curve: mean query MSE over ``test``'s tasks after
    0..``steps`` steps, with its 95% CI over the tasks, each method fine-tuned with its step size:
    ``fixed[name]``, or else :func:`tuned_step` on ``val`` (tasks apart from ``test``).

    Returns:
        rows method, step, mse, ci95, lr: methods in order, steps 0..``steps`` each.
    """
    rows = []
    for name, params in methods.items():
        lr = fixed[name] if name in fixed else tuned_step(model, params, val, steps, candidates)
        curve = finetune_curves(model, params, test, steps, lr)
        for step in range(steps + 1):
            mean, ci = evaluation.mean_ci95(curve[:, step])
            rows.append(dict(method=name, step=step, mse=mean, ci95=ci, lr=lr))
    return pd.DataFrame(rows, columns=["method", "step", "mse", "ci95", "lr"])


def oracle_error(oracle: nn.Module, batch: tasks.Batch) -> Tensor:
    """Query MSE of each task of ``batch`` for the oracle, which is told the task's amplitude and
    phase as extra inputs (:func:`tasks.with_task_input`) and does not adapt -> [T]."""
    with torch.no_grad():
        return ((oracle(tasks.with_task_input(batch.xq, batch.task)) - batch.yq) ** 2).mean((1, 2))
