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
# # Feature reuse under task shift (X-shift): does it still hold when test tasks differ more from training?
#
# The ANIL paper (Raghu et al. 2019) finds MAML's test-time adaptation to be feature reuse: the
# body barely changes, freezing it costs little, only the head moves. It tests this only on
# tasks drawn like the training tasks (new classes of the same dataset). This stage asks the
# reviewer's question that no paper in the study answers: does the conclusion survive when the
# test tasks move away from training? The models of `train_omniglot` and `train_miniimagenet`
# (MAML, ANIL and a random-body control of one setting; under the name `shift_campaign`, the
# training campaign's) are tested, without retraining, on
# shifts named in order of distance (`metalearn.shift`):
#
# - **same**: the training stage's own test tasks (new classes, same dataset);
# - **one-alphabet** (Omniglot): each task's N classes from one alphabet of the test
#   characters, so they look alike (fine-grained);
# - **miniimagenet** / **omniglot**: the other dataset's test images, prepared exactly as this
#   dataset's are (`datasets.omniglot_image`: grey, 28x28, inverted; `datasets.miniimagenet_image`:
#   RGB, 84x84; the Omniglot drawings inverted back to black on white first).
#
# An Omniglot model trained on the official split (the stage `shift_official`, on the models of
# `train_omniglot_official`: background alphabets for training, evaluation alphabets for test)
# meets **new alphabets** at `same`, where the study's character split (`maml`, the characters of
# all alphabets shuffled) meets new characters of the alphabets it trained on; its rows name the split.
#
# At each shift, on the same tasks: MAML's accuracy, the cost of freezing its whole body at test
# time (paired over the tasks), how far each layer moves in adaptation (relative to its norm),
# CCA / CKA of each layer before vs after adaptation with its chance level, ANIL - MAML (paired),
# and the control's accuracy (the random body with a NIL head, the control of `metalearn.claims`).
# The shifts are ordered categories, not a measured distance.
#
# The defaults below are smoke-sized; `params.yaml` holds the study's CPU scale.

# %% tags=["parameters"]
stage = "shift"                     # the DVC stage this execution is (the runner sets it): names its outputs
datasets = ["omniglot", "miniimagenet"]  # whose models are analysed (a campaign: those of its finished stages)
mini_stage = "train_miniimagenet"   # the training stage of the MiniImageNet runs (the campaign: campaign_miniimagenet)
omni_stage = "train_omniglot"       # the training stage of the Omniglot runs
mini_control_stage = "train_miniimagenet"  # the stage whose random-body run is the MiniImageNet control (its body
omni_control_stage = "train_omniglot"      # is the untrained network of the seed: the same for any stage of that seed)
threads = 2                         # torch CPU threads
device = "cpu"                      # cpu or cuda: where the models adapt
omniglot_maml = "maml-conv-5w1s"    # train_omniglot's MAML run whose feature reuse is measured
omniglot_anil = "anil-conv-5w1s"    # its ANIL run of the same setting (ANIL - MAML, paired)
omniglot_control = True            # compare with its random-body run of the same setting (random-conv-<N>w<K>s)
miniimagenet_maml = "maml-conv-5w1s"   # the same for train_miniimagenet
miniimagenet_anil = "anil-conv-5w1s"
miniimagenet_control = False       # (study: true; the smoke-sized train_miniimagenet trains no random body)
n_tasks = 2                         # test tasks per shift (the first of each list; study: 100)
methods = ["cca", "cka"]            # similarity measures before vs after adaptation
chance_tasks = 2                    # tasks of each chance level (random pairings of the data points)
permutations = 2                    # random pairings per task (at least 2)

# %%
from metalearn import fewshot, reuse, shift
from metalearn.params import Bool, Choice, Int, List, Str, check, require

P = check(globals(), stage=Str(), datasets=List(Choice(*shift.SHIFTS), unique=True), mini_stage=Str(),
          omni_stage=Str(), mini_control_stage=Str(), omni_control_stage=Str(), threads=Int(min=1),
          device=Choice("cpu", "cuda"), omniglot_maml=Str(fewshot.Spec.parse),
          omniglot_anil=Str(fewshot.Spec.parse), omniglot_control=Bool(), miniimagenet_maml=Str(fewshot.Spec.parse),
          miniimagenet_anil=Str(fewshot.Spec.parse), miniimagenet_control=Bool(), n_tasks=Int(min=2),
          methods=List(Choice(*reuse.METHODS), unique=True), chance_tasks=Int(min=2), permutations=Int(min=2))
for dataset in P.datasets:
    maml, anil = getattr(P, f"{dataset}_maml"), getattr(P, f"{dataset}_anil")
    require(maml.algorithm == "maml" and maml.model == "conv" and maml.init is None, f"{dataset}_maml",
            f"is {maml.name}: feature reuse is measured on a MAML conv run")
    require(anil.algorithm == "anil" and anil.setting == maml.setting, f"{dataset}_anil",
            f"is {anil.name}: an ANIL run of {maml.name}'s setting")
require(P.chance_tasks <= P.n_tasks, "chance_tasks", f"must be at most n_tasks ({P.n_tasks})")

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from tqdm import tqdm  # not tqdm.auto: its widget warning prints the absolute path of the venv

from metalearn import claims, evaluation, hardware, report, results, reuseresults, store

torch.set_num_threads(P.threads)
require(P.device == "cpu" or torch.cuda.is_available(), "device", "is cuda, but torch sees no GPU")
STAGE = P.stage
STAGES = {"omniglot": (P.omni_stage, P.omni_control_stage), "miniimagenet": (P.mini_stage, P.mini_control_stage)}
HARDWARE = hardware.describe(P.device)

# each dataset's runs (reuse.Case: model, test-time settings, test tasks as the training stage recorded them)
cases = {}
for dataset in P.datasets:
    trained_in, control_in = STAGES[dataset]
    maml = getattr(P, f"{dataset}_maml")
    runs = {"maml": (trained_in, maml.name), "anil": (trained_in, getattr(P, f"{dataset}_anil").name)}
    if getattr(P, f"{dataset}_control"):
        runs["control"] = (control_in, f"random-conv-{maml.setting}")
    cases[dataset] = {role: reuse.load_case(where, name, P.n_tasks, P.device, f"{dataset}_{role}")
                      for role, (where, name) in runs.items()}
# how results name each dataset's runs: with the Omniglot split they trained on, where it is not the study's
SPLIT = {dataset: runs["maml"].trained.identity.get("split") for dataset, runs in cases.items()}  # MiniImageNet: None
WHERE = {dataset: reuseresults.trained_on(dataset, SPLIT[dataset]) for dataset in cases}
# which datasets are analysed changes no outcome (each is kept per dataset and shift): not part of the identity
IDENTITY = reuse.analysis_identity(P, [c.trained for runs in cases.values() for c in runs.values()],
                                   apart=["datasets"])
pd.DataFrame([dict(dataset=dataset, role=role, run=c.trained.spec.name, iterations=c.trained.row.iterations,
                   test_steps=c.settings.test_steps, inner_lr=c.settings.inner_lr, queries=c.queries)
              for dataset, runs in cases.items() for role, c in runs.items()])

# %% [markdown]
# ## The measures at each shift
#
# Computed once per identity (these settings, the runs, the test-time numerics) and kept in
# `data/analyses/shift/`.

# %%
def measure(dataset, name):
    """MAML's reuse measures and every run's per-task accuracy (adapted, and with the NIL head) on one shift's tasks."""
    test, data = shift.shifted_tasks(cases[dataset]["maml"], name, P.n_tasks)
    return {"data": data, "measures": shift.reuse_measures(cases[dataset]["maml"], test, P.methods, P.chance_tasks,
                                                           P.permutations),
            "scores": {role: shift.task_scores(case, test) for role, case in cases[dataset].items()}}


outcomes = {(dataset, name): store.result(f"data/analyses/{STAGE}/{dataset}-{name}", IDENTITY,
                                          lambda: measure(dataset, name))
            for dataset in tqdm(P.datasets, desc="X-shift") for name in shift.SHIFTS[dataset]}
table = pd.concat([o["measures"].assign(dataset=d, shift=s) for (d, s), o in outcomes.items()], ignore_index=True)
HEAD = {"maml": "adapt", "anil": "adapt", "control": "nil"}  # the control: a random body's NIL head, as in the claims
accuracy = pd.DataFrame([dict(dataset=d, shift=s, role=role, accuracy=mean, ci95=ci)
                         for (d, s), o in outcomes.items() for role, scores in o["scores"].items()
                         for mean, ci in [evaluation.mean_ci95(scores[HEAD[role]])]])
contrast = pd.DataFrame([dict(dataset=d, shift=s, **claims.paired(o["scores"]["anil"].adapt, o["scores"]["maml"].adapt))
                         for (d, s), o in outcomes.items()])  # ANIL - MAML over the same tasks
report.save_table(table.to_dict("records"), f"reports/{STAGE}/measures.csv")
accuracy.pivot_table(index=["dataset", "shift"], columns="role", values="accuracy", sort=False).round(2)

# %% [markdown]
# ## Each measure against the shift
#
# Left to right in each panel: no shift, then further away. Bars and bands are 95% CIs over the
# test tasks. Feature reuse predicts a small freezing cost, a head that moves far more than the
# body, and body layers whose similarity before vs after adaptation stays near 1, well above
# chance.

# %%
fig, axes = plt.subplots(len(P.datasets), 4, figsize=(16, 3.4 * len(P.datasets)), squeeze=False)
for row, dataset in zip(axes, P.datasets):
    names, x = shift.SHIFTS[dataset], np.arange(len(shift.SHIFTS[dataset]))
    acc = accuracy[accuracy.dataset == dataset]
    for i, role in enumerate(dict.fromkeys(acc.role)):
        part = acc[acc.role == role].set_index("shift").loc[list(names)]
        row[0].errorbar(x + 0.05 * i, part.accuracy, yerr=part.ci95, marker="o", capsize=3,
                        label=cases[dataset][role].trained.spec.name + (" (NIL head)" if HEAD[role] == "nil" else ""))
    row[0].set(title=f"{WHERE[dataset]} models: test accuracy (%)", ylabel="accuracy (%)")
    part = table[(table.dataset == dataset) & (table.measure == "freeze cost")].set_index("shift").loc[list(names)]
    row[1].errorbar(x, part.value, yerr=part.ci95, marker="o", capsize=3, color="C3")
    row[1].axhline(1, color="grey", ls=":", lw=0.8, label="1 point")
    row[1].set(title="MAML: cost of freezing the body (points, paired)")
    moved = table[(table.dataset == dataset) & (table.measure == "relative movement")]
    for layer, part in moved.groupby("layer", sort=False):
        part = part.set_index("shift").loc[list(names)]
        row[2].errorbar(x, part.value, yerr=part.ci95, marker="o", capsize=3, label=layer.removeprefix("body."))
    row[2].set(title="MAML: relative movement in adaptation", yscale="log")
    sim = table[(table.dataset == dataset) & table.measure.isin(["similarity", "chance"]) & (table.method == P.methods[0])]
    for i, layer in enumerate(dict.fromkeys(sim.layer)):
        for measure_name, style in (("similarity", "-"), ("chance", ":")):
            part = sim[(sim.layer == layer) & (sim.measure == measure_name)].set_index("shift").reindex(list(names))
            row[3].errorbar(x, part.value, yerr=part.ci95, ls=style, marker="o" if style == "-" else None, capsize=2,
                            color=f"C{i}", label=layer.removeprefix("body.") if style == "-" else None)
    row[3].set(title=f"MAML: {P.methods[0].upper()} before vs after (dotted: chance)", ylim=(0, 1.05))
    for ax in row:
        ax.set_xticks(x, names)
        ax.legend(fontsize=6)
fig.suptitle(f"X-shift: {P.n_tasks} test tasks per shift, 1 training seed; {HARDWARE}", fontsize=8)
fig.tight_layout()
report.save_figure(fig, f"reports/{STAGE}/shift.png")

# %% [markdown]
# ## Results

# %%
rows = []
for (dataset, name), outcome in outcomes.items():
    maml = cases[dataset]["maml"]
    scale = maml._replace(data=outcome["data"]).scale(HARDWARE)  # the shifted tasks: as many, other data
    at = {frame: part[(part.dataset == dataset) & (part["shift"] == name)]
          for frame, part in (("table", table), ("accuracy", accuracy), ("contrast", contrast))}
    control = None
    if "control" in cases[dataset]:
        c = at["accuracy"][at["accuracy"].role == "control"].iloc[0]
        control = (cases[dataset]["control"].trained.spec.name, c.accuracy, c.ci95)
    setting = f"{reuseresults.run_setting(dataset, maml.trained.spec.name, SPLIT[dataset])} {name}"
    rows += reuseresults.shift_rows(at["table"], setting, scale, at["contrast"].iloc[0], control)
results.write(rows, STAGE)
report.save_metrics({f"{d}_{s}_{m}": float(v) for d, s, m, v in
                     table[table.measure.isin(["accuracy", "freeze cost"])][["dataset", "shift", "measure", "value"]]
                     .itertuples(index=False)}, f"reports/metrics/{STAGE}.json")
pd.DataFrame(rows)[["setting", "metric", "value", "ci95"]]

# %% [markdown]
# ## What the numbers say
#
# Each sentence applies the study's verdict rule (`metalearn.claims.verdict`, tested) to the
# ANIL paper's freezing claim (freezing the body costs under 1 point) at each shift, with the
# control where there is one: a model no better than its control tests nothing.

# %%
lines = []
for (dataset, name), outcome in outcomes.items():
    at = table[(table.dataset == dataset) & (table["shift"] == name)].set_index(["measure", "layer", "method"])
    cost, cost_ci = at.loc[("freeze cost", "body", "")][["value", "ci95"]]
    acc, acc_ci = at.loc[("accuracy", "", "")][["value", "ci95"]]
    control = None
    if "control" in cases[dataset]:
        c = accuracy[(accuracy.dataset == dataset) & (accuracy["shift"] == name) & (accuracy.role == "control")].iloc[0]
        control = ((acc, acc_ci), (c.accuracy, c.ci95))
    decided, why = claims.verdict(cost, cost_ci, "<", 1.0, control)
    moved = at.loc["relative movement"].value.droplevel("method")
    diff = contrast[(contrast.dataset == dataset) & (contrast["shift"] == name)].iloc[0]
    lines.append(f"- **{WHERE[dataset]} {cases[dataset]['maml'].trained.spec.name}, {name}**: "
                 f"accuracy {acc:.1f} ± {acc_ci:.1f} %; freezing the body costs {cost:+.2f} ± {cost_ci:.2f} points: "
                 f"*{decided}* ({why}); the head moves {moved['head']:.3g} of its norm, the body at most {moved.drop('head').max():.3g}; "
                 f"ANIL - MAML {diff.difference:+.2f} ± {diff.ci95:.2f} points.")
lines.append(f"\nScale: {P.n_tasks} test tasks per shift, one training seed, the models "
             "of the training stages at their iterations (see each row's scale).")
display(Markdown("\n".join(lines)))
