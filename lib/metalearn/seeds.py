"""Few-shot runs over training seeds: every seed's models tested on the same fixed tasks, then
the mean over seeds (with a 95% confidence interval over tasks), the spread between seeds and
paired differences between runs.

The ANIL paper reports means over three seeds (Table 2). Seeds here differ only in training
(initialisation, training and validation tasks); testing every seed on one fixed list of
tasks makes the per-task mean over seeds, and the per-task difference between two runs,
paired samples over tasks.

This module presents what the over-seeds training stages computed (``train_seeds``,
``train_seeds_omniglot``: models, records and per-task scores under ``data/``); the
``report_seeds`` stage uses it.

Frames: ``scores`` has one row per (seed, run, head, task) with ``accuracy`` in % (see
:func:`test`); ``run`` is the spec's name without the seed.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import torch

from . import accuracy, fewshot, results, reuse
from .evaluation import mean_ci95


def scores_of(stage: accuracy.Stage) -> pd.DataFrame:
    """The per-task scores of an over-seeds training stage (:func:`metalearn.accuracy.load`) as
    one frame: one row per (seed, run, head, task), ``accuracy`` in % after the run's test steps
    (head ``adapt``, ``steps`` = its test steps) and with the NIL head (``nil``, 0 steps; MAML
    family only); plus the run's ``iterations``, ``meta_batch`` and ``training``
    (:func:`reuse.describe_training`). ``run`` is the spec's name."""
    frames = []
    for name, scores in stage.scores.items():
        record = stage.records[name]
        settings = record["settings"]
        heads = {"adapt": (settings["test_steps"], scores[f"adapt@{settings['test_steps']}"])}
        if "nil" in scores:
            heads["nil"] = (0, scores["nil"])
        for head, (steps, accuracy) in heads.items():
            frames.append(pd.DataFrame({
                "seed": record["seed"], "run": record["spec"], "head": head, "steps": steps,
                "task": range(len(accuracy)), "accuracy": accuracy.to_numpy(),
                "iterations": settings["iterations"], "meta_batch": settings["meta_batch"],
                "training": reuse.describe_training(record)}))
    return pd.concat(frames, ignore_index=True)


def history_of(stage: accuracy.Stage) -> pd.DataFrame:
    """The training histories of every run and seed, with ``run`` (``<run>-seed<s>``) and ``seed``."""
    return accuracy.histories(stage).assign(seed=lambda h: h.run.map(lambda r: stage.records[r]["seed"]))


#: what an A-curves row over seeds measures in place of the test (:func:`curve_rows`)
VALIDATION = ("the last validation in training, each seed on its own fixed validation tasks (a seed's runs on the "
              "same ones); 95% interval over the seeds")


def scale(stage: accuracy.Stage, validation: bool = False) -> str:
    """The scale column of an over-seeds stage's results (``{training}`` and ``{steps}``, the test
    steps, filled in per row by :func:`result_rows`); with ``validation``, of its A-curves rows
    (:func:`curve_rows`): :data:`VALIDATION` in place of the test, ``{training}`` only."""
    info, seeds = stage.info, stage.info["seeds"]
    test = VALIDATION if validation else (f"{info['test']['tasks']} test tasks x {info['test']['queries']} "
                                          "queries/class, {steps} test steps (the same tasks for every seed)")
    return (f"{{training}}; {len(seeds)} seeds ({', '.join(map(str, seeds))}); {test}; "
            f"{info['data']}; bn {info['test']['bn']}; " + "; ".join(info["hardware"]))


def _unseeded(frame: pd.DataFrame) -> pd.Series:
    """The spec's name of each row's run (``<run>-seed<s>`` -> ``<run>``)."""
    return frame.run.str.rsplit("-seed", n=1).str[0]


def _validations(history: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``history`` that validated, ``run`` renamed to the spec's name (:func:`_unseeded`)."""
    val = history.dropna(subset=["val_accuracy"])
    return val.assign(run=_unseeded(val))


def per_seed(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (run with its seed, head): ``run`` named ``<run>-seed<s>``, steps, accuracy and
    ci95 over tasks (%), iterations, meta_batch, training, seed (``reports/<stage>/accuracy.csv``)."""
    rows = []
    for (seed, run, head), part in scores.groupby(["seed", "run", "head"], sort=False):
        mean, ci = mean_ci95(torch.tensor(part.accuracy.to_numpy()))
        first = part.iloc[0]
        rows.append(dict(run=f"{run}-seed{seed}", head=head, steps=first.steps, accuracy=mean, ci95=ci,
                         iterations=first.iterations, meta_batch=first.meta_batch, training=first.training, seed=seed))
    return pd.DataFrame(rows)


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (run, head): each seed's accuracy (``seed <s>``), the ``mean over seeds`` with the 95%
    half-width over tasks of the per-task mean over seeds (``ci95 over tasks``), and the
    ``std over seeds`` (n - 1) of the seeds' accuracies; the runs' ``steps``, ``iterations``,
    ``meta_batch`` and ``training``."""
    each = per_seed(scores).assign(run=_unseeded)
    table = each.pivot(index=["run", "head"], columns="seed", values="accuracy")
    pooled = scores.groupby(["run", "head", "task"], sort=False).accuracy.mean()
    ci = {key: mean_ci95(torch.tensor(part.to_numpy()))[1] for key, part in pooled.groupby(level=["run", "head"])}
    out = table.add_prefix("seed ")
    out["mean over seeds"] = table.mean(axis=1)
    out["ci95 over tasks"] = [ci[key] for key in table.index]
    out["std over seeds"] = table.std(axis=1)
    described = ["steps", "iterations", "meta_batch", "training"]
    out[described] = each.groupby(["run", "head"])[described].first()
    order = list(dict.fromkeys(zip(scores.run, scores["head"])))
    return out.loc[order]


def difference(scores: pd.DataFrame, a: str, b: str, head: str = "adapt") -> dict:
    """Run ``a`` minus run ``b`` (points): the mean over tasks of the per-task difference of the
    means over seeds, with its paired 95% half-width over tasks (``ci95``: the test tasks' noise,
    seeds fixed); the difference per seed, and the 95% half-width over seeds of those
    (``ci95 over seeds``: how far another draw of seeds could move it; NaN with one seed)."""
    both = scores[scores["head"] == head].pivot_table(index=["seed", "task"], columns="run", values="accuracy")
    missing = {a, b} - set(both.columns)
    if missing:
        raise ValueError(f"no {head} scores of {sorted(missing)}; the runs are {sorted(both.columns)}")
    per_task = (both[a] - both[b]).groupby(level="task").mean()
    mean, ci = mean_ci95(torch.tensor(per_task.to_numpy()))
    per_seed = (both[a] - both[b]).groupby(level="seed").mean()
    _, over_seeds = mean_ci95(torch.tensor(per_seed.to_numpy()))
    return {"difference": mean, "ci95": ci, "per seed": per_seed.to_dict(), "ci95 over seeds": over_seeds}


def result_rows(dataset: str, table: pd.DataFrame, scale: str, experiments=("A-anil", "A-nil")) -> list[dict]:
    """``reports/results.csv`` rows of :func:`summary`'s ``table`` under ``experiments``
    (:func:`metalearn.accuracy.experiments`): ``accuracy`` is the mean over seeds (with its ci95 over
    tasks), as the papers' Table 2 values are, and ``accuracy, std over seeds`` the spread.
    ``scale`` may hold ``{training}`` and ``{steps}``, filled in per row."""
    rows = []
    for (name, head), r in table.iterrows():
        for experiment, setting in accuracy.experiments(dataset, fewshot.Spec.parse(name), head):
            if experiment in experiments:
                described = scale.format(training=r["training"], steps=int(r["steps"]))
                rows.append(results.row(experiment, setting, "accuracy", r["mean over seeds"], described,
                                        r["ci95 over tasks"]))
                rows.append(results.row(experiment, setting, "accuracy, std over seeds", r["std over seeds"], described))
    return rows


def contrast_rows(dataset: str, scores: pd.DataFrame, scale: str) -> list[dict]:
    """``reports/results.csv`` rows of ANIL minus MAML (test-time head adapted) per setting that has
    both, from :func:`difference`: "difference (points, paired)" with the 95% half-width over the
    test tasks, and "difference (points, over seeds)" with the half-width over the seeds' own
    differences (how far other seeds could move it). Settings as
    :func:`metalearn.accuracy.contrasts` names them ("omniglot anil - maml conv 20w1s")."""
    runs = set(scores.run)
    rows = []
    for anil in dict.fromkeys(scores.run):
        spec = fewshot.Spec.parse(anil)
        maml = f"maml-{spec.model}-{spec.setting}"
        if spec.algorithm != "anil" or spec.init is not None or maml not in runs:
            continue
        d = difference(scores, anil, maml)
        first = scores[scores.run == maml].iloc[0]
        described = scale.format(training=first.training, steps=int(first.steps))
        setting = f"{dataset} anil - maml {spec.model} {spec.setting}"
        rows.append(results.row("A-anil", setting, "difference (points, paired)", d["difference"], described, d["ci95"]))
        rows.append(results.row("A-anil", setting, "difference (points, over seeds)", d["difference"], described,
                                d["ci95 over seeds"]))
    return rows


def curves(history: pd.DataFrame) -> pd.DataFrame:
    """Validation accuracy over seeds: one row per run (the spec's name) and validated iteration,
    with ``accuracy``, the mean over seeds of ``val_accuracy`` in %, ``ci95`` its 95% half-width
    over the seeds (Student t; NaN with one seed) and ``seeds`` (how many). ``history``:
    :func:`history_of`'s rows (``run`` named ``<run>-seed<s>``, a ``seed`` column)."""
    rows = []
    for (run, iteration), part in _validations(history).groupby(["run", "iteration"], sort=False):
        mean, ci = mean_ci95(100 * part.val_accuracy.to_numpy())
        rows.append(dict(run=run, iteration=iteration, accuracy=mean, ci95=ci, seeds=part.seed.nunique()))
    return pd.DataFrame(rows)


def curve_rows(dataset: str, history: pd.DataFrame, scores: pd.DataFrame, scale: str) -> list[dict]:
    """A-curves rows of an over-seeds stage (ANIL paper Fig. 5, 10: MAML's and ANIL's curves nearly
    identical): per MAML / ANIL run, its ``final validation`` (each seed's last validation accuracy,
    %), the mean over seeds with its 95% half-width over them; and per setting with both, ANIL minus
    MAML of it, paired by seed (a seed's two runs are validated on the same tasks), with the
    half-width over the seeds' differences. ``history``: :func:`history_of`'s; ``scores``:
    :func:`scores_of`'s (each run's ``training``); ``scale``: :func:`scale` with ``validation``."""
    val = _validations(history).sort_values("iteration", kind="stable")
    last = 100 * val.groupby(["run", "seed"], sort=False).val_accuracy.last()
    rows = []
    for name in dict.fromkeys(val.run):
        spec = fewshot.Spec.parse(name)
        if spec.algorithm not in ("maml", "anil") or spec.init is not None:
            continue
        described = scale.format(training=scores[scores.run == name].training.iloc[0])
        shape = f"{spec.model} {spec.setting} final validation"
        mean, ci = mean_ci95(last[name].to_numpy())
        rows.append(results.row("A-curves", f"{dataset} {spec.algorithm} {shape}", "accuracy", mean, described, ci))
        maml = f"maml-{spec.model}-{spec.setting}"
        if spec.algorithm == "anil" and maml in last.index.get_level_values("run"):
            mean, ci = mean_ci95((last[name] - last[maml]).to_numpy())  # aligned on the seed
            rows.append(results.row("A-curves", f"{dataset} anil - maml {shape}", "difference (points, paired by seed)",
                                    mean, described, ci))
    return rows


def plot_curves(history: pd.DataFrame, runs: list[str], title: str):
    """Training query loss and validation accuracy of each run: every seed thin, the mean over
    seeds thick, and on the validation accuracy the 95% interval over the seeds shaded
    (:func:`curves`). ``history``: :func:`fewshot.train_runs`' rows with a ``seed`` column, ``run``
    named ``<run>-seed<s>``."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    band = curves(history)
    for i, name in enumerate(runs):
        part = history[_unseeded(history) == name]
        n = part.seed.nunique()
        for column, ax, scale in (("loss", axes[0], 1), ("val_accuracy", axes[1], 100)):
            for _, one in part.dropna(subset=[column]).groupby("seed"):
                ax.plot(one.iteration, one[column] * scale, color=f"C{i}", lw=0.6, alpha=0.5)
        loss = part.dropna(subset=["loss"]).groupby("iteration").loss.mean()
        own = band[band.run == name]
        for ax, x, y in ((axes[0], loss.index, loss.values), (axes[1], own.iteration, own.accuracy)):
            ax.plot(x, y, color=f"C{i}", lw=2, label=f"{name} (mean of {n} seeds)")
        axes[1].fill_between(own.iteration, own.accuracy - own.ci95, own.accuracy + own.ci95, color=f"C{i}", alpha=0.15,
                             lw=0)
    axes[0].set(xlabel="meta-iteration", ylabel="training query loss", yscale="log")
    axes[1].set(xlabel="meta-iteration", ylabel="validation accuracy (%)")
    axes[1].set_title("shaded: 95% interval over the seeds", fontsize=8)
    axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def verdicts(table: pd.DataFrame, scores: pd.DataFrame, n_tasks: int) -> list[str]:
    """Markdown lines: each run's mean over seeds, and ANIL minus MAML per N-way K-shot setting
    with both of :func:`difference`'s uncertainties: over the test tasks and over the seeds."""
    adapt = table.xs("adapt", level="head")
    n = scores.seed.nunique()
    lines = [f"- **{name}**: {r['mean over seeds']:.1f} % mean over {n} seeds (± {r['ci95 over tasks']:.1f} over "
             f"{n_tasks} test tasks), std over seeds {r['std over seeds']:.2f}" for name, r in adapt.iterrows()]
    for name in adapt.index:
        spec = fewshot.Spec.parse(name)
        maml = fewshot.Spec.parse(name.replace("anil-", "maml-", 1)).name if spec.algorithm == "anil" else None
        if maml is None or maml not in adapt.index:
            continue
        d = difference(scores, name, maml)
        beyond = lambda ci: not math.isnan(ci) and abs(d["difference"]) > ci
        lines.append(
            f"- {spec.setting}: ANIL - MAML = {d['difference']:+.1f} points (mean over {n} seeds); paired over the "
            f"{n_tasks} test tasks ± {d['ci95']:.1f} ({'beyond' if beyond(d['ci95']) else 'within'} the tasks' noise); "
            f"per seed " + ", ".join(f"{v:+.1f}" for v in d["per seed"].values())
            + f", so ± {d['ci95 over seeds']:.1f} over seeds: {'beyond' if beyond(d['ci95 over seeds']) else 'within'} "
            "the spread between seeds.")
    return lines
