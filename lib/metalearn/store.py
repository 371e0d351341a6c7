"""Artifacts that outlive a stage's re-execution: trained models, per-task test scores and
analysis tables, each saved with a record of what made it.

An expensive output of a stage (under ``data/``) is written together with a JSON record:
``identity``, everything its numbers depend on (settings, seeds, a fingerprint of the data or
of the weights, the numerics version), the list of its ``files``, and whatever else describes
it (how a model was trained and is tested, its training history). When the stage runs again
(its notebook's prose changed, a refactor touched a module it depends on, the study was just
cloned), :func:`find` returns the record of the earlier output whose identity equals the one
asked for and puts its files in this execution's output folder: nothing is recomputed. Any
other identity is computed afresh.

Where earlier outputs are looked for: this execution's own output folder first (the stage
runner's staging folder, or the scratch folder of a notebook run by hand; see
:mod:`metalearn.paths`), then the study's root, where the last pipeline run left them (the
trained models and scores are committed, so a fresh clone has them). ``METALEARN_FRESH=1``
ignores the root's: every artifact is computed again (training still resumes from its
checkpoint in ``data/work``).

    record = store.find("data/models/s/run.json", identity)
    if record is None:
        ...compute, write data/models/s/run.pt with paths.output...
        record = store.save("data/models/s/run.json", identity, ["data/models/s/run.pt"], history=...)
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import paths

FRESH_ENV = "METALEARN_FRESH"


def canonical(identity: dict) -> dict:
    """``identity`` as it reads back from JSON (tuples become lists, keys strings, other
    values their ``str``), so that a saved identity and a new one compare equal."""
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def _places() -> list[Path]:
    places = [paths.output_root()]
    if os.environ.get(FRESH_ENV, "") in ("", "0") and paths.ROOT not in places:
        places.append(paths.ROOT)
    return places


def find(record: str, identity: dict) -> dict | None:
    """The record at ``record`` (a JSON path relative to the root) of an earlier output made
    with ``identity``, its files now in place under :func:`paths.output`; None if no earlier
    output has that identity, or one of its files is missing."""
    wanted = canonical(identity)
    for base in _places():
        try:
            saved = json.loads((base / record).read_text())
        except (OSError, ValueError):
            continue
        files = [*saved.get("files", []), record]
        if saved.get("identity") != wanted or not all((base / f).is_file() for f in files):
            continue
        for file in files:
            target = paths.output(file)
            if target.resolve() != (base / file).resolve():
                with open(base / file, "rb") as src, paths.atomic_write(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        return saved
    return None


def result(name: str, identity: dict, compute: Callable[[], Any]) -> Any:
    """What an analysis or a measurement computes (a table, or any picklable value): from an earlier
    execution whose record ``<name>.json`` has ``identity`` (the value pickled in ``<name>.pkl``,
    exactly as computed: dtypes and objects intact), else ``compute()``'s, saved there. ``name``
    is relative to the root without suffix, e.g. ``data/analyses/freeze/accuracy``."""
    if find(f"{name}.json", identity) is not None:
        return pd.read_pickle(paths.output(f"{name}.pkl"))
    value = compute()
    with paths.atomic_write(paths.output(f"{name}.pkl"), "wb") as handle:
        pd.to_pickle(value, handle)
    save(f"{name}.json", identity, [f"{name}.pkl"])
    return value


def save(record: str, identity: dict, files: list[str], **details) -> dict:
    """Write the record of an output whose ``files`` (paths relative to the root) were just
    written through :func:`paths.output`; ``details`` (JSON-able) are kept beside the identity.
    Returns the record as :func:`find` will return it."""
    missing = [f for f in files if not paths.output(f).is_file()]
    if missing:
        raise FileNotFoundError(f"the record {record} lists files that were not written: {missing}")
    saved = canonical({"identity": identity, "files": list(files), **details})
    with paths.atomic_write(paths.output(record)) as handle:
        json.dump(saved, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return saved
