"""Small helpers the notebooks share for what they write: figures, metrics, plot data."""
from __future__ import annotations

import csv
import json

from . import paths


def save_figure(fig, relative: str) -> None:
    """Save a matplotlib figure as PNG under the repo root (through the staging folder)."""
    path = paths.output(relative)
    with paths.atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")


def save_metrics(metrics: dict, relative: str) -> None:
    """Write a flat or nested dict of numbers as JSON (a DVC metrics file)."""
    with paths.atomic_write(paths.output(relative)) as handle:
        json.dump(metrics, handle, indent=2, sort_keys=True)
        handle.write("\n")


def save_table(rows: list[dict], relative: str) -> None:
    """Write rows (dicts with the same keys) as CSV (a DVC plots file)."""
    if not rows:
        raise ValueError(f"no rows to write to {relative}")
    with paths.atomic_write(paths.output(relative)) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def plot_returns(ax, history, algorithms, styles: dict, first_seed: int) -> None:
    """Meta-RL learning curves on a matplotlib ``ax``: one line per (model, seed) of ``history``.

    Args:
        history: a DataFrame with columns ``model``, ``seed``, ``iteration``, ``return`` (after
            adaptation for the meta-learners) and, for them, ``return_pre`` (before adaptation,
            drawn dotted where it has values).
        algorithms: the models that adapt (MAML, ANIL): labelled "(after adaptation)".
        styles: ``styles[model]["color"]`` for every model of ``history``.
        first_seed: the seed whose lines carry the legend (one entry per method).
    """
    for (name, seed), h in history.groupby(["model", "seed"], sort=False):
        first, meta = seed == first_seed, name in algorithms
        ax.plot(h.iteration, h["return"], color=styles[name]["color"], lw=1,
                label=(f"{name} (after adaptation)" if meta else name) if first else None)
        if meta and "return_pre" in h and h.return_pre.notna().any():
            ax.plot(h.iteration, h.return_pre, color=styles[name]["color"], ls=":", lw=1,
                    label=f"{name} (before adaptation)" if first else None)
