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
# environment differs. Baselines as in the MAML paper's Figure 5: a policy **pretrained** with
# TRPO on all tasks of the family jointly and a **random** initialisation, both fine-tuned at
# test time with a constant step, and an **oracle** that sees the task's goal (TRPO on all
# tasks, no adaptation). At test time every policy takes 0..3 policy-gradient steps (0.1,
# then 0.05, as Appendix A.2), each on fresh rollouts of fixed test tasks.
#
# The defaults below are smoke-sized; `params.yaml` holds the study's (reduced) scale and
# `params-paper.yaml` the papers': meta-batch 40 tasks, 20 rollouts per step, up to 500 TRPO
# meta-iterations with the best kept.

# %% tags=["parameters"]
seeds = [0, 1]            # training seeds: each trains every run from its own initialisation and tasks (ANIL paper: 3)
test_seed = 0             # seed of the test tasks and of their rollouts (the same for every seed)
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
baselines = ["pretrained", "oracle"]  # trained baselines (MAML paper Fig. 5): pretrained on all tasks, oracle
baseline_iterations = 1   # TRPO iterations of the pretrained and oracle policies, the best kept
pretrained_lr = 0.1       # constant test step size of the pretrained policy (paper: tuned by hand)
n_test_tasks = 2          # fixed test tasks per family (direction: alternately forward and backward)
checkpoint_every = 5      # iterations between checkpoints (a killed run resumes from the last)

# %%
from metalearn.params import check, Choice, Float, Int, List, require

P = check(globals(), seeds=List(Int(min=0), unique=True), test_seed=Int(min=0), threads=Int(min=1), tasks=List(Choice("direction", "velocity"), unique=True),
          hidden=List(Int(min=1)), horizon=Int(min=1), gamma=Float(min=0, max=1),
          algorithms=List(Choice("maml", "fomaml", "anil"), unique=True), meta_batch=Int(min=1),
          trajectories=Int(min=2), inner_lr=Float(min=0, strict=True), max_kl=Float(min=0, strict=True),
          cg_iters=Int(min=1), cg_damping=Float(min=0), ls_steps=Int(min=1), ls_ratio=Float(min=0, max=1, strict=True),
          hvp_tasks=Int(min=1), iterations=Int(min=1), test_lrs=List(Float(min=0, strict=True)),
          test_steps=Int(min=1), test_trajectories=Int(min=2), random_lr=Float(min=0, strict=True),
          baselines=List(Choice("pretrained", "oracle"), min_len=0, unique=True), baseline_iterations=Int(min=1),
          pretrained_lr=Float(min=0, strict=True),
          n_test_tasks=Int(min=2), checkpoint_every=Int(min=1))
require({"maml", "anil"} <= set(P.algorithms), "algorithms", "must include maml and anil (A-anil-rl compares them)")
require(P.hvp_tasks <= P.meta_batch, "hvp_tasks", "must be at most meta_batch")
require(len(P.seeds) >= 1, "seeds", "needs at least one seed")

# %%
import functools
import itertools

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown
from tqdm import tqdm  # not tqdm.auto: its widget warning prints the absolute path of the venv

from metalearn import cheetah, hardware, models, papers, report, results, rl, rlseeds

torch.set_num_threads(P.threads)
STAGE = "cheetah"
ALGORITHMS = ("maml", "fomaml", "anil", "pretrained", "oracle")  # fixes each run's training seed
envs = {family: cheetah.HalfCheetah(family, horizon=P.horizon) for family in P.tasks}
trpo = rl.TRPO(max_kl=P.max_kl, cg_iters=P.cg_iters, damping=P.cg_damping, ls_steps=P.ls_steps, ls_ratio=P.ls_ratio)
# what a checkpoint is keyed by (with the run's name, which holds the family and the algorithm)
EVALUATION_ONLY = ("seeds", "test_seed", "threads", "checkpoint_every", "tasks", "algorithms", "test_lrs",
                   "test_steps", "test_trajectories", "random_lr", "n_test_tasks", "baselines",
                   "baseline_iterations", "pretrained_lr")
config = {k: v for k, v in vars(P).items() if k not in EVALUATION_ONLY}  # and the run's seed
SEEDS = f"{len(P.seeds)} seed{'s' if len(P.seeds) > 1 else ''} ({', '.join(map(str, P.seeds))})"
SCALE = (f"{P.iterations} TRPO meta-iterations (best kept) x {P.meta_batch} tasks x {P.trajectories} rollouts, "
         f"H={P.horizon}" + (f"; {'/'.join(P.baselines)} {P.baseline_iterations} TRPO iterations" if P.baselines else "")
         + f"; test {P.n_test_tasks} tasks x {P.test_trajectories} rollouts per step; {SEEDS}; gymnasium's MuJoCo "
         f"HalfCheetah ({', '.join(P.tasks)}: goal velocity uniform in [0, 2], direction forward or backward); "
         f"{hardware.describe()}")
print(SCALE)

styles = {"maml": dict(color="C2", marker="^"), "fomaml": dict(color="C1", marker="v"),
          "anil": dict(color="C4", marker="o"), "random": dict(color="k", marker="P", ls=":"),
          "pretrained": dict(color="C0", marker="s", ls="--"), "oracle": dict(color="C3", marker="+", ls="--")}
# policy(seed, oracle=False): a seed's initialisation (every family's policy has the same sizes)
policy = functools.partial(rl.policy_for, cheetah.HalfCheetah, P.hidden)

# %% [markdown]
# ## Training: MAML and ANIL with TRPO meta-updates, and the baselines, on each task family
#
# Every seed trains every run from its own initialisation, on its own stream of tasks and
# rollouts. Each run keeps the parameters with the best training return (for MAML and ANIL
# after adaptation, on the iteration's fresh tasks, measured before that iteration's update;
# for the baselines the return itself), as the papers select the best of their iterations.

# %%
SETTINGS = dict(meta_batch=P.meta_batch, trajectories=P.trajectories, gamma=P.gamma, trpo=trpo, hvp_tasks=P.hvp_tasks)
trained, histories = {}, []
for seed in P.seeds:
    for family in P.tasks:
        for name in [*P.algorithms, *P.baselines]:
            model = policy(seed, oracle=name == "oracle")
            meta = name in P.algorithms
            setting = rl.method_setting(name, envs[family], model, P.inner_lr, **SETTINGS)
            run = f"{family}-{name}-seed{seed}"
            key = {**config, "seed": seed} if meta else {**config, "seed": seed, "iterations": P.baseline_iterations}
            out = rl.train(f"{STAGE}-{run}", key, model, setting, P.iterations if meta else P.baseline_iterations,
                           seed=seed + 1 + 10 * cheetah.TASKS.index(family) + ALGORITHMS.index(name),
                           checkpoint_every=P.checkpoint_every, record=f"data/models/{STAGE}/{run}")
            trained[seed, family, name] = out
            histories.append(pd.DataFrame(out["history"]).assign(seed=seed, family=family, model=name))
            print(rl.summary(run, out))

history = pd.concat(histories)
wide = history.assign(run=history.family + "-" + history.model + "-seed" + history.seed.astype(str)).pivot(
    index="iteration", columns="run", values="return").reset_index()
report.save_table(wide.to_dict("records"), f"reports/plots/{STAGE}_training.csv")
fig, axes = plt.subplots(1, len(P.tasks), figsize=(5.5 * len(P.tasks), 3.6), squeeze=False)
for ax, family in zip(axes[0], P.tasks):
    report.plot_returns(ax, history[history.family == family], P.algorithms, styles, P.seeds[0])
    ax.set(xlabel="TRPO meta-iteration", ylabel="average return (training tasks)",
           title=f"half-cheetah, {family}: one line per seed")
    ax.legend(fontsize=7)
report.save_figure(fig, f"reports/{STAGE}/training.png")

# %% [markdown]
# ## Test time: average return after 0..3 policy-gradient steps on fixed test tasks
#
# The test tasks are fixed per family (goal velocities: one seeded draw; directions:
# alternately forward and backward, so both are equally represented) and the same for every
# method, as is the random-number stream of the rollouts. MAML and ANIL (head only) step
# with `test_lrs` (0.1, then 0.05); the pretrained policy and the random initialisation (each
# seed's) take constant steps of `pretrained_lr` and `random_lr` on all their parameters; the
# oracle is measured without adaptation. Each step samples
# `test_trajectories` fresh rollouts and adapts on them; the return of a task is the mean over
# those rollouts. Over seeds: each task's return is averaged over the seeds, and the CI is over
# test tasks; the spread between seeds is their means' standard deviation.

# %%
test_goals = {}
for family, env in envs.items():
    if family == "direction":
        test_goals[family] = torch.tensor([[1.0 if i % 2 == 0 else -1.0] for i in range(P.n_test_tasks)])
    else:
        test_goals[family] = env.sample_goals(P.n_test_tasks, torch.Generator().manual_seed(P.test_seed + 10_000))

TESTED = [*P.algorithms, *[b for b in P.baselines if b == "pretrained"], "random", *[b for b in P.baselines
                                                                                     if b == "oracle"]]
STEP_SIZES = {**{name: tuple(P.test_lrs) for name in P.algorithms}, "pretrained": (P.pretrained_lr,),
              "random": (P.random_lr,), "oracle": (0.0,)}
testing = {family: rl.TestTime(env, P.test_steps, P.test_trajectories, P.gamma) for family, env in envs.items()}
curves, episodes = {}, {}  # curves: {(seed, family, method): returns [n_test_tasks, test_steps + 1]}
for seed, family, name in tqdm(list(itertools.product(P.seeds, P.tasks, TESTED)), desc="test returns"):
    params = models.params_of(policy(seed), False) if name == "random" else trained[seed, family, name]["best"]
    curves[seed, family, name], eps = testing[family].returns(
        policy(seed, oracle=name == "oracle"), name, params, test_goals[family], STEP_SIZES[name], P.test_seed + 20_000)
    episodes[seed, family, name] = (eps[0], eps[-1])  # before adaptation and after the last step

FIELDS = ["family", "method"]
per_seed = rlseeds.per_seed_table(curves, FIELDS)
report.save_table(per_seed.to_dict("records"), f"reports/{STAGE}/test_returns_per_seed.csv")
table = rlseeds.seed_table(curves, P.seeds, FIELDS)
report.save_table(table.to_dict("records"), f"reports/{STAGE}/test_returns.csv")
print(f"mean over {SEEDS}; 95% CI over the test tasks of each task's seed-averaged return")
table.pivot(index=["family", "method"], columns="step", values="average_return").round(1)

# %% [markdown]
# ## Return against the number of gradient steps (MAML paper Fig. 5), with the papers' numbers
#
# Thick lines: ours, the mean over seeds with 95% CIs over the test tasks; thin lines: each
# seed. Hollow markers: the papers' numbers, where
# they give them as numbers — the MAML paper's Table 5 (MAML, forward/backward, 0..3 steps)
# and the ANIL paper's Table 2 (MAML and ANIL after one step, mean of three seeds, 500
# iterations). Figure 5's curves for goal velocity are only a picture, not marked.

# %%
paper_marks = {
    "M-cheetah": dict(marker="s", ms=9, mfc="none", ls="none"),
    "A-anil-rl": dict(marker="D", ms=9, mfc="none", ls="none"),
}


def label_of(name):
    return f"{name} (step {STEP_SIZES[name][0]:g})" if name in ("pretrained", "random") else name


fig, axes = plt.subplots(1, len(P.tasks), figsize=(5.5 * len(P.tasks), 4), squeeze=False)
for ax, family in zip(axes[0], P.tasks):
    rlseeds.plot_test_returns(ax, table[table.family == family], per_seed[per_seed.family == family], styles, label_of)
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
# tasks, below it for backward ones). The first seed's policies.

# %%
fig, axes = plt.subplots(1, len(P.tasks), figsize=(5.5 * len(P.tasks), 3.8), squeeze=False)
for ax, family in zip(axes[0], P.tasks):
    goals = test_goals[family][:, 0]
    shown = [name for name in TESTED if name != "oracle"]  # the oracle's observations also hold the goal
    for k, name in enumerate(shown):
        offset = (k - (len(shown) - 1) / 2) * 0.06
        for ep, filled in zip(episodes[P.seeds[0], family, name], (False, True)):
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
# M-cheetah: MAML and the baselines after 0..3 steps on both families (the MAML paper gives
# MAML's forward/backward numbers in Table 5); A-anil-rl: MAML and ANIL (the ANIL
# paper's Table 2 gives both after one step, over three seeds). `return` is the mean over our
# seeds with the 95% CI over test tasks; `return, std over seeds` the spread of the seeds' means.

# %%
EXPERIMENTS = {"M-cheetah": ("maml", "fomaml", "pretrained", "random", "oracle"), "A-anil-rl": ("maml", "anil")}
out = rlseeds.result_rows(table, EXPERIMENTS, "cheetah-{family} {method} steps={step}", SCALE, P.seeds)
results.write(out, STAGE)
results.frame(out)

# %%
metrics = {**rlseeds.return_metrics(table, FIELDS), **rlseeds.training_metrics(trained)}
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")
# a after step_a steps minus b after step_b (default: step_a), paired over the test tasks; runs are (family, method)
verdict = functools.partial(rlseeds.verdict, curves, P.seeds, digits=1, steps_named=True)

lines = []
for family in P.tasks:
    paper = {m: papers.paper_value("A-anil-rl", f"cheetah-{family} {m} steps=1", "return") for m in ("maml", "anil")}
    maml, anil, random_init = (family, "maml"), (family, "anil"), (family, "random")
    curve = {name: rlseeds.curve_text(table, 1, family=family, method=name) for name in TESTED}
    lines += [f"**{family}** (ANIL paper after one step: MAML {paper['maml']}, ANIL {paper['anil']})", "",
              f"- ANIL vs MAML: {verdict(anil, maml, 1)}.",
              f"- does one step help MAML? {verdict(maml, maml, 1, 0)}.",
              f"- MAML vs the random initialisation: {verdict(maml, random_init, 1)}; after {P.test_steps} "
              f"steps: {verdict(maml, random_init, P.test_steps)}.",
              *([f"- MAML vs the pretrained policy: {verdict(maml, (family, 'pretrained'), 1)}."]
                if "pretrained" in TESTED else []),
              f"- after 0..{P.test_steps} steps: MAML {curve['maml']}; ANIL {curve['anil']}; "
              + "".join(f"{name} {curve[name]}; " for name in TESTED if name in ("pretrained", "random"))
              + (f"the oracle (no adaptation) {metrics[f'{family}_oracle_step0']:.1f}." if "oracle" in TESTED
                 else ""), ""]
    unchanged = [f"{name} (seed {seed})" for seed in P.seeds for name in P.algorithms
                 if trained[seed, family, name]["best_iteration"] == 0]
    if unchanged:
        lines[-1:-1] = [f"- {', '.join(unchanged)}: the best training return came before the first update, so the "
                        "kept policy is the random initialisation itself (no meta-training took effect)."]
Markdown(f"""### What the numbers say ({P.n_test_tasks} test tasks per family, mean over {SEEDS}, paired 95% CIs)

{chr(10).join(lines)}
Scale: {SCALE}.""")

# %% [markdown]
# ## What these numbers do and do not show

# %%
PAPER_ROLLOUTS = 500 * 40 * 20  # papers: up to 500 TRPO iterations x meta-batch 40 x 20 rollouts per task
ratio = PAPER_ROLLOUTS / (P.iterations * P.meta_batch * P.trajectories)
paper_maml = [papers.paper_value("M-cheetah", f"cheetah-direction maml steps={s}", "return") for s in (1, 2, 3)]
if ratio > 1.5:
    extent = f"""**far below the papers'**: they meta-train for up to 500 TRPO iterations with a meta-batch of 40
tasks and 20 rollouts per task and step (the ANIL paper: three seeds each), {ratio:.0f} times as many
pre-adaptation training rollouts as this run's {P.iterations} iterations x {P.meta_batch} tasks x {P.trajectories}
rollouts{'' if P.horizon == 200 else f' (and its episodes last {P.horizon} steps, not 200)'}. The MAML and ANIL
policies here are therefore barely meta-trained, and their returns are not expected to come near the papers'
(MAML {' / '.join(f'{v:g}' for v in paper_maml)} after one / two / three steps on forward/backward, MAML
paper Table 5)."""
else:
    extent = "at the papers' scale (up to 500 TRPO iterations, meta-batch 40, 20 rollouts per task and step)."
Markdown(f"""This run's scale is {extent}

What it does show: the HalfCheetah environment (checked against gymnasium's own), the inner loop, TRPO
and the evaluation work end to end; whether this much meta-training already makes one test-time step
useful (MAML after one step against before it, and against a random initialisation taking the same
steps); and how MAML and ANIL compare at equal budgets. What it does **not** show: whether ANIL matches
MAML at convergence (the ANIL paper's claim, over three seeds), nor the size of the papers' gains.
{"Its spread between seeds is that of barely trained policies." if len(P.seeds) > 1 else
 "With one seed it says nothing about the spread between seeds."} The papers' scale is `params-paper.yaml`
(`make repro SCALE=paper`): from the seconds per meta-iteration printed above, with 8 times the rollouts
per iteration, a run of a day or more on one CPU thread.""")
