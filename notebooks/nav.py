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
# # M-nav and A-anil-rl (2D navigation): meta-reinforcement learning on a point robot
#
# MAML paper (Finn et al. 2017), section 5.3, Appendix A.2, Figure 4 and Table 4 (Appendix
# C.2); "Rapid Learning or Feature Reuse?" (Raghu et al. 2019), Table 2 and Appendix C.4.
# A point starts at the origin and must reach a goal drawn uniformly from [-0.5, 0.5]^2; it
# observes its position, its action is a velocity clipped to [-0.1, 0.1] per axis, the reward
# is minus the distance to the goal (the authors' code and pytorch-maml-rl; the paper's text
# says the squared distance: `reward = "squared"`), and an episode ends within 0.01 of the goal
# or after H = 100 steps.
#
# The policy is an MLP 100-100 (ReLU) giving the mean of a Gaussian with a learned
# state-independent log-std. **MAML** adapts it with one vanilla policy-gradient
# (REINFORCE) step of size 0.1 on 20 trajectories, with the rllab linear feature baseline
# fitted per task; the meta-update is TRPO on the post-adaptation surrogate, differentiated
# through the inner step. **ANIL** adapts only the head (last layer and log-std) in the inner
# loop, the same code with the `head` mask. Baselines: a policy **pretrained** with TRPO on all
# tasks jointly, a **random** initialisation, both fine-tuned with a step size tuned on
# validation tasks (the paper tuned them by hand), and an **oracle** that sees the goal (TRPO
# on all tasks, no adaptation). At test time
# every method takes 0..3 policy-gradient steps (0.1, then 0.05), each on 40 fresh
# trajectories. The defaults below are smoke-sized; `params.yaml` holds the study's values.
#
# Two places where the papers and the released code differ, and what we do: the paper's text
# says the reward is the negative *squared* distance, the code (rllab and pytorch-maml-rl)
# uses the distance (`reward`); the MAML authors' rllab scripts for this task wrap the
# environment in `normalize` (policy actions in [-1, 1] scaled to [-0.1, 0.1]:
# `action_scale = 0.1`) and use an inner step of 0.5, while Appendix A.2 states 0.1 and the
# ANIL authors' pytorch-maml-rl clips raw actions. We follow the papers' text (step 0.1, raw
# actions) and the code's reward.

# %% tags=["parameters"]
seeds = [0, 1]            # training seeds: each trains every method from its own initialisation and tasks (ANIL paper: 3)
test_seed = 0             # seed of the test and validation goals and of their trajectories (the same for every seed)
threads = 1               # torch CPU threads
hidden = [100, 100]       # hidden layers of the policy MLP (papers: 100-100, ReLU)
horizon = 100             # episode length H (paper: 100)
reward = "distance"       # "distance": minus the distance to the goal (authors' code); "squared": its square (paper text)
action_scale = 1.0        # action multiplier before clipping to [-0.1, 0.1]: 1 paper text and pytorch-maml-rl, 0.1 rllab
gamma = 0.99              # discount of the returns behind the baseline and the advantages
algorithms = ["maml", "anil"]  # meta-trained algorithms (maml, fomaml, anil); maml and anil are needed
meta_batch = 4            # tasks per meta-iteration (paper: 20)
trajectories = 5          # episodes per task for the inner step and for the meta-update (paper: 20)
inner_lr = 0.1            # inner policy-gradient step size alpha (paper: 0.1)
max_kl = 0.01             # TRPO's bound on the mean KL (paper code: 0.01)
cg_iters = 10             # conjugate-gradient iterations of TRPO
cg_damping = 0.00001      # damping added to the KL's Hessian
ls_steps = 15             # TRPO line-search backtracks at most
ls_ratio = 0.8            # TRPO line-search shrink factor
hvp_tasks = 2             # tasks of the meta-batch whose KL gives TRPO's curvature (paper: all)
iterations = 2            # TRPO meta-iterations of MAML and ANIL, the best kept (paper: up to 500)
baseline_iterations = 2   # TRPO iterations of the pretrained and oracle policies, the best kept
test_lrs = [0.1, 0.05]    # test-time step sizes: the first step, then every later one (paper: 0.1, 0.05)
test_steps = 3            # policy-gradient steps at test time (paper: 3)
test_trajectories = 8     # fresh episodes per task at each test step (paper: 40)
baseline_lrs = [0.1, 0.3, 1.0]  # candidate constant test step sizes of pretrained and random (paper: tuned by hand)
n_val_tasks = 2           # validation goals on which the baselines' step size is chosen
n_test_tasks = 4          # fixed test goals (one seeded list, the same for every method)
plot_tasks = 3            # test tasks whose trajectories are drawn
checkpoint_every = 10     # iterations between checkpoints (a killed run resumes from the last)

# %%
from metalearn.params import check, Choice, Float, Int, List, require

P = check(globals(), seeds=List(Int(min=0), unique=True), test_seed=Int(min=0), threads=Int(min=1), hidden=List(Int(min=1)), horizon=Int(min=1),
          reward=Choice("distance", "squared"), action_scale=Float(min=0, strict=True), gamma=Float(min=0, max=1),
          algorithms=List(Choice("maml", "fomaml", "anil"), unique=True), meta_batch=Int(min=1),
          trajectories=Int(min=2), inner_lr=Float(min=0, strict=True), max_kl=Float(min=0, strict=True),
          cg_iters=Int(min=1), cg_damping=Float(min=0), ls_steps=Int(min=1), ls_ratio=Float(min=0, max=1, strict=True),
          hvp_tasks=Int(min=1), iterations=Int(min=1), baseline_iterations=Int(min=1),
          test_lrs=List(Float(min=0, strict=True)), test_steps=Int(min=1), test_trajectories=Int(min=2),
          baseline_lrs=List(Float(min=0, strict=True), unique=True), n_val_tasks=Int(min=1),
          n_test_tasks=Int(min=2), plot_tasks=Int(min=1), checkpoint_every=Int(min=1))
require({"maml", "anil"} <= set(P.algorithms), "algorithms", "must include maml and anil (A-anil-rl compares them)")
require(P.hvp_tasks <= P.meta_batch, "hvp_tasks", "must be at most meta_batch")
require(P.plot_tasks <= P.n_test_tasks, "plot_tasks", "must be at most n_test_tasks")
require(len(P.seeds) >= 1, "seeds", "needs at least one seed")

# %%
import functools
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown

from metalearn import hardware, models, report, results, rl, rlseeds

torch.set_num_threads(P.threads)
STAGE = "nav"
env = rl.Navigation(horizon=P.horizon, reward=P.reward, action_scale=P.action_scale)
trpo = rl.TRPO(max_kl=P.max_kl, cg_iters=P.cg_iters, damping=P.cg_damping, ls_steps=P.ls_steps, ls_ratio=P.ls_ratio)
EVALUATION_ONLY = ("seeds", "test_seed", "threads", "checkpoint_every", "plot_tasks", "test_lrs", "test_steps",
                   "test_trajectories", "baseline_lrs", "n_val_tasks", "n_test_tasks")
config = {k: v for k, v in vars(P).items() if k not in EVALUATION_ONLY}  # what a checkpoint is keyed by (and its seed)
SEEDS = f"{len(P.seeds)} seed{'s' if len(P.seeds) > 1 else ''} ({', '.join(map(str, P.seeds))})"
SCALE = (f"{P.iterations} TRPO meta-iterations (best kept) x {P.meta_batch} tasks x {P.trajectories} trajectories, "
         f"H={P.horizon}; pretrained/oracle {P.baseline_iterations} TRPO iterations; test {P.n_test_tasks} tasks x "
         f"{P.test_trajectories} trajectories per step (baselines' step size from {P.n_val_tasks} validation tasks); "
         f"{SEEDS}; goals uniform in [-0.5, 0.5]^2, reward minus the {'squared ' if P.reward == 'squared' else ''}"
         f"distance; {hardware.describe()}")
print(SCALE)


styles = {"maml": dict(color="C2", marker="^"), "fomaml": dict(color="C1", marker="v"),
          "anil": dict(color="C4", marker="o"), "pretrained": dict(color="C0", marker="s", ls="--"),
          "random": dict(color="k", ls=":"), "oracle": dict(color="C3", marker="+", ls="--")}
policy = functools.partial(rl.policy_for, env, P.hidden)  # policy(seed, oracle=False): a seed's initialisation

# %% [markdown]
# ## Training: MAML and ANIL (TRPO meta-updates), pretrained and oracle (TRPO on all tasks)
#
# Every seed trains every method from its own initialisation, on its own stream of tasks
# and trajectories. Each run keeps the parameters with the best training return, as the
# papers select the best of their iterations: for MAML/ANIL the return after adaptation on
# the iteration's fresh tasks (measured before that iteration's update), for the baselines
# the return itself.

# %%
METHODS = [*P.algorithms, "pretrained", "oracle"]
SETTINGS = dict(meta_batch=P.meta_batch, trajectories=P.trajectories, gamma=P.gamma, trpo=trpo, hvp_tasks=P.hvp_tasks)
trained, histories = {}, []
for seed in P.seeds:
    for offset, name in enumerate(METHODS):
        model = policy(seed, oracle=name == "oracle")
        setting = rl.method_setting(name, env, model, P.inner_lr, **SETTINGS)
        n = P.iterations if name in P.algorithms else P.baseline_iterations
        out = rl.train(f"{STAGE}-{name}-seed{seed}", {**config, "seed": seed}, model, setting, n,
                       seed=seed + 1 + offset, checkpoint_every=P.checkpoint_every,
                       record=f"data/models/{STAGE}/{name}-seed{seed}")
        trained[seed, name] = out
        histories.append(pd.DataFrame(out["history"]).assign(seed=seed, model=name))
        print(rl.summary(f"{name}, seed {seed}", out))

history = pd.concat(histories)
wide = history.assign(run=history.model + "-seed" + history.seed.astype(str)).pivot(
    index="iteration", columns="run", values="return").reset_index()
report.save_table(wide.to_dict("records"), f"reports/plots/{STAGE}_training.csv")
fig, ax = plt.subplots(figsize=(6.5, 3.8))
report.plot_returns(ax, history, P.algorithms, styles, P.seeds[0])
ax.set(xlabel="TRPO iteration", ylabel="average return (training tasks)",
       title=f"2D navigation: learning curves, one line per seed ({SEEDS})")
ax.legend(fontsize=7)
report.save_figure(fig, f"reports/{STAGE}/training.png")

# %% [markdown]
# ## Test time: average return after 0..3 policy-gradient steps on fixed test tasks
#
# Every method sees the same goals and the same random-number stream. MAML, ANIL (head
# only) step with `test_lrs` (MAML paper: 0.1, then 0.05). The paper tuned the baselines'
# step sizes by hand; here the pretrained and random policies take a constant step chosen
# from `baseline_lrs` on separate validation goals (highest mean return after the last step).
# The oracle is measured without adaptation.

# %%
goals = env.sample_goals(P.n_test_tasks, torch.Generator().manual_seed(P.test_seed + 10_000))
val_goals = env.sample_goals(P.n_val_tasks, torch.Generator().manual_seed(P.test_seed + 30_000))
testing = rl.TestTime(env, P.test_steps, P.test_trajectories, P.gamma)

curves, episodes, step_sizes = {}, {}, {}  # curves: {(seed, method): returns [n_test_tasks, test_steps + 1]}
for seed in P.seeds:
    starts = {name: trained[seed, name]["best"] for name in [*P.algorithms, "pretrained"]}
    starts["random"] = models.params_of(policy(seed), False)
    step_sizes.update({(seed, name): tuple(P.test_lrs) for name in P.algorithms})
    for name in ("pretrained", "random"):
        validation = testing.validate(policy(0), name, starts[name], val_goals, P.baseline_lrs, P.test_seed + 40_000)
        step_sizes[seed, name] = (rl.best_step_size(validation),)
        print(f"seed {seed}, {name}: {rl.tuning_note(validation, step_sizes[seed, name][0], P.test_steps)}")
    for name, params in starts.items():
        curves[seed, name], episodes[seed, name] = testing.returns(policy(0), name, params, goals,
                                                                   step_sizes[seed, name], P.test_seed + 20_000)
    curves[seed, "oracle"], _ = testing.returns(policy(seed, oracle=True), "oracle", trained[seed, "oracle"]["best"],
                                                goals, (), P.test_seed + 20_000)

per_seed = rlseeds.per_seed_table(curves, ["method"])
report.save_table(per_seed.to_dict("records"), f"reports/{STAGE}/test_returns_per_seed.csv")
table = rlseeds.seed_table(curves, P.seeds, ["method"])
report.save_table(table.to_dict("records"), f"reports/{STAGE}/test_returns.csv")
print(f"mean over {SEEDS}; 95% CI over the test tasks of each task's seed-averaged return")
table.pivot(index="method", columns="step", values="average_return").round(2)

# %%
def label_of(name):
    if name not in ("pretrained", "random"):
        return name
    return f"{name} (step {'/'.join(f'{step_sizes[seed, name][0]:g}' for seed in P.seeds)})"


fig, ax = plt.subplots(figsize=(6, 4))
rlseeds.plot_test_returns(ax, table, per_seed, styles, label_of)
ax.set_yscale("symlog", linthresh=1)  # log scale of the negative returns, as the paper's figure
low = min(per_seed.average_return.min(), (table.average_return - table.ci95.fillna(0)).min()) * 1.2
high = min(max(per_seed.average_return.max(), (table.average_return + table.ci95.fillna(0)).max()) / 1.2, 0)
ax.set_yticks([t for t in (-1, -2, -3, -5, -10, -20, -30, -50, -70, -100, -200, -500) if low <= t <= high])
ax.set_ylim(low, high)
ax.yaxis.set_major_formatter(plt.FormatStrFormatter("%g"))
ax.set(xlabel="number of gradient steps", ylabel="average return (95% CI over test tasks)",
       xticks=range(P.test_steps + 1), title="point robot, 2D navigation (MAML paper Fig. 4)")
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
fig.text(0, -0.02, textwrap.fill(f"thick: mean over seeds; thin: each seed. {SCALE}", 120), fontsize=6, va="top")
report.save_figure(fig, f"reports/{STAGE}/returns_vs_steps.png")

# %% [markdown]
# ## Trajectories before and after adaptation (Figure 4, bottom)
#
# The first test episode of a few tasks before adaptation and after the last test step, with
# the first seed's policies.

# %%
def path(ep, task):
    keep = ep.masks[task, 0] > 0
    return ep.obs[task, 0][keep]


shown = [m for m in ("maml", "anil", "pretrained") if (P.seeds[0], m) in episodes]
fig, axes = plt.subplots(P.plot_tasks, len(shown), figsize=(3.3 * len(shown), 3.1 * P.plot_tasks), squeeze=False)
for task in range(P.plot_tasks):
    for ax, name in zip(axes[task], shown):
        for step, style in ((0, dict(alpha=0.5, ls="--", label="pre-update")),
                            (P.test_steps, dict(lw=2, label=f"{P.test_steps} steps"))):
            xy = path(episodes[P.seeds[0], name][step], task)
            ax.plot(xy[:, 0], xy[:, 1], color=styles[name]["color"], **style)
        ax.plot(*goals[task], "r*", ms=12, label="goal position")
        ax.set(xlim=(-0.6, 0.6), ylim=(-0.6, 0.6), aspect="equal", title=f"{name}, test task {task}")
axes[0, 0].legend(fontsize=7)
report.save_figure(fig, f"reports/{STAGE}/trajectories.png")

# %% [markdown]
# ## Results beside the papers'
#
# M-nav: MAML and the baselines after 0..3 steps (the paper gives MAML's numbers in Table 4);
# A-anil-rl: MAML and ANIL (the ANIL paper's Table 2 gives both after one step, over three seeds).
# `return` is the mean over our seeds with the 95% CI over test tasks; `return, std over
# seeds` the spread of the seeds' means.

# %%
EXPERIMENTS = {"M-nav": ("maml", "fomaml", "pretrained", "random", "oracle"), "A-anil-rl": ("maml", "anil")}
out = rlseeds.result_rows(table, EXPERIMENTS, "nav {method} steps={step}", SCALE, P.seeds)
results.write(out, STAGE)
results.frame(out)

# %%
metrics = {**rlseeds.return_metrics(table, ["method"]), **rlseeds.training_metrics(trained)}
metrics.update({f"{m}_seed{seed}_test_step_size": step_sizes[seed, m][0] for seed in P.seeds
                for m in ("pretrained", "random")})
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")
verdict = functools.partial(rlseeds.verdict, curves, P.seeds, step_a=1)  # a minus b after one step, paired

Markdown(f"""### What the numbers say (after one step, {P.n_test_tasks} test tasks, mean over {SEEDS}, paired 95% CIs)

- ANIL vs MAML: {verdict('anil', 'maml')}.
- MAML vs pretrained: {verdict('maml', 'pretrained')}.
- MAML vs random initialisation: {verdict('maml', 'random')}.
- MAML after 0..{P.test_steps} steps: {rlseeds.curve_text(table, 2, method='maml')};
  pretrained: {rlseeds.curve_text(table, 2, method='pretrained')};
  the oracle (no adaptation): {metrics['oracle_step0']:.2f}.

Scale: {SCALE}.""")
