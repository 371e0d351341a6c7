# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Feature reuse: freezing layers at test time and how far each layer moves (A-freeze, A-dist)
#
# "Rapid Learning or Feature Reuse?" (Raghu et al. 2019) Sec. 3.2.1 and App. B.3. The MAML
# models trained by the `train_miniimagenet` and `train_omniglot` stages are adapted to the
# same fixed test tasks as there (same episodes, step size, test steps, batch norm), with a
# contiguous block of body layers frozen (not adapted): none, 1, 1-2, 1-3, 1-4 (the whole body:
# only the head adapts). If MAML's success is feature reuse, accuracy hardly changes (paper
# Table 1). A-dist: the mean over test tasks of the Euclidean distance between each layer's
# weights before and after full test-time adaptation (paper Fig. 6: only the head moves),
# absolute and relative to the layer's weight norm. A layer's weights are all its parameters:
# conv weight and bias, batch-norm scale and shift (`metalearn.reuse`). A-early: the same
# freezing test on the weights a training stage kept through training (`train_seeds`, for each
# seed; the campaign's, for its one seed) (paper Fig. 3: the pattern holds from early in training on).
#
# The defaults below are smoke-sized; `params.yaml` holds the study's CPU scale and
# `params-paper.yaml` the papers'.

# %% tags=["parameters"]
stage = "freeze"                # the DVC stage this execution is (the runner sets it): names its outputs
mini_stage = "train_miniimagenet"  # the training stage of mini_runs (the campaign's: campaign_miniimagenet)
omni_stage = "train_omniglot"   # the training stage of omni_runs
threads = 2                     # torch CPU threads
device = "cpu"                  # cpu or cuda: where the models adapt and episodes are drawn
freezes = ["none", "1", "1-2", "1-3", "1-4"]  # frozen body layers during test-time adaptation (paper Table 1)
n_test_tasks = 4                # fixed test tasks per setting (study: at least 600); the first n of the training stage's list
mini_runs = ["maml-conv-5w1s"]  # MiniImageNet MAML runs of train_miniimagenet (study: maml-conv-5w1s, maml-conv-5w5s)
omni_runs = ["maml-conv-5w1s"]  # Omniglot MAML runs of train_omniglot (study: maml-conv-5w1s, maml-conv-20w1s)
seeds_stage = "train_seeds"     # the training stage of early_runs (the campaign's: campaign_omniglot)
early_runs = ["maml-conv-5w1s"] # runs of seeds_stage tested through training (A-early)
early_seeds = [0, 1]            # their seeds (one seed: intervals over the test tasks instead of over seeds)
early_iterations = [2, 4]       # iterations whose weights seeds_stage kept, and its last (ANIL paper: 10k, 20k, 30k)
early_freezes = ["none", "1-4"] # freeze settings tested through training
early_tasks = 4                 # test tasks per seed and iteration (the first of seeds_stage's list)

# %%
from metalearn import fewshot, reuse
from metalearn.params import Choice, Int, List, Str, check, require

P = check(globals(), stage=Str(), mini_stage=Str(), omni_stage=Str(), seeds_stage=Str(), threads=Int(min=1),
          device=Choice("cpu", "cuda"),
          freezes=List(Str(reuse.check_freeze), unique=True), n_test_tasks=Int(min=2),
          mini_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True),
          omni_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True),
          early_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True), early_seeds=List(Int(min=0), unique=True),
          early_iterations=List(Int(min=1), unique=True), early_freezes=List(Str(reuse.check_freeze), unique=True),
          early_tasks=Int(min=2))
require(P.mini_runs or P.omni_runs, "mini_runs", "and omni_runs are both empty: nothing to analyse")
for name in ("mini_runs", "omni_runs", "early_runs"):
    for spec in getattr(P, name):
        require(spec.algorithm == "maml" and spec.model == "conv" and spec.init is None, name,
                f"has {spec.name}: the freezing analysis is of MAML conv runs (maml-conv-<N>w<K>s)")
require("none" in P.freezes and "1-4" in P.freezes, "freezes", "must include 'none' and '1-4' (the conclusion compares them)")

# %%
import math

import matplotlib.pyplot as plt
from tqdm import tqdm  # not tqdm.auto: its widget warning prints the absolute path of the venv
import pandas as pd
import torch
from IPython.display import Markdown, display

from metalearn import hardware, report, results, reuseresults, store

torch.set_num_threads(P.threads)
require(P.device == "cpu" or torch.cuda.is_available(), "device", "is cuda, but torch sees no GPU")
STAGE = P.stage
HARDWARE = hardware.describe(P.device)


# every analysed run (reuse.Case: trained model, test-time settings, test tasks, data, queries), as its training
# stage recorded it: dataset, network, test-time step size, steps, batch norm, test episodes
cases = ([reuse.load_case(P.mini_stage, spec.name, P.n_test_tasks, P.device, "mini_runs") for spec in P.mini_runs]
         + [reuse.load_case(P.omni_stage, spec.name, P.n_test_tasks, P.device, "omni_runs") for spec in P.omni_runs])
early_cases = {(spec, seed): reuse.load_case(P.seeds_stage, reuse.seed_run(P.seeds_stage, spec.name, seed, "early_seeds"),
                                             P.early_tasks, P.device, "early_runs")
               for spec in P.early_runs for seed in P.early_seeds}
# what each table below is computed from: these settings, the analysed runs, the test-time numerics. A table
# an earlier execution computed from the same is read back from data/analyses/freeze/ instead of recomputed.
IDENTITY = reuse.analysis_identity(P, [c.trained for c in [*cases, *early_cases.values()]])
pd.DataFrame([dict(dataset=t.dataset, run=t.spec.name, iterations=t.row.iterations, meta_batch=t.row.meta_batch,
                   test_steps=settings.test_steps, inner_lr=settings.inner_lr, test_tasks=len(test.xs))
              for t, settings, test, *_ in cases])

# %% [markdown]
# ## A-freeze: test accuracy with layers frozen during test-time adaptation
#
# Mean over the fixed test tasks with 95% confidence intervals. `frozen none` is the ordinary
# test of the training stage; with the same number of test tasks it reproduces the training
# stage's own test accuracy (shown beside it as `training stage`, over that stage's tasks).
# `cost`: accuracy without freezing minus with it, paired over the same tasks, with its own
# 95% interval (much tighter than comparing the two intervals: the tasks' difficulty cancels).

# %%
def freeze_table():
    rows = []
    for t, settings, test, *_ in tqdm(cases, desc="A-freeze"):
        table = reuse.freeze_accuracy(t.spec, t.model, test, settings, P.freezes)
        rows.append(table.assign(dataset=t.dataset, run=t.spec.name, **{"training stage": t.row.accuracy}))
    return pd.concat(rows, ignore_index=True)


freeze = store.result(f"data/analyses/{STAGE}/freeze", IDENTITY, freeze_table)
for t, settings, test, *_ in cases:
    if t.tasks == len(test.xs):  # the same test tasks: "none" must repeat the training stage's test
        none = freeze[(freeze.run == t.spec.name) & (freeze.dataset == t.dataset) & (freeze.frozen == "none")]
        if abs(none.accuracy.iloc[0] - t.row.accuracy) >= 0.1:
            raise RuntimeError(f"{t.stage}/{t.name} without freezing scores {none.accuracy.iloc[0]:.2f} % here and "
                               f"{t.row.accuracy:.2f} % in {t.stage}, on the same test tasks: this analysis no longer "
                               "repeats the stage's test")

fig, axes = plt.subplots(1, len(cases), figsize=(3.6 * len(cases), 3.2), squeeze=False)
for ax, (t, *_), (_, group) in zip(axes[0], cases, freeze.groupby(["dataset", "run"], sort=False)):
    ax.errorbar(range(len(group)), group.accuracy, yerr=group.ci95, marker="o", capsize=3)
    ax.set_xticks(range(len(group)), group.frozen)
    ax.set(title=f"{t.dataset} {t.spec.setting}", xlabel="frozen body layers", ylabel="test accuracy (%)")
fig.suptitle(f"A-freeze: MAML, layers frozen at test time ({P.n_test_tasks} test tasks, 95% CI); {HARDWARE}", fontsize=8)
fig.tight_layout()
report.save_figure(fig, f"reports/{STAGE}/freeze_accuracy.png")
freeze.pivot(index="frozen", columns=["dataset", "run"], values="accuracy").loc[P.freezes].round(2)

# %%
freeze[["dataset", "run", "frozen", "layers", "accuracy", "ci95", "cost", "cost_ci95", "tasks", "training stage"]]

# %% [markdown]
# ## A-dist: how far each layer's weights move in test-time adaptation (full MAML adaptation)
#
# Per layer l, the mean over test tasks b of ||theta_l - theta_l^(b)|| (absolute), and of the
# same divided by ||theta_l|| (relative, comparable across layers of different size).

# %%
def distance_table():
    return pd.concat([reuse.weight_distances(t.spec, t.model, test, settings).assign(dataset=t.dataset, run=t.spec.name)
                      for t, settings, test, *_ in tqdm(cases, desc="A-dist")], ignore_index=True)


dist = store.result(f"data/analyses/{STAGE}/distance", IDENTITY, distance_table)

fig, axes = plt.subplots(2, len(cases), figsize=(3.6 * len(cases), 5.6), squeeze=False)
for col, ((t, *_), (_, group)) in enumerate(zip(cases, dist.groupby(["dataset", "run"], sort=False))):
    labels = [layer.removeprefix("body.") for layer in group.layer]
    axes[0, col].bar(labels, group.distance, yerr=group.distance_ci95, capsize=3)
    axes[0, col].set(title=f"{t.dataset} {t.spec.setting}", ylabel="||theta - theta'|| (mean over tasks)")
    axes[1, col].bar(labels, group.relative, yerr=group.relative_ci95, capsize=3, color="tab:orange")
    axes[1, col].set(ylabel="relative to ||theta||", xlabel="layer")
fig.suptitle(f"A-dist: weight distance before vs after test-time adaptation ({P.n_test_tasks} test tasks, 95% CI)",
             fontsize=8)
fig.tight_layout()
report.save_figure(fig, f"reports/{STAGE}/weight_distance.png")
dist[["dataset", "run", "layer", "parameters", "norm", "distance", "distance_ci95", "relative", "relative_ci95", "tasks"]]

# %% [markdown]
# ## A-early: freezing through training
#
# The weights the training stage `seeds_stage` kept at each iteration, tested on its first test
# tasks with each freeze setting; thin lines are seeds, thick their mean. If feature reuse holds
# from early in training on, the lines for `none` and `1-4` stay together at every iteration
# (paper Fig. 3).

# %%
for case in early_cases.values():
    require(max(P.early_iterations) <= case.trained.row.iterations, "early_iterations",
            f"goes past the {case.trained.row.iterations} iterations {P.seeds_stage} trained")


def early_table():
    rows = []
    for (spec, seed), case in early_cases.items():
        for iteration in tqdm(P.early_iterations, desc=f"A-early {case.trained.name}"):
            model = reuse.snapshot(case.trained, iteration)
            table = reuse.freeze_accuracy(spec, model, case.test, case.settings, P.early_freezes)
            rows.append(table.assign(run=spec.name, seed=seed, iteration=iteration))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


early = store.result(f"data/analyses/{STAGE}/early", IDENTITY, early_table)
early_rows = len(early) > 0
if early_rows:
    early_mean = reuse.over_seeds(early, ["run", "iteration", "frozen"], {"accuracy": "ci95", "cost": "cost_ci95"})
    fig, axes = plt.subplots(1, len(P.early_runs), figsize=(4.5 * len(P.early_runs), 3.4), squeeze=False)
    for ax, spec in zip(axes[0], P.early_runs):
        for i, frozen in enumerate(P.early_freezes):
            part = early[(early.run == spec.name) & (early.frozen == frozen)]
            for _, one in part.groupby("seed"):
                ax.plot(one.iteration, one.accuracy, color=f"C{i}", lw=0.6, alpha=0.5)
            mean = early_mean[(early_mean.run == spec.name) & (early_mean.frozen == frozen)]
            ax.plot(mean.iteration, mean.accuracy, color=f"C{i}", lw=2, marker="o", label=f"frozen {frozen}")
        ax.set(title=f"{early_cases[spec, P.early_seeds[0]].trained.dataset} {spec.name}", xlabel="training iteration",
               ylabel="test accuracy (%)")
        ax.legend(fontsize=7)
    fig.suptitle(f"A-early: freezing through training ({len(P.early_seeds)} seeds x {P.early_tasks} test tasks); "
                 f"{HARDWARE}", fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, f"reports/{STAGE}/early_freeze.png")
    display(early.pivot_table(index=["run", "iteration", "frozen"], columns="seed", values="accuracy", sort=False).round(2))

# %% [markdown]
# ## Results beside the paper's

# %%
rows = []
for case in cases:
    t, scale = case.trained, case.scale(HARDWARE)
    rows += reuseresults.freeze_rows(freeze, t.dataset, t.spec.name, scale)
    rows += reuseresults.distance_rows(dist, t.dataset, t.spec.name, scale)
if early_rows:
    seeds = reuseresults.seeds_scale(P.early_seeds, P.seeds_stage)
    for spec in P.early_runs:
        case = early_cases[spec, P.early_seeds[0]]
        rows += reuseresults.early_freeze_rows(early_mean, spec.name,
                                               lambda at: case.scale(HARDWARE, seeds=seeds, at=at), case.trained.dataset)
metrics = reuseresults.freeze_metrics(freeze, dist, early_mean if early_rows else None)
results.write(rows, STAGE)
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")
pd.DataFrame(rows)[["experiment", "setting", "metric", "value", "ci95", "paper"]]

# %% [markdown]
# ## What the numbers say

# %%
lines = []
for (dataset, run), group in freeze.groupby(["dataset", "run"], sort=False):
    acc = group.set_index("frozen")
    cost, ci = acc.cost["1-4"], acc.cost_ci95["1-4"]
    lines.append(f"- **{dataset} {run}**: freezing the whole body (1-4) changes test accuracy from "
                 f"{acc.accuracy['none']:.1f} +- {acc.ci95['none']:.1f} to {acc.accuracy['1-4']:.1f} +- "
                 f"{acc.ci95['1-4']:.1f} %: it costs {cost:+.2f} +- {ci:.2f} points (paired over the same tasks), "
                 + ("less than 1 point with 95% confidence." if cost + ci < 1 else
                    "more than 1 point with 95% confidence." if cost - ci > 1 else
                    "not distinguishable from 1 point at this scale."))
for (dataset, run), group in dist.groupby(["dataset", "run"], sort=False):
    rel = group.set_index("layer").relative
    body_max = rel.drop("head").max()
    lines.append(f"- **{dataset} {run}** weight distance: the head moves by {rel['head']:.3g} of its norm, the body "
                 f"layers by at most {body_max:.3g} ({rel.drop('head').idxmax()}); the head moves "
                 f"{rel['head'] / body_max if body_max > 0 else math.inf:.3g} times as much (relative). "
                 f"{'Only the head moves substantially (more than 5x any body layer).' if rel['head'] > 5 * body_max else 'The body moves comparably to the head (less than 5x apart).'}")
if early_rows:
    for spec in P.early_runs:
        part = early_mean[(early_mean.run == spec.name) & (early_mean.frozen == "1-4")]
        lines.append(f"- **A-early, {spec.name}**: freezing the body costs "
                     + ", ".join(f"{r.cost:+.1f} ± {r.cost_ci95:.2g}" for r in part.itertuples())
                     + " points at iterations " + ", ".join(str(i) for i in part.iteration)
                     + f" ({reuseresults.seeds_scale(P.early_seeds, P.seeds_stage)}; {P.early_tasks} test tasks each).")
lines.append(f"\nScale: {P.n_test_tasks} test tasks per setting, one training seed; see the scale column of the "
             "results for training iterations and data.")
display(Markdown("\n".join(lines)))
