"""Where a computation ran: the description every result's scale names."""
from __future__ import annotations

import os
import platform

import torch


def describe(device: str | None = None) -> str:
    """A short description of where this ran, e.g. ``cpu x86_64 (2 cores), 2 threads`` or the
    GPU's name. ``device``: the device the computation used (default: a GPU if there is one)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda":
        return f"cuda {torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu {platform.machine()} ({os.cpu_count()} cores), {torch.get_num_threads()} threads"
