# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The study's results table
#
# Collects every stage's `reports/<stage>/results.csv` into `reports/results.csv`
# (header `experiment,setting,metric,value,ci95,paper,scale`), and lists how long each
# stage's notebook ran (papermill's record in the executed notebook).
# Our numbers are in `value` (with `ci95`); the papers' own numbers only in `paper`.

# %% tags=["parameters"]
stages = ["sine_maml", "sine_reptile", "theory"]  # stages whose results are collected, in order

# %%
from metalearn.params import check, List, Choice

STAGES_WITH_RESULTS = ("sine_maml", "sine_reptile", "theory", "train_omniglot", "train_miniimagenet")
P = check(globals(), stages=List(Choice(*STAGES_WITH_RESULTS), unique=True))

# %%
import csv

import nbformat
import pandas as pd

from metalearn import paths, results

rows = []
for stage in P.stages:
    path = paths.REPORTS / stage / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the '{stage}' stage first (dvc repro {stage})")
    rows += results.read(path)
with paths.atomic_write(paths.output("reports/results.csv")) as handle:
    writer = csv.DictWriter(handle, fieldnames=results.HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
table = pd.DataFrame(rows)
print(f"{len(table)} rows from {len(P.stages)} stages")
table.groupby("experiment", sort=False).size().rename("rows")

# %% [markdown]
# ## Every row with a number from a paper beside ours

# %%
table[table.paper != ""][["experiment", "setting", "metric", "value", "ci95", "paper"]]

# %% [markdown]
# ## How long each stage ran (every stage of the pipeline that has run)

# %%
import yaml

times = []
for stage in yaml.safe_load((paths.ROOT / "dvc.yaml").read_text())["stages"]:
    executed = paths.REPORTS / stage / f"{stage}.ipynb"
    if stage == "summarize" or not executed.exists():
        continue
    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.get("papermill", {})
    times.append(dict(stage=stage, seconds=round(meta.get("duration") or 0, 1), finished=meta.get("end_time")))
times = pd.DataFrame(times)
print(f"all stages: {times.seconds.sum() / 60:.1f} minutes")
times
