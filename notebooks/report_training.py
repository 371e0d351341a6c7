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
# # Few-shot image classification: MAML, first-order MAML, ANIL, random features, Reptile and the body's training regimes, beside the papers (M-omni, M-omni-mlp, M-mini, A-anil, A-curves, A-nil, A-regimes, R-omni, R-mini, R-pretrain)
#
# The report of the one-seed training stages `train_omniglot` and `train_miniimagenet`: what
# they trained (learning curves), how every run scores on its setting's fixed test tasks
# (after 0..k test-time adaptation steps, and for MAML-family models with a NIL head: no head,
# cosine similarity of penultimate features to the support set), the training regimes of the
# body (MiniImageNet), and every number beside the papers'. It reads only what those stages
# wrote under `data/` (models' records with their training histories, per-task test scores),
# so editing this report never retrains or re-tests anything.
#
# Runs are named `[<init>+]<algorithm>-<model>-<N>w<K>s` (`metalearn.fewshot`); their settings
# are in each training stage's notebook and `params.yaml`. Accuracies are means over the fixed
# test tasks with 95% confidence intervals (Student t over tasks).

# %% tags=["parameters"]
stages = ["train_omniglot", "train_miniimagenet"]  # one-seed training stages whose runs are reported (and train_miniimagenet_5shot)

# %%
from metalearn.params import Choice, List, check

P = check(globals(), stages=List(Choice("train_omniglot", "train_miniimagenet", "train_miniimagenet_5shot"), unique=True))

# %%
from IPython.display import Markdown, display

from metalearn import accuracy, report, results

STAGE = "report_training"
loaded = {stage: accuracy.load(stage) for stage in P.stages}
display(Markdown("\n".join(f"- **{stage}**: {len(s.records)} runs on {s.info['data']}; {s.info['test']['tasks']} test "
                           f"tasks x {s.info['test']['queries']} queries per class; {'; '.join(s.info['hardware'])}"
                           for stage, s in loaded.items())))

# %% [markdown]
# ## Learning curves (A-curves: MAML and ANIL nearly identical, ANIL paper Fig. 5, 10)
#
# Training loss and accuracy are means over the iterations between two points of a curve;
# validation accuracy is measured after adaptation as in training (its inner steps) on fixed
# validation tasks; the error bar at each curve's end is the 95% CI over those tasks of the final
# weights (the A-curves rows below).

# %%
histories = {stage: accuracy.histories(s) for stage, s in loaded.items()}
for stage, s in loaded.items():
    accuracy.save_learning_curves(histories[stage], stage, f"reports/{STAGE}",
                                  f"{stage}: {s.info['data']}; {'; '.join(s.info['hardware'])}", s.validation)

# %% [markdown]
# ## Test: accuracy over the fixed test tasks, with 95% confidence intervals
#
# One table and figure per training stage: each run after its test-time adaptation (`adapt`, k
# steps) and with a NIL head (`nil`), and the accuracy after each measured test step.

# %%
tables = {}
for stage, s in loaded.items():
    tables[stage], curves = accuracy.test_table(s)
    accuracy.save_tests(tables[stage], curves, stage, f"reports/{STAGE}",
                        f"{stage}: test accuracy after adaptation ({s.info['test']['tasks']} test tasks, 95% CI)")
    display(Markdown(f"**{stage}**"), tables[stage].round(2))

# %% [markdown]
# ## Training regimes of the body (A-regimes: ANIL paper Tables 5 and 7)
#
# Each body tested with a NIL head and with a MAML head (MAML and ANIL: their own head,
# adapted; the other regimes: a new head meta-trained on the frozen body, then adapted). The
# paper finds MAML/ANIL bodies best, multitask worst, and the two heads within about a point of
# each other.

# %%
for stage, table in tables.items():
    regimes = accuracy.regime_table(table)
    if not regimes.empty:
        display(Markdown(f"**{stage}**"), regimes)

# %% [markdown]
# ## Results beside the papers'
#
# The rows this report adds to `reports/results.csv`: ours (`value`, `ci95`) and the paper's
# number where it gives one; then the paired differences (over the same test tasks) that the
# papers' claims compare: ANIL - MAML, NIL head - adapted head, first-order - MAML, Reptile -
# MAML, Reptile from multiclass - Reptile, and each other body - MAML's (NIL heads). Below them,
# the ordering claims per setting.

# %%
rows, metrics = [], {}
for stage, s in loaded.items():
    rows += accuracy.stage_rows(s)
    metrics[stage] = accuracy.metrics(tables[stage])
results.write(rows, STAGE)
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")
for stage in loaded:
    print(stage)
    accuracy.compare_to_maml(metrics[stage])
results.frame(rows)
