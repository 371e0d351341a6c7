"""Test-wide settings (a pytest plugin, ``-p testenv`` in pyproject.toml): notebooks and training runs started by the tests write into a
temporary folder, never over the committed reports, models or checkpoints.

Notebooks run (through nbval) in the order of the pipeline's stages in dvc.yaml, so a
stage reads what the stages before it wrote into the same temporary folder
(``metalearn.paths.input``): e.g. the training notebooks read the data ``prepare`` made.
"""
import multiprocessing
import os
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

#: Values the test suite runs smaller than the notebooks' own smoke defaults, appended to each
#: notebook's ``parameters`` cell (as papermill injects parameters) without touching the notebook:
#: the Conv4 widths of the papers (64 and 32 filters) made the training notebooks most of the
#: suite's time. The analyses read the width from the models' records.
SMOKE = {
    "train_omniglot": {"filters": 16},
    "train_miniimagenet": {"filters": 8},
    "train_seeds": {"filters": 8},
    "sine_reptile": {"iterations": 20, "snapshots": [10, 20], "mix_iterations": 10},
    "nav": {"horizon": 20, "test_trajectories": 4},
}


def pytest_configure(config):
    config.addinivalue_line("markers", "stage(name): runs in pipeline order right after the notebook of the DVC "
                                       "stage `name` (reads what it wrote), or where it would run")
    scratch = tempfile.mkdtemp(prefix="metalearn-tests-")
    os.environ["METALEARN_STAGING"] = os.path.join(scratch, "outputs")
    os.environ["METALEARN_WORK"] = os.path.join(scratch, "work")


def pytest_collection_modifyitems(session, config, items):
    root = Path(__file__).resolve().parents[1]
    stages = list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])

    def order(item):
        path, marker = Path(str(item.fspath)), item.get_closest_marker("stage")
        stage = marker.args[0] if marker else path.stem if path.suffix == ".ipynb" else None
        if stage is None:
            return (0, 0, 0)
        return (1, stages.index(stage) if stage in stages else len(stages), 1 if marker else 0)

    items.sort(key=order)  # stable: tests keep their order, a notebook's cells theirs
    for item in items:
        cell, stem = getattr(item, "cell", None), Path(str(item.fspath)).stem
        if cell is not None and stem in SMOKE and "parameters" in cell.metadata.get("tags", []):
            cell.source += "".join(f"\n{key} = {value!r}  # tests/testenv.py SMOKE" for key, value in SMOKE[stem].items())


@pytest.fixture
def float64():
    """The test runs with float64 as torch's default dtype (restored after)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def one_thread():
    """One torch thread for the test (timings and forked ranks compare like with like), restored after;
    no forked process may outlive it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    assert not multiprocessing.active_children()
