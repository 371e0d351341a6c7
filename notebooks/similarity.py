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
# # Feature reuse in representations: CCA and CKA before vs after adaptation, and between training regimes (A-cca, A-repr, A-regime-sim)
#
# "Rapid Learning or Feature Reuse?" (Raghu et al. 2019), Sec. 3.2.2, Tables 3 and 8. The models
# trained by `train_miniimagenet` and `train_omniglot` are read on the queries of the same fixed
# test tasks as there (first `n_tasks` of that list).
#
# - **A-cca** (paper Fig. 2): for each layer of a MAML model, the similarity of its activations
#   before and after test-time adaptation to the task (same steps and step size as the training
#   stage's test). Feature reuse predicts body layers near 1 (paper: > 0.9) and the head far below.
# - **A-repr** (Table 3): ANIL's body against MAML's (meta-initialisations, no adaptation), mean
#   over the body's layers.
# - **A-regime-sim** (Table 8): the body of each other training regime (multiclass, multitask,
#   random features, NIL-training) against MAML's, mean over the first three conv layers.
#
# Measures (`metalearn.similarity`, float64): mean CCA (svcca style) and linear CKA. Conv
# activations [Q, C, H, W] are Q*H*W data points of C units; the head's output [Q, N] is Q points
# of N units. A comparison with as many units as data points is refused (CCA would be trivially 1).
# Values are means over tasks with 95% confidence intervals. The paper's Table 3 MAML-MAML and
# ANIL-ANIL rows compare two seeds of the same algorithm: the study trains one seed per run, so
# those rows are missing here.
#
# The defaults below are smoke-sized; `params.yaml` holds the study's CPU scale.

# %% tags=["parameters"]
threads = 2                       # torch CPU threads
device = "cpu"                    # cpu or cuda
n_tasks = 3                       # fixed test tasks per setting, the first n of the training stage's list (study: 100)
methods = ["cca", "cka"]          # the paper's measures: mean CCA and linear CKA
mini_cca_runs = ["maml-conv-5w1s"]  # A-cca: MiniImageNet MAML runs compared before vs after adaptation
mini_reference = "maml-conv-5w1s"   # A-repr, A-regime-sim: the MAML run every other body is compared with
mini_bodies = ["anil-conv-5w1s", "multiclass+head-conv-5w1s", "niltrain+head-conv-5w1s"]  # bodies compared with it
repr_layers = ["body.layer1", "body.layer2", "body.layer3", "body.layer4"]  # A-repr mean (paper Table 3: the body)
regime_layers = ["body.layer1", "body.layer2", "body.layer3"]  # A-regime-sim mean (paper Table 8: first three convs)
mini_seed = 0                     # the settings below repeat train_miniimagenet's (checked against its reports)
mini_bn = "transductive"
mini_filters = 32
mini_inner_lr = 0.01
mini_test_steps = 10
mini_test_queries = 15
omni_cca_runs = ["maml-conv-5w1s"]  # A-cca: Omniglot MAML runs compared before vs after adaptation
omni_seed = 0                     # the settings below repeat train_omniglot's (checked against its reports)
omni_split = "maml"
omni_bn = "transductive"
omni_filters = 64
omni_inner_lr_5way = 0.4
omni_inner_lr_20way = 0.1
omni_test_steps_5way = 3
omni_test_steps_20way = 5
omni_test_queries = 5

# %%
from metalearn import fewshot, reuse
from metalearn.params import Choice, Float, Int, List, Str, check, require

layer_names = [f"body.layer{i}" for i in range(1, 5)]
P = check(globals(), threads=Int(min=1), device=Choice("cpu", "cuda"), n_tasks=Int(min=2),
          methods=List(Choice(*reuse.METHODS), unique=True), mini_cca_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True),
          mini_reference=Str(fewshot.Spec.parse), mini_bodies=List(Str(fewshot.Spec.parse), min_len=0, unique=True),
          repr_layers=List(Choice(*layer_names), unique=True), regime_layers=List(Choice(*layer_names), unique=True),
          mini_seed=Int(min=0), mini_bn=Choice("transductive", "inductive"), mini_filters=Int(min=1),
          mini_inner_lr=Float(min=0, strict=True), mini_test_steps=Int(min=1), mini_test_queries=Int(min=1),
          omni_cca_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True), omni_seed=Int(min=0),
          omni_split=Choice("maml", "official"), omni_bn=Choice("transductive", "inductive"),
          omni_filters=Int(min=1), omni_inner_lr_5way=Float(min=0, strict=True),
          omni_inner_lr_20way=Float(min=0, strict=True), omni_test_steps_5way=Int(min=1),
          omni_test_steps_20way=Int(min=1), omni_test_queries=Int(min=1))
require(P.mini_cca_runs or P.omni_cca_runs or P.mini_bodies, "mini_bodies",
        "and mini_cca_runs, omni_cca_runs are all empty: nothing to analyse")
for name in ("mini_cca_runs", "omni_cca_runs"):
    for spec in getattr(P, name):
        require(spec.algorithm in ("maml", "fomaml") and spec.model == "conv" and spec.init is None, name,
                f"has {spec.name}: A-cca adapts MAML conv runs at test time (maml-conv-<N>w<K>s)")
require(P.mini_reference.algorithm == "maml" and P.mini_reference.model == "conv" and P.mini_reference.init is None,
        "mini_reference", f"is {P.mini_reference.name}: the reference body is a MAML conv run")
for spec in P.mini_bodies:
    require(spec.model == "conv" and spec.setting == P.mini_reference.setting and spec != P.mini_reference,
            "mini_bodies", f"has {spec.name}: compare other conv bodies of the reference's setting "
                           f"({P.mini_reference.setting})")
for spec in P.omni_cca_runs:
    require(spec.n_way in (5, 20), "omni_cca_runs", f"has {spec.name}: Omniglot settings exist for 5-way and 20-way")

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from metalearn import papers, report, results

torch.set_num_threads(P.threads)
require(P.device == "cpu" or torch.cuda.is_available(), "device", "is cuda, but torch sees no GPU")
STAGE = "similarity"
HARDWARE = report.hardware(P.device)


def mini(spec, param):
    """(trained model, test-time settings, test tasks, data) of a MiniImageNet run."""
    trained = reuse.load_trained("miniimagenet", spec, P.mini_filters, P.mini_test_steps, P.mini_test_queries,
                                 P.device, param)
    test, data = reuse.test_tasks("miniimagenet", spec, P.n_tasks, P.mini_test_queries, P.mini_seed, device=P.device)
    return trained, reuse.evaluation_settings(P.mini_inner_lr, P.mini_test_steps, P.mini_bn), test, data


def omni(spec, param):
    """(trained model, test-time settings, test tasks, data) of an Omniglot run."""
    five = spec.n_way == 5
    steps = P.omni_test_steps_5way if five else P.omni_test_steps_20way
    trained = reuse.load_trained("omniglot", spec, P.omni_filters, steps, P.omni_test_queries, P.device, param)
    test, data = reuse.test_tasks("omniglot", spec, P.n_tasks, P.omni_test_queries, P.omni_seed, P.omni_split,
                                  P.device)
    return trained, reuse.evaluation_settings(P.omni_inner_lr_5way if five else P.omni_inner_lr_20way, steps,
                                              P.omni_bn), test, data


def scale_of(trained, settings, test, data, queries, bn, adapted=True):
    adaptation = f", {settings.test_steps} test steps of {settings.inner_lr}" if adapted else ", no adaptation"
    return (f"{trained.row.iterations} iterations x {trained.row.meta_batch} tasks (training); {len(test.xs)} test "
            f"tasks x {queries} queries/class{adaptation}; 1 seed; {data}; bn {bn}; {HARDWARE}")


cca_cases = ([(mini(s, "mini_cca_runs"), P.mini_test_queries, P.mini_bn) for s in P.mini_cca_runs]
             + [(omni(s, "omni_cca_runs"), P.omni_test_queries, P.omni_bn) for s in P.omni_cca_runs])
reference = mini(P.mini_reference, "mini_reference") if P.mini_bodies else None
bodies = [mini(s, "mini_bodies")[0] for s in P.mini_bodies]
pd.DataFrame([dict(analysis=a, dataset=t.dataset, run=t.spec.name, iterations=t.row.iterations,
                   meta_batch=t.row.meta_batch, test_accuracy=t.row.accuracy)
              for a, t in [("A-cca", c[0][0]) for c in cca_cases] + [("reference", reference[0])] * bool(reference)
              + [("body", b) for b in bodies]])

# %% [markdown]
# ## A-cca: each layer before vs after test-time adaptation
#
# One bar per layer and measure: the mean over test tasks of the similarity of the layer's
# activations on the task's queries under the meta-initialisation and under the adapted weights.

# %%
cca_rows = []
for (trained, settings, test, data), queries, bn in cca_cases:
    table = reuse.pre_post_similarity(trained.spec, trained.model, test, settings, methods=P.methods)
    cca_rows.append(table.assign(dataset=trained.dataset, run=trained.spec.name))
cca = pd.concat(cca_rows, ignore_index=True) if cca_rows else pd.DataFrame()

if cca_rows:
    fig, axes = plt.subplots(1, len(cca_cases), figsize=(4.2 * len(cca_cases), 3.4), squeeze=False)
    for ax, (((trained, *_), *_), (_, group)) in zip(axes[0], zip(cca_cases, cca.groupby(["dataset", "run"], sort=False))):
        layers = list(dict.fromkeys(group.layer))
        width = 0.8 / len(P.methods)
        for i, method in enumerate(P.methods):
            part = group[group.method == method].set_index("layer").loc[layers]
            ax.bar([j + i * width for j in range(len(layers))], part.value, width, yerr=part.ci95, capsize=2,
                   label=method.upper())
        ax.axhline(0.9, color="grey", lw=0.8, ls=":")
        ax.set_xticks([j + width * (len(P.methods) - 1) / 2 for j in range(len(layers))],
                      [layer.removeprefix("body.") for layer in layers])
        ax.set(title=f"{trained.dataset} {trained.spec.name}", ylim=(0, 1.05), ylabel="similarity pre vs post")
        ax.legend(fontsize=7)
    fig.suptitle(f"A-cca: representations before vs after adaptation ({P.n_tasks} test tasks, 95% CI; dotted: 0.9)",
                 fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, f"reports/{STAGE}/pre_post_similarity.png")
    display(cca[["dataset", "run", "layer", "method", "value", "ci95", "points", "units", "dead_a", "dead_b", "note"]])

# %% [markdown]
# ## A-repr and A-regime-sim: other bodies against MAML's
#
# Activations of the meta-initialisations (no adaptation) on the same test queries; per layer
# and the mean over the paper's layers, taken per task. A layer of a random-features body is
# at its initialisation: the study's random-features run keeps the initialisation of seed 0, the
# one MAML started from, so its similarity to MAML also measures how far MAML moved from its own
# start (the paper's random body is an independent initialisation). The paper's values, where
# it gives them, are marked with crosses.

# %%
body_rows = []
for trained in bodies:
    layers = P.repr_layers if trained.spec.regime == "anil" else P.regime_layers
    table = reuse.model_similarity(trained.model, reference[0].model, reference[2], P.mini_bn, layers, P.methods)
    body_rows.append(table.assign(body=trained.spec.name, regime=trained.spec.regime))
pairs = pd.concat(body_rows, ignore_index=True) if body_rows else pd.DataFrame()


def experiment_of(regime):
    return "A-repr" if regime == "anil" else "A-regime-sim"


def setting_of(regime):
    return f"miniimagenet {regime} vs maml conv {P.mini_reference.setting}"


if body_rows:
    means = pairs[pairs.layer == "mean"]
    fig, axes = plt.subplots(1, len(P.methods), figsize=(4.0 * len(P.methods), 3.4), squeeze=False)
    for ax, method in zip(axes[0], P.methods):
        part = means[means.method == method]
        ax.bar(part.regime, part.value, yerr=part.ci95, capsize=3, label="ours")
        paper = [papers.paper_value(experiment_of(r), setting_of(r), method) for r in part.regime]
        ax.scatter([r for r, v in zip(part.regime, paper) if v is not None], [v for v in paper if v is not None],
                   marker="x", color="k", zorder=3, label="paper")
        ax.set(title=f"mean {method.upper()} with MAML's body", ylim=(0, 1.05), xlabel="body trained by")
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"A-repr / A-regime-sim: MiniImageNet {P.mini_reference.setting} bodies vs MAML's "
                 f"({P.n_tasks} test tasks, 95% CI)", fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, f"reports/{STAGE}/body_similarity.png")
    display(pairs.pivot_table(index=["regime", "layer"], columns="method", values="value", sort=False).round(3))

# %% [markdown]
# ## Results beside the paper's

# %%
rows, metrics = [], {}
for (trained, settings, test, data), queries, bn in cca_cases:
    scale = scale_of(trained, settings, test, data, queries, bn)
    base = f"{trained.dataset} {trained.spec.algorithm} conv {trained.spec.setting}"
    for r in cca[(cca.dataset == trained.dataset) & (cca.run == trained.spec.name)].itertuples():
        rows.append(results.row("A-cca", f"{base} {r.layer} pre vs post", r.method, r.value, scale, r.ci95))
        metrics[f"{trained.dataset}_{trained.spec.name}_{r.layer}_{r.method}"] = r.value
if body_rows:
    ref, settings, test, data = reference
    for trained in bodies:
        scale = scale_of(trained, settings, test, data, P.mini_test_queries, P.mini_bn, adapted=False)
        regime = trained.spec.regime
        for r in pairs[pairs.body == trained.spec.name].itertuples():
            setting = setting_of(regime) + ("" if r.layer == "mean" else f" {r.layer}")
            rows.append(results.row(experiment_of(regime), setting, r.method, r.value, scale, r.ci95))
            if r.layer == "mean":
                metrics[f"miniimagenet_{regime}_vs_maml_{r.method}"] = r.value
results.write(rows, STAGE)
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")
pd.DataFrame(rows)[["experiment", "setting", "metric", "value", "ci95", "paper"]]

# %% [markdown]
# ## What the numbers say

# %%
lines = []
for (dataset, run), group in (cca.groupby(["dataset", "run"], sort=False) if len(cca) else []):
    for method in P.methods:
        part = group[group.method == method].set_index("layer").value
        body = part.drop("head")
        lines.append(f"- **{dataset} {run}, {method.upper()}**: body layers before vs after adaptation "
                     f"{body.min():.3f} to {body.max():.3f} ({'all' if (body > 0.9).all() else 'not all'} above 0.9); "
                     f"head {part['head']:.3f} ({'far below' if part['head'] < body.min() - 0.2 else 'not far below'} "
                     "the body: more than 0.2 under its lowest layer). "
                     + ("Only the head's representation changes much: feature reuse."
                        if (body > 0.9).all() and part["head"] < body.min() - 0.2 else
                        "The paper's pattern (body > 0.9, head far below) does not hold here."))
if body_rows:
    means = pairs[pairs.layer == "mean"]
    for method in P.methods:
        part = means[means.method == method].set_index("regime")
        order = part.value.sort_values(ascending=False)
        lines.append(f"- **Bodies vs MAML's, mean {method.upper()}**: "
                     + ", ".join(f"{r} {v:.3f} +- {part.ci95[r]:.3f}" for r, v in order.items())
                     + (f". Multitask is {'the least' if order.index[-1] == 'multitask' else 'not the least'} similar "
                        "to MAML (the paper: least)." if "multitask" in part.index else "."))
lines.append(f"\nScale: {P.n_tasks} test tasks per setting, one training seed per run; training iterations are in "
             "the scale column of the results.")
display(Markdown("\n".join(lines)))
