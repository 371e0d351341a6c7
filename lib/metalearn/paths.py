"""Every path of the study, resolved from one root.

Notebooks run from the repository root (DVC, papermill) and from ``notebooks/``
(nbval, JupyterLab); both resolve the same files because every path here is
built from :data:`ROOT`, found by walking up to the folder holding ``dvc.yaml``.

Outputs go through :func:`output`: when the stage runner (``metalearn.run``)
executes a notebook it sets ``METALEARN_STAGING``, and outputs land in that
staging folder first; the runner moves them into place only when the whole
notebook succeeded, so a failing stage leaves nothing half-written.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

STAGING_ENV = "METALEARN_STAGING"


def find_root(start: Path | None = None) -> Path:
    """The study's root: the nearest folder at or above ``start`` (default: the working
    directory) holding ``dvc.yaml`` and ``lib/metalearn``; failing that, the one this package
    was loaded from.

    The working directory comes first because ``dvc exp run --queue`` runs each experiment in
    a temporary copy of the repository while the installed package still points at the
    user's workspace: an experiment must read and write its own copy.
    """
    here = Path(__file__).resolve().parent
    for origin in ([start] if start is not None else [Path.cwd(), here]):
        origin = Path(origin).resolve()
        for folder in [origin, *origin.parents]:
            if (folder / "dvc.yaml").is_file() and (folder / "lib" / "metalearn").is_dir():
                return folder
    raise RuntimeError(f"cannot find the study's root (a folder with dvc.yaml and lib/metalearn) above "
                       f"{start or Path.cwd()} or {here}")


ROOT = find_root()
NOTEBOOKS = ROOT / "notebooks"
REPORTS = ROOT / "reports"
DATA = ROOT / "data"
PARAMS = ROOT / "params.yaml"
RESULTS = REPORTS / "results.csv"
#: resumable training state, keyed by a hash of the run's settings; never a DVC output
#: (``METALEARN_WORK`` moves it, e.g. for the tests)
WORK = Path(os.environ.get("METALEARN_WORK", DATA / "work"))


def input(relative: str | os.PathLike) -> Path:
    """Where to read the output ``relative`` of an earlier stage.

    When a notebook runs with a staging folder that already holds ``relative`` (the
    test suite runs every notebook into one staging folder, in pipeline order), that
    copy is read; otherwise the one under the root, where DVC put it.
    """
    relative = Path(relative)
    staging = os.environ.get(STAGING_ENV)
    if staging and (Path(staging) / relative).exists():
        return Path(staging) / relative
    return ROOT / relative


def output(relative: str | os.PathLike) -> Path:
    """Where to write the output ``relative`` (to the repo root), creating its folder.

    Under the stage runner this is inside the staging folder, mirrored from the root.
    """
    relative = Path(relative)
    if relative.is_absolute():
        raise ValueError(f"outputs are given relative to the repository root, got {relative}")
    staging = os.environ.get(STAGING_ENV)
    path = (Path(staging) if staging else ROOT) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file next to ``path`` and rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
