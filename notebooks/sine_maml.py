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
# # M-sine: MAML on sinusoid regression
#
# MAML paper (Finn et al. 2017), section 5.1, Figures 2, 3, 6 and Table 2 (Appendix C).
# Tasks: `y = a sin(x + p)`, a ~ U[0.1, 5], p ~ U[0, pi], x ~ U[-5, 5]; MLP 1-40-40-1.
# MAML (one inner step, alpha = 0.01, K = 10, Adam) is compared with a network
# **pretrained on all tasks** and fine-tuned with a step size tuned on validation tasks,
# an **oracle** that sees amplitude and phase, and the paper's **multi-task** baselines
# (independently trained regressors averaged in parameter space).
# The defaults below are smoke-sized; `params.yaml` holds the study's values.

# %% tags=["parameters"]
seed = 0                  # seed of the model initialisations and of every task draw
threads = 1               # torch CPU threads (tiny models run fastest on one)
hidden = [40, 40]         # hidden layer sizes of the MLP
meta_batch = 25           # tasks per meta-iteration (not stated in the paper; the authors' code uses 25)
k_train = 10              # support points per task in meta-training (and query points)
inner_steps = 1           # inner SGD steps in meta-training
inner_lr = 0.01           # inner step size alpha, also MAML's fine-tuning step at test time
meta_lr = 0.001           # Adam step size of MAML and of the pretrained and oracle baselines
iterations = 300          # meta-iterations, also the baselines' training steps (paper code: 70000)
finetune_lrs = [0.005, 0.01, 0.02, 0.05]  # candidate fine-tuning steps for the baselines, tuned on validation tasks
multitask_models = 10     # regressors averaged in parameter space (paper: 500)
multitask_steps = 100     # Adam steps each regressor trains on its own task (100 fresh points a step)
multitask_weights = [0.00001, 0.0001, 0.001]  # candidate weights of the l2 and reg-to-mean penalties
multitask_max_error = 0.02  # largest mean own-task MSE a penalty may leave (the paper's regressors: < 0.02)
multitask_pilot = 5       # regressors trained to choose the penalty
multitask_groups = 2      # reg-to-mean: regressors train in this many sequential groups
eval_shots = [5, 10, 20]  # K at test time
eval_steps = 10           # fine-tuning steps at test time
n_val_tasks = 50          # validation tasks for tuning the baselines' step size
n_test_tasks = 100        # test tasks per K
n_query = 100             # query points per test task
checkpoint_every = 500    # iterations between checkpoints (a killed run resumes from the last)

# %%
from metalearn.params import check, Int, Float, List, require

P = check(globals(), seed=Int(min=0), threads=Int(min=1), hidden=List(Int(min=1)),
          meta_batch=Int(min=1), k_train=Int(min=1), inner_steps=Int(min=0), inner_lr=Float(min=0, strict=True),
          meta_lr=Float(min=0, strict=True), iterations=Int(min=1), finetune_lrs=List(Float(min=0, strict=True)),
          multitask_models=Int(min=1), multitask_steps=Int(min=1), multitask_weights=List(Float(min=0)),
          multitask_max_error=Float(min=0, strict=True), multitask_pilot=Int(min=1),
          multitask_groups=Int(min=1), eval_shots=List(Int(min=1)), eval_steps=Int(min=1),
          n_val_tasks=Int(min=2), n_test_tasks=Int(min=2), n_query=Int(min=1), checkpoint_every=Int(min=1))
require(P.multitask_groups <= P.multitask_models, "multitask_groups", "must be at most multitask_models")

# %%
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch

from metalearn import core, evaluation, hardware, models, report, results, sine, tasks, training

torch.set_num_threads(P.threads)
STAGE, EXPERIMENT = "sine_maml", "M-sine"
family = tasks.SineFamily(amplitude=(0.1, 5.0), phase=(0.0, math.pi))
sizes = [1, *P.hidden, 1]
config = {k: v for k, v in vars(P).items() if k not in ("threads", "checkpoint_every")}
SCALE = (f"{P.iterations} iterations x {P.meta_batch} tasks; {P.n_test_tasks} test tasks x {P.n_query} points; "
         f"1 seed; sinusoids; {hardware.describe()}")
print(SCALE)

# %% [markdown]
# ## Training: MAML, pretrained on all tasks, oracle (and ANIL, read by the X-shift stage `shift_sine`)

# %%
def train(name, model, step, lr=P.meta_lr, seed_offset=0):
    """Train ``model`` (resumably), or take its weights from an earlier execution with the same
    settings (data/models/sine_maml/<name>.pt and .json)."""
    def fit():
        run = training.Run(f"{STAGE}-{name}", config, model, seed=P.seed + seed_offset,
                           optimizer=torch.optim.Adam(model.parameters(), lr=lr), checkpoint_every=P.checkpoint_every)
        training.cleanup_stale(f"{STAGE}-{name}", run.path)
        if run.resumed_from:
            print(f"{name}: resuming at iteration {run.resumed_from}")
        history = run.train(P.iterations, step, log_every=max(1, P.iterations // 100), desc=name)
        return model.state_dict(), {"history": history}

    state, record = training.reuse_or_train(f"data/models/{STAGE}/{name}", f"{STAGE}-{name}",
                                            {**config, "lr": lr, "seed": P.seed + seed_offset}, fit)
    model.load_state_dict(state)
    return model, pd.DataFrame(record["history"]).assign(model=name)


def meta_trained(algorithm):
    """MAML, or ANIL (only the head adapts in the inner loop; for X-shift), from the same
    initialisation on the same task stream."""
    inner = core.inner_loop(algorithm, models.params_of(models.mlp(sizes)), steps=P.inner_steps, lr=P.inner_lr)
    return train(algorithm, models.init_model(lambda: models.mlp(sizes), P.seed),
                 lambda run: training.maml_step(run, lambda g: family.batch(P.meta_batch, P.k_train, P.k_train, g),
                                                inner, path="vmap"))


maml, maml_hist = meta_trained("maml")
anil, anil_hist = meta_trained("anil")


pretrained, pre_hist = train(
    "pretrained", models.init_model(lambda: models.mlp(sizes), P.seed),
    lambda run: training.supervised_step(run, lambda g: sine.pooled_batch(family, P.meta_batch, P.k_train, g)),
    seed_offset=1)
oracle, oracle_hist = train(
    "oracle", models.init_model(lambda: models.mlp([3, *P.hidden, 1]), P.seed),
    lambda run: training.supervised_step(run, lambda g: sine.pooled_batch(family, P.meta_batch, P.k_train, g,
                                                                          oracle=True)), seed_offset=2)

history = pd.concat([maml_hist, anil_hist, pre_hist, oracle_hist])
wide = history.pivot(index="iteration", columns="model", values="loss").reset_index()
report.save_table(wide.to_dict("records"), f"reports/plots/{STAGE}_training.csv")
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, h in history.groupby("model"):
    ax.plot(h.iteration, h.loss, label=name)
ax.set(yscale="log", xlabel="iteration", ylabel="training loss (MSE)",
       title="M-sine training (MAML: query loss after adaptation)")
ax.legend()
report.save_figure(fig, f"reports/{STAGE}/training.png")

# %% [markdown]
# ## Multi-task baselines (Table 2): averaging independently trained regressors
#
# Each regressor starts from its own random initialisation and trains on its own task
# with fresh points every step; their parameters are averaged. Variants: no
# regularisation, l2 weight decay, and l2 towards the mean of the regressors trained
# so far (regressors train in sequential groups; the first group has no mean yet).
# The paper sets the penalty "as high as possible without significantly deterring
# performance" and reports its regressors' own-task error below 0.02: here the penalty is
# the largest of `multitask_weights` whose pilot regressors keep a mean own-task MSE of at
# most `multitask_max_error` (pilot for reg-to-mean: towards the unregularised average).

# %%
def multitask_baselines():
    """The three averaged regressors, their own-task errors and the penalties chosen (metalearn.sine)."""
    averaged, errors, chosen = sine.multitask_baselines(
        lambda: models.mlp(sizes), family, P.multitask_models, P.multitask_pilot, P.multitask_groups,
        P.multitask_steps, P.meta_lr, P.multitask_weights, P.multitask_max_error, P.seed)
    return {"averaged": averaged, "errors": errors}, {"chosen": chosen}


# trained once, then taken from data/models/sine_maml/multitask.pt by every later execution with these settings
state, record = training.reuse_or_train(f"data/models/{STAGE}/multitask", f"{STAGE}-multitask", config,
                                        multitask_baselines)
averaged, errors, chosen = state["averaged"], state["errors"], record["chosen"]
pd.DataFrame({v: {"penalty weight": chosen[v], "own-task MSE mean": errors[v].mean().item(),
                  "own-task MSE max": errors[v].max().item()} for v in averaged}).T

# %% [markdown]
# ## Test-time fine-tuning: MSE after 0..10 steps on K points
#
# Each step uses the same K points; MSE is measured on `n_query` fresh points per task.
# MAML fine-tunes with its training step alpha. The baselines' step is chosen from
# `finetune_lrs` on separate validation tasks (lowest mean MSE after `eval_steps` steps,
# for each K), as the paper's "automatically tuned step size". The oracle does not adapt.

# %%
def test_batch(k, n_tasks, offset):
    return family.batch(n_tasks, k, P.n_query, torch.Generator().manual_seed(P.seed + offset + k))


net = models.mlp(sizes)  # the architecture every 1-input method's parameters run through
methods = {"maml": models.params_of(maml, False), "pretrained": models.params_of(pretrained, False),
           **{f"multitask-{v}": p for v, p in averaged.items()}}
parts = []
for k in P.eval_shots:
    val, test = test_batch(k, P.n_val_tasks, 1000), test_batch(k, P.n_test_tasks, 2000)
    parts.append(sine.finetune_table(net, methods, val, test, P.eval_steps, P.finetune_lrs, fixed={"maml": P.inner_lr})
                 .assign(K=k))
    mean, ci = evaluation.mean_ci95(sine.oracle_error(oracle, test))
    parts.append(pd.DataFrame([dict(method="oracle", K=k, step=s, mse=mean, ci95=ci, lr=0.0)
                               for s in range(P.eval_steps + 1)]))

table = pd.concat(parts, ignore_index=True)[["method", "K", "step", "mse", "ci95", "lr"]]
tuned = {(r.method, r.K): float(r.lr) for r in table[(table.step == 0) & (table.method != "oracle")].itertuples()}
report.save_table(table.to_dict("records"), f"reports/{STAGE}/finetune.csv")
print("tuned fine-tuning steps:", {f"{n} K={k}": lr for (n, k), lr in tuned.items() if n != "maml"})

# %%
styles = {"maml": dict(color="C2", marker="^"), "pretrained": dict(color="C0", marker="s", ls="--"),
          "oracle": dict(color="C3", marker="+", ls=":"), "multitask-noreg": dict(color="C7", ls="-."),
          "multitask-l2": dict(color="C8", ls="-."), "multitask-regmean": dict(color="C5", ls="-.")}
fig, axes = plt.subplots(1, len(P.eval_shots), figsize=(4.2 * len(P.eval_shots), 3.6), sharey=True)
for ax, k in zip(axes, P.eval_shots):
    for name, t in table[table.K == k].groupby("method", sort=False):
        label = name if name in ("maml", "oracle") else f"{name} (step {tuned.get((name, k), 0):g})"
        ax.plot(t.step, t.mse, label=label, **styles[name])
        ax.fill_between(t.step, t.mse - t.ci95, t.mse + t.ci95, color=styles[name]["color"], alpha=0.15)
    ax.set(title=f"K = {k}", xlabel="gradient steps", yscale="log")
axes[0].set_ylabel("mean squared error (95% CI)")
axes[-1].legend(fontsize=7)
fig.suptitle(f"M-sine: fine-tuning curves (Figures 3, 6). {SCALE}", fontsize=8)
report.save_figure(fig, f"reports/{STAGE}/finetune_curves.png")

# %% [markdown]
# ## Qualitative fits (Figure 2): one test sinusoid, K = 5 and K = 10

# %%
x_plot = torch.linspace(-5, 5, 200)[:, None]
fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True, sharey=True)
for row, k in enumerate([5, 10]):
    task = test_batch(k, 1, 3000)
    truth = family(task.task, x_plot[None])[0]
    for col, name in enumerate(["maml", "pretrained"]):
        lr = P.inner_lr if name == "maml" else tuned.get((name, k), P.finetune_lrs[0])
        inner = core.InnerLoop(steps=10, lr=lr)
        preds = evaluation.predictions_after(net, methods[name], task.xs[0], task.ys[0], x_plot, inner, [0, 1, 10])
        ax = axes[row, col]
        ax.plot(x_plot, truth, "r", label="ground truth")
        for steps, style in [(0, ":"), (1, "--"), (10, "-")]:
            ax.plot(x_plot, preds[steps], style, color="C2" if name == "maml" else "C0",
                    label=f"{steps} steps" if steps else "pre-update")
        ax.plot(task.xs[0], task.ys[0], "^", color="purple", label="used for grad")
        ax.set_title(f"{name}, K={k}, step size {lr:g}")
axes[0, 0].legend(fontsize=7)
report.save_figure(fig, f"reports/{STAGE}/qualitative.png")

# %% [markdown]
# ## Results beside the paper's (Table 2 gives 5-shot MSE after 1, 5 and 10 steps)

# %%
out = []
for r in table[table.step.isin([0, 1, 5, 10])].itertuples():
    out.append(results.row(EXPERIMENT, f"{r.method} K={r.K} steps={r.step}", "mse", r.mse, SCALE, r.ci95))
results.write(out, STAGE)
shown = pd.DataFrame(out)
shown[shown.setting.str.contains("K=5 ")][["setting", "value", "ci95", "paper"]]

# %%
def mse_at(method, k, step):
    return float(table[(table.method == method) & (table.K == k) & (table.step == step)].mse.iloc[0])

headline = {f"{m}_K{k}_step{s}": mse_at(m, k, s) for m in ["maml", "pretrained", "oracle"]
            for k in P.eval_shots for s in [1, 10]}
report.save_metrics(headline, f"reports/metrics/{STAGE}.json")
print(f"MAML beats the pretrained baseline at K=5 after 1 step: {mse_at('maml', 5, 1) < mse_at('pretrained', 5, 1)}"
      if 5 in P.eval_shots else "")
