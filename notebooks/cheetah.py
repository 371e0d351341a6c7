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
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown

from metalearn import cheetah, core, evaluation, hardware, models, papers, report, results, rl

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


def policy(seed, oracle=False):
    """Every policy of a seed starts from the same initialisation (the oracle's also sees the goal)."""
    inputs = cheetah.HalfCheetah.obs_dim + (cheetah.HalfCheetah.goal_dim if oracle else 0)
    return models.init_model(lambda: rl.gaussian_policy(inputs, cheetah.HalfCheetah.action_dim, P.hidden), seed)

# %% [markdown]
# ## Training: MAML and ANIL with TRPO meta-updates, and the baselines, on each task family
#
# Every seed trains every run from its own initialisation, on its own stream of tasks and
# rollouts. Each run keeps the parameters with the best training return (for MAML and ANIL
# after adaptation, on the iteration's fresh tasks, measured before that iteration's update;
# for the baselines the return itself), as the papers select the best of their iterations.

# %%
trained, histories = {}, []
for seed in P.seeds:
    for family in P.tasks:
        for name in [*P.algorithms, *P.baselines]:
            model = policy(seed, oracle=name == "oracle")
            meta = name in P.algorithms
            inner = core.inner_loop(name, models.params_of(model), steps=1, lr=P.inner_lr) if meta else None
            setting = rl.MetaRL(envs[family], inner, meta_batch=P.meta_batch, trajectories=P.trajectories,
                                gamma=P.gamma, trpo=trpo, oracle=name == "oracle", hvp_tasks=P.hvp_tasks)
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
curves, episodes = {}, {}
for seed in P.seeds:
    for family, env in envs.items():
        for name in TESTED:
            params = (models.params_of(policy(seed), False) if name == "random"
                      else trained[seed, family, name]["best"])
            adapt = core.inner_loop(name, params, 1, P.test_lrs[0]).adapt if name in P.algorithms else None
            steps = 0 if name == "oracle" else P.test_steps
            curve, eps = rl.evaluate(env, policy(seed, oracle=name == "oracle"), params, test_goals[family], steps,
                                     STEP_SIZES[name], P.test_trajectories,
                                     torch.Generator().manual_seed(P.test_seed + 20_000), adapt=adapt, gamma=P.gamma,
                                     oracle=name == "oracle")
            curves[seed, family, name] = curve.expand(-1, P.test_steps + 1)
            episodes[seed, family, name] = (eps[0], eps[-1])  # before adaptation and after the last step


def seed_mean(family, name):
    """Each test task's return averaged over the seeds, [n_test_tasks, test_steps + 1]."""
    return torch.stack([curves[seed, family, name] for seed in P.seeds]).mean(0)


per_seed = pd.DataFrame([dict(seed=seed, family=family, method=name, step=step, average_return=mean, ci95=ci)
                         for (seed, family, name), curve in curves.items() for step in range(P.test_steps + 1)
                         for mean, ci in [evaluation.mean_ci95(curve[:, step])]])
report.save_table(per_seed.to_dict("records"), f"reports/{STAGE}/test_returns_per_seed.csv")
rows = []
for family in P.tasks:
    for name in TESTED:
        for step in range(P.test_steps + 1):
            mean, ci = evaluation.mean_ci95(seed_mean(family, name)[:, step])
            spread = per_seed[(per_seed.family == family) & (per_seed.method == name) & (per_seed.step == step)]
            rows.append(dict(family=family, method=name, step=step, average_return=mean, ci95=ci,
                             std_over_seeds=spread.average_return.std() if len(P.seeds) > 1 else None))
table = pd.DataFrame(rows)
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
fig, axes = plt.subplots(1, len(P.tasks), figsize=(5.5 * len(P.tasks), 4), squeeze=False)
for ax, family in zip(axes[0], P.tasks):
    for name, t in table[table.family == family].groupby("method", sort=False):
        label = f"{name} (step {STEP_SIZES[name][0]:g})" if name in ("pretrained", "random") else name
        ax.plot(t.step, t.average_return, label=label, **styles[name])
        ax.fill_between(t.step, t.average_return - t.ci95, t.average_return + t.ci95, color=styles[name]["color"],
                        alpha=0.15)
        if len(P.seeds) > 1:
            for seed, one in per_seed[(per_seed.family == family) & (per_seed.method == name)].groupby("seed"):
                ax.plot(one.step, one.average_return, color=styles[name]["color"], lw=0.6, alpha=0.5)
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
out = []
for r in table.itertuples():
    setting = f"cheetah-{r.family} {r.method} steps={r.step}"
    for experiment, methods in (("M-cheetah", ("maml", "fomaml", "pretrained", "random", "oracle")),
                                ("A-anil-rl", ("maml", "anil"))):
        if r.method in methods and not (r.method == "oracle" and r.step > 0):
            out.append(results.row(experiment, setting, "return", r.average_return, SCALE, r.ci95))
            if len(P.seeds) > 1:
                out.append(results.row(experiment, setting, "return, std over seeds", r.std_over_seeds, SCALE))
results.write(out, STAGE)
pd.DataFrame(out)[["experiment", "setting", "metric", "value", "ci95", "paper"]]

# %%
def at(family, method, step):
    cell = table[(table.family == family) & (table.method == method) & (table.step == step)]
    return float(cell.average_return.iloc[0])


metrics = {f"{f}_{m}_step{s}": at(f, m, s) for f in P.tasks for m in TESTED for s in range(P.test_steps + 1)}
for (seed, family, name), t in trained.items():
    metrics[f"{family}_{name}_seed{seed}_best_iteration"] = t["best_iteration"] + 1
    if t["resumed_from"] < len(t["history"]):  # trained now, not only loaded from a checkpoint
        metrics[f"{family}_{name}_seed{seed}_seconds_per_iteration"] = t["seconds_per_iteration"]
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")


def verdict(family, a, b, step_a, step_b=None):
    """a after ``step_a`` steps minus b after ``step_b``: each task's seed-averaged difference (95% CI over the
    same test tasks), and each seed's."""
    step_b = step_a if step_b is None else step_b
    diff, ci = evaluation.mean_ci95(seed_mean(family, a)[:, step_a] - seed_mean(family, b)[:, step_b])
    each = ""
    if len(P.seeds) > 1:
        each = "; per seed " + ", ".join(
            f"{(curves[s, family, a][:, step_a] - curves[s, family, b][:, step_b]).mean().item():+.1f}"
            for s in P.seeds)
    left, right = (f"{m} after {k} step{'' if k == 1 else 's'}" for m, k in ((a, step_a), (b, step_b)))
    if abs(diff) <= ci:
        return f"{left} and {right} are not distinguishable ({diff:+.1f} +- {ci:.1f}{each})"
    return f"{left} is {'better' if diff > 0 else 'worse'} than {right} ({diff:+.1f} +- {ci:.1f}{each})"


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
              *([f"- MAML vs the pretrained policy: {verdict(family, 'maml', 'pretrained', 1)}."]
                if "pretrained" in TESTED else []),
              f"- after 0..{P.test_steps} steps: MAML {curve_text(family, 'maml')}; ANIL {curve_text(family, 'anil')}; "
              + "".join(f"{name} {curve_text(family, name)}; " for name in TESTED if name in ("pretrained", "random"))
              + (f"the oracle (no adaptation) {at(family, 'oracle', 0):.1f}." if "oracle" in TESTED else ""), ""]
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
