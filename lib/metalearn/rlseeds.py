"""Meta-RL test returns over training seeds (the ``nav`` and ``cheetah`` stages), as
:mod:`metalearn.seeds` is for few-shot runs: the mean over seeds, the per-seed and seed-averaged
tables, paired verdicts, the results rows and the metrics.

Every seed trains every run and tests it on the same fixed tasks with the same episodes' noise
(:meth:`metalearn.rl.TestTime.returns`), so each task's return averaged over the seeds, and the
difference between two runs on a task, are paired samples over the tasks.

Shapes and names:

- ``curves``: {(seed, *run): returns [n_tasks, steps + 1]}, every run tested by every seed; a
  ``run`` is a tuple of names whose last is the method, ``("maml",)`` (2D navigation) or
  ``("direction", "maml")`` (HalfCheetah, per task family); a plain string stands for a
  one-name run.
- ``fields``: the table columns that name a run's parts, ``("method",)`` or ``("family", "method")``.
- ``table``: :func:`seed_table`'s frame, one row per (run, step).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from torch import Tensor

from . import results
from .evaluation import mean_ci95, paired_over_seeds

Curves = dict[tuple, Tensor]


def _run(run: str | tuple[str, ...]) -> tuple[str, ...]:
    return (run,) if isinstance(run, str) else tuple(run)


def seed_stack(curves: Curves, seeds: Sequence[int], run: str | tuple[str, ...]) -> Tensor:
    """Each seed's test returns of ``run``: [len(seeds), n_tasks, steps + 1]; a clear error for a
    missing seed."""
    run = _run(run)
    missing = [seed for seed in seeds if (seed, *run) not in curves]
    if not seeds or missing:
        raise ValueError(f"no test returns of {run} for seed(s) {missing or 'none given'}")
    return torch.stack([curves[(seed, *run)] for seed in seeds])


def seed_mean(curves: Curves, seeds: Sequence[int], run: str | tuple[str, ...]) -> Tensor:
    """Each test task's return of ``run`` averaged over ``seeds``: [n_tasks, steps + 1]."""
    return seed_stack(curves, seeds, run).mean(0)


def _runs(curves: Curves, fields: Sequence[str]) -> list[tuple[str, ...]]:
    """The runs of ``curves`` in the order they first appear; each must have one name per field."""
    runs = list(dict.fromkeys(key[1:] for key in curves))
    wrong = [run for run in runs if len(run) != len(fields)]
    if not runs or wrong:
        raise ValueError(f"curves' keys must be (seed, {', '.join(fields)}), got {wrong or 'no curves'}")
    return runs


def per_seed_table(curves: Curves, fields: Sequence[str]) -> pd.DataFrame:
    """One row per (seed, run, step) in the order of ``curves``: seed, the run's ``fields``, step,
    ``average_return`` (mean over the test tasks) and its ``ci95`` (95% half-width over them)."""
    _runs(curves, fields)
    rows = []
    for (seed, *run), curve in curves.items():
        for step in range(curve.shape[1]):
            mean, ci = mean_ci95(curve[:, step])
            rows.append({"seed": seed, **dict(zip(fields, run)), "step": step, "average_return": mean, "ci95": ci})
    return pd.DataFrame(rows)


def seed_table(curves: Curves, seeds: Sequence[int], fields: Sequence[str]) -> pd.DataFrame:
    """One row per (run, step), runs in the order of ``curves``: the run's ``fields``, step,
    ``average_return`` (mean over the tasks of each task's return averaged over ``seeds``),
    ``ci95`` (95% half-width over the tasks of those seed averages) and ``std_over_seeds``
    (standard deviation, n - 1, of the seeds' mean returns; None with one seed)."""
    rows = []
    for run in _runs(curves, fields):
        pooled = seed_mean(curves, seeds, run)
        for step in range(pooled.shape[1]):
            mean, ci = mean_ci95(pooled[:, step])
            each = pd.Series([mean_ci95(curves[(seed, *run)][:, step])[0] for seed in seeds], dtype="float64")
            rows.append({**dict(zip(fields, run)), "step": step, "average_return": mean, "ci95": ci,
                         "std_over_seeds": each.std() if len(seeds) > 1 else None})
    return pd.DataFrame(rows)


def paired_difference(curves: Curves, seeds: Sequence[int], a: str | tuple[str, ...], b: str | tuple[str, ...],
                      step_a: int, step_b: int | None = None) -> dict:
    """Run ``a`` after ``step_a`` steps minus run ``b`` after ``step_b`` (default ``step_a``) on
    the same test tasks (:func:`metalearn.evaluation.paired_over_seeds`): {"difference": the mean
    over tasks of each task's seed-averaged difference, "ci95": its 95% half-width over the tasks,
    "per seed": each seed's mean difference [len(seeds)]}."""
    step_b = step_a if step_b is None else step_b
    d = paired_over_seeds(seed_stack(curves, seeds, a)[:, :, step_a], seed_stack(curves, seeds, b)[:, :, step_b])
    return {"difference": d["difference"], "ci95": d["ci95"], "per seed": d["per seed"]}


def after(method: str, steps: int) -> str:
    """``"maml after 1 step"``, ``"maml after 0 steps"``."""
    return f"{method} after {steps} step{'' if steps == 1 else 's'}"


def verdict(curves: Curves, seeds: Sequence[int], a: str | tuple[str, ...], b: str | tuple[str, ...], step_a: int,
            step_b: int | None = None, digits: int = 2, steps_named: bool = False) -> str:
    """A sentence on :func:`paired_difference`: a and b "are not distinguishable" when the
    difference is within its 95% half-width over the tasks, else a "is better" or "is worse than"
    b; with the difference, the half-width and (more than one seed) each seed's difference, to
    ``digits`` decimals. Runs are named by their method, ``steps_named``: with their steps."""
    a, b = _run(a), _run(b)
    step_b = step_a if step_b is None else step_b
    d = paired_difference(curves, seeds, a, b, step_a, step_b)
    left, right = (after(run[-1], k) if steps_named else run[-1] for run, k in ((a, step_a), (b, step_b)))
    each = "; per seed " + ", ".join(f"{v:+.{digits}f}" for v in d["per seed"]) if len(seeds) > 1 else ""
    numbers = f"({d['difference']:+.{digits}f} +- {d['ci95']:.{digits}f}{each})"
    if abs(d["difference"]) <= d["ci95"]:
        return f"{left} and {right} are not distinguishable {numbers}"
    return f"{left} is {'better' if d['difference'] > 0 else 'worse'} than {right} {numbers}"


def curve_text(table: pd.DataFrame, digits: int, **where) -> str:
    """The seed-averaged return after 0, 1, ... steps of the run ``where`` names (e.g.
    ``method="maml"``, ``family="velocity"``): ``"-41.56 -> -16.04 -> ..."``."""
    chosen = table
    for field, value in where.items():
        chosen = chosen[chosen[field] == value]
    if chosen.empty:
        raise ValueError(f"no rows of {where} in the table")
    return " -> ".join(f"{v:.{digits}f}" for v in chosen.sort_values("step").average_return)


def result_rows(table: pd.DataFrame, experiments: dict[str, Sequence[str]], setting: str, scale: str,
                seeds: Sequence[int]) -> list[dict[str, str]]:
    """``reports/results.csv`` rows (:func:`metalearn.results.row`) of ``table``: for each of its
    rows, in order, and each experiment of ``experiments`` ({id: methods}) whose methods hold the
    row's method (the oracle, never adapted, at step 0 only), a ``return`` row (the mean over
    seeds with its ci95 over tasks) and with more than one seed a ``return, std over seeds`` row.
    ``setting`` is formatted with the row's columns, e.g. ``"nav {method} steps={step}"``."""
    rows = []
    for r in table.to_dict("records"):
        for experiment, methods in experiments.items():
            if r["method"] not in methods or (r["method"] == "oracle" and r["step"] > 0):
                continue
            name = setting.format(**r)
            rows.append(results.row(experiment, name, "return", r["average_return"], scale, r["ci95"]))
            if len(seeds) > 1:
                rows.append(results.row(experiment, name, "return, std over seeds", r["std_over_seeds"], scale))
    return rows


def return_metrics(table: pd.DataFrame, fields: Sequence[str]) -> dict[str, float]:
    """{"<run>_step<k>": seed-averaged return} for every row of ``table``, the run's ``fields``
    joined by "_": ``"maml_step1"``, ``"velocity_maml_step1"``."""
    return {"_".join(str(r[f]) for f in fields) + f"_step{r['step']}": float(r["average_return"])
            for r in table.to_dict("records")}


def training_metrics(trained: dict[tuple, dict]) -> dict[str, float]:
    """{"<run>_seed<s>_best_iteration": the 1-based iteration kept} for each run of ``trained``
    ({(seed, *run): :func:`metalearn.rl.train`'s output}), and its ``_seconds_per_iteration`` if
    it trained now (not only loaded from a checkpoint or a record)."""
    metrics = {}
    for (seed, *run), out in trained.items():
        prefix = "_".join([*run, f"seed{seed}"])
        metrics[f"{prefix}_best_iteration"] = out["best_iteration"] + 1
        if out["resumed_from"] < len(out["history"]):
            metrics[f"{prefix}_seconds_per_iteration"] = out["seconds_per_iteration"]
    return metrics


def plot_test_returns(ax, table: pd.DataFrame, per_seed: pd.DataFrame, styles: dict, label) -> None:
    """Return against the number of steps on a matplotlib ``ax``, per method of ``table`` (one
    run's rows per method, e.g. one family's): thick, the mean over seeds with its 95% band over
    tasks; thin, each seed of ``per_seed`` when there are several. ``styles[method]``: plot
    keywords with a ``color``; ``label(method)``: the legend's text."""
    several = per_seed.seed.nunique() > 1
    for name, t in table.groupby("method", sort=False):
        ax.plot(t.step, t.average_return, label=label(name), **styles[name])
        ax.fill_between(t.step, t.average_return - t.ci95, t.average_return + t.ci95, color=styles[name]["color"],
                        alpha=0.15)
        if several:
            for _, s in per_seed[per_seed.method == name].groupby("seed"):
                ax.plot(s.step, s.average_return, color=styles[name]["color"], lw=0.6, alpha=0.5)
