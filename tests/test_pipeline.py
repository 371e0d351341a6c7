"""The pipeline's contracts: parameters, the stage runner, and the files a reader relies on."""
import ast
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import jupytext
import nbformat
import papermill
import pytest
import yaml

from metalearn import paths, results, run
from metalearn.params import Bool, Choice, Float, Int, List, ParameterError, Str, check, require

PARAMS = yaml.safe_load(paths.PARAMS.read_text())
PAPER = yaml.safe_load((paths.ROOT / "params-paper.yaml").read_text())
DVC = yaml.safe_load((paths.ROOT / "dvc.yaml").read_text())


# --- checking injected parameters --------------------------------------------------------

@pytest.mark.parametrize("validator,value,message", [
    (Bool(), "false", "must be true or false"),          # what the papermill CLI makes of DVC's `false`
    (Int(min=1), "1e4", "must be an integer"),           # what PyYAML makes of `1e4`
    (Int(min=1), 2.0, "must be an integer"),
    (Int(min=1), True, "must be an integer"),
    (Int(min=1), 0, "must be >= 1"),
    (Float(min=0, strict=True), -0.01, "must be > 0"),
    (Float(min=0, strict=True), 0, "must be > 0"),
    (Float(), float("nan"), "must be finite"),
    (Choice("maml", "anil"), "mamll", "must be one of"),
    (List(Int(min=1)), 5, "must be a list"),
    (List(Int(min=1)), [5, -1], r"'p\[1\]' must be >= 1"),
    (List(Int(), unique=True), [1, 1], "must not repeat"),
    (Str(), "", "must be a non-empty string"),
    (Str(), 3, "must be a non-empty string"),
    (Str(int), "five", "invalid literal"),                # a parser's ValueError, naming the parameter
])
def test_bad_parameter_values_are_refused_naming_the_parameter(validator, value, message):
    with pytest.raises(ParameterError, match=message) as error:
        check({"p": value}, p=validator)
    assert "'p" in str(error.value)


def test_good_parameters_pass_and_ints_widen_to_floats():
    P = check({"a": 3, "b": 1, "c": True, "d": [1, 2]}, a=Int(min=1), b=Float(min=0), c=Bool(), d=List(Int()))
    assert (P.a, P.b, P.c, P.d) == (3, 1.0, True, [1, 2])
    assert isinstance(P.b, float)
    with pytest.raises(ParameterError, match="'zz' is missing"):
        check({}, zz=Int())
    with pytest.raises(ParameterError, match="'k_shot' must be at most"):
        require(False, "k_shot", "must be at most the points per task")


# --- params.yaml, params-paper.yaml, dvc.yaml and the notebooks agree ----------------------

def test_paper_scale_file_has_exactly_the_default_keys():
    assert {s: sorted(v) for s, v in PARAMS.items()} == {s: sorted(v) for s, v in PAPER.items()}


LIB = paths.ROOT / "lib" / "metalearn"
#: modules that only present results: what computes never imports them (ARCHITECTURE.md, rule 1)
PRESENTATION = {"report", "results", "papers", "accuracy", "seeds", "rlseeds", "reuseresults", "claims", "site"}
#: modules every stage runs under: the runner, parameter checks, paths
RUNNER = {"run", "params", "paths"}


def metalearn_imports(source: str) -> set[str]:
    """The metalearn modules a notebook or module imports (``from metalearn import x``,
    ``from metalearn.x import ...``, ``from . import x``, ``from .x import ...``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.module == "metalearn" or (node.level == 1 and node.module is None):
                found |= {alias.name for alias in node.names}
            elif node.module and (node.module.startswith("metalearn.") or node.level == 1):
                found.add(node.module.removeprefix("metalearn.").split(".")[0])
    return {m for m in found if (LIB / f"{m}.py").exists()}


def closure(modules: set[str]) -> set[str]:
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += metalearn_imports((LIB / f"{module}.py").read_text())
    return seen


_CMD = re.compile(r"^python -m metalearn\.run (\w+)(?: --notebook (\w+))?(?: --params ([\w.-]+))?$")


def notebook_and_params(stage: str) -> tuple[str, str]:
    """The notebook a stage runs and its parameters file, from its command in dvc.yaml (a campaign
    stage runs a training notebook under its own name with params-campaign.yaml)."""
    match = _CMD.match(DVC["stages"][stage]["cmd"])
    assert match and match.group(1) == stage, DVC["stages"][stage]["cmd"]
    return match.group(2) or stage, match.group(3) or "params.yaml"


@pytest.mark.parametrize("plot", [next(iter(p)) for p in DVC["plots"]])
def test_each_plot_draws_every_column_of_its_table_and_only_those(plot):
    """A run added to a stage (a new column of its table) appears in `dvc plots show`; a column
    renamed or gone fails here rather than drawing nothing."""
    spec = next(p[plot] for p in DVC["plots"] if plot in p)
    for table, columns in spec["y"].items():
        columns = [columns] if isinstance(columns, str) else columns
        with open(paths.ROOT / table, newline="") as handle:
            header = next(csv.reader(handle))
        assert sorted(columns) == sorted(set(header) - {spec["x"]}), f"{plot}: {table} has columns {header}"


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_each_stage_runs_its_notebook_with_its_params_and_depends_on_every_module_it_runs(stage):
    spec = DVC["stages"][stage]
    name, params_file = notebook_and_params(stage)
    notebook = paths.NOTEBOOKS / f"{name}.ipynb"
    assert f"notebooks/{name}.ipynb" in spec["deps"]
    declared = set(papermill.inspect_notebook(str(notebook))) - {"stage"}  # the runner sets `stage`
    section = yaml.safe_load((paths.ROOT / params_file).read_text())[stage]
    assert set(section) == declared, f"{params_file} section and the notebook's parameters cell differ"
    assert spec["params"] == ([stage] if params_file == "params.yaml" else [{params_file: [stage]}])  # whole section
    lib_deps = {d.removeprefix("lib/metalearn/").removesuffix(".py") for d in spec["deps"] if d.startswith("lib/")}
    runs = closure(metalearn_imports((paths.NOTEBOOKS / f"{name}.py").read_text()) | RUNNER)
    assert lib_deps == runs, f"dvc.yaml: stage {stage} runs {sorted(runs - lib_deps)} without depending on them"
    for out in spec["outs"] + spec.get("metrics", []) + spec.get("plots", []):
        options = next(iter(out.values())) if isinstance(out, dict) else {}
        assert options.get("persist") is True, f"{stage}: {out} is not persist: DVC would delete it before running"


def test_summarize_depends_on_the_results_of_every_stage_it_gathers():
    """A stage added to summarize's `stages` but not to its deps would be read before it has run."""
    for params in (PARAMS, PAPER):
        wanted = {f"reports/{stage}/results.csv" for stage in params["summarize"]["stages"]}
        assert wanted <= set(DVC["stages"]["summarize"]["deps"]), wanted - set(DVC["stages"]["summarize"]["deps"])


def test_what_computes_never_imports_what_presents():
    """Rule 1 of ARCHITECTURE.md: a wording, plot or paper-value change never reaches a trained
    model: no computing module imports a presentation module, directly or not."""
    computing = {p.stem for p in LIB.glob("*.py")} - PRESENTATION - {"__init__", "benchmark", "reuse", "similarity"}
    for module in computing:
        assert not closure({module}) & PRESENTATION, f"{module} imports {closure({module}) & PRESENTATION}"
    for stage in DVC["stages"]:
        if stage.startswith("train_"):
            notebook = metalearn_imports((paths.NOTEBOOKS / f"{notebook_and_params(stage)[0]}.py").read_text())
            assert not closure(notebook) & PRESENTATION, f"the computing stage {stage} runs presentation code"


def test_the_suites_smaller_smoke_values_are_parameters_and_agree_across_notebooks():
    from testenv import SMOKE

    for stage, values in SMOKE.items():
        assert set(values) <= set(papermill.inspect_notebook(str(paths.NOTEBOOKS / f"{stage}.ipynb"))), stage
    widths = {"omniglot": SMOKE["train_omniglot"]["filters"], "miniimagenet": SMOKE["train_miniimagenet"]["filters"]}
    assert SMOKE["train_seeds"]["filters"] == widths["miniimagenet"]  # seeds train train_miniimagenet's network
    from test_seeds_omniglot import OMNIGLOT

    assert OMNIGLOT["filters"] == widths["omniglot"]  # and, on Omniglot, train_omniglot's


@pytest.mark.parametrize("notebook", sorted({notebook_and_params(stage)[0] for stage in DVC["stages"]}))
def test_notebook_and_its_py_twin_are_in_sync(notebook):
    ipynb = nbformat.read(paths.NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    py = jupytext.read(paths.NOTEBOOKS / f"{notebook}.py")
    assert [c.source for c in ipynb.cells] == [c.source for c in py.cells], "run `make sync`"
    assert all(not c.get("outputs") for c in ipynb.cells if c.cell_type == "code"), "commit notebooks without outputs"


def test_string_parameters_can_be_parsed_into_values():
    assert check({"p": "12"}, p=Str(int)).p == 12
    assert check({"p": "x"}, p=Str()).p == "x"


def test_a_later_stage_reads_an_earlier_stages_staged_output_first(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ROOT", tmp_path / "root")
    monkeypatch.setenv(paths.STAGING_ENV, str(tmp_path / "staging"))
    assert paths.input("data/x.npz") == tmp_path / "root" / "data" / "x.npz"  # not staged: the root's
    paths.output("data/x.npz").write_text("staged")
    assert paths.input("data/x.npz") == tmp_path / "staging" / "data" / "x.npz"
    monkeypatch.delenv(paths.STAGING_ENV)
    assert paths.input("data/x.npz") == tmp_path / "root" / "data" / "x.npz"


def test_the_tests_run_notebooks_in_pipeline_order():
    """tests/testenv.py orders notebook cells as dvc.yaml lists stages (prepare before training),
    after the library tests, keeping each file's own order; a test marked ``stage(name)`` runs right
    after that stage's notebook (or where it would run)."""
    import types

    import testenv

    stages = list(DVC["stages"])
    marked = {"tests/test_c.py::1": types.SimpleNamespace(args=(stages[1],)),
              "tests/test_d.py::1": types.SimpleNamespace(args=(stages[0],))}
    names = ["tests/test_a.py::1", f"notebooks/{stages[-1]}.ipynb::1", f"notebooks/{stages[0]}.ipynb::1",
             "tests/test_d.py::1", "tests/test_c.py::1", "tests/test_b.py::1", f"notebooks/{stages[0]}.ipynb::2",
             f"notebooks/{stages[-1]}.ipynb::2"]
    items = [types.SimpleNamespace(fspath=paths.ROOT / name.split("::")[0], name=name,
                                   get_closest_marker=lambda marker, name=name: marked.get(name)) for name in names]
    testenv.pytest_collection_modifyitems(None, None, items)
    assert [i.name for i in items] == ["tests/test_a.py::1", "tests/test_b.py::1", f"notebooks/{stages[0]}.ipynb::1",
                                       f"notebooks/{stages[0]}.ipynb::2", "tests/test_d.py::1", "tests/test_c.py::1",
                                       f"notebooks/{stages[-1]}.ipynb::1", f"notebooks/{stages[-1]}.ipynb::2"]


def test_dvc_analytics_are_off():
    assert "analytics = false" in (paths.ROOT / ".dvc" / "config").read_text()


# --- the stage runner -----------------------------------------------------------------------

def test_misspelled_key_stops_before_any_compute(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"theory": {**PARAMS["theory"], "grad_drawz": 3}}))
    with pytest.raises(ParameterError, match=r"'theory.grad_drawz'.*did you mean 'grad_draws'"):
        run.run_stage("theory", bad)
    assert run.main(["theory", "--params", str(bad)]) == 2


def test_missing_section_nested_values_and_unknown_stage_are_refused(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"theory": {"seed": {"nested": 1}}}))
    with pytest.raises(ParameterError, match="no section 'sine_maml:'"):
        run.run_stage("sine_maml", bad)
    with pytest.raises(ParameterError, match="'theory.seed' is nested"):
        run.run_stage("theory", bad)
    with pytest.raises(FileNotFoundError, match="no notebook for stage 'nosuch'"):
        run.run_stage("nosuch", bad)


FAKE_DVC = """stages:
  fake:
    cmd: python -m metalearn.run fake
    deps: [notebooks/fake.ipynb]
    params: [fake]
    outs:
    - reports/fake: {cache: false, persist: true}
    - data/models/fake: {cache: false, persist: true}
"""


def _fake_study(tmp_path, monkeypatch, body, value="x", declared=FAKE_DVC):
    """A one-stage study in tmp_path (its own dvc.yaml, the real package under lib/) whose
    notebook writes two declared outputs from its parameter ``value``, then runs ``body``."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("flag = True\nvalue = ''", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_markdown_cell("# A fake stage"),
                nbformat.v4.new_code_cell(
                    "from metalearn import paths\n"
                    "if not isinstance(flag, bool):\n    raise TypeError('flag must be a bool')\n"
                    "paths.output('reports/fake/out.txt').write_text(value)\n"
                    "paths.output('data/models/fake/model.txt').write_text(value)\n" + body)]
    (tmp_path / "notebooks").mkdir(exist_ok=True)
    nbformat.write(nb, tmp_path / "notebooks" / "fake.ipynb")
    (tmp_path / "params.yaml").write_text(f"fake:\n  flag: false\n  value: {value}\n")
    (tmp_path / "dvc.yaml").write_text(declared)
    if not (tmp_path / "lib").exists():
        (tmp_path / "lib").mkdir()
        (tmp_path / "lib" / "metalearn").symlink_to(paths.ROOT / "lib" / "metalearn")
    for name, value in [("ROOT", tmp_path), ("NOTEBOOKS", tmp_path / "notebooks"), ("REPORTS", tmp_path / "reports")]:
        monkeypatch.setattr(paths, name, value)
    monkeypatch.delenv(paths.STAGING_ENV, raising=False)
    return tmp_path / "params.yaml"


def _outputs(root):
    """Every file under the fake stage's outputs, with its bytes."""
    return {p.relative_to(root): p.read_bytes() for folder in ("reports/fake", "data/models/fake")
            for p in sorted((root / folder).rglob("*")) if p.is_file()}


def test_a_succeeding_stage_replaces_its_outputs_with_booleans_intact_paths_relative_files_readable(
        tmp_path, monkeypatch):
    params = _fake_study(tmp_path, monkeypatch, "assert flag is False")
    run.run_stage("fake", params)
    assert (tmp_path / "reports/fake/out.txt").read_text() == "x"
    assert (tmp_path / "data/models/fake/model.txt").read_text() == "x"
    executed = nbformat.read(tmp_path / "reports/fake/fake.ipynb", as_version=4)
    meta = executed.metadata.papermill
    assert (meta.input_path, meta.output_path) == ("notebooks/fake.ipynb", "reports/fake/fake.ipynb")
    assert str(tmp_path) not in (tmp_path / "reports/fake/fake.ipynb").read_text()
    assert all((tmp_path / f).stat().st_mode & 0o777 == 0o644 for f in _outputs(tmp_path))
    assert not list((tmp_path / "reports").glob(".staging-*"))
    before = _outputs(tmp_path)
    run.run_stage("fake", params)  # the same computation again: not a byte changes, the notebook's timings neither
    assert _outputs(tmp_path) == before
    (tmp_path / "data/models/fake/stale.txt").write_text("from an older run")
    _fake_study(tmp_path, monkeypatch, "", value="y")
    run.run_stage("fake", params)  # an output is replaced as a whole: what the stage no longer writes goes
    assert (tmp_path / "data/models/fake/model.txt").read_text() == "y"
    assert not (tmp_path / "data/models/fake/stale.txt").exists()


TWIN_DVC = """stages:
  twin:
    cmd: python -m metalearn.run twin --notebook named --params other.yaml
    deps: [notebooks/named.ipynb]
    params: [{other.yaml: [twin]}]
    outs:
    - reports/twin: {cache: false, persist: true}
"""


def test_a_stage_runs_another_notebook_under_its_own_name_with_its_own_params_file(tmp_path, monkeypatch):
    """The campaign's stages: a training notebook run as another stage names its outputs by that stage."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("stage = 'named'\nvalue = ''", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from metalearn import paths\n"
                                          "paths.output(f'reports/{stage}/out.txt').write_text(value)")]
    _fake_study(tmp_path, monkeypatch, "", declared=TWIN_DVC)
    nbformat.write(nb, tmp_path / "notebooks" / "named.ipynb")
    (tmp_path / "other.yaml").write_text("twin:\n  value: z\n")
    run.run_stage("twin", tmp_path / "other.yaml", "named")
    assert (tmp_path / "reports/twin/out.txt").read_text() == "z" and (tmp_path / "reports/twin/twin.ipynb").is_file()
    assert not (tmp_path / "reports/named").exists()
    (tmp_path / "other.yaml").write_text("twin:\n  value: z\n  stage: named\n")
    with pytest.raises(ParameterError, match="'twin.stage' is set by the runner"):
        run.run_stage("twin", tmp_path / "other.yaml", "named")


def test_stream_outputs_split_by_flush_timing_are_merged():
    cell = nbformat.v4.new_code_cell("print()", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="a\n"), nbformat.v4.new_output("stream", name="stdout", text="b\n"),
        nbformat.v4.new_output("stream", name="stderr", text="x"), nbformat.v4.new_output("execute_result", data={"text/plain": "1"}),
        nbformat.v4.new_output("stream", name="stdout", text="c\n"), nbformat.v4.new_output("stream", name="stdout", text="d\n")])
    run._coalesce_streams(cell)
    assert [(o.output_type, o.get("name"), o.get("text")) for o in cell.outputs] == [
        ("stream", "stdout", "a\nb\n"), ("stream", "stderr", "x"), ("execute_result", None, None),
        ("stream", "stdout", "c\nd\n")]


@pytest.mark.parametrize("failure", ["error", "bad value", "misspelled key", "undeclared output", "corrupt archive"])
def test_a_failing_stage_keeps_its_last_good_outputs_byte_for_byte(tmp_path, monkeypatch, failure):
    params = _fake_study(tmp_path, monkeypatch, "")
    run.run_stage("fake", params)
    good = _outputs(tmp_path)
    assert len(good) == 3
    if failure == "error":
        _fake_study(tmp_path, monkeypatch, "raise RuntimeError('boom')", value="y")
    elif failure == "bad value":  # what the papermill CLI makes of DVC's false
        _fake_study(tmp_path, monkeypatch, "", value="y")
        params.write_text("fake:\n  flag: 'false'\n  value: y\n")
    elif failure == "misspelled key":
        _fake_study(tmp_path, monkeypatch, "", value="y")
        params.write_text("fake:\n  flag: false\n  valeu: y\n")
    elif failure == "undeclared output":
        _fake_study(tmp_path, monkeypatch, "paths.output('reports/elsewhere.txt').write_text('z')", value="y")
    else:
        (tmp_path / "raw").mkdir()
        (tmp_path / "raw/images_background.zip").write_bytes(b"PK\x03\x04 truncated")
        (tmp_path / "raw/images_evaluation.zip").write_bytes(b"PK\x03\x04 truncated")
        _fake_study(tmp_path, monkeypatch, f"from metalearn import datasets\n"
                    f"datasets.prepare_omniglot({str(tmp_path / 'raw')!r}, paths.output('data/models/fake/o.npz'))",
                    value="y")
    expected = {"error": "boom", "bad value": "must be a bool", "misspelled key": "did you mean 'value'",
                "undeclared output": "reports/elsewhere.txt", "corrupt archive": "not a readable zip archive"}[failure]
    with pytest.raises((papermill.PapermillExecutionError, ParameterError, RuntimeError), match=expected):
        run.run_stage("fake", params)
    assert _outputs(tmp_path) == good
    assert not list((tmp_path / "reports").glob(".staging-*")) and not (tmp_path / "reports/elsewhere.txt").exists()


def test_a_killed_stage_keeps_its_last_good_outputs(tmp_path, monkeypatch):
    params = _fake_study(tmp_path, monkeypatch, "")
    run.run_stage("fake", params)
    good = _outputs(tmp_path)
    _fake_study(tmp_path, monkeypatch, "import time\ntime.sleep(120)", value="y")
    process = subprocess.Popen([sys.executable, "-m", "metalearn.run", "fake"], cwd=tmp_path,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staged = tmp_path / "reports/.staging-fake/data/models/fake/model.txt"
    for _ in range(600):  # until the notebook has written its new outputs into the staging folder
        if staged.exists() or process.poll() is not None:
            break
        time.sleep(0.1)
    assert staged.exists(), "the notebook never started"
    os.killpg(process.pid, signal.SIGKILL)  # kill -9 the runner and its kernel
    process.wait()
    assert _outputs(tmp_path) == good
    _fake_study(tmp_path, monkeypatch, "", value="z")
    run.run_stage("fake", params)  # the next run starts clean
    assert (tmp_path / "data/models/fake/model.txt").read_text() == "z"
    assert not list((tmp_path / "reports").glob(".staging-*"))


# --- what a reader sees ---------------------------------------------------------------------

def test_results_table_has_the_fixed_header_known_ids_scales_and_paper_values_only_from_papers():
    with open(paths.RESULTS, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == results.HEADER
    from metalearn.papers import PAPER as numbers
    for r in rows:
        assert r["experiment"] in results.EXPERIMENTS
        assert r["scale"]
        float(r["value"])
        expected = numbers.get((r["experiment"], r["setting"], r["metric"]))
        assert (r["paper"] == "") == (expected is None)
        if expected is not None:
            assert float(r["paper"]) == pytest.approx(expected)
    for experiment in ("M-sine", "R-sine", "R-optim", "R-mix", "A-grad", "R-theory"):
        assert any(r["experiment"] == experiment for r in rows), experiment


def test_results_rows_refuse_unknown_ids_missing_scale_and_non_finite_values():
    with pytest.raises(ValueError, match="unknown experiment id"):
        results.row("M-sinus", "s", "mse", 1.0, "scale")
    with pytest.raises(ValueError, match="states its scale"):
        results.row("M-sine", "s", "mse", 1.0, "")
    with pytest.raises(ValueError, match="not finite"):
        results.row("M-sine", "s", "mse", float("inf"), "scale")
    assert results.row("M-sine", "maml K=5 steps=1", "mse", 0.5, "s")["paper"] == "0.67"


def test_committed_reports_match_dvc_lock():
    lock = yaml.safe_load((paths.ROOT / "dvc.lock").read_text())
    for stage, spec in lock["stages"].items():
        for out in spec.get("outs", []):
            assert (paths.ROOT / out["path"]).exists() or out["path"].startswith("data/"), out["path"]
    metrics = json.loads((paths.REPORTS / "metrics" / "sine_maml.json").read_text())
    assert all(isinstance(v, float) for v in metrics.values())


# --- what an edit re-executes, and experiments in DVC's queue (in a clone of the study) ------

DVC_COMMAND = [sys.executable, "-m", "dvc"]


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A clone of the study's last commit (skipped where the study is not a git repository)."""
    if not (paths.ROOT / ".git").exists():
        pytest.skip("the study is not a git repository")
    target = tmp_path_factory.mktemp("clone") / "study"
    subprocess.run(["git", "clone", "-q", str(paths.ROOT), str(target)], check=True)
    return target


def _stages_depending_on(path: str) -> set[str]:
    """The stages that DVC re-executes when ``path`` is edited: those with it among their
    dependencies (a file, or a folder holding it), as DVC reads dvc.yaml (interpolated)."""
    from dvc.repo import Repo

    with Repo(str(paths.ROOT)) as repo:
        return {stage.addressing for stage in repo.index.stages for dep in stage.deps
                if path == dep.def_path or path.startswith(str(dep.def_path).rstrip("/") + "/")}


#: the stages that present what the papers say: they change with the papers' numbers, nothing else does
PRESENTING = {"report_training", "report_seeds", "sine_maml", "sine_reptile", "surface_reptile", "theory", "freeze", "similarity", "shift",
              "shift_sine",
              "nav", "cheetah", "benchmark", "summarize", "report_campaign", "freeze_campaign", "similarity_campaign",
              "shift_campaign", "shift_official", "freeze_5shot", "similarity_5shot", "report_seeds_campaign"}


@pytest.mark.parametrize("path,expected", [
    ("lib/metalearn/papers.py", PRESENTING),
    ("lib/metalearn/accuracy.py", {"report_training", "report_seeds", "report_campaign", "report_seeds_campaign"}),
    ("lib/metalearn/report.py", PRESENTING | {"prepare"}),
    ("notebooks/report_training.ipynb", {"report_training"}),
    ("data/models/train_omniglot/maml-conv-5w1s.pt", {"train_seeds_omniglot", "report_training", "freeze",
                                                      "similarity", "shift", "shift_campaign"}),
])
def test_editing_what_presents_changes_only_stages_that_present_never_training(path, expected):
    changed = _stages_depending_on(path)
    assert changed == expected
    assert not any(stage.startswith("train_") for stage in changed) or path.startswith("data/models/")


def test_seeds_queued_in_dvc_run_in_their_own_copies_and_leave_the_workspace_alone(clone):
    """`dvc exp run --queue -S sine_maml.seed=N` twice, `dvc queue start -j 2`: each experiment runs
    in its own copy of the study (its own settings, checkpoints and outputs), the two results differ,
    `dvc exp show` has both, and the workspace is as it was."""
    env = {key: value for key, value in os.environ.items() if key not in (paths.STAGING_ENV, "METALEARN_WORK")}
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}"  # the runner's python and papermill

    def dvc(*args):
        return subprocess.run([*DVC_COMMAND, *args], cwd=clone, env=env, capture_output=True, text=True, check=True,
                              timeout=300)

    params = yaml.safe_load((clone / "params.yaml").read_text())
    defaults = papermill.inspect_notebook(str(clone / "notebooks/sine_maml.ipynb"))  # its smoke-sized values, smaller
    params["sine_maml"] = {key: ast.literal_eval(value["default"]) for key, value in defaults.items()}
    params["sine_maml"].update(iterations=40, multitask_models=4, multitask_steps=20, multitask_pilot=2,
                               n_val_tasks=10, n_test_tasks=10, n_query=20, finetune_lrs=[0.01, 0.02])
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = dict(cwd=clone, env=env, check=True, capture_output=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "smoke-sized sine_maml"], **git)
    before = subprocess.run(["git", "rev-parse", "HEAD"], **git).stdout
    for seed in (1, 2):
        dvc("exp", "run", "--queue", "-S", f"sine_maml.seed={seed}", "sine_maml")
    dvc("queue", "start", "-j", "2")
    deadline = time.monotonic() + 900  # two smoke runs take about a minute on 2 cores
    try:
        while True:
            time.sleep(2)
            status = dvc("queue", "status").stdout
            if "Queued" not in status and "Running" not in status:
                break
            assert time.monotonic() < deadline, "the queue did not finish in 15 minutes:\n" + status
            if "Queued" in status and "0 active" in status:
                # DVC's idle workers can exit with an experiment still queued (treeverse/dvc#10562): its own
                # workaround, which the README gives, is to start the workers again
                dvc("queue", "start", "-j", "2")
    finally:
        subprocess.run([*DVC_COMMAND, "queue", "stop", "--kill"], cwd=clone, env=env, capture_output=True, timeout=120)
    assert "Failed" not in status, status + dvc("queue", "logs", status.split()[0]).stdout
    shown = json.loads(dvc("exp", "show", "--json").stdout)
    seeds, metrics = [], []
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            data = experiment["revs"][0]["data"]
            seeds.append(data["params"]["params.yaml"]["data"]["sine_maml"]["seed"])
            # a stage's own numbers are not DVC metrics (only summarize's headline is): read them from the
            # experiment's commit
            metrics.append(subprocess.run(["git", "show", f"{experiment['revs'][0]['rev']}:reports/metrics/sine_maml.json"],
                                          **git).stdout)
    assert sorted(seeds) == [1, 2]
    assert metrics[0] != metrics[1]  # two seeds, two results
    assert subprocess.run(["git", "status", "--porcelain"], **git).stdout == b""  # the workspace is untouched
    assert subprocess.run(["git", "rev-parse", "HEAD"], **git).stdout == before


def test_a_teams_own_remote_carries_the_dvc_cached_outputs(tmp_path):
    """What the README says for a team's storage: `dvc remote add -d <name> <folder>`, `dvc push`, and
    in another clone `dvc pull` brings back the DVC-cached outputs (the study's are the prepared data;
    the committed models and reports travel with git)."""
    env = {key: value for key, value in os.environ.items() if key not in (paths.STAGING_ENV, "METALEARN_WORK")}
    study, remote, other = tmp_path / "study", tmp_path / "team-storage", tmp_path / "other"

    def sh(*args, cwd=study):
        return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout

    study.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    sh("git", "init", "-q")
    sh(*DVC_COMMAND, "init", "-q")
    sh(*DVC_COMMAND, "config", "core.analytics", "false")
    (study / "dvc.yaml").write_text(
        "stages:\n  prepare:\n    cmd: python -c \"import os; os.makedirs('data/prepared', exist_ok=True); "
        "open('data/prepared/a.bin', 'wb').write(os.urandom(4096))\"\n    outs: [data/prepared]\n")
    sh(*DVC_COMMAND, "repro", "-q")
    made = (study / "data/prepared/a.bin").read_bytes()
    sh(*DVC_COMMAND, "remote", "add", "-d", "team", str(remote))
    sh("git", "add", "-A")
    sh(*git, "commit", "-qm", "a stage with a cached output, and the team's remote")
    sh(*DVC_COMMAND, "push", "-q")
    sh("git", "clone", "-q", str(study), str(other), cwd=tmp_path)
    assert not (other / "data/prepared").exists()
    sh(*DVC_COMMAND, "pull", "-q", cwd=other)
    assert (other / "data/prepared/a.bin").read_bytes() == made
    assert "up to date" in sh(*DVC_COMMAND, "status", cwd=other)


def test_a_missing_data_folder_is_reported_naming_prepare_data_dir(tmp_path, monkeypatch):
    """The raw archives are not DVC dependencies, so a missing folder reaches the stage's own check."""
    _fake_study(tmp_path, monkeypatch, "")
    (tmp_path / "notebooks" / "prepare.ipynb").write_bytes((LIB.parents[1] / "notebooks/prepare.ipynb").read_bytes())
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"prepare": {**PARAMS["prepare"], "data_dir": str(tmp_path / "nowhere")}}))
    with pytest.raises(papermill.PapermillExecutionError, match=r"'data_dir' is .*nowhere.*prepare\.data_dir"):
        run.run_stage("prepare", params)
    assert not (tmp_path / "data" / "prepared").exists()
    assert not any("data_dir" in dep for dep in DVC["stages"]["prepare"]["deps"])


def test_no_committed_report_holds_a_machine_path():
    """A warning's traceback or a printed path would change with every machine that reruns a stage
    (e.g. torch's read-only-array warning names the kernel's /tmp file): reports hold none."""
    pattern = re.compile(r"/tmp/ipykernel_|/__w/|/root/|/home/|" + re.escape(str(paths.ROOT)))
    tracked = subprocess.run(["git", "ls-files", "reports"], cwd=paths.ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    found = [f for f in tracked if f.endswith((".ipynb", ".md", ".csv", ".json"))
             and pattern.search((paths.ROOT / f).read_text(errors="replace"))]
    assert not found, f"machine paths in {found}"


def test_a_stage_writes_unique_rows_and_a_collection_keeps_one_setting_at_two_scales(tmp_path, monkeypatch):
    """A stage's own rows are unique by experiment, setting and metric; rows collected from several stages
    (report_campaign) may hold one setting at two scales (one seed, over seeds), but not the same row twice."""
    from metalearn import results
    monkeypatch.setenv(paths.STAGING_ENV, str(tmp_path))
    one = results.row("A-anil", "omniglot maml conv 5w1s", "accuracy", 97.4, "10000 iterations; 1 seed")
    seeds = results.row("A-anil", "omniglot maml conv 5w1s", "accuracy", 97.6, "10000 iterations; 3 seeds (0, 1, 2)")
    with pytest.raises(ValueError, match="duplicate result rows"):
        results.write([one, seeds], "s")
    written = results.write([one, seeds], "s", collected=True)
    assert [r["value"] for r in results.read(written)] == ["97.4", "97.6"]
    with pytest.raises(ValueError, match="duplicate result rows"):
        results.write([one, seeds, one], "s", collected=True)
