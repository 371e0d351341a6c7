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
# conv weight and bias, batch-norm scale and shift (`metalearn.reuse`).
#
# The defaults below are smoke-sized; `params.yaml` holds the study's CPU scale and
# `params-paper.yaml` the papers'.

# %% tags=["parameters"]
threads = 2                     # torch CPU threads
device = "cpu"                  # cpu or cuda: where the models adapt and episodes are drawn
freezes = ["none", "1", "1-2", "1-3", "1-4"]  # frozen body layers during test-time adaptation (paper Table 1)
n_test_tasks = 4                # fixed test tasks per setting (study: at least 600); the first n of the training stage's list
mini_runs = ["maml-conv-5w1s"]  # MiniImageNet MAML runs of train_miniimagenet (study: maml-conv-5w1s, maml-conv-5w5s)
mini_seed = 0                   # as in train_miniimagenet: seed of the fixed test episodes
mini_bn = "transductive"        # as in train_miniimagenet
mini_filters = 32               # as in train_miniimagenet
mini_inner_lr = 0.01            # as in train_miniimagenet
mini_test_steps = 10            # as in train_miniimagenet
mini_test_queries = 15          # as in train_miniimagenet
omni_runs = ["maml-conv-5w1s"]  # Omniglot MAML runs of train_omniglot (study: maml-conv-5w1s, maml-conv-20w1s)
omni_seed = 0                   # as in train_omniglot: seed of the fixed test episodes
omni_split = "maml"             # as in train_omniglot
omni_bn = "transductive"        # as in train_omniglot
omni_filters = 64               # as in train_omniglot
omni_inner_lr_5way = 0.4        # as in train_omniglot
omni_inner_lr_20way = 0.1       # as in train_omniglot
omni_test_steps_5way = 3        # as in train_omniglot
omni_test_steps_20way = 5       # as in train_omniglot
omni_test_queries = 5           # as in train_omniglot

# %%
from metalearn import fewshot, reuse
from metalearn.params import Choice, Float, Int, List, Str, check, require

P = check(globals(), threads=Int(min=1), device=Choice("cpu", "cuda"), freezes=List(Str(reuse.check_freeze), unique=True),
          n_test_tasks=Int(min=2), mini_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True),
          mini_seed=Int(min=0), mini_bn=Choice("transductive", "inductive"), mini_filters=Int(min=1),
          mini_inner_lr=Float(min=0, strict=True), mini_test_steps=Int(min=1), mini_test_queries=Int(min=1),
          omni_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True), omni_seed=Int(min=0),
          omni_split=Choice("maml", "official"), omni_bn=Choice("transductive", "inductive"),
          omni_filters=Int(min=1), omni_inner_lr_5way=Float(min=0, strict=True),
          omni_inner_lr_20way=Float(min=0, strict=True), omni_test_steps_5way=Int(min=1),
          omni_test_steps_20way=Int(min=1), omni_test_queries=Int(min=1))
require(P.mini_runs or P.omni_runs, "mini_runs", "and omni_runs are both empty: nothing to analyse")
for name in ("mini_runs", "omni_runs"):
    for spec in getattr(P, name):
        require(spec.algorithm == "maml" and spec.model == "conv" and spec.init is None, name,
                f"has {spec.name}: the freezing analysis is of MAML conv runs (maml-conv-<N>w<K>s)")
for spec in P.omni_runs:
    require(spec.n_way in (5, 20), "omni_runs", f"has {spec.name}: Omniglot settings exist for 5-way and 20-way")
require("none" in P.freezes and "1-4" in P.freezes, "freezes", "must include 'none' and '1-4' (the conclusion compares them)")

# %%
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from metalearn import report, results

torch.set_num_threads(P.threads)
require(P.device == "cpu" or torch.cuda.is_available(), "device", "is cuda, but torch sees no GPU")
STAGE = "freeze"
HARDWARE = report.hardware(P.device)


# every analysed run: (trained model, test-time settings, test tasks, data, queries per class, batch-norm mode)
cases = []
for spec in P.mini_runs:
    trained = reuse.load_trained("miniimagenet", spec, P.mini_filters, P.mini_test_steps, P.mini_test_queries,
                                 P.device, "mini_runs")
    test, data = reuse.test_tasks("miniimagenet", spec, P.n_test_tasks, P.mini_test_queries, P.mini_seed,
                                  device=P.device)
    cases.append((trained, reuse.evaluation_settings(P.mini_inner_lr, P.mini_test_steps, P.mini_bn), test, data,
                  P.mini_test_queries, P.mini_bn))
for spec in P.omni_runs:
    five = spec.n_way == 5
    steps = P.omni_test_steps_5way if five else P.omni_test_steps_20way
    trained = reuse.load_trained("omniglot", spec, P.omni_filters, steps, P.omni_test_queries, P.device, "omni_runs")
    test, data = reuse.test_tasks("omniglot", spec, P.n_test_tasks, P.omni_test_queries, P.omni_seed, P.omni_split,
                                  P.device)
    settings = reuse.evaluation_settings(P.omni_inner_lr_5way if five else P.omni_inner_lr_20way, steps, P.omni_bn)
    cases.append((trained, settings, test, data, P.omni_test_queries, P.omni_bn))
pd.DataFrame([dict(dataset=t.dataset, run=t.spec.name, iterations=t.row.iterations, meta_batch=t.row.meta_batch,
                   test_steps=settings.test_steps, inner_lr=settings.inner_lr, test_tasks=len(test.xs))
              for t, settings, test, *_ in cases])

# %% [markdown]
# ## A-freeze: test accuracy with layers frozen during test-time adaptation
#
# Mean over the fixed test tasks with 95% confidence intervals. `frozen none` is the ordinary
# test of the training stage; with the same number of test tasks it reproduces the training
# stage's own test accuracy (shown beside it as `training stage`, over that stage's tasks).

# %%
freeze_rows = []
for t, settings, test, *_ in cases:
    table = reuse.freeze_accuracy(t.spec, t.model, test, settings, P.freezes)
    freeze_rows.append(table.assign(dataset=t.dataset, run=t.spec.name, **{"training stage": t.row.accuracy}))
freeze = pd.concat(freeze_rows, ignore_index=True)
for t, settings, test, *_ in cases:
    if t.tasks == len(test.xs):  # the same test tasks: "none" must repeat the training stage's test
        none = freeze[(freeze.run == t.spec.name) & (freeze.dataset == t.dataset) & (freeze.frozen == "none")]
        require(abs(none.accuracy.iloc[0] - t.row.accuracy) < 0.1,
                f"{'mini' if t.dataset == 'miniimagenet' else 'omni'}_inner_lr",
                f"(or the seed, split, bn) differs from train_{t.dataset}'s: {t.spec.name} without freezing scores "
                f"{none.accuracy.iloc[0]:.2f} % here and {t.row.accuracy:.2f} % there on the same test tasks")

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
freeze[["dataset", "run", "frozen", "layers", "accuracy", "ci95", "tasks", "training stage"]]

# %% [markdown]
# ## A-dist: how far each layer's weights move in test-time adaptation (full MAML adaptation)
#
# Per layer l, the mean over test tasks b of ||theta_l - theta_l^(b)|| (absolute), and of the
# same divided by ||theta_l|| (relative, comparable across layers of different size).

# %%
dist_rows = []
for t, settings, test, *_ in cases:
    dist_rows.append(reuse.weight_distances(t.spec, t.model, test, settings).assign(dataset=t.dataset, run=t.spec.name))
dist = pd.concat(dist_rows, ignore_index=True)

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
# ## Results beside the paper's

# %%
rows, metrics = [], {}
for t, settings, test, data, queries, bn in cases:
    scale = (f"{t.row.iterations} iterations x {t.row.meta_batch} tasks (training); {len(test.xs)} test tasks x "
             f"{queries} queries/class, {settings.test_steps} test steps of {settings.inner_lr}; 1 seed; {data}; "
             f"bn {bn}; {HARDWARE}")
    base = f"{t.dataset} maml conv {t.spec.setting}"
    mine = (freeze.dataset == t.dataset) & (freeze.run == t.spec.name)
    for r in freeze[mine].itertuples():
        rows.append(results.row("A-freeze", f"{base} freeze {r.frozen}", "accuracy", r.accuracy, scale, r.ci95))
        metrics[f"{t.dataset}_{t.spec.name}_freeze_{r.frozen}"] = r.accuracy
    for r in dist[(dist.dataset == t.dataset) & (dist.run == t.spec.name)].itertuples():
        rows.append(results.row("A-dist", f"{base} {r.layer}", "distance", r.distance, scale, r.distance_ci95))
        rows.append(results.row("A-dist", f"{base} {r.layer}", "relative distance", r.relative, scale, r.relative_ci95))
        metrics[f"{t.dataset}_{t.spec.name}_{r.layer}_relative_distance"] = r.relative
results.write(rows, STAGE)
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")
pd.DataFrame(rows)[["experiment", "setting", "metric", "value", "ci95", "paper"]]

# %% [markdown]
# ## What the numbers say

# %%
lines = []
for (dataset, run), group in freeze.groupby(["dataset", "run"], sort=False):
    acc = group.set_index("frozen")
    cost = acc.accuracy["none"] - acc.accuracy["1-4"]
    overlap = abs(cost) <= acc.ci95["none"] + acc.ci95["1-4"]
    lines.append(f"- **{dataset} {run}**: freezing the whole body (1-4) changes test accuracy from "
                 f"{acc.accuracy['none']:.1f} +- {acc.ci95['none']:.1f} to {acc.accuracy['1-4']:.1f} +- "
                 f"{acc.ci95['1-4']:.1f} %: it costs {cost:+.2f} points, which is "
                 f"{'less' if cost < 1 else 'not less'} than 1 point; the two 95% intervals "
                 f"{'overlap' if overlap else 'do not overlap'}.")
for (dataset, run), group in dist.groupby(["dataset", "run"], sort=False):
    rel = group.set_index("layer").relative
    body_max = rel.drop("head").max()
    lines.append(f"- **{dataset} {run}** weight distance: the head moves by {rel['head']:.3g} of its norm, the body "
                 f"layers by at most {body_max:.3g} ({rel.drop('head').idxmax()}); the head moves "
                 f"{rel['head'] / body_max if body_max > 0 else math.inf:.3g} times as much (relative). "
                 f"{'Only the head moves substantially (more than 5x any body layer).' if rel['head'] > 5 * body_max else 'The body moves comparably to the head (less than 5x apart).'}")
lines.append(f"\nScale: {P.n_test_tasks} test tasks per setting, one training seed; see the scale column of the "
             "results for training iterations and data.")
display(Markdown("\n".join(lines)))
