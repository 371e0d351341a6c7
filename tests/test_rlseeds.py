"""Meta-RL test returns over seeds: the seed average, the tables, the paired verdicts, the result
rows and the metrics, on tiny hand-made curves {(seed, *run): returns [tasks, steps + 1]}."""
import statistics

import matplotlib
import pytest
import torch

from metalearn import rlseeds
from metalearn.evaluation import mean_ci95

matplotlib.use("Agg")


def curve(*rows):
    return torch.tensor(rows, dtype=torch.float32)


#: two seeds, three tasks, steps 0..1: maml gains 10 on every task, anil less
CURVES = {
    (0, "maml"): curve([-20, -10], [-22, -12], [-18, -8]),
    (0, "anil"): curve([-20, -11], [-22, -12], [-18, -9]),
    (0, "oracle"): curve([-5, -5], [-6, -6], [-4, -4]),
    (1, "maml"): curve([-21, -11], [-23, -13], [-19, -9]),
    (1, "anil"): curve([-21, -12], [-23, -13], [-17, -10]),
    (1, "oracle"): curve([-5, -5], [-7, -7], [-4, -4]),
}


def test_the_seed_mean_is_each_tasks_average_over_the_seeds():
    torch.testing.assert_close(rlseeds.seed_mean(CURVES, [0, 1], "maml"), curve([-20.5, -10.5], [-22.5, -12.5],
                                                                                 [-18.5, -8.5]))
    torch.testing.assert_close(rlseeds.seed_mean(CURVES, [1], ("anil",)), CURVES[1, "anil"])
    with pytest.raises(ValueError, match=r"no test returns of \('maml',\) for seed\(s\) \[2\]"):
        rlseeds.seed_mean(CURVES, [0, 2], "maml")
    with pytest.raises(ValueError, match="none given"):
        rlseeds.seed_mean(CURVES, [], "maml")


def test_the_per_seed_table_has_each_seeds_mean_and_ci_over_tasks_in_the_curves_order():
    table = rlseeds.per_seed_table(CURVES, ["method"])
    assert list(table.columns) == ["seed", "method", "step", "average_return", "ci95"]
    assert list(zip(table.seed, table.method, table.step))[:4] == [(0, "maml", 0), (0, "maml", 1), (0, "anil", 0),
                                                                  (0, "anil", 1)]
    row = table[(table.seed == 1) & (table.method == "anil") & (table.step == 1)].iloc[0]
    assert (row.average_return, row.ci95) == mean_ci95([-12.0, -13.0, -10.0])
    with pytest.raises(ValueError, match=r"keys must be \(seed, family, method\)"):
        rlseeds.per_seed_table(CURVES, ["family", "method"])


def test_the_seed_table_pools_tasks_over_seeds_and_spreads_the_seeds_means():
    table = rlseeds.seed_table(CURVES, [0, 1], ["method"])
    assert list(table.columns) == ["method", "step", "average_return", "ci95", "std_over_seeds"]
    assert list(zip(table.method, table.step)) == [(m, s) for m in ("maml", "anil", "oracle") for s in (0, 1)]
    row = table[(table.method == "maml") & (table.step == 1)].iloc[0]
    assert (row.average_return, row.ci95) == mean_ci95([-10.5, -12.5, -8.5])  # each task's mean over the seeds
    assert row.std_over_seeds == pytest.approx(statistics.stdev([-10.0, -11.0]))  # seed means -10, -11
    one = rlseeds.seed_table(CURVES, [1], ["method"])
    assert one.std_over_seeds.isna().all() and one.std_over_seeds.iloc[0] is None
    assert one.average_return.iloc[1] == mean_ci95([-11.0, -13.0, -9.0])[0]


def test_runs_with_a_family_keep_the_family_as_a_column():
    curves = {(s, f, m): c for (s, m), c in CURVES.items() for f in ("velocity", "direction")}
    table = rlseeds.seed_table(curves, [0, 1], ["family", "method"])
    assert list(table.columns[:3]) == ["family", "method", "step"]
    assert list(dict.fromkeys(zip(table.family, table.method)))[:2] == [("velocity", "maml"), ("direction", "maml")]
    assert rlseeds.return_metrics(table, ["family", "method"])["direction_anil_step1"] == pytest.approx(-33.5 / 3)


def test_the_paired_difference_is_over_tasks_of_seed_averaged_differences_with_each_seeds():
    d = rlseeds.paired_difference(CURVES, [0, 1], "anil", "maml", 1)
    assert (d["difference"], d["ci95"]) == mean_ci95(curve([-1.0, 0.0, -1.0]))  # anil - maml per task, seed-averaged
    assert d["per seed"] == pytest.approx([-2 / 3, -2 / 3])
    gain = rlseeds.paired_difference(CURVES, [0, 1], "maml", "maml", 1, 0)  # a step's gain
    assert gain["difference"] == pytest.approx(10.0) and gain["ci95"] == pytest.approx(0.0, abs=1e-9)


def test_the_verdict_names_better_worse_or_not_distinguishable_by_the_paired_ci():
    assert rlseeds.verdict(CURVES, [0, 1], "maml", "maml", 1, 0) == \
        "maml is better than maml (+10.00 +- 0.00; per seed +10.00, +10.00)"
    assert rlseeds.verdict(CURVES, [0, 1], "maml", "maml", 0, 1, digits=1, steps_named=True) == \
        "maml after 0 steps is worse than maml after 1 step (-10.0 +- 0.0; per seed -10.0, -10.0)"
    mixed = {(0, "a"): curve([1.0], [-1.0], [1.0], [-1.0]), (0, "b"): curve([0.0], [0.0], [0.0], [0.0])}
    assert rlseeds.verdict(mixed, [0], "a", "b", 0) == "a and b are not distinguishable (+0.00 +- 1.84)"  # |0| <= ci
    anil = rlseeds.verdict(CURVES, [0, 1], "anil", "maml", 1)
    d = rlseeds.paired_difference(CURVES, [0, 1], "anil", "maml", 1)
    assert (abs(d["difference"]) <= d["ci95"]) == ("not distinguishable" in anil)


def test_result_rows_select_exactly_each_experiments_methods_and_the_oracle_at_step_0():
    curves = {(s, m): c for s in (0, 1) for m, c in (("maml", CURVES[s, "maml"]), ("anil", CURVES[s, "anil"]),
                                                    ("random", CURVES[s, "maml"] - 5), ("oracle", CURVES[s, "oracle"]))}
    table = rlseeds.seed_table(curves, [0, 1], ["method"])
    experiments = {"M-nav": ("maml", "fomaml", "pretrained", "random", "oracle"), "A-anil-rl": ("maml", "anil")}
    rows = rlseeds.result_rows(table, experiments, "nav {method} steps={step}", "a scale", [0, 1])
    chosen = [(r["experiment"], r["setting"], r["metric"]) for r in rows]
    assert [c for c in chosen if c[2] == "return"] == [
        ("M-nav", "nav maml steps=0", "return"), ("A-anil-rl", "nav maml steps=0", "return"),
        ("M-nav", "nav maml steps=1", "return"), ("A-anil-rl", "nav maml steps=1", "return"),
        ("A-anil-rl", "nav anil steps=0", "return"), ("A-anil-rl", "nav anil steps=1", "return"),
        ("M-nav", "nav random steps=0", "return"), ("M-nav", "nav random steps=1", "return"),
        ("M-nav", "nav oracle steps=0", "return")]
    assert len(rows) == 18 and chosen[1] == ("M-nav", "nav maml steps=0", "return, std over seeds")
    first = rows[0]
    ci = mean_ci95([-20.5, -22.5, -18.5])[1]  # maml's seed-averaged tasks at step 0
    assert (first["value"], first["ci95"], first["scale"]) == ("-20.5", f"{ci:.6g}", "a scale")
    single = rlseeds.result_rows(rlseeds.seed_table(curves, [0], ["method"]), experiments, "nav {method} steps={step}",
                                 "a scale", [0])
    assert len(single) == 9 and all(r["metric"] == "return" for r in single)


def test_metrics_name_each_run_step_and_seed():
    table = rlseeds.seed_table(CURVES, [0, 1], ["method"])
    metrics = rlseeds.return_metrics(table, ["method"])
    assert set(metrics) == {f"{m}_step{s}" for m in ("maml", "anil", "oracle") for s in (0, 1)}
    assert metrics["maml_step1"] == pytest.approx(-10.5) and isinstance(metrics["maml_step1"], float)
    trained = {(0, "velocity", "maml"): dict(best_iteration=4, resumed_from=10, history=[{}] * 10,
                                             seconds_per_iteration=2.0),
               (1, "velocity", "maml"): dict(best_iteration=0, resumed_from=3, history=[{}] * 10,
                                             seconds_per_iteration=1.5)}
    assert rlseeds.training_metrics(trained) == {"velocity_maml_seed0_best_iteration": 5,  # loaded: no speed
                                                 "velocity_maml_seed1_best_iteration": 1,
                                                 "velocity_maml_seed1_seconds_per_iteration": 1.5}


def test_curve_text_reads_a_runs_steps_in_order():
    table = rlseeds.seed_table(CURVES, [0, 1], ["method"]).iloc[::-1]
    assert rlseeds.curve_text(table, 2, method="maml") == "-20.50 -> -10.50"
    with pytest.raises(ValueError, match="no rows"):
        rlseeds.curve_text(table, 2, method="fomaml")


def test_the_plot_draws_a_thick_line_per_method_and_a_thin_one_per_seed():
    import matplotlib.pyplot as plt

    styles = {"maml": dict(color="C2"), "anil": dict(color="C4"), "oracle": dict(color="C3")}
    for seeds, lines in (([0, 1], 3 * 3), ([0], 3)):
        curves = {k: v for k, v in CURVES.items() if k[0] in seeds}
        fig, ax = plt.subplots()
        rlseeds.plot_test_returns(ax, rlseeds.seed_table(curves, seeds, ["method"]),
                                  rlseeds.per_seed_table(curves, ["method"]), styles, str.upper)
        assert len(ax.lines) == lines and [t.get_text() for t in ax.legend().get_texts()] == ["MAML", "ANIL", "ORACLE"]
        plt.close(fig)
