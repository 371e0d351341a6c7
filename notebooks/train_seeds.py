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
# # MAML and ANIL over several seeds, with weights kept through training (A-anil over seeds, A-curves; models for A-seeds, A-early, A-repr)
#
# The ANIL paper trains its models with three random seeds and reports means over them
# (Table 2: MiniImageNet 5-way, Omniglot 20-way), compares representations across seeds
# (Fig. 7, 8, Table 3) and at checkpoints through training (Fig. 3, 9). This notebook trains
# MAML and ANIL with the one-seed stage's settings (`one_seed_stage`: `train_miniimagenet`,
# `train_omniglot`, or a campaign's `campaign_<dataset>`) once per seed (the seed draws the initialisation, the training tasks and the
# validation tasks), keeps the weights at the `snapshots` iterations, and tests every seed on
# the **same** fixed test tasks as that stage (its `seed`, here `test_seed`), so seeds differ
# only in training. With `same_as_one_seed`, the seed equal to `test_seed` must reproduce that
# stage's trained model bit for bit: a check that the settings below repeat its own.
#
# Two DVC stages run it: `train_seeds` (MiniImageNet) and `train_seeds_omniglot` (Omniglot
# 20-way), each with its own section of `params.yaml`.
#
# Data: real MiniImageNet (Ravi & Larochelle split), by default **with the first 100 images of
# each class instead of 600** (`prepared: miniimagenet_full_train`: all 600 of each training
# class); or real Omniglot, all 1623 characters, resized to 28x28, the MAML paper's 1200/423
# character split, classes augmented with 90/180/270 degree rotations. The defaults below are
# smoke-sized; `params.yaml` holds the study's CPU scale and `params-paper.yaml` the papers'.
#
# This stage computes: models with their records (`data/models/<stage>/`) and every seed's
# per-task test scores (`data/scores/<stage>/`). The `report_seeds` stage shows the means over
# seeds beside the papers' numbers; editing it never re-executes this stage.

# %% tags=["parameters"]
stage = "train_seeds"     # the DVC stage this execution is (the runner sets it): names every output and run
dataset = "miniimagenet"  # miniimagenet or omniglot
one_seed_stage = "train_miniimagenet"  # the one-seed stage whose settings, test tasks and seed test_seed these repeat
seeds = [0, 1]            # training seeds: initialisation, training and validation tasks (ANIL paper: 3 seeds)
test_seed = 0             # seed of the fixed test episodes: one_seed_stage's `seed`
same_as_one_seed = False  # require seed test_seed to reproduce one_seed_stage's model exactly
threads = 2               # torch CPU threads
workers = 1               # processes sharing each meta-batch's tasks (CPU; metalearn.distributed). 2 on 2 cores
                          # is faster; a MAML run on 2+ ranks sums its meta-gradient task by task: another run
path = "loop"             # how a MAML-family meta-batch runs its tasks: "loop", "vmap", "batched" (metalearn.batched; Conv4, workers 1) or "graph" (batched, captured as a CUDA graph; device cuda)
device = "cpu"            # cpu or cuda
keep_checkpoints = False  # checkpoints in data/checkpoints/ (committed; the campaign) rather than data/work/
prepared = "miniimagenet"  # MiniImageNet's prepared copy: miniimagenet (100 images per class), miniimagenet_full_train (600 per training class)
split = "maml"            # Omniglot's character split, as in train_omniglot: maml or official
bn = "transductive"       # the settings below repeat one_seed_stage's
filters = 32              # Conv4 width (MiniImageNet 32, Omniglot 64)
runs = ["maml-conv-5w1s", "anil-conv-5w1s"]  # MAML-family runs trained with every seed
snapshots = [2]           # iterations whose weights are kept (A-early; ANIL paper: 10000 and 20000 of 30000)
iterations = 4            # ANIL paper: 30000
meta_batch_1shot = 2      # MiniImageNet paper: 4; Omniglot 20-way: 16
meta_batch_5shot = 2      # MiniImageNet paper: 2; Omniglot 20-way: 16
inner_steps = 5           # paper: 5
inner_lr = 0.01           # MiniImageNet paper: 0.01; Omniglot: 0.1
test_steps = 10           # MiniImageNet paper: 10; Omniglot: 5
train_queries = 15        # query images per class in training tasks (paper: 15); 0: K, as MAML's Omniglot code
meta_lr = 0.001           # Adam's step size
n_val_tasks = 4           # fixed validation tasks
val_every = 2             # iterations between validations
n_test_tasks = 10         # fixed test tasks (study: at least 600), the first of one_seed_stage's list
test_queries = 15         # query images per class in test tasks (MiniImageNet paper: 15)
checkpoint_every = 50     # as in one_seed_stage (changes no result, but is part of a run's key)

# %%
from metalearn import fewshot
from metalearn.params import Bool, Choice, Int, List, Str, check, require

P = check(globals(), **fewshot.RUN_PARAMETERS, **fewshot.STEP_PARAMETERS, **fewshot.SEEDS_PARAMETERS, stage=Str(),
          dataset=Choice("miniimagenet", "omniglot"), prepared=Choice(*fewshot.PREPARED), split=Choice("maml", "official"),
          one_seed_stage=Str(), same_as_one_seed=Bool(), keep_checkpoints=Bool(),
          snapshots=List(Int(min=1), min_len=0, unique=True), meta_batch_1shot=Int(min=1), meta_batch_5shot=Int(min=1),
          train_queries=Int(min=0))
fewshot.require_seed_runs(P.seeds, P.runs)
require(all(s < P.iterations for s in P.snapshots), "snapshots", f"must lie below iterations ({P.iterations}): "
        "the final weights are always kept")

# %%
import pandas as pd
import torch

from metalearn import hardware, paths

torch.set_num_threads(P.threads)
require(P.device == "cpu" or torch.cuda.is_available(), "device", "is cuda, but torch sees no GPU")
STAGE, DATASET, ONE_SEED = P.stage, P.dataset, P.one_seed_stage
TRAIN_QUERIES = P.train_queries or None  # None: K queries per class, K the run's shots
images, classes, DATA, FINGERPRINT = data = fewshot.load_images(DATASET, P.device, split=P.split, prepared=P.prepared)
fewshot.require_enough_images(data, P.runs, TRAIN_QUERIES, P.test_queries)
SPLIT = {"split": P.split} if DATASET == "omniglot" else {}  # what identifies the data beside its fingerprint
HARDWARE = hardware.describe(P.device)


# %% [markdown]
# ## Training: every run once per seed
#
# Each run checkpoints to `data/work/` (`data/checkpoints/` with `keep_checkpoints`) and resumes after a kill; its final weights go to
# `data/models/<stage>/<run>-seed<s>.pt` and the kept ones to `<run>-seed<s>@<iteration>.pt`,
# with a record `<run>-seed<s>.json`. A run whose record from an earlier execution has the same
# settings and numerics version is not trained again, nor one that `one_seed_stage` trained with
# the same identity, kept iterations included (its model and kept weights are copied). Every seed is then
# tested on the fixed test tasks of `test_seed` (per-task scores in `data/scores/<stage>/`).

# %%
def settings_of(spec):
    """The run's hyperparameters (one_seed_stage's MAML-family settings)."""
    return fewshot.Settings(P.iterations, P.meta_batch_1shot if spec.k_shot == 1 else P.meta_batch_5shot,
                            P.inner_steps, P.inner_lr, P.test_steps, train_queries=TRAIN_QUERIES or spec.k_shot,
                            meta_lr=P.meta_lr, bn=P.bn, val_every=P.val_every, checkpoint_every=P.checkpoint_every)


config = {**SPLIT, "filters": P.filters, "data": DATA, "fingerprint": FINGERPRINT}
trained, scores = fewshot.train_seeds(
    P.runs, P.seeds, lambda seed: fewshot.episode_factory(images, classes, seed), P.n_test_tasks, P.test_queries,
    P.test_seed, STAGE, {"fingerprint": FINGERPRINT, **SPLIT}, dataset=DATASET, filters=P.filters,
    settings_of=settings_of, n_val_tasks=P.n_val_tasks, val_queries=P.test_queries, config=config, device=P.device,
    snapshots=P.snapshots, about={"data": DATA, "hardware": HARDWARE}, workers=P.workers, path=P.path,
    same_run_in=ONE_SEED, work_dir=paths.checkpoints(P.keep_checkpoints))

# %% [markdown]
# ## Seed `test_seed` against the one-seed stage's models
#
# With the same settings, the seed equal to `one_seed_stage`'s `seed` must train the same
# weights, bit for bit.

# %%
same = fewshot.save_seeds_stage(STAGE, DATASET, trained, P.test_seed, ONE_SEED, P.same_as_one_seed, "same_as_one_seed",
                                data=DATA,
                                test={"tasks": P.n_test_tasks, "queries": P.test_queries, "seed": P.test_seed, "bn": P.bn})
pd.DataFrame([dict(run=name, **{f"identical to {ONE_SEED}'s": v}) for name, v in same.items()])

# %% [markdown]
# ## A glance at every seed's runs
#
# Mean test accuracy over the fixed test tasks (before and after adaptation, and with a NIL
# head); `report_seeds` has the means over seeds, their uncertainty and the papers' numbers.

# %%
pd.concat({seed: fewshot.glance(trained[seed], scores[seed]) for seed in P.seeds}, names=["seed"])
