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
# # Omniglot 20-way MAML and ANIL over several seeds (A-anil over seeds, A-curves)
#
# The ANIL paper's Table 2 compares ANIL with MAML on Omniglot 20-way 1-shot and 5-shot as
# means over three seeds. This stage trains those runs with the `train_omniglot` stage's
# 20-way settings once per seed (the seed draws the initialisation, the training tasks and the
# validation tasks) and tests every seed on the **same** fixed test tasks as `train_omniglot`
# (its `seed`, here `test_seed`), so seeds differ only in training. With
# `same_as_train_omniglot`, the seed equal to `test_seed` must reproduce that stage's trained
# model bit for bit: a check that the settings below repeat its own.
#
# Data: real Omniglot, all 1623 characters, resized to 28x28, the MAML paper's 1200/423
# character split, classes augmented with 90/180/270 degree rotations. The defaults below
# are smoke-sized; `params.yaml` holds the study's CPU scale and `params-paper.yaml` the papers'.
#
# This stage computes: models with their records (`data/models/<stage>/`) and every seed's
# per-task test scores (`data/scores/<stage>/`). The `report_seeds` stage shows the means over
# seeds beside the papers' numbers; editing it never re-executes this stage.

# %% tags=["parameters"]
seeds = [0, 1]            # training seeds: initialisation, training and validation tasks (ANIL paper: 3 seeds)
test_seed = 0             # seed of the fixed test episodes: train_omniglot's `seed`
same_as_train_omniglot = False  # require seed test_seed to reproduce train_omniglot's model exactly
threads = 2               # torch CPU threads
workers = 1               # processes sharing each meta-batch's tasks (CPU; metalearn.distributed). 2 on 2 cores
path = "loop"             # how a MAML-family meta-batch runs its tasks: "loop", "vmap" or "batched" (metalearn.batched; Conv4, workers 1)
                          # is faster; a MAML run on 2+ ranks sums its meta-gradient task by task: another run
device = "cpu"            # cpu or cuda
split = "maml"            # as in train_omniglot
bn = "transductive"       # as in train_omniglot
filters = 64              # as in train_omniglot
runs = ["maml-conv-20w1s", "anil-conv-20w1s"]  # 20-way MAML-family runs trained with every seed
iterations = 4            # train_omniglot's iterations_20way (ANIL paper: 30000)
meta_batch = 2            # train_omniglot's meta_batch_20way (paper: 16)
inner_steps = 5           # train_omniglot's inner_steps_20way (paper: 5)
inner_lr = 0.1            # train_omniglot's inner_lr_20way (paper: 0.1)
test_steps = 5            # train_omniglot's test_steps_20way (paper: 5)
meta_lr = 0.001           # as in train_omniglot
n_val_tasks = 4           # as in train_omniglot
val_every = 2             # as in train_omniglot
n_test_tasks = 10         # fixed test tasks (study: at least 600), the first of train_omniglot's list
test_queries = 5          # as in train_omniglot
checkpoint_every = 100    # as in train_omniglot (changes no result, but is part of a run's key)

# %%
from metalearn import fewshot
from metalearn.params import Bool, Choice, Int, check, require

P = check(globals(), **fewshot.RUN_PARAMETERS, **fewshot.STEP_PARAMETERS, **fewshot.SEEDS_PARAMETERS,
          same_as_train_omniglot=Bool(), split=Choice("maml", "official"), meta_batch=Int(min=1))
fewshot.require_seed_runs(P.seeds, P.runs)
for spec in P.runs:
    require(spec.n_way == 20, "runs", f"has {spec.name}: the settings here are train_omniglot's 20-way ones")

# %%
import pandas as pd
import torch

from metalearn import hardware

torch.set_num_threads(P.threads)
require(P.device == "cpu" or torch.cuda.is_available(), "device", "is cuda, but torch sees no GPU")
STAGE, DATASET = "train_seeds_omniglot", "omniglot"
images, classes, DATA, FINGERPRINT = data = fewshot.load_images(DATASET, P.device, split=P.split)
fewshot.require_enough_images(data, P.runs, None, P.test_queries)
HARDWARE = hardware.describe(P.device)

# %% [markdown]
# ## Training: every run once per seed
#
# Each run checkpoints to `data/work/` and resumes after a kill; its final weights go to
# `data/models/train_seeds_omniglot/<run>-seed<s>.pt` with a record `<run>-seed<s>.json`. A run
# whose record from an earlier execution has the same settings and numerics version is not
# trained again, nor one that train_omniglot trained with the same identity (seed `test_seed` with
# its settings: its model is copied). Every seed is then tested on the fixed test tasks of `test_seed` (per-task
# scores in `data/scores/train_seeds_omniglot/`).

# %%
def settings_of(spec):
    """The run's hyperparameters (train_omniglot's 20-way MAML-family settings)."""
    return fewshot.Settings(P.iterations, P.meta_batch, P.inner_steps, P.inner_lr, P.test_steps, meta_lr=P.meta_lr,
                            train_queries=spec.k_shot, bn=P.bn, val_every=P.val_every,
                            checkpoint_every=P.checkpoint_every)  # MAML's code: K queries per class


config = {"split": P.split, "filters": P.filters, "data": DATA, "fingerprint": FINGERPRINT}
trained, scores = fewshot.train_seeds(
    P.runs, P.seeds, lambda seed: fewshot.episode_factory(images, classes, seed), P.n_test_tasks, P.test_queries,
    P.test_seed, STAGE, {"fingerprint": FINGERPRINT, "split": P.split}, dataset=DATASET, filters=P.filters,
    settings_of=settings_of, n_val_tasks=P.n_val_tasks, val_queries=P.test_queries, config=config, device=P.device,
    about={"data": DATA, "hardware": HARDWARE}, workers=P.workers, path=P.path, same_run_in="train_omniglot")

# %% [markdown]
# ## Seed `test_seed` against train_omniglot's models
#
# With the same settings, the seed equal to train_omniglot's `seed` must train the same weights,
# bit for bit.

# %%
same = fewshot.save_seeds_stage(STAGE, DATASET, trained, P.test_seed, "train_omniglot", P.same_as_train_omniglot,
                                "same_as_train_omniglot", data=DATA,
                                test={"tasks": P.n_test_tasks, "queries": P.test_queries, "seed": P.test_seed, "bn": P.bn})
pd.DataFrame([dict(run=name, **{"identical to train_omniglot's": v}) for name, v in same.items()])

# %% [markdown]
# ## A glance at every seed's runs
#
# Mean test accuracy over the fixed test tasks (before and after adaptation, and with a NIL
# head); `report_seeds` has the means over seeds, their uncertainty and the papers' numbers.

# %%
pd.concat({seed: fewshot.glance(trained[seed], scores[seed]) for seed in P.seeds}, names=["seed"])
