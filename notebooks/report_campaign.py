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
# # The training campaign: where each run stands (issue 18)
#
# The campaign trains MAML and ANIL at the papers' per-iteration settings (queries, meta-batch,
# inner steps, step sizes, data; `params-campaign.yaml`) with only the number of iterations
# reduced: the stages `campaign_miniimagenet` and `campaign_omniglot` run the training notebooks
# under those names, each run continuing from its checkpoint in `data/checkpoints/` (committed as
# the campaign goes, so it continues on another machine). This report reads those checkpoints,
# while the campaign trains or after: each run's iteration against its target, the seconds it
# has taken per iteration on the machines that trained it, the hours it still needs at that
# pace, and its validation accuracy against meta-iterations with the papers' final test
# accuracies marked (validation tasks are not the papers' test tasks: the marks say how far a
# curve is from where the papers ended, not whether it got there). A finished stage's test
# scores on its fixed test tasks are in `data/scores/<stage>/`: this report shows them, with the
# analyses run on its models (`analyses`, e.g. `freeze_campaign`), and judges the papers' claims
# on them by the rules of `reports/claims.md` (`metalearn.claims`). The campaign has no random
# body of its own: each model's control (a random body with a NIL head) is the study's, from
# `reports/results.csv`.

# %% tags=["parameters"]
stages = ["campaign_miniimagenet", "campaign_omniglot"]  # the campaign's training stages (one seed, or several: `seeds`)
params_file = "params-campaign.yaml"  # where their parameters (and so each run's target iterations) are
analyses = ["freeze_campaign", "similarity_campaign"]  # analyses of the finished models (reports/<stage>/results.csv)

# %%
from metalearn.params import List, Str, check

P = check(globals(), stages=List(Str(), unique=True), params_file=Str(),
          analyses=List(Str(), min_len=0, unique=True))

# %%
import matplotlib.pyplot as plt
import pandas as pd

from metalearn import accuracy, claims, fewshot, papers, paths, report, results
from metalearn.run import load_section

STAGE = "report_campaign"
CHECKPOINTS = paths.checkpoints(kept=True)
sections = {stage: load_section(stage, paths.ROOT / P.params_file) for stage in P.stages}


def dataset_of(section):
    """The dataset a training stage's section trains on (the seeds stages name it)."""
    return section.get("dataset", "miniimagenet" if "prepared" in section else "omniglot")


def runs_of(section):
    """A training stage's runs as its checkpoints name them (``<run>-seed<s>`` in a seeds stage), each with its spec."""
    names = [f"{run}-seed{seed}" for seed in section["seeds"] for run in section["runs"]] if "seeds" in section \
        else section["runs"]
    return [(name, fewshot.Spec.parse(name.rsplit("-seed", 1)[0])) for name in names]


def paper_accuracies(dataset, spec):
    """The papers' final test accuracies of the run's setting: {experiment: %}."""
    return papers.final_accuracies(f"{dataset} {spec.algorithm} conv {spec.setting}")


rows, curves = [], {}
for stage, section in sections.items():
    dataset = dataset_of(section)
    found = {p["run"]: p for p in fewshot.progress(stage, CHECKPOINTS)}
    if section.get("same_as_one_seed"):  # its seed test_seed is the one-seed stage's run, copied: that run's checkpoint
        found = {**{f"{p['run']}-seed{section['test_seed']}": p
                    for p in fewshot.progress(section["one_seed_stage"], CHECKPOINTS)}, **found}
    for name, spec in runs_of(section):
        state = found.get(name)
        target = fewshot.target_iterations(section, spec)
        done = state["iteration"] if state else 0
        pace = state["seconds"] / done if done else float("nan")
        last = [h for h in (state["history"] if state else []) if "val_accuracy" in h]
        rows.append({"stage": stage, "run": name, "iteration": done, "target": target,
                     "validation accuracy (%)": 100 * last[-1]["val_accuracy"] if last else float("nan"),
                     "seconds per iteration": pace, "hours left": max(target - done, 0) * pace / 3600,
                     "papers (final test accuracy, %)": ", ".join(
                         f"{e} {v:g}" for e, v in paper_accuracies(dataset, spec).items())})
        curves[(stage, name)] = pd.DataFrame(last)
table = pd.DataFrame(rows)
report.save_table(table.to_dict("records"), f"reports/{STAGE}/progress.csv")
table.round(2)

# %%
fig, axes = plt.subplots(1, len(P.stages), figsize=(6 * len(P.stages), 4), squeeze=False)
for ax, stage in zip(axes[0], P.stages):
    for i, (name, spec) in enumerate(runs_of(sections[stage])):
        curve = curves[(stage, name)]
        if len(curve):
            ax.plot(curve["iteration"], 100 * curve["val_accuracy"], color=f"C{i}", label=name)
        for value in paper_accuracies(dataset_of(sections[stage]), spec).values():
            ax.axhline(value, color=f"C{i}", linestyle="--", linewidth=0.8)
    ax.set(title=stage, xlabel="meta-iteration", ylabel="validation accuracy (%)", ylim=(0, 100))
    if any(len(curves[(stage, name)]) for name, _ in runs_of(sections[stage])):
        ax.legend(fontsize=7)
fig.suptitle("Campaign: validation accuracy after test-time adaptation (dashed: the papers' final test accuracy)",
             fontsize=8)
report.save_figure(fig, f"reports/{STAGE}/validation.png")

# %% [markdown]
# ## Finished stages: test accuracy, analyses and the claims at the campaign's scale
#
# A campaign stage has finished when every run reached its target and was tested (its
# `data/models/<stage>/stage.json`); before that it has no rows here. A stage over seeds is
# shown here while it trains; its results over seeds come from its report (`report_seeds_campaign`,
# the report_seeds notebook), one of the `analyses` judged here.

# %%
finished = [stage for stage in P.stages if "seeds" not in sections[stage]
            and paths.input(f"data/models/{stage}/stage.json").is_file()]
measured = [row for stage in finished for row in accuracy.stage_rows(accuracy.load(stage))]
for analysis in P.analyses:
    path = paths.input(f"reports/{analysis}/results.csv")
    measured += results.read(path) if path.is_file() else []
results.write(measured, STAGE, collected=True)  # rows of several stages
judged = claims.judge_borrowing_controls(measured, results.read(paths.input("reports/results.csv")))
print("finished:", finished or "none yet")
results.frame(measured)

# %%
pd.DataFrame(judged)[["id", "ours", "ci95", "threshold", "verdict", "why"]] if judged else None

# %%
lines = [f"| {r['stage']} | {r['run']} | {r['iteration']} / {r['target']} | "
         f"{r['validation accuracy (%)']:.1f} | {r['seconds per iteration']:.2f} | {r['hours left']:.1f} | "
         f"{r['papers (final test accuracy, %)'] or '-'} |" for r in rows]
text = ("# The training campaign: where each run stands\n\n"
        f"Read from the checkpoints in `data/checkpoints/` by the `{STAGE}` stage; settings in `{P.params_file}` "
        "(the papers' per-iteration settings, fewer iterations). Hours left: at the run's own pace so far "
        "(seconds per iteration over every machine that trained it; nan: not started). Validation accuracy: "
        "the last validation of the run on its stage's fixed validation tasks ("
        + ", ".join(f"{stage}: {section['n_val_tasks']}" for stage, section in sections.items())
        + "), not the test accuracy; the papers' numbers are final test accuracies after their full training.\n\n"
        "| stage | run | iteration / target | validation accuracy (%) | seconds per iteration | hours left | "
        "papers (final test accuracy, %) |\n|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
        f"![validation accuracy](report_campaign/validation.png)\n\n"
        "## Finished stages\n\n"
        + (f"Test results of {', '.join(finished)} and the analyses of their models ({', '.join(P.analyses) or 'none'}) "
           f"are in `reports/{STAGE}/results.csv`, each row with its scale. The papers' claims, judged on them by the "
           "rules of `reports/claims.md` (`metalearn.claims`); each model's control, a random body with a NIL head, is "
           "the study's (from `reports/results.csv`, at its own scale):\n\n"
           + "; ".join(f"{v}: {n}" for v, n in claims.tally(judged).items() if v != "not measured") + "\n\n"
           + claims.table(judged) if finished else "None yet: no campaign stage has tested its models.\n"))
with paths.atomic_write(paths.output("reports/campaign.md")) as handle:
    handle.write(text)
print(text)
