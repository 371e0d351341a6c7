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
