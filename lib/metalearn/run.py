"""Run one stage: execute ``notebooks/<stage>.ipynb`` with papermill.

    python -m metalearn.run <stage> [--params params.yaml]

Parameters come from the ``<stage>:`` section of ``params.yaml`` and go to papermill
as Python values (so ``false`` stays a boolean). Before any compute the section's
keys are checked against the notebook's ``parameters`` cell: a misspelled key stops
the stage with a message naming it. The notebook executes with every output
redirected to a staging folder (see :func:`metalearn.paths.output`); only when it
succeeds are the outputs moved into place, so a failed stage leaves no
half-written output. A failed notebook is kept in ``reports/.failed/`` for reading.
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

import papermill
import yaml

from . import paths
from .params import ParameterError


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


def check_keys(stage: str, section: dict, notebook: Path) -> None:
    """Every key of ``section`` must be a parameter of ``notebook``'s parameters cell."""
    declared = papermill.inspect_notebook(str(notebook))
    if not declared:
        raise ParameterError(f"{notebook} has no cell tagged 'parameters'")
    for key in section:
        if key not in declared:
            close = difflib.get_close_matches(key, declared, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ParameterError(
                f"parameter '{stage}.{key}' is not a parameter of {notebook.relative_to(paths.ROOT)}{hint}; "
                f"it takes: {', '.join(declared)}"
            )


def _move_tree(src: Path, dst: Path) -> list[Path]:
    moved = []
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dst / file.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target)
        moved.append(target)
    return moved


def run_stage(stage: str, params_file: Path = paths.PARAMS) -> Path:
    """Execute the stage's notebook; returns the executed notebook's path."""
    notebook = paths.NOTEBOOKS / f"{stage}.ipynb"
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook for stage '{stage}': {notebook} does not exist")
    section = load_section(stage, params_file)
    check_keys(stage, section, notebook)

    staging = paths.REPORTS / f".staging-{stage}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    executed = Path("reports") / stage / f"{stage}.ipynb"
    (staging / executed).parent.mkdir(parents=True)
    os.environ[paths.STAGING_ENV] = str(staging)
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
    except BaseException:
        failed = paths.REPORTS / ".failed" / f"{stage}.ipynb"
        if (staging / executed).exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / executed, failed)
            print(f"stage '{stage}' failed; the executed notebook is in {failed}", file=sys.stderr)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        del os.environ[paths.STAGING_ENV]
    shutil.rmtree(paths.ROOT / "reports" / stage, ignore_errors=True)
    moved = _move_tree(staging, paths.ROOT)
    shutil.rmtree(staging)
    print(f"stage '{stage}' done in {time.perf_counter() - start:.0f} s; wrote {len(moved)} files")
    return paths.ROOT / executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", help="stage name = notebook name = params.yaml section")
    parser.add_argument("--params", type=Path, default=paths.PARAMS, help="parameters file (default params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_stage(args.stage, args.params)
    except (ParameterError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except papermill.PapermillExecutionError as error:
        print(f"error: stage '{args.stage}' failed in cell {error.exec_count}: {error.ename}: {error.evalue}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
