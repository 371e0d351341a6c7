"""Results over seeds (metalearn.seeds): per-seed rows against a one-seed report's test table, the
mean over seeds and its CI over tasks against hand computations, paired differences, result rows."""
import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from metalearn import accuracy, fewshot, models, seeds
from metalearn.datasets import EpisodeSampler

IMAGES = torch.randint(0, 256, (12, 6, 14, 14), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
SETTINGS = fewshot.Settings(iterations=7, meta_batch=3, inner_steps=1, inner_lr=0.4, test_steps=2)


def trained_models():
    """{seed: {spec: model}}: untrained networks that differ per seed (enough to test)."""
    specs = [fewshot.Spec("maml", "conv", 3, 1), fewshot.Spec("anil", "conv", 3, 1)]
    return {seed: {spec: models.init_model(lambda: fewshot.build_model(spec, "omniglot", 4), seed) for spec in specs}
            for seed in (4, 9)}


def episodes(split, spec, shots, queries):
    return EpisodeSampler(IMAGES, torch.arange(12), spec.n_way, shots, queries, seed=0)


def stage_of(trained: dict) -> accuracy.Stage:
    """What an over-seeds training stage leaves (records, per-task scores) for these models."""
    records, scores = {}, {}
    for seed, runs in trained.items():
        for spec, model in runs.items():
            name = f"{spec.name}-seed{seed}"
            records[name] = {"seed": seed, "spec": spec.name, "settings": asdict(SETTINGS), "history": []}
            test = fewshot.test_episodes(episodes, spec, 5, 2, seed=1)
            scores[name] = fewshot.test_scores(spec, model, SETTINGS, test, every_step=False)
    return accuracy.Stage({"seeds": list(trained)}, records, scores)


@pytest.fixture(scope="module")
def scores():
    return seeds.scores_of(stage_of(trained_models()))


def test_per_seed_rows_equal_the_one_seed_stages_test_table(scores):
    """Each seed's accuracy and CI are those a one-seed stage's report gives (accuracy.test_table)."""
    ours = seeds.per_seed(scores)
    for seed, runs in trained_models().items():
        table, _ = accuracy.test_table(stage_of({seed: runs}))
        merged = table.merge(ours[ours.seed == seed], on=["run", "head"], suffixes=("", "_seeds"))
        assert len(merged) == len(table) == 4  # 2 runs x (adapt, nil)
        for column in ("steps", "accuracy", "ci95", "iterations", "meta_batch", "training"):
            assert (merged[column] == merged[f"{column}_seeds"]).all(), column
    assert ours.run.tolist()[:2] == ["maml-conv-3w1s-seed4"] * 2
    assert set(ours.steps) == {0, 2}  # NIL has no steps; adapt has the test steps


def test_scores_of_a_stage_are_the_last_step_and_the_nil_head_of_each_seed(scores):
    stage = stage_of(trained_models())
    one = scores[(scores.seed == 9) & (scores.run == "anil-conv-3w1s")]
    kept = stage.scores["anil-conv-3w1s-seed9"]
    assert one[one["head"] == "adapt"].accuracy.tolist() == kept["adapt@2"].tolist()
    assert one[one["head"] == "nil"].accuracy.tolist() == kept["nil"].tolist()
    assert one.accuracy.dtype == np.float32  # as computed: the means match the old in-notebook test bit for bit


def test_summary_is_the_mean_and_std_over_seeds_with_a_ci_over_tasks_of_the_seed_means():
    # 2 seeds x 3 tasks of one run: seed 0 scores 10, 20, 30; seed 1 scores 30, 40, 80
    scores = pd.DataFrame({"seed": [0] * 3 + [1] * 3, "run": "maml-conv-5w1s", "head": "adapt", "steps": 5,
                           "task": [0, 1, 2] * 2, "accuracy": [10.0, 20, 30, 30, 40, 80], "iterations": 9,
                           "meta_batch": 2, "training": "t"})
    table = seeds.summary(scores)
    row = table.loc[("maml-conv-5w1s", "adapt")]
    assert (row["seed 0"], row["seed 1"]) == (20, 50)
    assert row["mean over seeds"] == 35
    assert row["std over seeds"] == pytest.approx(np.std([20, 50], ddof=1))
    task_means = np.array([20.0, 30, 55])  # per task, the mean over the two seeds
    half = scipy.stats.t.ppf(0.975, 2) * task_means.std(ddof=1) / math.sqrt(3)
    assert row["ci95 over tasks"] == pytest.approx(half)
    assert (row["steps"], row["iterations"], row["meta_batch"], row["training"]) == (5, 9, 2, "t")


def test_summary_keeps_the_runs_order(scores):
    table = seeds.summary(scores)
    assert list(table.index) == [("maml-conv-3w1s", "adapt"), ("maml-conv-3w1s", "nil"),
                                 ("anil-conv-3w1s", "adapt"), ("anil-conv-3w1s", "nil")]
    assert list(table.columns[:2]) == ["seed 4", "seed 9"]


def test_difference_is_paired_over_tasks_and_given_per_seed():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 100, (2, 6)), rng.uniform(0, 100, (2, 6))  # [seed, task]
    scores = pd.concat([pd.DataFrame({"seed": s, "run": run, "head": "adapt", "task": range(6), "accuracy": x[s]})
                        for run, x in (("anil-conv-5w1s", a), ("maml-conv-5w1s", b)) for s in (0, 1)])
    got = seeds.difference(scores, "anil-conv-5w1s", "maml-conv-5w1s")
    per_task = (a - b).mean(0)
    assert got["difference"] == pytest.approx(per_task.mean())
    assert got["ci95"] == pytest.approx(scipy.stats.t.ppf(0.975, 5) * per_task.std(ddof=1) / math.sqrt(6))
    assert got["per seed"] == pytest.approx({0: (a[0] - b[0]).mean(), 1: (a[1] - b[1]).mean()})
    per_seed = (a - b).mean(1)
    assert got["ci95 over seeds"] == pytest.approx(scipy.stats.t.ppf(0.975, 1) * per_seed.std(ddof=1) / math.sqrt(2))
    with pytest.raises(ValueError, match=r"no adapt scores of \['fomaml-conv-5w1s'\]"):
        seeds.difference(scores, "anil-conv-5w1s", "fomaml-conv-5w1s")


def test_result_rows_carry_the_papers_value_beside_the_mean_and_a_std_row(scores):
    rows = seeds.result_rows("omniglot", seeds.summary(scores), "{training}; {steps} test steps; 2 seeds")
    keys = [(r["experiment"], r["setting"], r["metric"]) for r in rows]
    assert ("A-anil", "omniglot maml conv 3w1s", "accuracy") in keys
    assert ("A-anil", "omniglot maml conv 3w1s", "accuracy, std over seeds") in keys
    assert ("A-nil", "omniglot anil conv 3w1s nil-head", "accuracy") in keys
    assert not any(e == "A-regimes" for e, _, _ in keys)  # only the experiments asked for
    training = "7 iterations x 3 tasks x 1 queries/class, 1 inner steps of 0.4"
    assert {r["scale"] for r in rows} == {f"{training}; 2 test steps; 2 seeds", f"{training}; 0 test steps; 2 seeds"}
    assert all(r["ci95"] == "" for r in rows if r["metric"].endswith("std over seeds"))
    real = pd.DataFrame({"seed": [0, 0, 1, 1], "run": "anil-conv-20w1s", "head": "adapt", "steps": 5, "task": [0, 1] * 2,
                         "accuracy": [90.0, 95, 92, 97], "iterations": 300, "meta_batch": 2, "training": "t"})
    row = seeds.result_rows("omniglot", seeds.summary(real), "s")[0]
    assert (row["value"], row["paper"]) == ("93.5", "96.2")  # the paper's column comes from metalearn.papers


def test_same_weights(tmp_path):
    model = models.init_model(lambda: fewshot.build_model(fewshot.Spec("maml", "conv", 3, 1), "omniglot", 4), 0)
    path = tmp_path / "m.pt"
    assert fewshot.same_weights(model, path) is None
    torch.save(model.state_dict(), path)
    assert fewshot.same_weights(model, path) is True
    with torch.no_grad():
        next(model.parameters())[0, 0, 0, 0] += 1e-7
    assert fewshot.same_weights(model, path) is False
    wider = fewshot.build_model(fewshot.Spec("maml", "conv", 3, 1), "omniglot", 8)
    assert fewshot.same_weights(wider, path) is False


def test_verdicts_name_each_run_and_the_anil_minus_maml_gap(scores):
    lines = seeds.verdicts(seeds.summary(scores), scores, 5)
    assert lines[0].startswith("- **maml-conv-3w1s**") and "mean over 2 seeds" in lines[0]
    d = seeds.difference(scores, "anil-conv-3w1s", "maml-conv-3w1s")
    assert f"3w1s: ANIL - MAML = {d['difference']:+.1f}" in lines[-1]
    assert f"± {d['ci95']:.1f} (" in lines[-1] and f"± {d['ci95 over seeds']:.1f} over seeds" in lines[-1]



def test_contrast_rows_give_anil_minus_maml_with_the_tasks_and_the_seeds_intervals(scores):
    rows = seeds.contrast_rows("omniglot", scores, "{training}; {steps} test steps; 2 seeds")
    assert [(r["experiment"], r["setting"], r["metric"]) for r in rows] == [
        ("A-anil", "omniglot anil - maml conv 3w1s", "difference (points, paired)"),
        ("A-anil", "omniglot anil - maml conv 3w1s", "difference (points, over seeds)")]
    d = seeds.difference(scores, "anil-conv-3w1s", "maml-conv-3w1s")
    assert float(rows[0]["value"]) == pytest.approx(d["difference"], rel=1e-5) == float(rows[1]["value"])
    assert float(rows[0]["ci95"]) == pytest.approx(d["ci95"], rel=1e-5)
    assert float(rows[1]["ci95"]) == pytest.approx(d["ci95 over seeds"], rel=1e-5)
    assert rows[0]["scale"] == "7 iterations x 3 tasks x 1 queries/class, 1 inner steps of 0.4; 2 test steps; 2 seeds"
    assert seeds.contrast_rows("omniglot", scores[scores.run != "maml-conv-3w1s"], "s") == []  # no MAML: no contrast


def history(values: dict[str, list[list[float]]]) -> pd.DataFrame:
    """A stage's histories (:func:`seeds.history_of`'s shape): ``values[run][seed]`` the validation
    accuracies (fractions) at iterations 5, 10, ...; training rows between them without one."""
    rows = []
    for run, per_seed in values.items():
        for seed, accuracies in enumerate(per_seed):
            for i, acc in enumerate(accuracies):
                rows.append(dict(iteration=5 * i + 3, loss=1.0, run=f"{run}-seed{seed}", seed=seed))  # no validation
                rows.append(dict(iteration=5 * i + 5, loss=1.0, val_accuracy=acc, run=f"{run}-seed{seed}", seed=seed))
    return pd.DataFrame(rows)


CURVES = history({"maml-conv-5w1s": [[0.2, 0.40], [0.3, 0.50], [0.1, 0.45]],
                  "anil-conv-5w1s": [[0.2, 0.42], [0.3, 0.56], [0.1, 0.46]]})


def test_curves_are_the_mean_over_seeds_with_the_student_t_interval_over_them():
    got = seeds.curves(CURVES).set_index(["run", "iteration"])
    assert list(got.index) == [("maml-conv-5w1s", 5), ("maml-conv-5w1s", 10), ("anil-conv-5w1s", 5),
                               ("anil-conv-5w1s", 10)]  # validated iterations only
    final = got.loc[("maml-conv-5w1s", 10)]
    assert final.accuracy == pytest.approx(45.0) and final.seeds == 3
    assert final.ci95 == pytest.approx(scipy.stats.t.ppf(0.975, 2) * 5.0 / math.sqrt(3))  # sd of 40, 50, 45 is 5
    assert math.isnan(seeds.curves(CURVES[CURVES.seed == 0]).ci95.iloc[0])  # one seed: no interval


def test_curve_rows_give_the_final_validation_over_seeds_and_anil_minus_maml_paired_by_seed():
    scores = pd.DataFrame({"run": ["maml-conv-5w1s", "anil-conv-5w1s"], "training": ["tm", "ta"]})
    rows = seeds.curve_rows("miniimagenet", CURVES, scores, "{training}; 3 seeds; validation")
    assert [(r["experiment"], r["setting"], r["metric"], r["scale"]) for r in rows] == [
        ("A-curves", "miniimagenet maml conv 5w1s final validation", "accuracy", "tm; 3 seeds; validation"),
        ("A-curves", "miniimagenet anil conv 5w1s final validation", "accuracy", "ta; 3 seeds; validation"),
        ("A-curves", "miniimagenet anil - maml conv 5w1s final validation", "difference (points, paired by seed)",
         "ta; 3 seeds; validation")]
    assert float(rows[1]["value"]) == pytest.approx(48.0)
    # per seed ANIL - MAML: +2, +6, +1 -> mean 3, sd sqrt(7); unpaired, the seeds' spread (sd 5 and 7.2) would swamp it
    assert float(rows[2]["value"]) == pytest.approx(3.0)
    assert float(rows[2]["ci95"]) == pytest.approx(scipy.stats.t.ppf(0.975, 2) * math.sqrt(7 / 3), rel=1e-5)
    reordered = CURVES.sample(frac=1, random_state=0)  # the last validation is the last iteration's, not the last row's
    assert seeds.curve_rows("miniimagenet", reordered, scores, "{training}") == seeds.curve_rows(
        "miniimagenet", CURVES, scores, "{training}")


def test_an_a_curves_scale_names_the_validation_in_place_of_the_test():
    stage = accuracy.Stage({"seeds": [0, 1], "data": "D", "hardware": ["cpu"],
                            "test": {"tasks": 600, "queries": 5, "bn": "transductive"}}, {}, {})
    assert seeds.scale(stage).format(training="T", steps=5) == (
        "T; 2 seeds (0, 1); 600 test tasks x 5 queries/class, 5 test steps (the same tasks for every seed); D; "
        "bn transductive; cpu")
    assert seeds.scale(stage, validation=True).format(training="T") == f"T; 2 seeds (0, 1); {seeds.VALIDATION}; D; " \
                                                                       "bn transductive; cpu"
