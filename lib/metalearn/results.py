"""The study's one results table, ``reports/results.csv``.

Each stage writes its rows to ``reports/<stage>/results.csv``; the ``summarize``
stage concatenates them. Header, exactly:
``experiment,setting,metric,value,ci95,paper,scale``. ``paper`` is filled from
:mod:`metalearn.papers` and from nowhere else.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from . import paths
from .papers import paper_value

HEADER = ["experiment", "setting", "metric", "value", "ci95", "paper", "scale"]
#: the experiment ids of shared/STUDY.md
EXPERIMENTS = frozenset(
    "M-sine M-omni M-omni-mlp M-mini M-fo-speed M-nav M-cheetah "
    "A-freeze A-cca A-early A-dist A-seeds A-anil A-anil-rl A-curves A-repr A-nil A-regimes "
    "A-regime-sim A-time A-grad R-sine R-optim R-mix R-2d R-omni R-mini R-pretrain R-theory X-shift".split()
)


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.6g}"


def row(experiment: str, setting: str, metric: str, value: float, scale: str,
        ci95: float | None = None) -> dict[str, str]:
    """One row of the table; the paper's value is looked up, never passed in."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment id {experiment!r} (see shared/STUDY.md)")
    if not math.isfinite(float(value)):
        raise ValueError(f"{experiment} {setting} {metric}: value {value} is not finite")
    if not scale:
        raise ValueError(f"{experiment} {setting} {metric}: every result states its scale")
    return {
        "experiment": experiment, "setting": setting, "metric": metric, "value": _number(value),
        "ci95": _number(ci95), "paper": _number(paper_value(experiment, setting, metric)), "scale": scale,
    }


def write(rows: list[dict[str, str]], stage: str, collected: bool = False) -> Path:
    """Write a stage's rows to ``reports/<stage>/results.csv`` (atomically). A stage's own rows are
    unique by experiment, setting and metric; ``collected``: rows gathered from several stages'
    results (report_campaign), where one setting can have a row from two stages at different scales
    (A-anil from a one-seed training stage and from an over-seeds stage), unique with their scale."""
    fields = ("experiment", "setting", "metric", "scale") if collected else ("experiment", "setting", "metric")
    keys = [tuple(r[f] for f in fields) for r in rows]
    duplicated = {k for k in keys if keys.count(k) > 1}
    if duplicated:
        raise ValueError(f"duplicate result rows: {sorted(duplicated)[:3]}")
    path = paths.output(f"reports/{stage}/results.csv")
    with paths.atomic_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def frame(rows: list[dict[str, str]]):
    """The rows as a table of what a reader compares: experiment, setting, metric, ours (value,
    ci95) and the paper's."""
    import pandas as pd

    return pd.DataFrame(rows, columns=HEADER)[["experiment", "setting", "metric", "value", "ci95", "paper"]]


def read(path: str | Path) -> list[dict[str, str]]:
    """Rows of a results file, checking its header."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != HEADER:
            raise ValueError(f"{path}: header {reader.fieldnames} is not {HEADER}")
        return list(reader)
