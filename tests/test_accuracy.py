"""The paired contrasts of the report stages (metalearn.accuracy.contrasts): known answers on a
hand-made stage, the scale of runs trained on different budgets, and rows the claims can read."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from metalearn import accuracy, claims
from metalearn.fewshot import Spec


def stage(runs: dict[str, dict]) -> accuracy.Stage:
    """A training stage's records and per-task scores: {run: {"adapt": [...], "nil": [...], budget}}."""
    records, scores = {}, {}
    for run, r in runs.items():
        records[run] = {"spec": run, "settings": {
            "test_steps": r.get("test_steps", 2), "iterations": r.get("iterations", 100), "meta_batch": 4,
            "train_queries": 5, "inner_steps": 3, "inner_lr": 0.4, "train_shots": 10, "inner_batch": 10,
            "pretrain_iterations": 600, "pretrain_batch": 64}}
        frame = {"adapt@0": np.zeros(len(r["adapt"])), f"adapt@{records[run]['settings']['test_steps']}": r["adapt"]}
        if "nil" in r:
            frame["nil"] = r["nil"]
        scores[run] = pd.DataFrame(frame)
    return accuracy.Stage({}, records, scores)


def test_contrasts_are_paired_differences_over_the_same_tasks():
    rng = np.random.default_rng(1)
    maml, anil = rng.uniform(20, 90, 30), rng.uniform(20, 90, 30)
    nil, random_nil = rng.uniform(20, 90, 30), rng.uniform(20, 40, 30)
    s = stage({"maml-conv-5w1s": {"adapt": maml, "nil": nil}, "anil-conv-5w1s": {"adapt": anil, "nil": nil + 1},
               "random-conv-5w1s": {"adapt": random_nil - 5, "nil": random_nil}})
    found = {c["setting"]: c for c in accuracy.contrasts("omniglot", s)}
    assert set(found) == {"omniglot anil - maml conv 5w1s", "omniglot maml conv 5w1s nil-head - maml-head",
                          "omniglot anil conv 5w1s nil-head - maml-head", "omniglot anil - maml conv 5w1s nil-head",
                          "omniglot random - maml conv 5w1s nil-head"}
    d = anil - maml
    got = found["omniglot anil - maml conv 5w1s"]
    assert (got["experiment"], got["a"], got["b"], got["n"]) == ("A-anil", "anil-conv-5w1s", "maml-conv-5w1s", 30)
    assert got["difference"] == pytest.approx(d.mean())
    assert got["ci95"] == pytest.approx(scipy.stats.t.ppf(0.975, 29) * d.std(ddof=1) / np.sqrt(30))
    assert found["omniglot anil - maml conv 5w1s nil-head"]["difference"] == pytest.approx(1.0)  # nil + 1 - nil
    assert found["omniglot anil - maml conv 5w1s nil-head"]["ci95"] == pytest.approx(0.0, abs=1e-9)
    assert found["omniglot random - maml conv 5w1s nil-head"]["difference"] == pytest.approx((random_nil - nil).mean())


def test_a_contrast_of_runs_on_different_budgets_names_both_and_the_claims_find_its_model():
    """Reptile (500 iterations, 5 test steps) against MAML (1000, 2): the scale's training clause and
    test steps are MAML's, and how Reptile trained and was tested is named beside them."""
    s = stage({"maml-conv-5w1s": {"adapt": np.full(4, 90.0), "iterations": 1000},
               "reptile-conv-5w1s": {"adapt": np.array([70.0, 71, 72, 73]), "iterations": 500, "test_steps": 5},
               "multiclass+reptile-conv-5w1s": {"adapt": np.array([71.0, 71, 72, 74]), "iterations": 500,
                                                "test_steps": 5}})
    rows = accuracy.contrast_rows(s, accuracy.contrasts("omniglot", s), "{training}; 4 test tasks, {steps} test steps")
    by = {r["setting"]: r for r in rows}
    assert by["omniglot reptile - maml conv 5w1s"]["experiment"] == "R-omni"
    assert by["omniglot reptile - maml conv 5w1s"]["value"] == "-18.5"
    reptile = "500 iterations x 4 tasks x 10 shots/class, 3 inner Adam steps of 10 images (lr 0.4)"
    assert by["omniglot reptile - maml conv 5w1s"]["scale"] == (
        f"1000 iterations x 4 tasks x 5 queries/class, 3 inner steps of 0.4; reptile-conv-5w1s: {reptile}, 5 test "
        "steps; 4 test tasks, 2 test steps")
    assert by["omniglot reptile from multiclass - reptile conv 5w1s"]["scale"] == (
        f"{reptile}; multiclass+reptile-conv-5w1s: multiclass pre-training 600 iterations x 64 images, then {reptile}, 5 test "
        "steps; 4 test tasks, 5 test steps")
    assert {r["metric"] for r in rows} == {"difference (points, paired)"}


def test_every_comparison_claim_reads_a_row_the_contrasts_make():
    """The claims' settings are those the report stages write (a typo would read 'not measured')."""
    runs = ["maml", "fomaml", "anil", "random", "reptile", "reptilesgd", "multiclass+reptile", "multiclass+head",
            "multitask+head", "niltrain+head"]
    made = set()
    for dataset, settings in (("miniimagenet", ["5w1s", "5w5s"]), ("omniglot", ["5w1s", "20w1s", "20w5s"])):
        s = stage({f"{run}-conv-{k}": {"adapt": np.arange(3.0), "nil": np.arange(3.0)} for run in runs for k in settings})
        made |= {(c["experiment"], c["setting"], "difference (points, paired)") for c in accuracy.contrasts(dataset, s)}
    wanted = {c.row for c in claims.CLAIMS if c.row[2] == "difference (points, paired)"}
    assert wanted and wanted <= made, wanted - made


def test_stage_rows_are_a_stages_results_and_its_contrasts_at_its_scale():
    s = stage({"maml-conv-5w1s": {"adapt": np.array([80.0, 90]), "nil": np.array([70.0, 75])},
               "anil-conv-5w1s": {"adapt": np.array([85.0, 86])}})
    s = s._replace(info={"dataset": "omniglot", "test": {"tasks": 2, "queries": 5, "bn": "transductive"}, "data": "d",
                         "hardware": ["h"]},
                   validation={"maml-conv-5w1s": pd.Series([40.0, 60.0, 50.0]),
                               "anil-conv-5w1s": pd.Series([50.0] * 3)})
    rows = accuracy.stage_rows(s)
    keys = {(r["experiment"], r["setting"], r["metric"]) for r in rows}
    assert ("M-omni", "omniglot maml conv 5w1s", "accuracy") in keys
    assert ("A-curves", "omniglot anil conv 5w1s final validation", "accuracy") in keys
    assert ("A-anil", "omniglot anil - maml conv 5w1s", "difference (points, paired)") in keys
    curves = next(r for r in rows if r["setting"] == "omniglot maml conv 5w1s final validation")
    half = scipy.stats.t.ppf(0.975, 2) * 10 / np.sqrt(3)  # the 3 tasks' 95% CI
    assert curves["value"] == "50" and float(curves["ci95"]) == pytest.approx(half)
    assert curves["scale"] == ("100 iterations x 4 tasks x 5 queries/class, 3 inner steps of 0.4; "
                               f"{accuracy.VALIDATION.format(tasks=3)}; 1 seed; d; bn transductive; h")
    maml = next(r for r in rows if r["setting"] == "omniglot maml conv 5w1s")
    assert maml["value"] == "85" and maml["scale"] == ("100 iterations x 4 tasks x 5 queries/class, 3 inner steps of 0.4; "
                                                       "2 test tasks x 5 queries/class, 2 test steps; 1 seed; d; "
                                                       "bn transductive; h")


def test_reptile_with_inner_sgd_is_an_r_omni_result_not_the_pretraining_baseline():
    """R-pretrain compares Reptile from pre-training with Reptile (inner Adam) from scratch, as the
    review's Table 5; the inner-SGD run is an R-omni result only, under its own setting."""
    assert accuracy.experiments("omniglot", Spec.parse("reptile-conv-5w1s"), "adapt") == [
        ("R-omni", "omniglot reptile conv 5w1s"), ("R-pretrain", "omniglot reptile conv 5w1s")]
    assert accuracy.experiments("omniglot", Spec.parse("reptilesgd-conv-5w1s"), "adapt") == [
        ("R-omni", "omniglot reptilesgd conv 5w1s")]
    assert accuracy.experiments("omniglot", Spec.parse("reptilesgd-conv-5w1s"), "nil") == []
    s = stage({"reptile-conv-5w1s": {"adapt": np.array([70.0, 80, 90])},
               "reptilesgd-conv-5w1s": {"adapt": np.array([60.0, 80, 95])}})
    (got,) = accuracy.contrasts("omniglot", s)
    assert (got["experiment"], got["setting"], got["a"], got["b"]) == (
        "R-omni", "omniglot reptilesgd - reptile conv 5w1s", "reptilesgd-conv-5w1s", "reptile-conv-5w1s")
    assert got["difference"] == pytest.approx(-5 / 3)


def test_loading_a_stage_reads_its_validation_scores_and_names_the_stage_to_rerun_when_they_are_missing(
        tmp_path, monkeypatch):
    from metalearn import paths

    monkeypatch.setattr(paths, "ROOT", tmp_path)
    monkeypatch.setenv(paths.STAGING_ENV, str(tmp_path / "staging"))  # nothing staged: reads the root's
    (tmp_path / "data/models/s").mkdir(parents=True)
    (tmp_path / "data/scores/s").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"run the 's' stage first \(dvc repro s\)"):
        accuracy.load("s")
    (tmp_path / "data/models/s/stage.json").write_text('{"runs": ["maml-conv-5w1s"]}')
    (tmp_path / "data/models/s/maml-conv-5w1s.json").write_text('{"history": []}')
    (tmp_path / "data/scores/s/maml-conv-5w1s.csv").write_text("adapt@0,adapt@2\n20.0,60.0\n")
    with pytest.raises(FileNotFoundError, match=r"maml-conv-5w1s.val.csv is missing: re-execute the 's' stage"):
        accuracy.load("s")
    (tmp_path / "data/scores/s/maml-conv-5w1s.val.csv").write_text("accuracy\n40.0\n60.0\n")
    assert accuracy.load("s").validation["maml-conv-5w1s"].tolist() == [40.0, 60.0]


def test_a_learning_curve_ends_in_the_final_weights_validation_interval():
    history = pd.DataFrame({"run": ["maml-conv-5w1s"] * 2, "iteration": [10, 20], "loss": [2.0, 1.0],
                            "val_accuracy": [0.3, 0.5]})
    fig = accuracy.plot_learning_curves(history, "t", {"maml-conv-5w1s": pd.Series([40.0, 60.0, 50.0])})
    (bar,) = fig.axes[1].containers
    (x,), (y,) = bar.lines[0].get_data()
    (segment,) = bar.lines[2][0].get_segments()
    half = scipy.stats.t.ppf(0.975, 2) * 10 / np.sqrt(3)
    assert (x, y) == (20, 50.0) and segment[:, 1] == pytest.approx([50 - half, 50 + half])
    assert not accuracy.plot_learning_curves(history, "t").axes[1].containers  # no validation scores: no bar
