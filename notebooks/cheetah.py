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
# # M-cheetah and A-anil-rl (HalfCheetah): meta-reinforcement learning on a simulated robot
#
# MAML paper (Finn et al. 2017), section 5.3, Appendix A.2, Figure 5 and Table 5 (Appendix
# C.2); "Rapid Learning or Feature Reuse?" (Raghu et al. 2019), Table 2 and Appendix C.4.
# The planar cheetah of MuJoCo (gymnasium's `half_cheetah.xml`, 6 actuated joints, 0.05 s
# per step) must either run at a **goal velocity** drawn uniformly from [0, 2] (reward
# `-|v - goal| - 0.05 |a|^2`) or run **forward or backward**, each with probability 1/2
# (reward `direction * v - 0.05 |a|^2`), for H = 200 steps; `v` is its forward velocity. It
# observes its joint positions (less the x position), its joint velocities and its torso's
# position (20 numbers), as in the MAML authors' rllab environments and pytorch-maml-rl (the
# ANIL authors' code); its actions are clipped to [-1, 1] (`metalearn.cheetah` says where the
# two codes differ and what we follow).
#
# The policy is an MLP 100-100 (ReLU) giving the mean of a Gaussian with a learned
# state-independent log-std. **MAML** adapts it with one vanilla policy-gradient (REINFORCE)
# step of size 0.1 on the task's rollouts, with the rllab linear feature baseline fitted per
# task; the meta-update is TRPO on the post-adaptation surrogate, differentiated through the
# inner step. **ANIL** adapts only the head (last layer and log-std), the same code with the
# `head` mask. The same code as the 2D navigation stage (`metalearn.rl`): only the
# environment differs. A **random** initialisation fine-tuned with a constant step is the
# reference that needs no training (the papers' pretrained and oracle policies are not
# trained here). At test time every policy takes 0..3 policy-gradient steps (0.1, then 0.05,
# as Appendix A.2), each on fresh rollouts of fixed test tasks.
#
# The defaults below are smoke-sized; `params.yaml` holds the study's (reduced) scale and
# `params-paper.yaml` the papers': meta-batch 40 tasks, 20 rollouts per step, up to 500 TRPO
# meta-iterations with the best kept.

# %% tags=["parameters"]
seed = 0                  # seed of the policy initialisation, of every task draw and of every rollout
threads = 1               # torch CPU threads (MuJoCo steps one episode at a time on one thread)
tasks = ["direction", "velocity"]  # task families: forward/backward, goal velocity
hidden = [100, 100]       # hidden layers of the policy MLP (papers: 100-100, ReLU)
horizon = 20              # episode length H (papers: 200)
gamma = 0.99              # discount of the returns behind the baseline and the advantages
algorithms = ["maml", "anil"]  # meta-trained algorithms (maml, fomaml, anil); maml and anil are needed
meta_batch = 2            # tasks per meta-iteration (papers: 40)
trajectories = 3          # rollouts per task for the inner step and for the meta-update (papers: 20)
inner_lr = 0.1            # inner policy-gradient step size alpha (papers: 0.1)
max_kl = 0.01             # TRPO's bound on the mean KL (papers' code: 0.01)
cg_iters = 10             # conjugate-gradient iterations of TRPO
cg_damping = 0.00001      # damping added to the KL's Hessian
ls_steps = 15             # TRPO line-search backtracks at most
ls_ratio = 0.8            # TRPO line-search shrink factor
hvp_tasks = 1             # tasks of the meta-batch whose KL gives TRPO's curvature (papers: all)
iterations = 1            # TRPO meta-iterations per algorithm and task family, the best kept (papers: up to 500)
test_lrs = [0.1, 0.05]    # test-time step sizes of MAML/ANIL: the first step, then every later one (paper: 0.1, 0.05)
test_steps = 3            # policy-gradient steps at test time (paper: 3)
test_trajectories = 2     # fresh rollouts per task at each test step (paper: 20)
random_lr = 0.1           # constant test step size of the random initialisation (paper: tuned by hand)
n_test_tasks = 2          # fixed test tasks per family (direction: alternately forward and backward)
checkpoint_every = 5      # iterations between checkpoints (a killed run resumes from the last)

# %%
from metalearn.params import check, Choice, Float, Int, List, require

P = check(globals(), seed=Int(min=0), threads=Int(min=1), tasks=List(Choice("direction", "velocity"), unique=True),
          hidden=List(Int(min=1)), horizon=Int(min=1), gamma=Float(min=0, max=1),
          algorithms=List(Choice("maml", "fomaml", "anil"), unique=True), meta_batch=Int(min=1),
          trajectories=Int(min=2), inner_lr=Float(min=0, strict=True), max_kl=Float(min=0, strict=True),
          cg_iters=Int(min=1), cg_damping=Float(min=0), ls_steps=Int(min=1), ls_ratio=Float(min=0, max=1, strict=True),
          hvp_tasks=Int(min=1), iterations=Int(min=1), test_lrs=List(Float(min=0, strict=True)),
          test_steps=Int(min=1), test_trajectories=Int(min=2), random_lr=Float(min=0, strict=True),
          n_test_tasks=Int(min=2), checkpoint_every=Int(min=1))
require({"maml", "anil"} <= set(P.algorithms), "algorithms", "must include maml and anil (A-anil-rl compares them)")
require(P.hvp_tasks <= P.meta_batch, "hvp_tasks", "must be at most meta_batch")

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown

from metalearn import cheetah, core, evaluation, models, papers, paths, report, results, rl

torch.set_num_threads(P.threads)
STAGE = "cheetah"
ALGORITHMS = ("maml", "fomaml", "anil")
envs = {family: cheetah.HalfCheetah(family, horizon=P.horizon) for family in P.tasks}
trpo = rl.TRPO(max_kl=P.max_kl, cg_iters=P.cg_iters, damping=P.cg_damping, ls_steps=P.ls_steps, ls_ratio=P.ls_ratio)
# what a checkpoint is keyed by (with the run's name, which holds the family and the algorithm)
EVALUATION_ONLY = ("threads", "checkpoint_every", "tasks", "algorithms", "test_lrs", "test_steps",
                   "test_trajectories", "random_lr", "n_test_tasks")
config = {k: v for k, v in vars(P).items() if k not in EVALUATION_ONLY}
SCALE = (f"{P.iterations} TRPO meta-iterations (best kept) x {P.meta_batch} tasks x {P.trajectories} rollouts, "
         f"H={P.horizon}; test {P.n_test_tasks} tasks x {P.test_trajectories} rollouts per step; 1 seed; "
         f"{report.hardware()}")
print(SCALE)

styles = {"maml": dict(color="C2", marker="^"), "fomaml": dict(color="C1", marker="v"),
          "anil": dict(color="C4", marker="o"), "random": dict(color="k", marker="P", ls=":")}


def policy():
    """Every policy starts from the same seeded initialisation."""
    return models.init_model(lambda: rl.gaussian_policy(cheetah.HalfCheetah.obs_dim, cheetah.HalfCheetah.action_dim,
                                                        P.hidden), P.seed)

# %% [markdown]
# ## Training: MAML and ANIL with TRPO meta-updates, on each task family
#
# Each run keeps the parameters with the best training return (after adaptation, on the
# iteration's fresh tasks, measured before that iteration's update), as the papers select
# the best of their iterations.

# %%
trained, histories, seconds = {}, [], {}
for family in P.tasks:
    for name in P.algorithms:
        model = policy()
        inner = core.inner_loop(name, models.params_of(model), steps=1, lr=P.inner_lr)
        setting = rl.MetaRL(envs[family], inner, meta_batch=P.meta_batch, trajectories=P.trajectories, gamma=P.gamma,
                            trpo=trpo, hvp_tasks=P.hvp_tasks)
        run = f"{family}-{name}"
        start = time.perf_counter()
        out = rl.train(f"{STAGE}-{run}", config, model, setting, P.iterations,
                       seed=P.seed + 1 + 10 * cheetah.TASKS.index(family) + ALGORITHMS.index(name),
                       checkpoint_every=P.checkpoint_every)
        seconds[run] = (time.perf_counter() - start) / max(1, P.iterations - out["resumed_from"])
        trained[run] = out
        histories.append(pd.DataFrame(out["history"]).assign(family=family, model=name))
        with paths.atomic_write(paths.output(f"data/models/{STAGE}/{run}.pt"), "wb") as f:
            torch.save({"best": out["best"], "last": out["params"], "best_iteration": out["best_iteration"]}, f)
        print(f"{run}: best training return {max(h['return'] for h in out['history']):.1f} at iteration "
              f"{out['best_iteration'] + 1} of {P.iterations}; {seconds[run]:.2f} s per iteration run now"
              + (f" (resumed at {out['resumed_from']})" if out["resumed_from"] else ""))

history = pd.concat(histories)
wide = history.assign(run=history.family + "-" + history.model).pivot(index="iteration", columns="run",
                                                                       values="return").reset_index()
report.save_table(wide.to_dict("records"), f"reports/plots/{STAGE}_training.csv")
fig, axes = plt.subplots(1, len(P.tasks), figsize=(5.5 * len(P.tasks), 3.6), squeeze=False)
for ax, family in zip(axes[0], P.tasks):
    for name, h in history[history.family == family].groupby("model", sort=False):
        ax.plot(h.iteration, h["return"], color=styles[name]["color"], label=f"{name} (after adaptation)")
        ax.plot(h.iteration, h.return_pre, color=styles[name]["color"], ls=":", label=f"{name} (before adaptation)")
    ax.set(xlabel="TRPO meta-iteration", ylabel="average return (training tasks)", title=f"half-cheetah, {family}")
    ax.legend(fontsize=7)
report.save_figure(fig, f"reports/{STAGE}/training.png")

# %% [markdown]
# ## Test time: average return after 0..3 policy-gradient steps on fixed test tasks
#
# The test tasks are fixed per family (goal velocities: one seeded draw; directions:
# alternately forward and backward, so both are equally represented) and the same for every
# method, as is the random-number stream of the rollouts. MAML and ANIL (head only) step
# with `test_lrs` (0.1, then 0.05); the random initialisation takes constant steps of
# `random_lr` on all its parameters. Each step samples `test_trajectories` fresh rollouts and
# adapts on them; the return of a task is the mean over those rollouts, and the CI is over
# test tasks.

# %%
test_goals = {}
for family, env in envs.items():
    if family == "direction":
        test_goals[family] = torch.tensor([[1.0 if i % 2 == 0 else -1.0] for i in range(P.n_test_tasks)])
    else:
        test_goals[family] = env.sample_goals(P.n_test_tasks, torch.Generator().manual_seed(P.seed + 10_000))

starts = {"random": models.params_of(policy(), False)}
curves, episodes, rows = {}, {}, []
for family, env in envs.items():
    for name in [*P.algorithms, "random"]:
        params = starts["random"] if name == "random" else trained[f"{family}-{name}"]["best"]
        adapt = core.inner_loop(name, params, 1, P.test_lrs[0]).adapt if name in P.algorithms else None
        lrs = tuple(P.test_lrs) if name in P.algorithms else (P.random_lr,)
        curve, eps = rl.evaluate(env, policy(), params, test_goals[family], P.test_steps, lrs, P.test_trajectories,
                                 torch.Generator().manual_seed(P.seed + 20_000), adapt=adapt, gamma=P.gamma)
        curves[family, name] = curve
        episodes[family, name] = (eps[0], eps[-1])  # before adaptation and after the last step
        for step in range(P.test_steps + 1):
            mean, ci = evaluation.mean_ci95(curve[:, step])
            rows.append(dict(family=family, method=name, step=step, average_return=mean, ci95=ci))
table = pd.DataFrame(rows)
report.save_table(table.to_dict("records"), f"reports/{STAGE}/test_returns.csv")
table.pivot(index=["family", "method"], columns="step", values="average_return").round(1)

# %% [markdown]
# ## Return against the number of gradient steps (MAML paper Fig. 5), with the papers' numbers
#
# Lines: ours, with 95% CIs over the test tasks. Hollow markers: the papers' numbers, where
# they give them as numbers — the MAML paper's Table 5 (MAML, forward/backward, 0..3 steps)
# and the ANIL paper's Table 2 (MAML and ANIL after one step, mean of three seeds, 500
# iterations). Figure 5's curves for goal velocity are only a picture, not marked.

# %%
paper_marks = {
    "M-cheetah": dict(marker="s", ms=9, mfc="none", ls="none"),
    "A-anil-rl": dict(marker="D", ms=9, mfc="none", ls="none"),
}
fig, axes = plt.subplots(1, len(P.tasks), figsize=(5.5 * len(P.tasks), 4), squeeze=False)
for ax, family in zip(axes[0], P.tasks):
    for name, t in table[table.family == family].groupby("method", sort=False):
        label = f"{name} (step {P.random_lr:g})" if name == "random" else name
        ax.plot(t.step, t.average_return, label=label, **styles[name])
        ax.fill_between(t.step, t.average_return - t.ci95, t.average_return + t.ci95, color=styles[name]["color"],
                        alpha=0.15)
    for experiment, style in paper_marks.items():
        for name in ("maml", "anil"):
            points = [(s, papers.paper_value(experiment, f"cheetah-{family} {name} steps={s}", "return"))
                      for s in range(P.test_steps + 1)]
            points = [(s, v) for s, v in points if v is not None]
            if points:
                source = "MAML paper Table 5" if experiment == "M-cheetah" else "ANIL paper Table 2"
                ax.plot(*zip(*points), color=styles[name]["color"], label=f"{name}, {source}", **style)
    title = "forward/backward" if family == "direction" else "goal velocity"
    ax.set(xlabel="number of gradient steps", ylabel="average return (95% CI over test tasks)",
           xticks=range(P.test_steps + 1), title=f"half-cheetah, {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.text(0, -0.03, SCALE, fontsize=6)
report.save_figure(fig, f"reports/{STAGE}/returns_vs_steps.png")

# %% [markdown]
# ## What the cheetah does: its forward velocity against the task's goal
#
# Each point is one test task: the cheetah's forward velocity (the root's x velocity,
# averaged over the episode and the rollouts) before adaptation (hollow) and after the last
# test step (filled). Adaptation works where the filled points follow the goal: the dashed
# line velocity = goal, or for directions the sign (above the dashed zero line for forward
# tasks, below it for backward ones).

# %%
fig, axes = plt.subplots(1, len(P.tasks), figsize=(5.5 * len(P.tasks), 3.8), squeeze=False)
for ax, family in zip(axes[0], P.tasks):
    goals = test_goals[family][:, 0]
    shown = [*P.algorithms, "random"]
    for k, name in enumerate(shown):
        offset = (k - (len(shown) - 1) / 2) * 0.06
        for ep, filled in zip(episodes[family, name], (False, True)):
            velocity = envs[family].forward_velocity(ep.obs).mean((1, 2))
            ax.plot(goals + offset, velocity, ls="none", marker=styles[name]["marker"], color=styles[name]["color"],
                    mfc=styles[name]["color"] if filled else "none",
                    label=f"{name}, {'after ' + str(P.test_steps) + ' steps' if filled else 'before adaptation'}")
    if family == "direction":
        ax.axhline(0, color="k", ls="--", lw=0.8)  # forward tasks should end above it, backward ones below
    else:
        ax.plot([0, 2], [0, 2], "k--", lw=0.8)
    ax.set(xlabel="goal direction" if family == "direction" else "goal velocity",
           ylabel="mean forward velocity", title=f"half-cheetah, {family}")
    ax.legend(fontsize=6)
report.save_figure(fig, f"reports/{STAGE}/velocity_vs_goal.png")

# %% [markdown]
# ## Results beside the papers'
#
# M-cheetah: MAML and the random initialisation after 0..3 steps on both families (the MAML
# paper gives MAML's forward/backward numbers in Table 5); A-anil-rl: MAML and ANIL (the ANIL
# paper's Table 2 gives both after one step, over three seeds).

# %%
out = []
for r in table.itertuples():
    setting = f"cheetah-{r.family} {r.method} steps={r.step}"
    if r.method in ("maml", "fomaml", "random"):
        out.append(results.row("M-cheetah", setting, "return", r.average_return, SCALE, r.ci95))
    if r.method in ("maml", "anil"):
        out.append(results.row("A-anil-rl", setting, "return", r.average_return, SCALE, r.ci95))
results.write(out, STAGE)
pd.DataFrame(out)[["experiment", "setting", "value", "ci95", "paper"]]

# %%
def at(family, method, step):
    cell = table[(table.family == family) & (table.method == method) & (table.step == step)]
    return float(cell.average_return.iloc[0])


metrics = {f"{f}_{m}_step{s}": at(f, m, s) for f, m in curves for s in range(P.test_steps + 1)}
metrics.update({f"{run.replace('-', '_')}_best_iteration": t["best_iteration"] + 1 for run, t in trained.items()})
metrics.update({f"{run.replace('-', '_')}_seconds_per_iteration": s for run, s in seconds.items()})
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")


def verdict(family, a, b, step_a, step_b=None):
    """Paired comparison over the same test tasks: a after ``step_a`` steps minus b after ``step_b``."""
    step_b = step_a if step_b is None else step_b
    diff, ci = evaluation.mean_ci95(curves[family, a][:, step_a] - curves[family, b][:, step_b])
    left, right = (f"{m} after {k} step{'' if k == 1 else 's'}" for m, k in ((a, step_a), (b, step_b)))
    if abs(diff) <= ci:
        return f"{left} and {right} are not distinguishable ({diff:+.1f} +- {ci:.1f})"
    return f"{left} is {'better' if diff > 0 else 'worse'} than {right} ({diff:+.1f} +- {ci:.1f})"


def curve_text(family, method):
    return " -> ".join(f"{at(family, method, s):.1f}" for s in range(P.test_steps + 1))


lines = []
for family in P.tasks:
    paper = {m: papers.paper_value("A-anil-rl", f"cheetah-{family} {m} steps=1", "return") for m in ("maml", "anil")}
    lines += [f"**{family}** (ANIL paper after one step: MAML {paper['maml']}, ANIL {paper['anil']})", "",
              f"- ANIL vs MAML: {verdict(family, 'anil', 'maml', 1)}.",
              f"- does one step help MAML? {verdict(family, 'maml', 'maml', 1, 0)}.",
              f"- MAML vs the random initialisation: {verdict(family, 'maml', 'random', 1)}; after {P.test_steps} "
              f"steps: {verdict(family, 'maml', 'random', P.test_steps)}.",
              f"- after 0..{P.test_steps} steps: MAML {curve_text(family, 'maml')}; ANIL {curve_text(family, 'anil')}; "
              f"random {curve_text(family, 'random')}.", ""]
    unchanged = [name for name in P.algorithms if trained[f"{family}-{name}"]["best_iteration"] == 0]
    if unchanged:
        lines[-1:-1] = [f"- {', '.join(unchanged)}: the best training return came before the first update, so the "
                        "kept policy is the random initialisation itself (no meta-training took effect)."]
Markdown(f"""### What the numbers say ({P.n_test_tasks} test tasks per family, paired 95% CIs)

{chr(10).join(lines)}
Scale: {SCALE}.""")

# %% [markdown]
# ## What these numbers do and do not show

# %%
PAPER_ROLLOUTS = 500 * 40 * 20  # papers: up to 500 TRPO iterations x meta-batch 40 x 20 rollouts per task
ratio = PAPER_ROLLOUTS / (P.iterations * P.meta_batch * P.trajectories)
if ratio > 1.5:
    extent = f"""**far below the papers'**: they meta-train for up to 500 TRPO iterations with a meta-batch of 40
tasks and 20 rollouts per task and step (the ANIL paper: three seeds each), {ratio:.0f} times as many
pre-adaptation training rollouts as this run's {P.iterations} iterations x {P.meta_batch} tasks x {P.trajectories}
rollouts{'' if P.horizon == 200 else f' (and its episodes last {P.horizon} steps, not 200)'}. The MAML and ANIL
policies here are therefore barely meta-trained, and their returns are not expected to come near the papers'
(MAML about 290-315 after one to three steps on forward/backward)."""
else:
    extent = "at the papers' scale (up to 500 TRPO iterations, meta-batch 40, 20 rollouts per task and step)."
Markdown(f"""This run's scale is {extent}

What it does show: the HalfCheetah environment (checked against gymnasium's own), the inner loop, TRPO
and the evaluation work end to end; whether this much meta-training already makes one test-time step
useful (MAML after one step against before it, and against a random initialisation taking the same
steps); and how MAML and ANIL compare at equal budgets. What it does **not** show: whether ANIL matches
MAML at convergence (the ANIL paper's claim, over three seeds), nor the size of the papers' gains; with
one seed it says nothing about the spread between seeds. The papers' scale is `params-paper.yaml`
(`make repro SCALE=paper`): from the seconds per meta-iteration printed above, with 8 times the rollouts
per iteration, a run of a day or more on one CPU thread.

Scale: {SCALE}.""")
