"""Where a computation ran (the description every result's scale names) and how much memory it took."""
from __future__ import annotations

import os
import platform
import threading
from typing import Callable, TypeVar

import psutil
import torch

T = TypeVar("T")


def describe(device: str | None = None) -> str:
    """A short description of where this ran, e.g. ``cpu x86_64 (2 cores), 2 threads`` or the
    GPU's name. ``device``: the device the computation used (default: a GPU if there is one)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda":
        return f"cuda {torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu {platform.machine()} ({os.cpu_count()} cores), {torch.get_num_threads()} threads"


def peak_memory(compute: Callable[[], T], interval: float = 0.01) -> tuple[T, int]:
    """(``compute()``, the most resident memory it added to this process, in bytes), measured by
    reading the process's resident set every ``interval`` seconds while it runs."""
    process = psutil.Process()
    start = process.memory_info().rss
    peak, done = [start], threading.Event()

    def watch():
        while not done.wait(interval):
            peak[0] = max(peak[0], process.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = compute()
    finally:
        done.set()
        watcher.join()
    return result, max(peak[0], process.memory_info().rss) - start
