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
# # Feature reuse in representations: CCA and CKA before vs after adaptation, through training, across seeds and between training regimes (A-cca, A-early, A-seeds, A-repr, A-regime-sim)
#
# "Rapid Learning or Feature Reuse?" (Raghu et al. 2019), Sec. 3.2.2, Tables 3 and 8. The models
# trained by `train_miniimagenet` and `train_omniglot` are read on the queries of the same fixed
# test tasks as there (first `n_tasks` of that list).
#
# - **A-cca** (paper Fig. 2): for each layer of a MAML model, the similarity of its activations
#   before and after test-time adaptation to the task (same steps and step size as the training
#   stage's test). Feature reuse predicts body layers near 1 (paper: > 0.9) and the head far below.
# - **A-early** (Fig. 3, 9): the same at the weights a training stage kept through training
#   (`seeds_stage`: `train_seeds`, per seed; the campaign's, for its one seed).
# - **A-seeds** (App. B.4, Fig. 7, 8): two seeds of MAML (`seeds_stage`), each layer compared
#   across the seeds with each side before (pre) or after (post) adaptation; (pre,pre) against
#   the three others, with a line of best fit and R^2. If adaptation leaves the representations
#   alone, the points lie on y = x.
# - **A-repr** (Table 3): MAML vs MAML and ANIL vs ANIL across seeds, ANIL vs MAML across seeds
#   (meta-initialisations, no adaptation), mean over the body's layers.
# - **A-regime-sim** (Table 8): the body of each other training regime (multiclass, multitask,
#   random features, NIL-training) against MAML's, mean over the first three conv layers; MAML's
#   own row is MAML against MAML of another seed.
#
# Measures (`metalearn.similarity`, float64): mean CCA (svcca style) and linear CKA. Conv
# activations [Q, C, H, W] are Q*H*W data points of C units; the head's output [Q, N] is Q points
# of N units. A comparison with as many units as data points is refused (CCA would be trivially 1).
# Values are means over tasks with 95% confidence intervals; across seeds, means over seed pairs.
#
# The defaults below are smoke-sized; `params.yaml` holds the study's CPU scale.

# %% tags=["parameters"]
stage = "similarity"              # the DVC stage this execution is (the runner sets it): names its outputs
mini_stage = "train_miniimagenet" # the training stage of the MiniImageNet runs (the campaign's: campaign_miniimagenet)
omni_stage = "train_omniglot"     # the training stage whose Omniglot runs omni_cca_runs are
threads = 2                       # torch CPU threads
device = "cpu"                    # cpu or cuda
n_tasks = 3                       # fixed test tasks per setting, the first n of the training stage's list (study: 100)
methods = ["cca", "cka"]          # the paper's measures: mean CCA and linear CKA
mini_cca_runs = ["maml-conv-5w1s"]  # A-cca: MiniImageNet MAML runs compared before vs after adaptation
mini_reference = "maml-conv-5w1s"   # A-repr, A-regime-sim: the MAML run every other body is compared with
mini_bodies = ["anil-conv-5w1s", "multiclass+head-conv-5w1s", "niltrain+head-conv-5w1s"]  # bodies compared with it
repr_layers = ["body.layer1", "body.layer2", "body.layer3", "body.layer4"]  # A-repr mean (paper Table 3: the body)
regime_layers = ["body.layer1", "body.layer2", "body.layer3"]  # A-regime-sim mean (paper Table 8: first three convs)
omni_cca_runs = ["maml-conv-5w1s"]  # A-cca: Omniglot MAML runs compared before vs after adaptation
seeds_stage = "train_seeds"       # the training stage of seed_runs and early_runs (the campaign's: campaign_omniglot)
seed_runs = ["maml-conv-5w1s", "anil-conv-5w1s"]  # seeds_stage runs: A-repr across seeds; A-seeds on the first
seeds = [0, 1]                    # their seeds (one seed: A-early's intervals are over the test tasks)
early_runs = ["maml-conv-5w1s"]   # A-early: seeds_stage runs compared before vs after adaptation through training
early_iterations = [2, 4]         # iterations whose weights seeds_stage kept, and its last (ANIL paper: 10k, 20k, 30k)
seed_tasks = 3                    # test tasks of A-early, A-seeds and A-repr across seeds (the first of seeds_stage's list)
chance_tasks = 2                  # A-cca's chance level: on the first this many of its test tasks (study: 10)
chance_permutations = 2           # random pairings of the data points per task (study: 5)
independent_seed = 1              # A-regime-sim's random body: an untrained network from this seed (not MAML's start)

# %%
from metalearn import fewshot, reuse
from metalearn.params import Choice, Float, Int, List, Str, check, require

layer_names = [f"body.layer{i}" for i in range(1, 5)]
P = check(globals(), stage=Str(), mini_stage=Str(), omni_stage=Str(), seeds_stage=Str(), threads=Int(min=1),
          device=Choice("cpu", "cuda"),
          n_tasks=Int(min=2),
          methods=List(Choice(*reuse.METHODS), unique=True), mini_cca_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True),
          mini_reference=Str(fewshot.Spec.parse), mini_bodies=List(Str(fewshot.Spec.parse), min_len=0, unique=True),
          repr_layers=List(Choice(*layer_names), unique=True), regime_layers=List(Choice(*layer_names), unique=True),
          omni_cca_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True),
          seed_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True), seeds=List(Int(min=0), unique=True),
          early_runs=List(Str(fewshot.Spec.parse), min_len=0, unique=True), early_iterations=List(Int(min=1), unique=True),
          seed_tasks=Int(min=2), chance_tasks=Int(min=2), chance_permutations=Int(min=2),
          independent_seed=Int(min=0))
require(P.chance_tasks <= P.n_tasks, "chance_tasks", f"must be at most n_tasks ({P.n_tasks}): the chance level is "
        "taken on A-cca's own test tasks")
require(P.mini_cca_runs or P.omni_cca_runs or P.mini_bodies or P.seed_runs or P.early_runs, "mini_bodies",
        "and mini_cca_runs, omni_cca_runs, seed_runs, early_runs are all empty: nothing to analyse")
require(not P.seed_runs or len(P.seeds) >= 2, "seeds", "needs two seeds at least to compare across seeds")
for name in ("mini_cca_runs", "omni_cca_runs", "early_runs"):
    for spec in getattr(P, name):
        require(spec.algorithm in ("maml", "fomaml") and spec.model == "conv" and spec.init is None, name,
                f"has {spec.name}: A-cca adapts MAML conv runs at test time (maml-conv-<N>w<K>s)")
require(P.mini_reference.algorithm == "maml" and P.mini_reference.model == "conv" and P.mini_reference.init is None,
        "mini_reference", f"is {P.mini_reference.name}: the reference body is a MAML conv run")
for spec in P.mini_bodies:
    require(spec.model == "conv" and spec.setting == P.mini_reference.setting and spec != P.mini_reference,
            "mini_bodies", f"has {spec.name}: compare other conv bodies of the reference's setting "
                           f"({P.mini_reference.setting})")

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display
from tqdm import tqdm  # not tqdm.auto: its widget warning prints the absolute path of the venv

from metalearn import hardware, papers, report, results, reuseresults, store

torch.set_num_threads(P.threads)
require(P.device == "cpu" or torch.cuda.is_available(), "device", "is cuda, but torch sees no GPU")
STAGE = P.stage
HARDWARE = hardware.describe(P.device)


# every analysed run (reuse.Case), as its training stage recorded it: dataset, network, test-time settings, test tasks
MINI, OMNI = P.mini_stage, P.omni_stage
cca_cases = ([reuse.load_case(MINI, s.name, P.n_tasks, P.device, "mini_cca_runs") for s in P.mini_cca_runs]
             + [reuse.load_case(OMNI, s.name, P.n_tasks, P.device, "omni_cca_runs") for s in P.omni_cca_runs])
reference = (reuse.load_case(MINI, P.mini_reference.name, P.n_tasks, P.device, "mini_reference") if P.mini_bodies
             else None)
bodies = [reuse.load_case(MINI, s.name, P.n_tasks, P.device, "mini_bodies") for s in P.mini_bodies]
seeded = {(spec, seed): reuse.load_case(P.seeds_stage, reuse.seed_run(P.seeds_stage, spec.name, seed, "seeds"),
                                        P.seed_tasks, P.device, "seed_runs" if spec in P.seed_runs else "early_runs")
          for spec in dict.fromkeys(P.seed_runs + P.early_runs) for seed in P.seeds}
# what each table below is computed from: these settings, the analysed runs, the test-time numerics. A table
# an earlier execution computed from the same is read back from data/analyses/similarity/ instead of recomputed.
CHANCE = ("chance_tasks", "chance_permutations")  # parameters of the chance table only
IDENTITY = reuse.analysis_identity(P, [c.trained for c in [*cca_cases, *([reference] if reference else []), *bodies,
                                                           *seeded.values()]], apart=(*CHANCE, "independent_seed"))
require(not P.mini_bodies or P.independent_seed != reference.trained.record["seed"], "independent_seed",
        f"is the reference's own seed ({P.independent_seed}): the random body would be MAML's starting point")
pd.DataFrame([dict(analysis=a, dataset=t.dataset, run=t.name, iterations=t.row.iterations,
                   meta_batch=t.row.meta_batch, test_accuracy=t.row.accuracy)
              for a, t in [("A-cca", c.trained) for c in cca_cases]
              + ([("reference", reference.trained)] if reference else [])
              + [("body", b.trained) for b in bodies] + [("seeds", c.trained) for c in seeded.values()]])

# %% [markdown]
# ## A-cca: each layer before vs after test-time adaptation
#
# One bar per layer and measure: the mean over test tasks of the similarity of the layer's
# activations on the task's queries under the meta-initialisation and under the adapted weights.
# Beside each bar, its chance level (black tick): the same measure on the same activations with
# the data points paired at random, on the first `chance_tasks` tasks (`reuse.pre_post_chance`). A
# score says as much as it stands above its chance level: many points and few units give CCA and
# CKA well above 0 for unrelated data.

# %%
def pre_post_table():
    rows = []
    for case in tqdm(cca_cases, desc="A-cca"):
        table = reuse.pre_post_similarity(case.trained.spec, case.trained.model, case.test, case.settings,
                                          methods=P.methods)
        rows.append(table.assign(dataset=case.trained.dataset, run=case.trained.spec.name))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def chance_table():
    rows = []
    for case in tqdm(cca_cases, desc="A-cca chance"):
        table = reuse.pre_post_chance(case.trained.spec, case.trained.model, case.test, case.settings, P.chance_tasks,
                                      P.chance_permutations, methods=P.methods)
        rows.append(table.assign(dataset=case.trained.dataset, run=case.trained.spec.name))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


cca = store.result(f"data/analyses/{STAGE}/pre_post", IDENTITY, pre_post_table)
cca_rows = len(cca) > 0
if cca_rows:
    chance = store.result(f"data/analyses/{STAGE}/pre_post_chance",
                          {**IDENTITY, "chance": {k: getattr(P, k) for k in CHANCE}}, chance_table)
    cca = cca.merge(chance.rename(columns={"ci95": "chance_ci95"})[["dataset", "run", "layer", "method", "chance",
                                                                    "chance_ci95"]],
                    on=["dataset", "run", "layer", "method"], how="left")

if cca_rows:
    fig, axes = plt.subplots(1, len(cca_cases), figsize=(4.2 * len(cca_cases), 3.4), squeeze=False)
    for ax, ((trained, *_), (_, group)) in zip(axes[0], zip(cca_cases, cca.groupby(["dataset", "run"], sort=False))):
        layers = list(dict.fromkeys(group.layer))
        width = 0.8 / len(P.methods)
        for i, method in enumerate(P.methods):
            part = group[group.method == method].set_index("layer").loc[layers]
            ax.bar([j + i * width for j in range(len(layers))], part.value, width, yerr=part.ci95, capsize=2,
                   label=method.upper())
            ax.scatter([j + i * width for j in range(len(layers))], part.chance, marker="_", s=120, color="k",
                       zorder=3, label="chance level" if i == 0 else None)
        ax.axhline(0.9, color="grey", lw=0.8, ls=":")
        ax.set_xticks([j + width * (len(P.methods) - 1) / 2 for j in range(len(layers))],
                      [layer.removeprefix("body.") for layer in layers])
        ax.set(title=f"{trained.dataset} {trained.spec.name}", ylim=(0, 1.05), ylabel="similarity pre vs post")
        ax.legend(fontsize=7)
    fig.suptitle(f"A-cca: representations before vs after adaptation ({P.n_tasks} test tasks, 95% CI; dotted: 0.9; "
                 f"black: chance, {P.chance_tasks} tasks x {P.chance_permutations} random pairings)", fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, f"reports/{STAGE}/pre_post_similarity.png")
    display(cca[["dataset", "run", "layer", "method", "value", "ci95", "chance", "chance_ci95", "points", "units",
                 "dead_a", "dead_b", "note"]])

# %% [markdown]
# ## A-repr and A-regime-sim: other bodies against MAML's
#
# Activations of the meta-initialisations (no adaptation) on the same test queries; per layer
# and the mean over the paper's layers, taken per task. The random body is the paper's: an
# untrained network initialised from `independent_seed` (`reuse.random_body`). The study's
# random-features run keeps the initialisation of seed 0, the one MAML started from: its row
# ("random, MAML's own start") measures how far MAML moved from its own start. The paper's values,
# where it gives them, are marked with crosses.

# %%
def body_table():
    rows = []
    for trained in tqdm([b.trained for b in bodies], desc="bodies vs MAML"):
        layers = P.repr_layers if trained.spec.regime == "anil" else P.regime_layers
        table = reuse.model_similarity(trained.model, reference.trained.model, reference.test,
                                       reference.settings.bn, layers, P.methods)
        rows.append(table.assign(body=trained.spec.name, regime=trained.spec.regime))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def independent_table():
    body = reuse.random_body(reference.trained, P.independent_seed)
    table = reuse.model_similarity(body, reference.trained.model, reference.test, reference.settings.bn,
                                   P.regime_layers, P.methods)
    return table.assign(body=f"random (seed {P.independent_seed})", regime=INDEPENDENT)


# the regimes of the paper's random body and of the random-features run (MAML's own start)
INDEPENDENT, OWN_START = reuseresults.INDEPENDENT, reuseresults.OWN_START
pairs = store.result(f"data/analyses/{STAGE}/bodies", IDENTITY, body_table)
body_rows = len(pairs) > 0
if body_rows:
    pairs = pd.concat([pairs.replace({"regime": {"random": OWN_START}}),
                       store.result(f"data/analyses/{STAGE}/bodies_independent",
                                    {**IDENTITY, "independent_seed": P.independent_seed}, independent_table)],
                      ignore_index=True)


if body_rows:
    means = pairs[pairs.layer == "mean"]
    fig, axes = plt.subplots(1, len(P.methods), figsize=(4.0 * len(P.methods), 3.4), squeeze=False)
    for ax, method in zip(axes[0], P.methods):
        part = means[means.method == method]
        ax.bar(part.regime, part.value, yerr=part.ci95, capsize=3, label="ours")
        paper = [papers.paper_value(reuseresults.regime_experiment(r),
                                    reuseresults.regime_setting(r, P.mini_reference.setting), method)
                 for r in part.regime]
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
# ## A-early: before vs after adaptation through training
#
# A-cca on the weights `seeds_stage` kept at each iteration, per seed (thin) and their mean
# (thick), per layer. Feature reuse from early on (paper Fig. 3): the body's lines stay near 1 at
# every iteration, the head's below.

# %%
for spec in P.early_runs:
    for seed in P.seeds:
        require(max(P.early_iterations) <= seeded[spec, seed].trained.row.iterations, "early_iterations",
                f"goes past the {seeded[spec, seed].trained.row.iterations} iterations {P.seeds_stage} trained")


def early_table():
    rows = []
    for spec in P.early_runs:
        for seed in P.seeds:
            case = seeded[spec, seed]
            for iteration in tqdm(P.early_iterations, desc=f"A-early {case.trained.name}"):
                table = reuse.pre_post_similarity(spec, reuse.snapshot(case.trained, iteration), case.test,
                                                  case.settings, methods=P.methods)
                rows.append(table.assign(run=spec.name, seed=seed, iteration=iteration))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


early = store.result(f"data/analyses/{STAGE}/early", IDENTITY, early_table)
early_rows = len(early) > 0
if early_rows:
    early_mean = reuse.over_seeds(early, ["run", "iteration", "layer", "method"], {"value": "ci95"})
    fig, axes = plt.subplots(len(P.early_runs), len(P.methods), figsize=(4.2 * len(P.methods), 3.3 * len(P.early_runs)),
                             squeeze=False)
    for row, spec in enumerate(P.early_runs):
        for ax, method in zip(axes[row], P.methods):
            for i, layer in enumerate(dict.fromkeys(early.layer)):
                part = early[(early.run == spec.name) & (early.method == method) & (early.layer == layer)]
                for _, one in part.groupby("seed"):
                    ax.plot(one.iteration, one.value, color=f"C{i}", lw=0.6, alpha=0.5)
                mean = early_mean[(early_mean.run == spec.name) & (early_mean.method == method) & (early_mean.layer == layer)]
                ax.plot(mean.iteration, mean.value, color=f"C{i}", lw=2, marker="o", label=layer.removeprefix("body."))
            ax.set(title=f"{spec.name}: {method.upper()} pre vs post", xlabel="training iteration", ylim=(0, 1.05))
            ax.legend(fontsize=6)
    early_data = seeded[P.early_runs[0], P.seeds[0]].trained.dataset
    fig.suptitle(f"A-early: {early_data}, {len(P.seeds)} seed(s) x {P.seed_tasks} test tasks; {HARDWARE}", fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, f"reports/{STAGE}/early_similarity.png")
    display(early_mean.pivot_table(index=["run", "layer"], columns=["method", "iteration"], values="value",
                                   sort=False).round(3))

# %% [markdown]
# ## A-seeds: across seeds, before and after adaptation
#
# For each pair of seeds (a, b) of the first of `seed_runs` and each layer, the similarity of a's
# and b's activations on the same queries with each side before (pre) or after (post)
# adaptation. Each point is one seed pair and layer; the line is the least-squares fit over the
# body's layers (the head, marked x, is left out of the fit: adaptation is expected to change it).

# %%
seed_pairs = [(a, b) for i, a in enumerate(P.seeds) for b in P.seeds[i + 1:]]


def cross_table():
    rows = []
    if P.seed_runs:
        spec = P.seed_runs[0]
        for a, b in tqdm(seed_pairs, desc=f"A-seeds {spec.name}"):
            ca, cb = seeded[spec, a], seeded[spec, b]
            table = reuse.seed_pair_similarity(spec, ca.trained.model, cb.trained.model, ca.test, ca.settings,
                                               methods=P.methods)
            rows.append(table.assign(run=spec.name, pair=f"{a}-{b}"))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


cross = store.result(f"data/analyses/{STAGE}/seeds", IDENTITY, cross_table)
cross_rows = len(cross) > 0
fits = reuse.seed_fits(cross) if cross_rows else pd.DataFrame()
if cross_rows:
    others = [c for c in reuse.SEED_COMPARISONS if c != "pre,pre"]
    wide = cross.pivot_table(index=["pair", "layer", "method"], columns="comparison", values="value").reset_index()
    fig, axes = plt.subplots(len(P.methods), len(others), figsize=(3.4 * len(others), 3.2 * len(P.methods)),
                             squeeze=False)
    for row, method in enumerate(P.methods):
        part = wide[wide.method == method]
        body = part[part.layer != "head"].dropna(subset=["pre,pre", *others])
        for ax, other in zip(axes[row], others):
            ax.scatter(body["pre,pre"], body[other], s=14, label="body layers")
            head = part[part.layer == "head"]
            ax.scatter(head["pre,pre"], head[other], marker="x", color="k", label="head (not fitted)")
            ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=0.8)
            for fit in fits[(fits.method == method) & (fits.comparison == other)].itertuples():
                ax.plot([0, 1], [fit.intercept, fit.intercept + fit.slope], color="C1",
                        label=f"fit: y = {fit.slope:.2f}x {fit.intercept:+.2f}, R2 = {fit.r2:.3f}")
            ax.set(xlabel="(pre, pre)", ylabel=f"({other.replace(',', ', ')})", title=method.upper(),
                   xlim=(0, 1.02), ylim=(0, 1.02))
            ax.legend(fontsize=6)
    seeds_data = seeded[P.seed_runs[0], P.seeds[0]].trained.dataset
    fig.suptitle(f"A-seeds: {seeds_data} {P.seed_runs[0].name}, {len(seed_pairs)} seed pairs x layers, "
                 f"{P.seed_tasks} test tasks; dotted: y = x", fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, f"reports/{STAGE}/seed_similarity.png")
    display(fits.round(3))

# %% [markdown]
# ## A-repr across seeds: MAML-MAML, ANIL-ANIL, ANIL-MAML (paper Table 3)
#
# Meta-initialisations of two different seeds (no adaptation), mean over `repr_layers` per task;
# the value is the mean over seed pairs. A pair of one seed shares its initialisation and is
# left out. MAML-MAML over `regime_layers` is also MAML's own row of Table 8 (A-regime-sim).

# %%
def across_table():
    rows = []
    models_by_seed = [(spec, seed) for spec in P.seed_runs for seed in P.seeds]
    for i, (sa, a) in enumerate(tqdm(models_by_seed, desc="A-repr across seeds")):
        for sb, b in models_by_seed[i + 1:]:
            if a == b:
                continue
            first, second = sorted([(sa, a), (sb, b)], key=lambda x: (x[0].algorithm == "maml", x[0].algorithm, x[1]))
            ca, cb = seeded[first], seeded[second]
            table = reuse.model_similarity(ca.trained.model, cb.trained.model, ca.test, ca.settings.bn,
                                           P.repr_layers, P.methods)
            rows.append(table.assign(pair=f"{first[0].algorithm} vs {second[0].algorithm}",
                                     seeds=f"{first[1]}-{second[1]}"))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


across = store.result(f"data/analyses/{STAGE}/across_seeds", IDENTITY, across_table)
repr_rows = len(across) > 0
if repr_rows:
    across_mean = across.groupby(["pair", "layer", "method"], sort=False).value.agg(["mean", "std", "count"]).reset_index()
    fig, axes = plt.subplots(1, len(P.methods), figsize=(4.0 * len(P.methods), 3.4), squeeze=False)
    for ax, method in zip(axes[0], P.methods):
        part = across_mean[(across_mean.layer == "mean") & (across_mean.method == method)]
        ax.bar(part.pair, part["mean"], yerr=part["std"], capsize=3, label="ours (bar: std over seed pairs)")
        paper = [papers.paper_value("A-repr", f"miniimagenet {pair} conv {P.seed_runs[0].setting}", method)
                 for pair in part.pair]
        ax.scatter([p for p, v in zip(part.pair, paper) if v is not None], [v for v in paper if v is not None],
                   marker="x", color="k", zorder=3, label="paper")
        ax.set(title=f"mean {method.upper()} over the body, across seeds", ylim=(0, 1.05))
        ax.legend(fontsize=7)
    fig.tight_layout()
    report.save_figure(fig, f"reports/{STAGE}/repr_across_seeds.png")
    display(across_mean.pivot_table(index=["pair", "layer"], columns="method", values="mean", sort=False).round(3))

# %% [markdown]
# ## Results beside the paper's

# %%
rows = []
for case in cca_cases:
    trained = case.trained
    rows += reuseresults.cca_rows(cca, trained.dataset, trained.spec.name, case.scale(HARDWARE), P.chance_tasks,
                                  P.chance_permutations)
if body_rows:
    scales = {b.trained.spec.name: b.scale(HARDWARE, adapted=False) for b in bodies}
    untrained = reference.scale(HARDWARE, adapted=False).replace(
        "(training)", f"(MAML's training; the random body untrained, seed {P.independent_seed})", 1)
    rows += reuseresults.regime_rows(pairs, P.mini_reference.setting, scales, untrained)
seeds_text = f"{len(P.seeds)} seeds ({', '.join(map(str, P.seeds))}) of {P.seeds_stage}"
if early_rows:
    for spec in P.early_runs:
        case = seeded[spec, P.seeds[0]]
        rows += reuseresults.early_similarity_rows(
            early_mean, spec.name,
            lambda at: case.scale(HARDWARE, seeds=reuseresults.seeds_scale(P.seeds, P.seeds_stage), at=at),
            case.trained.dataset)
if cross_rows:
    case = seeded[P.seed_runs[0], P.seeds[0]]
    rows += reuseresults.seed_fit_rows(fits, P.seed_runs[0].name, case.scale(
        HARDWARE, seeds=f"{len(seed_pairs)} pairs of {seeds_text}; fit over body layers "
                        "(the points are not independent: pairs share seeds, layers a model)"), case.trained.dataset)
if repr_rows:
    case = seeded[P.seed_runs[0], P.seeds[0]]
    rows += reuseresults.across_seed_rows(
        across_mean, P.seed_runs[0].name, P.regime_layers,
        lambda count: case.scale(HARDWARE, adapted=False, seeds=f"mean over {count} pairs of {seeds_text}"),
        case.trained.dataset)
metrics = reuseresults.similarity_metrics(cca, pairs, fits, across_mean if repr_rows else None)
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
        chance = group[group.method == method].set_index("layer").chance
        holds = (body > 0.9).all() and part["head"] < 0.5
        lines.append(f"- **{dataset} {run}, {method.upper()}**: body layers before vs after adaptation "
                     f"{body.min():.3f} to {body.max():.3f} ({'all' if (body > 0.9).all() else 'not all'} above the "
                     f"paper's 0.9); head {part['head']:.3f} ({'below' if part['head'] < 0.5 else 'not below'} the "
                     f"paper's 0.5); chance levels {chance.min():.3f} to {chance.max():.3f}. "
                     + ("The paper's pattern holds on these point values." if holds else
                        "The paper's pattern (body > 0.9, head < 0.5) does not hold on these point values.")
                     + " Verdicts with their intervals and controls: reports/claims.md.")
if body_rows:
    means = pairs[pairs.layer == "mean"]
    for method in P.methods:
        part = means[means.method == method].set_index("regime")
        order = part.value.sort_values(ascending=False)
        lines.append(f"- **Bodies vs MAML's, mean {method.upper()}**: "
                     + ", ".join(f"{r} {v:.3f} +- {part.ci95[r]:.3f}" for r, v in order.items())
                     + (f". Multitask is {'the least' if order.index[-1] == 'multitask' else 'not the least'} similar "
                        "to MAML (the paper: least)." if "multitask" in part.index else "."))
if early_rows:
    for (run, method), group in early_mean.groupby(["run", "method"], sort=False):
        parts = []
        for iteration, at in group.groupby("iteration", sort=False):
            body = at[at.layer != "head"].value
            parts.append(f"iteration {iteration}: body {body.min():.2f}-{body.max():.2f}, head "
                         f"{at[at.layer == 'head'].value.iloc[0]:.2f}")
        lines.append(f"- **A-early, {run}, {method.upper()} pre vs post** (mean of {len(P.seeds)} seeds): "
                     + "; ".join(parts) + ".")
for fit in fits.to_dict("records"):
    near = abs(fit["slope"] - 1) < 0.1 and abs(fit["intercept"]) < 0.1 and fit["r2"] > 0.9
    lines.append(f"- **A-seeds, {fit['method'].upper()}**: ({fit['comparison']}) against (pre,pre) over "
                 f"{fit['points']} seed-pair x body-layer points: y = {fit['slope']:.3f}x {fit['intercept']:+.3f}, "
                 f"R^2 = {fit['r2']:.3f}: " + ("close to y = x (slope within 0.1 of 1, intercept within 0.1, R^2 > 0.9), "
                                                "as the paper finds." if near else "not close to y = x by that test."))
if repr_rows:
    for method in P.methods:
        part = across_mean[(across_mean.layer == "mean") & (across_mean.method == method)].set_index("pair")["mean"]
        text = ", ".join(f"{pair} {v:.3f}" for pair, v in part.items())
        verdict = ""
        if {"anil vs maml", "maml vs maml"} <= set(part.index):
            gap = part["anil vs maml"] - part["maml vs maml"]
            verdict = (f"; ANIL-MAML minus MAML-MAML = {gap:+.3f}: ANIL and MAML are "
                       f"{'about as similar as two MAML seeds (within 0.05)' if abs(gap) <= 0.05 else 'not as similar as two MAML seeds'}")
        lines.append(f"- **A-repr across seeds, mean {method.upper()} over the body**: {text}{verdict}.")
lines.append(f"\nScale: {P.n_tasks} test tasks per setting for A-cca and the bodies (one training seed per run); "
             f"{P.seed_tasks} for A-early, A-seeds, A-repr across seeds ({seeds_text}). Training iterations are in the scale "
             "column of the results.")
display(Markdown("\n".join(lines)))
