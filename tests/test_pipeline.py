"""The pipeline's contracts: parameters, the stage runner, and the files a reader relies on."""
import csv
import json

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


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_each_stage_runs_its_notebook_with_exactly_its_params(stage):
    spec = DVC["stages"][stage]
    assert spec["cmd"] == f"python -m metalearn.run {stage}"
    notebook = paths.NOTEBOOKS / f"{stage}.ipynb"
    assert f"notebooks/{stage}.ipynb" in spec["deps"]
    declared = set(papermill.inspect_notebook(str(notebook)))
    assert set(PARAMS[stage]) == declared, "params.yaml section and the notebook's parameters cell differ"
    assert sorted(spec["params"]) == sorted(f"{stage}.{k}" for k in PARAMS[stage])
    lib_deps = {d for d in spec["deps"] if d.startswith("lib/")}
    source = (paths.NOTEBOOKS / f"{stage}.py").read_text()
    imported = [name.strip() for line in source.splitlines() if line.startswith("from metalearn import")
                for name in line.split("import", 1)[1].split(",")]
    missing = [m for m in imported if f"lib/metalearn/{m}.py" not in lib_deps]
    assert not missing, f"dvc.yaml: stage {stage} imports {missing} but does not list them as deps"


def test_the_suites_smaller_smoke_values_are_parameters_and_agree_across_notebooks():
    from testenv import SMOKE

    for stage, values in SMOKE.items():
        assert set(values) <= set(papermill.inspect_notebook(str(paths.NOTEBOOKS / f"{stage}.ipynb"))), stage
    widths = {"omniglot": SMOKE["train_omniglot"]["filters"], "miniimagenet": SMOKE["train_miniimagenet"]["filters"]}
    assert SMOKE["train_seeds"]["filters"] == widths["miniimagenet"]  # seeds train train_miniimagenet's network
    assert SMOKE["train_seeds_omniglot"]["filters"] == widths["omniglot"]  # and train_omniglot's
    for stage in ("freeze", "similarity"):  # they load the training stages' models
        assert (SMOKE[stage]["omni_filters"], SMOKE[stage]["mini_filters"]) == (widths["omniglot"], widths["miniimagenet"])


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_notebook_and_its_py_twin_are_in_sync(stage):
    ipynb = nbformat.read(paths.NOTEBOOKS / f"{stage}.ipynb", as_version=4)
    py = jupytext.read(paths.NOTEBOOKS / f"{stage}.py")
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
    after the library tests, keeping each file's own order."""
    import types

    import testenv

    stages = list(DVC["stages"])
    names = ["tests/test_a.py::1", f"notebooks/{stages[-1]}.ipynb::1", f"notebooks/{stages[0]}.ipynb::1",
             "tests/test_b.py::1", f"notebooks/{stages[0]}.ipynb::2", f"notebooks/{stages[-1]}.ipynb::2"]
    items = [types.SimpleNamespace(fspath=paths.ROOT / name.split("::")[0], name=name) for name in names]
    testenv.pytest_collection_modifyitems(None, None, items)
    assert [i.name for i in items] == ["tests/test_a.py::1", "tests/test_b.py::1", f"notebooks/{stages[0]}.ipynb::1",
                                       f"notebooks/{stages[0]}.ipynb::2", f"notebooks/{stages[-1]}.ipynb::1",
                                       f"notebooks/{stages[-1]}.ipynb::2"]


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


def _fake_study(tmp_path, monkeypatch, body):
    """A one-notebook study in tmp_path whose notebook writes an output, then runs ``body``."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("flag = True", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(
                    "from metalearn import paths\n"
                    "if not isinstance(flag, bool):\n    raise TypeError('flag must be a bool')\n"
                    "paths.output('reports/fake/out.txt').write_text('x')\n" + body)]
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "fake.ipynb")
    (tmp_path / "params.yaml").write_text("fake:\n  flag: false\n")
    for name, value in [("ROOT", tmp_path), ("NOTEBOOKS", tmp_path / "notebooks"), ("REPORTS", tmp_path / "reports")]:
        monkeypatch.setattr(paths, name, value)
    monkeypatch.delenv(paths.STAGING_ENV, raising=False)
    return tmp_path / "params.yaml"


def test_a_failing_stage_leaves_no_output_behind(tmp_path, monkeypatch):
    params = _fake_study(tmp_path, monkeypatch, "raise RuntimeError('boom')")
    with pytest.raises(papermill.PapermillExecutionError, match="boom"):
        run.run_stage("fake", params)
    assert not (tmp_path / "reports" / "fake").exists()
    assert not list((tmp_path / "reports").glob(".staging-*"))
    assert (tmp_path / "reports" / ".failed" / "fake.ipynb").exists()


def test_a_succeeding_stage_moves_its_outputs_into_place_with_booleans_intact(tmp_path, monkeypatch):
    params = _fake_study(tmp_path, monkeypatch, "assert flag is False")
    run.run_stage("fake", params)
    assert (tmp_path / "reports" / "fake" / "out.txt").read_text() == "x"
    assert (tmp_path / "reports" / "fake" / "fake.ipynb").exists()
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
