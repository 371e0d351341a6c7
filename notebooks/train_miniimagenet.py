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
# # MiniImageNet: training and testing MAML, first-order MAML, ANIL, Reptile and the training regimes of the body (M-mini, A-anil, A-curves, A-nil, A-regimes, R-mini, R-pretrain)
#
# Real MiniImageNet in the Ravi & Larochelle split (64 training, 16 validation, 20 test
# classes, 84x84 RGB), by default **with the first 100 images of each class instead of 600**
# (`prepared: miniimagenet_full_train` trains on all 600 images of each training class),
# prepared by the `prepare` stage. Conv4 with 32 filters and 2x2 max-pooling.
#
# MAML-family runs use the MAML paper's settings (5 inner steps, alpha 0.01, 10 test steps,
# 15 queries per class, meta-batch 4 for 1-shot and 2 for 5-shot); Reptile the review's
# (Adam inner loop with beta1 = 0, 15 training shots, inner batch 10, 8 inner steps,
# meta step 1 annealed to 0, 50 test steps, transductive). Every run is tested on the same
# fixed list of test episodes per setting, with 95% confidence intervals, after adapting
# its head (and, for MAML-family models, with a NIL head). The defaults below are
# smoke-sized; `params.yaml` holds the study's CPU scale and `params-paper.yaml` the papers'.
#
# Training regimes of the body (ANIL paper Sec. 5.2, Tables 5 and 7): a run
# `<init>+head-...` first trains the body without an inner loop (`multiclass`:
# classification over the 64 training classes; `multitask`: one shared 5-way head over
# all tasks, no adaptation; `niltrain`: no head, NIL's cosine logits), throws the head
# away, freezes the body and meta-trains a new head with MAML's inner loop on the head
# only (the paper's "MAML head"); `random-...` does the same on the random
# initialisation. `multiclass+reptile-...` runs Reptile from the multiclass-pretrained
# weights (Reptile review Table 5, R-pretrain). Multiclass pre-training is shared by
# every run of this stage that starts from it.
#
# This stage computes: it writes the trained models with their records
# (`data/models/train_miniimagenet/`) and every run's per-task test scores
# (`data/scores/train_miniimagenet/`). The `report_training` stage shows them beside the
# papers' numbers; editing that report never re-executes this stage.

# %% tags=["parameters"]
stage = "train_miniimagenet"  # the DVC stage this execution is (the runner sets it): names every output and run
keep_checkpoints = False  # checkpoints in data/checkpoints/ (committed; the campaign) rather than data/work/
seed = 0                  # seed of initialisations, training tasks and the fixed validation and test episodes
threads = 2               # torch CPU threads
workers = 1               # processes sharing each meta-batch's tasks (CPU; metalearn.distributed). 2 on 2 cores
path = "loop"             # how a MAML-family meta-batch runs its tasks: "loop", "vmap", "batched" (metalearn.batched; Conv4, workers 1) or "graph" (batched, captured as a CUDA graph; device cuda)
                          # is faster; a MAML run on 2+ ranks sums its meta-gradient task by task: another run
prepared = "miniimagenet"  # prepared copy: miniimagenet (100 images per class), miniimagenet_full_train (600 per training class)
device = "cpu"            # cpu or cuda: where models train and episodes are drawn
bn = "transductive"       # batch norm of queries: transductive or inductive
filters = 32              # Conv4 filters (paper: 32)
runs = ["maml-conv-5w1s", "fomaml-conv-5w1s", "anil-conv-5w1s", "reptile-conv-5w1s", "multiclass+head-conv-5w1s",
        "niltrain+head-conv-5w1s"]  # [init+]algorithm-model-NwKs (metalearn.fewshot)
iterations = 4            # meta-iterations of MAML-family runs (MAML paper: 60000; ANIL paper: 30000)
meta_batch_1shot = 2      # tasks per meta-iteration, 1-shot (paper: 4)
meta_batch_5shot = 2      # tasks per meta-iteration, 5-shot (paper: 2)
inner_steps = 5           # inner SGD steps in training (paper: 5)
inner_lr = 0.01           # inner step size alpha (paper: 0.01)
test_steps = 10           # adaptation steps at test time (paper: 10)
train_queries = 15        # query images per class in training tasks (paper: 15)
meta_lr = 0.001           # Adam step size of the outer loop
reptile_iterations = 4    # Reptile meta-iterations (review: 100000)
reptile_meta_batch = 5    # Reptile tasks per meta-iteration (review: 5)
reptile_inner_steps = 8   # Reptile inner Adam steps per task in training (review: 8)
reptile_inner_lr = 0.001  # Reptile inner Adam step size (review: 0.001)
reptile_sgd_inner_lr = 0.003  # reptilesgd runs: inner SGD step size (review, Omniglot: 0.003)
reptile_inner_batch = 10  # Reptile inner minibatch (review: 10)
reptile_train_shots = 15  # Reptile training images per class (review: 15)
reptile_meta_step = 1.0   # Reptile outer step, annealed linearly to 0 (review: 1)
reptile_test_steps = 10   # Reptile inner optimiser steps at test time (review: 50)
n_val_tasks = 4           # fixed validation tasks scored during training
val_every = 2             # iterations between validation scores (the learning curves' resolution)
n_test_tasks = 10         # fixed test tasks per setting (study: at least 600)
test_queries = 15         # query images per class in validation and test tasks (paper: 15)
test_every_step = False   # also measure accuracy after each test step, not only the last (costs a query pass per step)
pretrain_iterations = 4   # Adam steps of pre-training for runs with an init (multiclass, multitask, niltrain)
pretrain_batch = 16       # images per multiclass pre-training step (multitask and niltrain: meta_batch tasks)
checkpoint_every = 50     # iterations between checkpoints (a killed run resumes from the last)

# %%
from metalearn import fewshot
from metalearn.params import Bool, Choice, Int, Str, check, require

P = check(globals(), **fewshot.RUN_PARAMETERS, **fewshot.STEP_PARAMETERS, **fewshot.REPTILE_PARAMETERS,
          prepared=Choice(*fewshot.PREPARED), seed=Int(min=0), stage=Str(), keep_checkpoints=Bool(),
          meta_batch_1shot=Int(min=1), meta_batch_5shot=Int(min=1), train_queries=Int(min=1), test_every_step=Bool())
for spec in P.runs:
    require(spec.model == "conv", "runs", f"has {spec.name}: MiniImageNet runs use the conv model")

# %%
import pandas as pd
import torch

from metalearn import hardware, paths

torch.set_num_threads(P.threads)
require(P.device == "cpu" or torch.cuda.is_available(), "device", "is cuda, but torch sees no GPU")
STAGE, DATASET = P.stage, "miniimagenet"
images, _, DATA, FINGERPRINT = data = fewshot.load_images(DATASET, P.device, prepared=P.prepared)
fewshot.require_enough_images(data, P.runs, P.train_queries, P.test_queries, P.reptile_train_shots)
HARDWARE = hardware.describe(P.device)
pd.DataFrame({s: {"classes": x.shape[0], "images per class": x.shape[1]} for s, x in images.items()})

# %% [markdown]
# ## Training
#
# Each run checkpoints to `data/work/` (`data/checkpoints/` with `keep_checkpoints`) and resumes after a
# kill, or continues a shorter run of its own given more iterations; its final weights go to
# `data/models/<stage>/<run>.pt` with a record `<run>.json` of how it was trained
# (its settings, seed, data and training history). A run whose record from an earlier execution
# has the same settings and numerics version (`metalearn.training.NUMERICS`) is not trained
# again: the committed models are used as they are.

# %%
def settings_of(spec):
    """The run's hyperparameters, from the parameters above."""
    common = dict(meta_lr=P.meta_lr, bn=P.bn, val_every=P.val_every, checkpoint_every=P.checkpoint_every,
                  pretrain_iterations=P.pretrain_iterations, pretrain_batch=P.pretrain_batch)
    if spec.reptile:
        return fewshot.reptile_settings(spec, P, **common)
    return fewshot.Settings(P.iterations, P.meta_batch_1shot if spec.k_shot == 1 else P.meta_batch_5shot,
                            P.inner_steps, P.inner_lr, P.test_steps, train_queries=P.train_queries, **common)


episodes = fewshot.episode_factory(images, None, P.seed)
config = {"filters": P.filters, "data": DATA, "fingerprint": FINGERPRINT}
trained, _ = fewshot.train_runs(P.runs, DATASET, P.filters, episodes, settings_of, P.n_val_tasks, P.test_queries,
                                P.seed, STAGE, config, P.device, about={"data": DATA, "hardware": HARDWARE}, workers=P.workers, path=P.path,
                                work_dir=paths.checkpoints(P.keep_checkpoints))

# %% [markdown]
# ## Test: per-task scores on the fixed test tasks
#
# Every run on the same fixed, seeded list of test episodes per N-way K-shot setting: query
# accuracy before and after adaptation (after every step with `test_every_step`) and, for
# MAML-family runs, with a NIL head. One row per task in `data/scores/train_miniimagenet/<run>.csv`
# (reused when the weights, the test settings and `metalearn.evaluation.NUMERICS` are those of
# an earlier execution). Below: means over tasks only, as a glance; `report_training` has the
# confidence intervals, the regimes table and the papers' numbers.

# %%
scores = fewshot.score_runs(trained, episodes, P.n_test_tasks, P.test_queries, P.seed, STAGE,
                            {"fingerprint": FINGERPRINT}, every_step=P.test_every_step)
fewshot.save_stage(STAGE, DATASET, [spec.name for spec in P.runs], data=DATA,
                   hardware=sorted({t.record["hardware"] for t in trained.values()}),
                   test={"tasks": P.n_test_tasks, "queries": P.test_queries, "seed": P.seed, "bn": P.bn})
fewshot.glance(trained, scores)
