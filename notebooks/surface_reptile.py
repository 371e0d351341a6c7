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
# # R-2d: Reptile on two-dimensional surfaces, inner SGD vs inner Adam
#
# The Reptile review (Black et al. 2022), Sec. 5.2, Figures 6-8. Tasks `z = a sin(x^2 + y^2 + p)`,
# a ~ U[0, 2], p ~ U[0, 2 pi], on a `side` x `side` grid over the square `x_range`^2 (the review:
# 10 000 points; its range is not stated, so it is a parameter here); MLP 2-128-512-512-128-1. Each
# meta-iteration draws one task and adapts to it with `inner_steps` optimiser steps on minibatches
# of `inner_batch` of its grid points (the review: 5 minibatches of 20), then moves the
# initialisation towards the adapted weights (outer step annealed linearly to 0, as the Reptile
# code). Inner SGD against inner Adam with beta1 = 0.01, beta2 = 0.999, its state carried from task
# to task as in the review (the loss logged in training is the MSE on the points the inner loop
# visited, after it). The review: SGD "was unable to achieve a meaningful fit"; Adam found "a
# fairly good initialisation in 2900 meta-iterations", its loss unstable.
#
# At test time each run fine-tunes on `support_points` grid points of each of `n_test_tasks` fixed
# surfaces with its own optimiser (fresh state) and is scored by the MSE over every grid point. The
# same test surfaces and support points for every run and seed, so Adam - SGD is paired over
# them; with several seeds its interval is given over the tasks and over the seeds. The step
# sizes are not stated in the review: SGD takes the Reptile code's 0.02, Adam its usual 0.001.
# Defaults are smoke-sized; `params.yaml` holds the study's values.

# %% tags=["parameters"]
seeds = [0, 1]             # training seeds (model initialisation and task draws)
threads = 1                # torch CPU threads
hidden = [16, 32, 32, 16]  # hidden layer sizes (review: 128, 512, 512, 128)
side = 12                  # grid points per axis (review: 100, so 10 000 points)
x_range = [-3.0, 3.0]      # the square's side (review: not stated)
inner_batch = 20           # points per inner minibatch (review: 20)
inner_steps = 5            # inner minibatches per meta-iteration (review: 5)
meta_step = 0.1            # outer step size at iteration 0, annealed linearly to 0 (Reptile code)
iterations = 6             # meta-iterations per run (review: about 3000)
sgd_lr = 0.02              # inner SGD step (Reptile code; the review does not say)
adam_lr = 0.001            # inner Adam step (the review does not say)
adam_beta1 = 0.01          # review: 0.01
adam_beta2 = 0.999         # review: 0.999
support_points = 20        # test-time fit points per surface
eval_steps = 4             # test-time optimiser steps
n_test_tasks = 3           # fixed test surfaces
checkpoint_every = 500     # iterations between checkpoints

# %%
from metalearn.params import check, Float, Int, List, require

P = check(globals(), seeds=List(Int(min=0), unique=True), threads=Int(min=1), hidden=List(Int(min=1)),
          side=Int(min=2), x_range=List(Float(), min_len=2), inner_batch=Int(min=1), inner_steps=Int(min=1),
          meta_step=Float(min=0, strict=True), iterations=Int(min=1), sgd_lr=Float(min=0, strict=True),
          adam_lr=Float(min=0, strict=True), adam_beta1=Float(min=0, max=0.999), adam_beta2=Float(min=0, max=0.9999),
          support_points=Int(min=1), eval_steps=Int(min=1), n_test_tasks=Int(min=2), checkpoint_every=Int(min=1))
require(len(P.x_range) == 2 and P.x_range[0] < P.x_range[1], "x_range",
        f"must be [low, high] with low < high, got {P.x_range}")
require(P.inner_batch <= P.side ** 2, "inner_batch", f"must be at most the grid's {P.side ** 2} points")
require(P.support_points <= P.side ** 2, "support_points", f"must be at most the grid's {P.side ** 2} points")

# %%
from functools import partial

import matplotlib.pyplot as plt
import pandas as pd
import torch

from metalearn import core, evaluation, hardware, models, report, results, tasks, training

torch.set_num_threads(P.threads)
STAGE = "surface_reptile"
N_POINTS = P.side ** 2
surface = tasks.SurfaceFamily(x_range=tuple(P.x_range))
sizes = [2, *P.hidden, 1]
OPTIMIZERS = {"sgd": core.InnerOptimizer("sgd", lr=P.sgd_lr),
              "adam": core.InnerOptimizer("adam", lr=P.adam_lr, beta1=P.adam_beta1, beta2=P.adam_beta2)}
config = {k: v for k, v in vars(P).items() if k not in ("threads", "seeds", "checkpoint_every")}
SCALE = (f"{P.iterations} meta-iterations x 1 task x {P.inner_steps} inner steps of {P.inner_batch} points; "
         f"{P.n_test_tasks} test surfaces x {P.support_points} fit points, {P.eval_steps} test steps; "
         f"{len(P.seeds)} seeds ({', '.join(map(str, P.seeds))}); surfaces on a {P.side}x{P.side} grid over "
         f"[{P.x_range[0]:g}, {P.x_range[1]:g}]^2; MLP {'-'.join(map(str, sizes))}; {hardware.describe()}, "
         f"{P.threads} threads")
print(SCALE)

# %% [markdown]
# ## Training: one run per optimiser and seed (Adam's state kept across tasks, as in the review)

# %%
sample = partial(tasks.reptile_tasks, [surface], N_POINTS, P.inner_batch, P.inner_steps, visited_only=True)
trained = {}
for name, optimizer in OPTIMIZERS.items():
    for seed in P.seeds:
        model = models.init_model(lambda: models.mlp(sizes), seed)
        trained[name, seed] = training.train_reptile(
            f"{STAGE}-{name}-seed{seed}", {**config, "run": name}, model, seed, sample, optimizer, P.iterations,
            P.meta_step, keep_state=name == "adam", checkpoint_every=P.checkpoint_every,
            record=f"data/models/{STAGE}/{name}-seed{seed}")
history = pd.concat([pd.DataFrame(t["history"]).assign(run=name, seed=seed) for (name, seed), t in trained.items()])
report.save_table(history.pivot_table(index="iteration", columns="run", values="loss").reset_index().to_dict("records"),
                  f"reports/plots/{STAGE}_training.csv")

fig, ax = plt.subplots(figsize=(6, 3.4))
for i, name in enumerate(OPTIMIZERS):
    part = history[history.run == name]
    for _, one in part.groupby("seed"):
        ax.plot(one.iteration, one.loss, color=f"C{i}", lw=0.6, alpha=0.5)
    mean = part.groupby("iteration").loss.mean()
    ax.plot(mean.index, mean.values, color=f"C{i}", lw=2, label=f"inner {name} (mean of {len(P.seeds)} seeds)")
ax.set(xlabel="meta-iteration", ylabel="inner-loop training loss (MSE)", yscale="log")
ax.legend(fontsize=7)
fig.suptitle(f"R-2d training (review Fig. 7). {SCALE}", fontsize=6)
report.save_figure(fig, f"reports/{STAGE}/training.png")

# %% [markdown]
# ## Test: MSE over every grid point after 0..`eval_steps` steps on the support points

# %%
test_gen = torch.Generator().manual_seed(10_000)
test_task = surface.sample_tasks(P.n_test_tasks, test_gen)
test_x = surface.grid(P.n_test_tasks, N_POINTS)
test_y = surface(test_task, test_x)
fit = torch.stack([torch.randperm(N_POINTS, generator=test_gen)[:P.support_points] for _ in range(P.n_test_tasks)])
net = models.mlp(sizes)
curves = {key: evaluation.optimized_mse(net, t["params"], test_x, test_y, fit, OPTIMIZERS[key[0]], P.eval_steps,
                                        f"{key[0]} seed {key[1]}")
          for key, t in trained.items()}  # each [tasks, steps + 1]
zero = (test_y ** 2).mean((1, 2))  # predicting 0 everywhere: the MSE that means "no fit"

rows, table = [], []
for name in OPTIMIZERS:
    per_task = torch.stack([curves[name, seed] for seed in P.seeds]).mean(0)  # mean over seeds, [tasks, steps + 1]
    for step in range(P.eval_steps + 1):
        mean, ci = evaluation.mean_ci95(per_task[:, step])
        table.append(dict(run=name, step=step, mse=mean, ci95=ci))
    rows.append(results.row("R-2d", f"{name} after adaptation", "mse", table[-1]["mse"], SCALE, table[-1]["ci95"]))
    rows.append(results.row("R-2d", f"{name} before adaptation", "mse", table[-P.eval_steps - 1]["mse"], SCALE,
                            table[-P.eval_steps - 1]["ci95"]))
mean, ci = evaluation.mean_ci95(zero)
rows.append(results.row("R-2d", "zero prediction", "mse", mean, SCALE, ci))
final = {name: torch.stack([curves[name, seed][:, -1] for seed in P.seeds]) for name in OPTIMIZERS}  # [seeds, tasks]
d = evaluation.paired_over_seeds(final["adam"], final["sgd"])
rows.append(results.row("R-2d", "adam - sgd", "difference (mse, paired)", d["difference"], SCALE, d["ci95"]))
rows.append(results.row("R-2d", "adam - sgd", "difference (mse, over seeds)", d["difference"], SCALE,
                        d["ci95 over seeds"]))
results.write(rows, STAGE)
report.save_table(table, f"reports/{STAGE}/test_curves.csv")
report.save_metrics({f"{name}_mse": final[name].mean().item() for name in OPTIMIZERS}
                    | {"zero_mse": zero.mean().item(), "adam_minus_sgd": d["difference"]},
                    f"reports/metrics/{STAGE}.json")

fig, ax = plt.subplots(figsize=(5, 3.4))
for name, part in pd.DataFrame(table).groupby("run", sort=False):
    ax.errorbar(part.step, part.mse, yerr=part.ci95, marker="o", ms=3, capsize=2, label=f"inner {name}")
ax.axhline(zero.mean().item(), color="grey", ls=":", label="predicting 0")
ax.set(xlabel="test-time steps", ylabel=f"MSE over {N_POINTS} points", yscale="log")
ax.legend(fontsize=7)
fig.suptitle(f"R-2d test (mean over seeds, 95% CI over test surfaces). {SCALE}", fontsize=6)
report.save_figure(fig, f"reports/{STAGE}/test_curves.png")
pd.DataFrame(rows)[["setting", "metric", "value", "ci95"]]

# %% [markdown]
# ## One test surface: the truth, and each optimiser's initialisation before and after adaptation (seed 0 of the list)

# %%
seed = P.seeds[0]
panels = [("truth", test_y[0])]
for name, optimizer in OPTIMIZERS.items():
    params = trained[name, seed]["params"]
    adapted, _ = core.optimize(net, params, test_x[0], test_y[0], fit[0].expand(P.eval_steps, -1), optimizer)
    with torch.no_grad():
        panels += [(f"{name}: initialisation", models.forward(net, params, test_x[0])),
                   (f"{name}: after {P.eval_steps} steps", models.forward(net, adapted, test_x[0]))]
fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8))
low, high = test_y[0].min().item(), test_y[0].max().item()
for ax, (title, z) in zip(axes, panels):
    ax.imshow(z.reshape(P.side, P.side).T, origin="lower", extent=[*P.x_range, *P.x_range], vmin=low, vmax=high,
              cmap="viridis")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
xy = test_x[0, fit[0]]
axes[0].scatter(xy[:, 0], xy[:, 1], s=6, c="r", label="fit points")
axes[0].legend(fontsize=6, loc="lower left")
fig.suptitle(f"R-2d (review Figs. 6, 8): amplitude {test_task[0, 0]:.2f}, phase {test_task[0, 1]:.2f}", fontsize=8)
report.save_figure(fig, f"reports/{STAGE}/surfaces.png")

# %% [markdown]
# ## What the numbers say

# %%
word = lambda name: f"{final[name].mean():.3f}"  # noqa: E731
beyond = abs(d["difference"]) > d["ci95"]
print(f"After {P.eval_steps} test steps on {P.support_points} points (mean over {len(P.seeds)} seeds, {P.n_test_tasks} "
      f"test surfaces): inner SGD MSE {word('sgd')}, inner Adam {word('adam')}; predicting 0 gives "
      f"{zero.mean():.3f}. Adam - SGD = {d['difference']:+.3f} (paired over the surfaces ± {d['ci95']:.3f}, "
      f"{'beyond' if beyond else 'within'} the tasks' noise; over seeds ± {d['ci95 over seeds']:.3f}). The review: "
      "SGD fails to fit, Adam fits in about 2900 meta-iterations. Verdict with its interval: reports/claims.md.")
