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
# # Feature reuse under task shift, on sinusoids (X-shift)
#
# The image half of X-shift (`notebooks/shift`) moves the test tasks in named categories. On the
# MAML paper's sinusoids the distance can be turned like a dial. The `sine_maml` stage's MAML and
# ANIL models (MLP 1-40-40-1, trained on `a sin(x + p)`, a in [0.1, 5], p in [0, pi], x in
# [-5, 5]) are tested, without retraining, on tasks moved along five axes (`metalearn.shift.sine_shifts`):
# the amplitude range moved up, the phase range moved on, the inputs moved outside the training
# range, a higher frequency, and other families (R-mix's Fourier mixture, cubics).
#
# At each step, on the same tasks, each model adapts as it was trained (its inner steps and step
# size, K support points, read from the model's record), and we measure: MAML's error; the cost
# of freezing its body (only the head adapts), paired over the tasks; ANIL - MAML, paired; how far
# each layer moves in adaptation; linear CKA of each hidden layer before vs after adaptation, with
# its chance level; and an untrained network adapted the same way (the control: a model no better
# than it tests nothing).
#
# The error is the MSE relative to the mean square of the shift's targets (0: perfect; about 1:
# predicting 0), so shifts of different amplitude compare. The verdicts read the image claims'
# thresholds in these units: freezing "costs nothing" below 0.01 (the ANIL paper's 1 point), ANIL
# and MAML are "comparable" within +-0.02 (the study's +-2 points).
#
# The defaults below are smoke-sized; `params.yaml` holds the study's values.

# %% tags=["parameters"]
threads = 1               # torch CPU threads (a 40-unit MLP runs fastest on one)
n_tasks = 20              # test tasks per shift (study: 500)
test_seed = 0             # seed of the test tasks (each shift its own stream)
control_seed = 1          # seed of the untrained control network's initialisation
chance_tasks = 2          # tasks of each CKA chance level (study: 20)
permutations = 2          # random re-pairings per task for the chance level (at least 2)
freeze_threshold = 0.01   # freezing costs "nothing" below this (relative error; the ANIL paper's 1 point)
comparable = 0.02         # ANIL and MAML "comparable" within +- this (relative error; the study's +-2 points)

# %%
from metalearn.params import Float, Int, check, require

P = check(globals(), threads=Int(min=1), n_tasks=Int(min=2), test_seed=Int(min=0), control_seed=Int(min=0),
          chance_tasks=Int(min=0), permutations=Int(min=2), freeze_threshold=Float(min=0, strict=True),
          comparable=Float(min=0, strict=True))
require(P.chance_tasks <= P.n_tasks, "chance_tasks", f"must be at most n_tasks ({P.n_tasks})")

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from metalearn import claims, hardware, models, report, results, shift, tasks

torch.set_num_threads(P.threads)
STAGE = "shift_sine"
HARDWARE = hardware.describe()
maml, anil = shift.sine_model("maml"), shift.sine_model("anil")
trained = maml.identity
require(anil.identity["iterations"] == trained["iterations"], "anil", "must be trained as long as maml")
net = maml.net
control = models.params_of(models.init_model(lambda: models.mlp([1, *trained["hidden"], 1]), P.control_seed), False)
family = tasks.SineFamily()  # the MAML paper's, as sine_maml trains on
K, STEPS, LR = trained["k_train"], trained["inner_steps"], trained["inner_lr"]
SCALE = (f"{P.n_tasks} test tasks per shift, K={K} support and {trained['n_query']} query points; 1 training seed "
         f"(sine_maml: {trained['iterations']} iterations x {trained['meta_batch']} tasks); {STEPS} step(s) of "
         f"{LR:g}; sinusoids; {HARDWARE}")
print(SCALE)

# %% [markdown]
# ## The measures at each shift

# %%
shifts = shift.sine_shifts(family)
parts = []
for axis, levels in shifts.items():
    for i, (distance, tasks_at) in enumerate(levels):
        batch = tasks_at.batch(P.n_tasks, K, trained["n_query"], torch.Generator().manual_seed(P.test_seed + 100 * i))
        scores = shift.sine_task_measures(net, maml.params, anil.params, control, batch, STEPS, LR,
                                          P.chance_tasks, P.permutations)
        parts.append(shift.sine_summary(scores).assign(axis=axis, step=i, distance=str(distance) if isinstance(
            distance, str) else f"{distance:.3g}"))
table = pd.concat(parts, ignore_index=True)
report.save_table(table.to_dict("records"), f"reports/{STAGE}/measures.csv")
errors = table[table.measure == "relative error"].pivot_table(index=["axis", "step", "distance"], columns="layer",
                                                               values="value", sort=False)
errors.round(3)

# %% [markdown]
# ## Each measure against the shift
#
# Columns: the axes; left to right in each panel, further from training (the first point: no
# shift). Bars are 95% CIs over the test tasks. Errors are on a log scale: moving the inputs
# outside the training range makes them explode.

# %%
rows = [("relative error", "error relative to the signal"), ("freeze cost", "MAML: freeze cost (paired)"),
        ("relative movement", "MAML: relative movement"), ("cka", "MAML: linear CKA before vs after")]
fig, axes = plt.subplots(len(rows), len(shifts), figsize=(3.6 * len(shifts), 2.8 * len(rows)), squeeze=False)
for col, axis in enumerate(shifts):
    at = table[table.axis == axis]
    ticks = at.drop_duplicates("step").distance.tolist()
    for row, (measure, title) in enumerate(rows):
        ax, part = axes[row, col], at[at.measure == measure]
        for j, (layer, line) in enumerate(part.groupby("layer", sort=False)):
            ax.errorbar(line.step + 0.04 * j, line.value, yerr=line.ci95, marker="o", capsize=3, label=layer or None)
        if measure == "cka":
            chance = at[at.measure == "chance"]
            for j, (layer, line) in enumerate(chance.groupby("layer", sort=False)):
                ax.plot(line.step, line.value, ":", color=f"C{j}", label=f"{layer} chance")
            ax.set_ylim(0, 1.05)
        if measure == "freeze cost":
            ax.axhline(P.freeze_threshold, color="grey", ls=":", lw=0.8, label=f"{P.freeze_threshold:g}")
            ax.set_yscale("symlog", linthresh=0.01)
        if measure in ("relative error", "relative movement"):
            ax.set_yscale("log")
        ax.set_xticks(range(len(ticks)), ticks)
        ax.set_title(f"{axis}: {title}", fontsize=8)
        if col == 0 or measure == "relative error":
            ax.legend(fontsize=6)
fig.suptitle(f"X-shift on sinusoids. {SCALE}", fontsize=7)
fig.tight_layout()
report.save_figure(fig, f"reports/{STAGE}/shift_sine.png")

# %% [markdown]
# ## Results

# %%
METRICS = {"freeze cost": "freeze cost (relative error, paired)", "anil - maml": "anil - maml (relative error, paired)"}
out = []
for r in table.itertuples():
    setting = f"sinusoids {r.axis} {r.distance}"
    if r.measure == "relative error":
        name = {"maml": "maml", "frozen": "maml body frozen", "anil": "anil", "control": "control (untrained network)"}
        out.append(results.row("X-shift", f"{setting} {name[r.layer]}", "relative error", r.value, SCALE, r.ci95))
    elif r.measure in METRICS:
        out.append(results.row("X-shift", f"{setting} maml", METRICS[r.measure], r.value, SCALE, r.ci95))
    elif r.value == r.value:  # NaN where no task's layers could be compared
        metric = {"relative movement": "relative movement", "cka": "cka", "chance": "cka chance level"}[r.measure]
        out.append(results.row("X-shift", f"{setting} maml {r.layer}", metric, r.value, SCALE, r.ci95))
results.write(out, STAGE)
report.save_metrics({f"{r.axis}_{r.distance}_{r.measure.replace(' ', '_')}_{r.layer}".rstrip("_"): float(r.value)
                     for r in table[table.measure.isin(["relative error", "freeze cost", "anil - maml"])].itertuples()},
                    f"reports/metrics/{STAGE}.json")
pd.DataFrame(out)[["setting", "metric", "value", "ci95"]]

# %% [markdown]
# ## What the numbers say
#
# Each sentence applies the study's verdict rule (`metalearn.claims.verdict`, tested) at each
# shift: the ANIL paper's freezing claim (the cost under the threshold above) and ANIL ~ MAML
# (within +-`comparable`), each guarded by the control (MAML's error must lie below the
# untrained network's, CIs apart).

# %%
verdicts = claims.sine_shift_verdicts(table, P.freeze_threshold, P.comparable)
lines = [f"- **{axis}**: " + "; ".join(f"{r.distance}: MAML {r.error:.3g} ± {r.error_ci95:.2g}, freezing *{r.freeze}* "
                                       f"({r.freeze_why}), ANIL ~ MAML *{r.anil}* ({r.anil_why})"
                                       for r in part.itertuples())
         for axis, part in verdicts.groupby("axis", sort=False)]
lines.append(f"\nScale: {SCALE}.")
display(Markdown("\n".join(lines)))
