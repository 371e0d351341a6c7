"""Every path of the study, resolved from one root.

Notebooks run from the repository root (DVC, papermill) and from ``notebooks/``
(nbval, JupyterLab); both resolve the same files because every path here is
built from :data:`ROOT`, found by walking up from the working directory to the
folder holding ``dvc.yaml``.

Only the pipeline writes ``reports/`` and ``data/``. Outputs go through :func:`output`,
under :func:`output_root`: when the stage runner (``metalearn.run``) executes a notebook
it sets ``METALEARN_STAGING``, outputs land in that staging folder, and the runner moves
them into place only when the whole notebook succeeded (a failing stage leaves the last
good outputs as they were). A notebook run any other way (JupyterLab, a plain papermill
call) writes into the scratch folder ``reports/.scratch/`` (git-ignored), never over the
committed reports, models or scores; its training checkpoints go there too.
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
#: where a notebook run by hand writes (a mirror of the root's layout)
SCRATCH = REPORTS / ".scratch"
#: resumable training state, keyed by a hash of the run's settings; never a DVC output
#: (``METALEARN_WORK`` moves it, e.g. for the tests; a notebook run by hand keeps its own)
WORK = Path(os.environ.get("METALEARN_WORK")
            or (DATA / "work" if os.environ.get(STAGING_ENV) else SCRATCH / "data" / "work"))


def checkpoints(kept: bool = False) -> Path:
    """Where training checkpoints go: :data:`WORK` (git-ignored), or with ``kept`` its sibling
    ``checkpoints/`` (``data/checkpoints/`` under the pipeline: committed with the study, neither
    ignored nor a DVC output, so that a long campaign continues on another machine)."""
    return WORK.with_name("checkpoints") if kept else WORK


#: the mode of every file the study writes (readable by everyone, whatever mkstemp chose)
FILE_MODE = 0o644


def output_root() -> Path:
    """The folder outputs are written under: the stage runner's staging folder, else the
    scratch folder (a notebook run by hand)."""
    staging = os.environ.get(STAGING_ENV)
    return Path(staging) if staging else SCRATCH


def input(relative: str | os.PathLike) -> Path:
    """Where to read the output ``relative`` of an earlier stage.

    The copy under :func:`output_root` when there is one (the test suite runs every notebook
    into one staging folder, in pipeline order; notebooks run by hand read each other's
    scratch outputs), otherwise the one under the root, where the pipeline put it.
    """
    relative = Path(relative)
    mine = output_root() / relative
    return mine if mine.exists() else ROOT / relative


_told = False


def output(relative: str | os.PathLike) -> Path:
    """Where to write the output ``relative`` (relative to the repository root), creating its
    folder: the same path under :func:`output_root`."""
    global _told
    relative = Path(relative)
    if relative.is_absolute():
        raise ValueError(f"outputs are given relative to the repository root, got {relative}")
    if not os.environ.get(STAGING_ENV) and not _told:
        print(f"Not run by the pipeline: outputs go to {SCRATCH.relative_to(ROOT)}/, not over the study's "
              "reports and models (`dvc repro` writes those).")
        _told = True
    path = output_root() / relative
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
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
