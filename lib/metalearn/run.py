"""Run one stage: execute ``notebooks/<stage>.ipynb`` with papermill.

    python -m metalearn.run <stage> [--params params.yaml] [--notebook <name>]

Parameters come from the ``<stage>:`` section of ``params.yaml`` and go to papermill
as Python values (so ``false`` stays a boolean). Before any compute the section's
keys are checked against the notebook's ``parameters`` cell: a misspelled key stops
the stage with a message naming it. ``--notebook`` runs another stage's notebook under
this stage's name (the campaign's stages are the training notebooks at another scale,
``params-campaign.yaml``): a notebook with a ``stage`` parameter is given the stage's
name, which names its outputs.

The notebook executes with every output redirected to a staging folder (see
:func:`metalearn.paths.output`) and the study's own ``lib/`` first on its import path
(so an experiment queued by ``dvc exp run --queue`` runs the code of its own copy).
Only when the whole notebook succeeded are its outputs moved into place, each output
that ``dvc.yaml`` declares for the stage replaced as a whole (a file, or a folder with
everything in it); the stage's outputs are ``persist: true`` there, so DVC does not
delete them first. A stage that fails (a bad parameter, bad data, an error, a kill)
therefore leaves its previous outputs byte for byte as they were; the failed notebook
is kept in ``reports/.failed/`` for reading. A notebook that writes a file no output
declares fails the same way. Launched by ``torchrun`` (``RANK`` set), every rank executes the
notebook (the training stages share each meta-batch among the ranks, :mod:`metalearn.distributed`)
and only rank 0 moves its outputs into place.

The executed notebook names its paths relative to the root, and when it differs from
the one already in place only by papermill's timings, the one in place is kept: a
re-execution that changes nothing changes no file.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
import papermill
import yaml

from . import paths
from .params import ParameterError

#: papermill's record of when things ran: the only part of an executed notebook that differs
#: between two executions that compute the same
_TIMINGS = ("start_time", "end_time", "duration")


def load_section(stage: str, params_file: Path) -> dict:
    """The flat ``stage:`` section of the params file."""
    with open(params_file) as handle:
        params = yaml.safe_load(handle) or {}
    if stage not in params:
        raise ParameterError(f"{params_file.name} has no section '{stage}:' for stage '{stage}'")
    section = params[stage]
    if not isinstance(section, dict):
        raise ParameterError(f"{params_file.name}: section '{stage}' must be a mapping of parameters")
    nested = [key for key, value in section.items() if isinstance(value, dict)]
    if nested:
        raise ParameterError(f"{params_file.name}: '{stage}.{nested[0]}' is nested; parameters are flat")
    return section


def check_keys(stage: str, section: dict, notebook: Path) -> dict:
    """Every key of ``section`` must be a parameter of ``notebook``'s parameters cell, except
    ``stage``, which the runner sets. Returns the notebook's parameters."""
    declared = papermill.inspect_notebook(str(notebook))
    if not declared:
        raise ParameterError(f"{notebook} has no cell tagged 'parameters'")
    if "stage" in section:
        raise ParameterError(f"parameter '{stage}.stage' is set by the runner (the stage's name): remove it")
    for key in section:
        if key not in declared:
            close = difflib.get_close_matches(key, declared, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ParameterError(
                f"parameter '{stage}.{key}' is not a parameter of {notebook.relative_to(paths.ROOT)}{hint}; "
                f"it takes: {', '.join(declared)}"
            )
    return declared


def declared_outputs(stage: str) -> list[str] | None:
    """The outputs (``outs``, ``metrics``, ``plots``) that ``dvc.yaml`` declares for ``stage``,
    as paths relative to the root; None for a stage ``dvc.yaml`` does not have."""
    dvc_yaml = paths.ROOT / "dvc.yaml"
    stages = yaml.safe_load(dvc_yaml.read_text()).get("stages", {}) if dvc_yaml.is_file() else {}
    if stage not in stages:
        return None
    return [next(iter(entry)) if isinstance(entry, dict) else entry
            for kind in ("outs", "metrics", "plots") for entry in stages[stage].get(kind, [])]


def _timeless(notebook) -> dict:
    """The executed notebook without papermill's timings (a copy)."""
    copy = nbformat.reads(nbformat.writes(notebook), as_version=4)
    for meta in [copy.metadata.get("papermill", {})] + [cell.metadata.get("papermill", {}) for cell in copy.cells]:
        for key in _TIMINGS:
            meta.pop(key, None)
    return copy


def _coalesce_streams(cell) -> None:
    """One output for each run of consecutive stream outputs of the same name (stdout, stderr):
    where the kernel happened to flush them is timing, not content."""
    merged = []
    for output in cell.get("outputs", []):
        last = merged[-1] if merged else None
        if output.output_type == "stream" and last is not None and last.output_type == "stream" \
                and last.name == output.name:
            last.text += output.text
        else:
            merged.append(output)
    if "outputs" in cell:
        cell.outputs = merged


def _tidy_notebook(staged: Path, notebook: Path, executed: Path) -> None:
    """Name the notebook's paths relative to the root, drop per-cell timings, merge split stream
    outputs; if the one in place differs only by its timings, keep it (the staged copy takes its
    bytes)."""
    nb = nbformat.read(staged, as_version=4)
    meta = nb.metadata.setdefault("papermill", {})
    meta["input_path"], meta["output_path"] = str(notebook.relative_to(paths.ROOT)), str(executed)
    meta.pop("cwd", None)
    for cell in nb.cells:  # per-cell timings: noise in a diff; the notebook keeps its total duration
        for key in _TIMINGS:
            cell.metadata.get("papermill", {}).pop(key, None)
        cell.metadata.pop("execution", None)
        _coalesce_streams(cell)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"  # papermill draws a new random id for it every time
    current = paths.ROOT / executed
    if current.is_file():
        try:
            if _timeless(nbformat.read(current, as_version=4)) == _timeless(nb):
                shutil.copyfile(current, staged)
                return
        except (ValueError, OSError, KeyError):
            pass
    with paths.atomic_write(staged) as handle:
        nbformat.write(nb, handle)


def _replace(staged: Path, target: Path) -> None:
    """Put ``staged`` (a file or a folder) at ``target``, replacing what is there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if staged.is_dir() and target.exists():
        old = target.with_name(f".{target.name}.replaced-{os.getpid()}")
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(staged, target)


def _move_outputs(stage: str, staging: Path) -> list[Path]:
    """Move the staged outputs into place (each declared output whole; for a stage dvc.yaml
    does not have, every staged file); ParameterError, before moving anything, when the notebook
    wrote a file no output declares or did not write a declared output."""
    written = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
    declared = declared_outputs(stage)
    if declared is None:
        moved = [Path(p) for p in written]
        for relative in moved:
            _replace(staging / relative, paths.ROOT / relative)
        return moved
    undeclared = [str(p) for p in written if not any(p == Path(d) or Path(d) in p.parents for d in declared)]
    missing = [d for d in declared if not (staging / d).exists()]
    if undeclared or missing:
        raise RuntimeError(f"stage '{stage}' wrote {undeclared or 'nothing'} that dvc.yaml does not declare, "
                           f"and did not write {missing or 'nothing'} that it declares: fix the notebook or dvc.yaml")
    for relative in declared:
        _replace(staging / relative, paths.ROOT / relative)
    return [Path(d) for d in declared]


def run_stage(stage: str, params_file: Path = paths.PARAMS, notebook_name: str | None = None) -> Path:
    """Execute the stage's notebook (``notebooks/<notebook_name or stage>.ipynb``); returns the
    executed notebook's path."""
    notebook = paths.NOTEBOOKS / f"{notebook_name or stage}.ipynb"
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook for stage '{stage}': {notebook} does not exist")
    section = load_section(stage, params_file)
    if "stage" in check_keys(stage, section, notebook):
        section = {**section, "stage": stage}

    rank = int(os.environ.get("RANK", "0"))  # launched by torchrun: every rank executes, rank 0 publishes
    staging = paths.REPORTS / (f".staging-{stage}" + (f"-rank{rank}" if rank else ""))
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    executed = Path("reports") / stage / f"{stage}.ipynb"
    (staging / executed).parent.mkdir(parents=True)
    saved_env = {key: os.environ.get(key) for key in (paths.STAGING_ENV, "PYTHONPATH")}
    os.environ[paths.STAGING_ENV] = str(staging)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.ROOT / "lib"), saved_env["PYTHONPATH"]]))
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(staging / executed),
            parameters=section,
            cwd=str(paths.ROOT),
            log_output=True,
            progress_bar=False,
        )
        _tidy_notebook(staging / executed, notebook, executed)
        moved = _move_outputs(stage, staging) if rank == 0 else []
    except BaseException:
        failed = paths.REPORTS / ".failed" / f"{stage}.ipynb"
        if (staging / executed).exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / executed, failed)
            print(f"stage '{stage}' failed; its previous outputs are as they were; the executed notebook is in "
                  f"{failed.relative_to(paths.ROOT)}", file=sys.stderr)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    print(f"stage '{stage}' done in {time.perf_counter() - start:.0f} s; replaced {len(moved)} outputs")
    return paths.ROOT / executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", help="stage name = notebook name = params.yaml section")
    parser.add_argument("--params", type=Path, default=paths.PARAMS, help="parameters file (default params.yaml)")
    parser.add_argument("--notebook", help="the notebook to run (default: the stage's name)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_stage(args.stage, args.params, args.notebook)
    except (ParameterError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except papermill.PapermillExecutionError as error:
        print(f"error: stage '{args.stage}' failed in cell {error.exec_count}: {error.ename}: {error.evalue}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
