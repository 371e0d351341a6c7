"""Small helpers the notebooks share for what they write: figures, metrics, plot data,
and a description of the hardware every result names."""
from __future__ import annotations

import csv
import json
import os
import platform

import torch

from . import paths


def hardware(device: str | None = None) -> str:
    """A short description of where this ran, e.g. ``cpu x86_64 (2 cores), 2 threads`` or the
    GPU's name. ``device``: the device the computation used (default: a GPU if there is one)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda":
        return f"cuda {torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu {platform.machine()} ({os.cpu_count()} cores), {torch.get_num_threads()} threads"


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
