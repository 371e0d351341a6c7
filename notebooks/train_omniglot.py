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
# # Omniglot: training and testing MAML, first-order MAML, ANIL, random features, Reptile (M-omni, M-omni-mlp, A-anil, A-curves, A-nil, R-omni, R-pretrain)
#
# Real Omniglot (1623 characters x 20 drawings, 28x28, classes augmented with 90/180/270
# degree rotations), prepared by the `prepare` stage. Character split `maml`: 1200
# characters for meta-training (the last 100 of them held out for validation) and 423 for
# test, as in the MAML paper; `official`: background alphabets for training, evaluation
# alphabets for test.
#
# Each run is `<algorithm>-<model>-<N>w<K>s` (`metalearn.fewshot`). MAML-family runs use
# the MAML paper's settings per N-way (5-way: 1 inner step, alpha 0.4, 3 test steps;
# 20-way: 5 steps, alpha 0.1, 5 test steps), K queries per class in training as in the
# MAML code; Reptile uses the review's (Adam inner loop with beta1 = 0, 10 training
# shots, inner batch 10, meta step 1 annealed to 0). Every run is tested on the same
# fixed list of test episodes per setting, with 95% confidence intervals, after
# adapting its head (and, for MAML-family models, with NIL: no head, cosine similarity of
# penultimate features). `multiclass+reptile-...` first trains the body by plain
# classification over all training classes (rotations are classes of their own), throws
# that head away and runs Reptile from there (Reptile review Table 5, R-pretrain). The
# defaults below are smoke-sized; `params.yaml` holds the study's CPU scale and
# `params-paper.yaml` the papers'.

# %% tags=["parameters"]
stage = "train_omniglot"  # the DVC stage this execution is (the runner sets it): names every output and run
keep_checkpoints = False  # checkpoints in data/checkpoints/ (committed; the campaign) rather than data/work/
seed = 0                  # seed of initialisations, training tasks and the fixed validation and test episodes
threads = 2               # torch CPU threads
workers = 1               # processes sharing each meta-batch's tasks (CPU; metalearn.distributed). 2 on 2 cores
path = "loop"             # how a MAML-family meta-batch runs its tasks: "loop", "vmap", "batched" (metalearn.batched; Conv4, workers 1) or "graph" (batched, captured as a CUDA graph; device cuda)
                          # is faster; a MAML run on 2+ ranks sums its meta-gradient task by task: another run
device = "cpu"            # cpu or cuda: where models train and episodes are drawn
split = "maml"            # character split: maml or official
bn = "transductive"       # batch norm of queries: transductive or inductive
filters = 64              # Conv4 filters (paper: 64)
runs = ["maml-conv-5w1s", "anil-conv-5w1s", "random-conv-5w1s", "maml-mlp-5w1s", "reptile-conv-5w1s",
        "multiclass+reptile-conv-5w1s"]  # [init+]algorithm-model-NwKs (metalearn.fewshot)
iterations_5way = 20      # meta-iterations of 5-way MAML-family runs (paper: 60000)
iterations_20way = 10     # meta-iterations of 20-way MAML-family runs (paper: 60000)
meta_batch_5way = 4       # tasks per meta-iteration, 5-way (paper: 32)
meta_batch_20way = 2      # tasks per meta-iteration, 20-way (paper: 16)
inner_steps_5way = 1      # inner SGD steps in training, 5-way (paper: 1)
inner_steps_20way = 5     # inner SGD steps in training, 20-way (paper: 5)
inner_lr_5way = 0.4       # inner step size alpha, 5-way (paper: 0.4)
inner_lr_20way = 0.1      # inner step size alpha, 20-way (paper: 0.1)
test_steps_5way = 3       # adaptation steps at test time, 5-way (paper: 3)
test_steps_20way = 5      # adaptation steps at test time, 20-way (paper: 5)
meta_lr = 0.001           # Adam step size of the outer loop
reptile_iterations = 10   # Reptile meta-iterations (review: 100000)
reptile_meta_batch = 5    # Reptile tasks per meta-iteration (review: 5)
reptile_inner_steps = 5   # Reptile inner Adam steps per task in training (review: 5)
reptile_inner_lr = 0.001  # Reptile inner Adam step size (review: 0.001)
reptile_sgd_inner_lr = 0.003  # reptilesgd runs: inner SGD step size (review, Omniglot: 0.003)
reptile_inner_batch = 10  # Reptile inner minibatch (review: 10)
reptile_train_shots = 10  # Reptile training images per class (review: 10)
reptile_meta_step = 1.0   # Reptile outer step, annealed linearly to 0 (review: 1)
reptile_test_steps = 10   # Reptile inner optimiser steps at test time (review: 50)
n_val_tasks = 10          # fixed validation tasks scored during training
val_every = 5             # iterations between validation scores (the learning curves' resolution)
n_test_tasks = 20         # fixed test tasks per setting (study: at least 600)
test_queries = 5          # query images per class in validation and test tasks
pretrain_iterations = 4   # Adam steps of pre-training for runs with an init (multiclass, multitask, niltrain)
pretrain_batch = 16       # images per multiclass pre-training step (multitask and niltrain: meta_batch tasks)
checkpoint_every = 100    # iterations between checkpoints (a killed run resumes from the last)
snapshots = []            # iterations after which each run's weights are also kept (A-early through training)

# %%
from metalearn import fewshot
from metalearn.params import Bool, Choice, Int, List, Str, check, require

P = check(globals(), **fewshot.RUN_PARAMETERS, **fewshot.REPTILE_PARAMETERS, seed=Int(min=0), stage=Str(),
          keep_checkpoints=Bool(), split=Choice("maml", "official"),
          **{f"{name}_{way}way": check_of for name, check_of in fewshot.STEP_PARAMETERS.items() for way in (5, 20)},
          meta_batch_5way=Int(min=1), meta_batch_20way=Int(min=1), snapshots=List(Int(min=1), min_len=0, unique=True))
for spec in P.runs:
    require(spec.n_way in (5, 20), "runs", f"has {spec.name}: Omniglot settings exist for 5-way and 20-way")

# %%
import pandas as pd
import torch

from metalearn import hardware, paths

torch.set_num_threads(P.threads)
require(P.device == "cpu" or torch.cuda.is_available(), "device", "is cuda, but torch sees no GPU")
STAGE, DATASET = P.stage, "omniglot"
images, classes, DATA, FINGERPRINT = data = fewshot.load_images(DATASET, P.device, split=P.split)
fewshot.require_enough_images(data, P.runs, None, P.test_queries, P.reptile_train_shots)
HARDWARE = hardware.describe(P.device)
pd.DataFrame({s: {"characters": len(c) // 4, "classes (x4 rotations)": len(c)} for s, c in classes.items()})

# %% [markdown]
# ## Training
#
# Each run checkpoints to `data/work/` (`data/checkpoints/` with `keep_checkpoints`) and resumes after a
# kill, or continues a shorter run of its own given more iterations; its final weights go to
# `data/models/<stage>/<run>.pt` with a record `<run>.json` of how it was trained (its
# settings, seed, data and training history). A run whose record from an earlier execution has
# the same settings and numerics version (`metalearn.training.NUMERICS`) is not trained again:
# the committed models are used as they are. Training loss and accuracy are means over the
# iterations between two points of the curve; validation accuracy is measured after test-time
# adaptation on fixed validation tasks.

# %%
def settings_of(spec):
    """The run's hyperparameters, from the parameters above."""
    common = dict(meta_lr=P.meta_lr, bn=P.bn, val_every=P.val_every, checkpoint_every=P.checkpoint_every,
                  pretrain_iterations=P.pretrain_iterations, pretrain_batch=P.pretrain_batch)
    if spec.reptile:
        return fewshot.reptile_settings(spec, P, **common)
    five = spec.n_way == 5
    return fewshot.Settings(P.iterations_5way if five else P.iterations_20way,
                            P.meta_batch_5way if five else P.meta_batch_20way,
                            P.inner_steps_5way if five else P.inner_steps_20way,
                            P.inner_lr_5way if five else P.inner_lr_20way,
                            P.test_steps_5way if five else P.test_steps_20way,
                            train_queries=spec.k_shot, **common)  # MAML's code: K queries per class


episodes = fewshot.episode_factory(images, classes, P.seed)
config = {"split": P.split, "filters": P.filters, "data": DATA, "fingerprint": FINGERPRINT}
trained, _ = fewshot.train_runs(P.runs, DATASET, P.filters, episodes, settings_of, P.n_val_tasks, P.test_queries,
                                P.seed, STAGE, config, P.device, snapshots=P.snapshots,
                                about={"data": DATA, "hardware": HARDWARE}, workers=P.workers, path=P.path,
                                work_dir=paths.checkpoints(P.keep_checkpoints))

# %% [markdown]
# ## Test: per-task scores on the fixed test tasks
#
# Every run on the same fixed, seeded list of test episodes per N-way K-shot setting: query
# accuracy after 0..k adaptation steps and, for MAML-family runs, with a NIL head. One row per
# task in `data/scores/train_omniglot/<run>.csv` (reused when the weights, the test settings and
# `metalearn.evaluation.NUMERICS` are those of an earlier execution). Below: the mean over tasks
# only, as a glance; `report_training` has the confidence intervals, figures and the papers'.

# %%
scores = fewshot.score_runs(trained, episodes, P.n_test_tasks, P.test_queries, P.seed, STAGE,
                            {"fingerprint": FINGERPRINT, "split": P.split}, every_step=True)
fewshot.save_stage(STAGE, DATASET, [spec.name for spec in P.runs], data=DATA,
                   hardware=sorted({t.record["hardware"] for t in trained.values()}),
                   test={"tasks": P.n_test_tasks, "queries": P.test_queries, "seed": P.seed, "bn": P.bn})
fewshot.glance(trained, scores)
