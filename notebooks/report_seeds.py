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
# # MAML and ANIL over seeds, beside the papers (A-anil and A-nil over seeds, A-curves)
#
# The ANIL paper trains every model with three random seeds and reports means over them
# (Table 2, 4). This report shows what the over-seeds training stages computed:
# `train_seeds_omniglot` (Omniglot 20-way 1- and 5-shot) and `train_seeds` (MiniImageNet 5-way
# 1-shot), every seed tested on the **same** fixed test tasks, so seeds differ only in
# training. It reads only what those stages wrote under `data/` (models' records with their
# training histories, per-task test scores): editing it never retrains or re-tests anything.
# The training campaign runs it as `report_seeds_campaign` on `campaign_seeds_omniglot` (Omniglot
# 5-way 1-shot at the papers' per-iteration settings; `params-campaign.yaml`), whose results
# `report_campaign` judges against the papers' claims.
#
# Per run: each seed's accuracy (95% CI over its test tasks), the mean over seeds with the 95%
# CI over tasks of the per-task mean over seeds, and the standard deviation between seeds
# (n - 1); ANIL minus MAML paired over the tasks and per seed (`metalearn.seeds`).

# %% tags=["parameters"]
stage = "report_seeds"     # the DVC stage this execution is (the runner sets it): names its outputs
stages = ["train_seeds_omniglot", "train_seeds"]  # over-seeds training stages whose runs are reported (the campaign: campaign_seeds_omniglot)

# %%
from metalearn.params import Choice, List, Str, check

P = check(globals(), stage=Str(), stages=List(Choice("train_seeds_omniglot", "train_seeds", "campaign_seeds_omniglot"),
                                                 unique=True))

# %%
from IPython.display import Markdown, display

from metalearn import accuracy, report, results, seeds

STAGE = P.stage
loaded = {stage: accuracy.load(stage) for stage in P.stages}
scores = {stage: seeds.scores_of(s) for stage, s in loaded.items()}
display(Markdown("\n".join(f"- **{stage}**: {len(s.info['seeds'])} seeds ({', '.join(map(str, s.info['seeds']))}) of "
                           f"{len(s.records) // len(s.info['seeds'])} runs on {s.info['data']}; "
                           f"{s.info['test']['tasks']} test tasks x {s.info['test']['queries']} queries per class; "
                           + "; ".join(s.info["hardware"]) for stage, s in loaded.items())))

# %% [markdown]
# ## Learning curves over seeds (A-curves)
#
# Validation accuracy after test-time adaptation: each seed (thin), the mean over seeds (thick)
# and its 95% interval over the seeds (shaded; each seed is validated on its own fixed tasks, a
# seed's MAML and ANIL on the same ones). The ANIL paper finds MAML's and ANIL's curves nearly
# identical (Fig. 5, 10); the A-curves rows below give the final point of each, and ANIL minus
# MAML there paired by seed.

# %%
histories = {stage: seeds.history_of(s) for stage, s in loaded.items()}
for stage, s in loaded.items():
    history = histories[stage]
    wide = history.pivot_table(index="iteration", columns="run", values="val_accuracy").reset_index()
    report.save_table(wide.to_dict("records"), f"reports/plots/{stage}_val_accuracy.csv")  # DVC plot: every run and seed
    fig = seeds.plot_curves(history, list(dict.fromkeys(scores[stage].run)),
                            f"A-curves over seeds ({stage}): {s.info['data']}; {'; '.join(s.info['hardware'])}")
    report.save_figure(fig, f"reports/{STAGE}/{stage}_curves_over_seeds.png")

# %% [markdown]
# ## Test: every seed on the same fixed test tasks
#
# One row per run and seed in `<stage>_accuracy.csv` (95% CI over its test tasks); below, each
# seed's accuracy, the mean over seeds with the 95% CI over tasks of the per-task mean over
# seeds, and the standard deviation between seeds.

# %%
summaries = {}
for stage in loaded:
    report.save_table(seeds.per_seed(scores[stage]).to_dict("records"), f"reports/{STAGE}/{stage}_accuracy.csv")
    summaries[stage] = seeds.summary(scores[stage])
    display(Markdown(f"**{stage}**"), summaries[stage].drop(columns=["iterations", "meta_batch"]).round(2))

# %% [markdown]
# ## Results beside the papers'
#
# `accuracy` is the mean over seeds, as the ANIL paper's Table 2 and 4 values are; its ± there
# is not stated to be over seeds or tasks. Ours: the 95% CI over tasks, and the std over seeds
# in its own row. ANIL minus MAML per setting, paired over the same test tasks, twice: with the
# tasks' 95% half-width and with the seeds' (the claims table judges both). A-curves: the final
# validation accuracy, mean over seeds with the 95% interval over them, and ANIL minus MAML of it
# paired by seed.

# %%
rows, metrics = [], {}
for stage, s in loaded.items():
    rows += seeds.result_rows(s.info["dataset"], summaries[stage], seeds.scale(s))
    rows += seeds.contrast_rows(s.info["dataset"], scores[stage], seeds.scale(s))
    rows += seeds.curve_rows(s.info["dataset"], histories[stage], scores[stage], seeds.scale(s, validation=True))
    metrics[stage] = {f"{name}{'_nil' if head == 'nil' else ''}_{stat}": r[f"{stat} over seeds"]
                      for (name, head), r in summaries[stage].iterrows() for stat in ("mean", "std")}
results.write(rows, STAGE)
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")
results.frame(rows)

# %% [markdown]
# ## What the numbers say

# %%
lines = []
for stage, s in loaded.items():
    lines.append(f"\n**{stage}** ({s.info['data']})\n")
    lines += seeds.verdicts(summaries[stage], scores[stage], s.info["test"]["tasks"])
    same = s.info.get("same_as", {})
    if same.get("runs"):
        lines.append(f"- Seed {s.info['test']['seed']} reproduces {same['stage']}'s models bit for bit: "
                     + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same["runs"].items()) + ".")
display(Markdown("\n".join(lines)))
