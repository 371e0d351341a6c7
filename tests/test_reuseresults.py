"""The feature-reuse analyses as results rows and metrics: on small hand-made tables, each row's
experiment, setting, metric, value, ci95, paper and scale, in the table's order; malformed tables refused."""
import math

import pandas as pd
import pytest

from metalearn import reuseresults
from metalearn.reuseresults import COST, OWN_START

NAN = math.nan


def cells(rows, *keys):
    keys = keys or ("experiment", "setting", "metric", "value", "ci95", "scale")
    return [tuple(r[k] for k in keys) for r in rows]


# ------------------------------------------------------------------------- freeze stage
FREEZE = pd.DataFrame([
    dict(dataset="miniimagenet", run="maml-conv-5w1s", frozen="none", layers="", accuracy=40.0, ci95=1.5,
         cost=0.0, cost_ci95=0.0, tasks=3),
    dict(dataset="miniimagenet", run="maml-conv-5w1s", frozen="1-4", layers="1-4", accuracy=39.25, ci95=1.25,
         cost=0.75, cost_ci95=0.5, tasks=3),
    dict(dataset="omniglot", run="maml-conv-20w1s", frozen="none", layers="", accuracy=90.0, ci95=1.0,
         cost=0.0, cost_ci95=0.0, tasks=3),
    dict(dataset="omniglot", run="maml-conv-20w1s", frozen="1", layers="1", accuracy=89.5, ci95=1.0,
         cost=0.5, cost_ci95=0.25, tasks=3),
]).assign(**{"training stage": 40.1})

DIST = pd.DataFrame([
    dict(dataset="miniimagenet", run="maml-conv-5w1s", layer="body.layer1", parameters=10, norm=2.0,
         distance=0.02, distance_ci95=0.001, relative=0.01, relative_ci95=0.0005, tasks=3),
    dict(dataset="miniimagenet", run="maml-conv-5w1s", layer="head", parameters=5, norm=1.0,
         distance=0.5, distance_ci95=0.05, relative=0.5, relative_ci95=0.05, tasks=3),
])


def test_freeze_rows_give_each_setting_accuracy_and_only_frozen_settings_a_paired_cost():
    rows = reuseresults.freeze_rows(FREEZE, "miniimagenet", "maml-conv-5w1s", "a scale")
    setting = "miniimagenet maml conv 5w1s freeze"
    assert cells(rows) == [
        ("A-freeze", f"{setting} none", "accuracy", "40", "1.5", "a scale"),
        ("A-freeze", f"{setting} 1-4", "accuracy", "39.25", "1.25", "a scale"),
        ("A-freeze", f"{setting} 1-4", COST, "0.75", "0.5", "a scale"),
    ]
    assert cells(rows, "paper") == [("44.5",), ("44.7",), ("",)]  # the ANIL paper's Table 1, by setting
    other = reuseresults.freeze_rows(FREEZE, "omniglot", "maml-conv-20w1s", "b")
    assert cells(other, "setting", "metric", "value") == [
        ("omniglot maml conv 20w1s freeze none", "accuracy", "90"),
        ("omniglot maml conv 20w1s freeze 1", "accuracy", "89.5"),
        ("omniglot maml conv 20w1s freeze 1", COST, "0.5")]


def test_distance_rows_give_each_layer_its_absolute_and_relative_distance():
    rows = reuseresults.distance_rows(DIST, "miniimagenet", "maml-conv-5w1s", "s")
    assert cells(rows) == [
        ("A-dist", "miniimagenet maml conv 5w1s body.layer1", "distance", "0.02", "0.001", "s"),
        ("A-dist", "miniimagenet maml conv 5w1s body.layer1", "relative distance", "0.01", "0.0005", "s"),
        ("A-dist", "miniimagenet maml conv 5w1s head", "distance", "0.5", "0.05", "s"),
        ("A-dist", "miniimagenet maml conv 5w1s head", "relative distance", "0.5", "0.05", "s"),
    ]


EARLY_FREEZE = pd.DataFrame([
    dict(run="maml-conv-5w1s", iteration=50, frozen="none", accuracy=30.0, accuracy_ci95=2.0, cost=0.0,
         cost_ci95=0.0, seeds=3),
    dict(run="maml-conv-5w1s", iteration=50, frozen="1-4", accuracy=29.5, accuracy_ci95=2.5, cost=0.5,
         cost_ci95=1.0, seeds=3),
    dict(run="maml-conv-5w1s", iteration=100, frozen="none", accuracy=33.0, accuracy_ci95=1.25, cost=0.0,
         cost_ci95=0.0, seeds=1),
    dict(run="anil-conv-5w1s", iteration=50, frozen="none", accuracy=1.0, accuracy_ci95=1.0, cost=0.0,
         cost_ci95=0.0, seeds=3),
])


def test_early_freeze_rows_take_each_iterations_scale_and_cost_only_beside_the_unfrozen_setting():
    rows = reuseresults.early_freeze_rows(EARLY_FREEZE, "maml-conv-5w1s", lambda at: f"{at} of 150", "miniimagenet")
    setting = "miniimagenet maml conv 5w1s iteration"
    assert cells(rows) == [
        ("A-early", f"{setting} 50 freeze none", "accuracy", "30", "2", "50 of 150"),
        ("A-early", f"{setting} 50 freeze 1-4", "accuracy", "29.5", "2.5", "50 of 150"),
        ("A-early", f"{setting} 50 freeze 1-4", COST, "0.5", "1", "50 of 150"),
        ("A-early", f"{setting} 100 freeze none", "accuracy", "33", "1.25", "100 of 150"),  # one seed's, over tasks
    ]
    frozen_only = EARLY_FREEZE[EARLY_FREEZE.frozen != "none"]  # nothing to pay a cost against
    only = reuseresults.early_freeze_rows(frozen_only, "maml-conv-5w1s", str, "miniimagenet")
    assert cells(only, "metric") == [("accuracy",)]


def test_freeze_metrics_name_each_run_setting_layer_and_iteration():
    assert reuseresults.freeze_metrics(FREEZE, DIST, EARLY_FREEZE[EARLY_FREEZE.run == "anil-conv-5w1s"]) == {
        "miniimagenet_maml-conv-5w1s_freeze_none": 40.0, "miniimagenet_maml-conv-5w1s_freeze_1-4": 39.25,
        "omniglot_maml-conv-20w1s_freeze_none": 90.0, "omniglot_maml-conv-20w1s_freeze_1": 89.5,
        "miniimagenet_maml-conv-5w1s_body.layer1_relative_distance": 0.01,
        "miniimagenet_maml-conv-5w1s_head_relative_distance": 0.5,
        "early_anil-conv-5w1s_50_freeze_none": 1.0}
    assert "early_maml-conv-5w1s_50_freeze_none" not in reuseresults.freeze_metrics(FREEZE, DIST)


# --------------------------------------------------------------------- similarity stage
CCA = pd.DataFrame([
    dict(dataset="omniglot", run="maml-conv-5w1s", layer="body.layer1", method="cca", value=0.98, ci95=0.01,
         chance=0.05, chance_ci95=0.002),
    dict(dataset="omniglot", run="maml-conv-5w1s", layer="head", method="cca", value=0.4, ci95=0.1,
         chance=NAN, chance_ci95=NAN),
    dict(dataset="omniglot", run="maml-conv-5w1s", layer="head", method="cka", value=0.7, ci95=0.05,
         chance=0.3, chance_ci95=0.02),
    dict(dataset="miniimagenet", run="fomaml-conv-5w1s", layer="head", method="cka", value=0.6, ci95=0.05,
         chance=0.2, chance_ci95=0.01),
])


def test_cca_rows_add_a_chance_level_row_only_where_the_chance_level_is_defined():
    rows = reuseresults.cca_rows(CCA, "omniglot", "maml-conv-5w1s", "s", 10, 5)
    chance = "s; chance: first 10 tasks x 5 random pairings of the data points"
    assert cells(rows) == [
        ("A-cca", "omniglot maml conv 5w1s body.layer1 pre vs post", "cca", "0.98", "0.01", "s"),
        ("A-cca", "omniglot maml conv 5w1s body.layer1 pre vs post", "cca chance level", "0.05", "0.002", chance),
        ("A-cca", "omniglot maml conv 5w1s head pre vs post", "cca", "0.4", "0.1", "s"),  # CCA chance undefined
        ("A-cca", "omniglot maml conv 5w1s head pre vs post", "cka", "0.7", "0.05", "s"),
        ("A-cca", "omniglot maml conv 5w1s head pre vs post", "cka chance level", "0.3", "0.02", chance),
    ]
    first_order = reuseresults.cca_rows(CCA, "miniimagenet", "fomaml-conv-5w1s", "s", 2, 2)
    assert cells(first_order, "setting", "metric") == [("miniimagenet fomaml conv 5w1s head pre vs post", "cka"),
                                                       ("miniimagenet fomaml conv 5w1s head pre vs post",
                                                        "cka chance level")]


def test_bodies_against_mamls_are_named_by_their_regime():
    assert [reuseresults.regime_experiment(r) for r in ("anil", "multitask", "random", OWN_START)] == [
        "A-repr", "A-regime-sim", "A-regime-sim", "A-regime-sim"]
    assert reuseresults.regime_setting("anil", "5w1s") == "miniimagenet anil vs maml conv 5w1s same seed"
    assert reuseresults.regime_setting("multitask", "5w5s") == "miniimagenet multitask vs maml conv 5w5s"
    assert reuseresults.regime_setting("random", "5w1s") == "miniimagenet random vs maml conv 5w1s"
    assert reuseresults.regime_setting(OWN_START, "5w1s") == "miniimagenet random vs maml conv 5w1s maml's own start"


PAIRS = pd.DataFrame([
    dict(layer="body.layer1", method="cca", value=0.9, ci95=0.01, body="anil-conv-5w1s", regime="anil"),
    dict(layer="mean", method="cca", value=0.8, ci95=0.02, body="anil-conv-5w1s", regime="anil"),
    dict(layer="mean", method="cka", value=0.7, ci95=0.03, body="random-conv-5w1s", regime=OWN_START),
    dict(layer="mean", method="cca", value=0.3, ci95=0.04, body="random (seed 1)", regime="random"),
])


def test_regime_rows_give_each_body_its_experiment_setting_and_scale():
    rows = reuseresults.regime_rows(PAIRS, "5w1s", {"anil-conv-5w1s": "anil's", "random-conv-5w1s": "random's"},
                                    "untrained")
    assert cells(rows) == [
        ("A-repr", "miniimagenet anil vs maml conv 5w1s same seed body.layer1", "cca", "0.9", "0.01", "anil's"),
        ("A-repr", "miniimagenet anil vs maml conv 5w1s same seed", "cca", "0.8", "0.02", "anil's"),
        ("A-regime-sim", "miniimagenet random vs maml conv 5w1s maml's own start", "cka", "0.7", "0.03", "random's"),
        ("A-regime-sim", "miniimagenet random vs maml conv 5w1s", "cca", "0.3", "0.04", "untrained"),
    ]
    assert cells(rows, "paper") == [("",), ("",), ("",), ("0.4",)]  # the paper's random body (Table 8)


EARLY_SIMILARITY = pd.DataFrame([
    dict(run="maml-conv-5w1s", iteration=50, layer="body.layer1", method="cca", value=0.97, value_ci95=0.01,
         seeds=2),
    dict(run="maml-conv-5w1s", iteration=100, layer="head", method="cka", value=0.5, value_ci95=0.2, seeds=2),
    dict(run="maml-conv-20w1s", iteration=50, layer="head", method="cka", value=0.1, value_ci95=0.2, seeds=2),
])


def test_early_similarity_rows_take_each_iterations_scale_and_the_runs_dataset():
    rows = reuseresults.early_similarity_rows(EARLY_SIMILARITY, "maml-conv-5w1s", lambda at: f"at {at}", "omniglot")
    assert cells(rows) == [
        ("A-early", "omniglot maml conv 5w1s iteration 50 body.layer1 pre vs post", "cca", "0.97", "0.01", "at 50"),
        ("A-early", "omniglot maml conv 5w1s iteration 100 head pre vs post", "cka", "0.5", "0.2", "at 100"),
    ]


def test_seed_fit_rows_give_slope_intercept_and_r2_without_intervals():
    fits = pd.DataFrame([dict(method="cka", comparison="post,post", slope=0.98, intercept=0.01, r2=0.995, points=8)])
    rows = reuseresults.seed_fit_rows(fits, "maml-conv-5w1s", "s", "miniimagenet")
    setting = "miniimagenet maml conv 5w1s (post,post) vs (pre,pre)"
    assert cells(rows) == [("A-seeds", setting, "cka slope", "0.98", "", "s"),
                           ("A-seeds", setting, "cka intercept", "0.01", "", "s"),
                           ("A-seeds", setting, "cka r2", "0.995", "", "s")]
    assert reuseresults.seed_fit_rows(fits.iloc[:0], "maml-conv-5w1s", "s", "miniimagenet") == []  # too few points


def across(*rows):
    return pd.DataFrame([dict(pair=p, layer=layer, method=m, mean=v, std=0.01, count=n) for p, layer, m, v, n in rows])


def test_across_seed_rows_give_the_body_mean_per_pair_and_mamls_regime_row_over_the_regime_layers():
    table = across(("maml vs maml", "body.layer1", "cca", 0.6, 3), ("maml vs maml", "body.layer2", "cca", 0.5, 3),
                   ("maml vs maml", "body.layer3", "cca", 0.4, 3), ("maml vs maml", "mean", "cca", 0.45, 3),
                   ("anil vs maml", "mean", "cca", 0.42, 6))
    rows = reuseresults.across_seed_rows(table, "maml-conv-5w1s", ["body.layer1", "body.layer2", "body.layer3"],
                                         lambda count: f"{count} pairs", "miniimagenet")
    assert cells(rows) == [
        ("A-repr", "miniimagenet maml vs maml conv 5w1s", "cca", "0.45", "", "3 pairs"),
        ("A-regime-sim", "miniimagenet maml vs maml conv 5w1s", "cca", "0.5", "", "3 pairs"),  # (0.6 + 0.5 + 0.4) / 3
        ("A-repr", "miniimagenet anil vs maml conv 5w1s", "cca", "0.42", "", "6 pairs"),
    ]
    assert cells(rows, "paper") == [("0.51",), ("0.51",), ("0.5",)]  # Tables 3 and 8
    without_layer3 = reuseresults.across_seed_rows(table[table.layer != "body.layer3"], "maml-conv-5w1s",
                                                   ["body.layer1", "body.layer2", "body.layer3"], str, "miniimagenet")
    assert [r["experiment"] for r in without_layer3] == ["A-repr", "A-repr"]


def test_similarity_metrics_name_each_table_row_and_skip_what_was_not_analysed():
    fits = pd.DataFrame([dict(method="cka", comparison="pre,post", slope=1.0, intercept=0.0, r2=0.9, points=4)])
    table = across(("maml vs maml", "mean", "cka", 0.8, 1), ("maml vs maml", "body.layer1", "cka", 0.9, 1))
    metrics = reuseresults.similarity_metrics(CCA.iloc[:1], PAIRS, fits, table)
    assert metrics == {"omniglot_maml-conv-5w1s_body.layer1_cca": 0.98,
                       "miniimagenet_anil_vs_maml_cca": 0.8,
                       "miniimagenet_random_MAML_s_own_start_vs_maml_cka": 0.7,
                       "miniimagenet_random_vs_maml_cca": 0.3,
                       "seeds_pre,post_cka_r2": 0.9,
                       "repr_maml_vs_maml_cka": 0.8}
    assert reuseresults.similarity_metrics(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), None) == {}


# ---------------------------------------------------------------------- malformed tables
@pytest.mark.parametrize("call,column", [
    (lambda: reuseresults.freeze_rows(FREEZE.drop(columns="cost_ci95"), "miniimagenet", "maml-conv-5w1s", "s"),
     "cost_ci95"),
    (lambda: reuseresults.distance_rows(DIST.drop(columns="relative"), "miniimagenet", "maml-conv-5w1s", "s"),
     "relative"),
    (lambda: reuseresults.early_freeze_rows(EARLY_FREEZE.drop(columns="iteration"), "maml-conv-5w1s", str, "x"),
     "iteration"),
    (lambda: reuseresults.cca_rows(CCA.drop(columns="chance"), "omniglot", "maml-conv-5w1s", "s", 2, 2), "chance"),
    (lambda: reuseresults.cca_rows(pd.DataFrame(), "omniglot", "maml-conv-5w1s", "s", 2, 2), "dataset"),
    (lambda: reuseresults.regime_rows(PAIRS.drop(columns="body"), "5w1s", {}, "s"), "body"),
    (lambda: reuseresults.early_similarity_rows(EARLY_SIMILARITY.drop(columns="value_ci95"),
                                                "maml-conv-5w1s", str, "x"), "value_ci95"),
    (lambda: reuseresults.seed_fit_rows(pd.DataFrame([dict(method="cca", comparison="pre,post", slope=1.0)]),
                                        "maml-conv-5w1s", "s", "x"), "intercept"),
    (lambda: reuseresults.across_seed_rows(across(("maml vs maml", "mean", "cca", 0.4, 1)).drop(columns="count"),
                                           "maml-conv-5w1s", [], str, "x"), "count"),
    (lambda: reuseresults.freeze_metrics(FREEZE, DIST.drop(columns="layer")), "layer"),
    (lambda: reuseresults.similarity_metrics(CCA.drop(columns="value"), None, None, None), "value"),
])
def test_a_table_without_a_column_it_needs_is_refused_naming_the_column(call, column):
    with pytest.raises(ValueError, match=f"table has no column '{column}'"):
        call()


def test_a_run_the_table_does_not_hold_is_refused():
    with pytest.raises(ValueError, match="A-freeze table has no rows of dataset 'omniglot', run 'maml-conv-5w1s'"):
        reuseresults.freeze_rows(FREEZE, "omniglot", "maml-conv-5w1s", "s")
    with pytest.raises(ValueError, match="A-early table has no rows of run 'maml-conv-20w1s'"):
        reuseresults.early_freeze_rows(EARLY_FREEZE, "maml-conv-20w1s", str, "miniimagenet")


# ------------------------------------------------------------------------- shift stage
SHIFT = pd.DataFrame([
    dict(measure="accuracy", layer="", method="", value=40.0, ci95=2.0),
    dict(measure="freeze cost", layer="body", method="", value=-0.5, ci95=0.25),
    dict(measure="relative movement", layer="body.layer1", method="", value=0.01, ci95=0.001),
    dict(measure="relative movement", layer="head", method="", value=0.6, ci95=0.02),
    dict(measure="similarity", layer="body.layer1", method="cca", value=0.99, ci95=0.003),
    dict(measure="chance", layer="body.layer1", method="cca", value=0.01, ci95=0.0005),
    dict(measure="similarity", layer="head", method="cca", value=NAN, ci95=NAN),
])


def test_shift_rows_name_each_measure_leave_out_undefined_similarities_and_end_with_the_contrasts():
    setting = "miniimagenet maml conv 5w1s omniglot"
    contrast, control = {"difference": 1.5, "ci95": 0.75}, ("random-conv-5w1s", 30.0, 1.0)
    rows = reuseresults.shift_rows(SHIFT, setting, "s", contrast, control)
    assert cells(rows) == [
        ("X-shift", setting, "accuracy", "40", "2", "s"),
        ("X-shift", setting, "freeze cost (points, paired)", "-0.5", "0.25", "s"),
        ("X-shift", f"{setting} body.layer1", "relative movement", "0.01", "0.001", "s"),
        ("X-shift", f"{setting} head", "relative movement", "0.6", "0.02", "s"),
        ("X-shift", f"{setting} body.layer1 pre vs post", "cca", "0.99", "0.003", "s"),
        ("X-shift", f"{setting} body.layer1 pre vs post", "cca chance level", "0.01", "0.0005", "s"),
        ("X-shift", setting, "anil - maml (points, paired)", "1.5", "0.75", "s"),
        ("X-shift", setting, "control accuracy (random-conv-5w1s, NIL head)", "30", "1", "s"),
    ]
    without = reuseresults.shift_rows(SHIFT, setting, "s", contrast)
    assert cells(without) == cells(rows)[:-1]


def test_shift_rows_refuse_a_table_without_its_columns():
    with pytest.raises(ValueError, match="X-shift table has no column 'ci95'"):
        reuseresults.shift_rows(SHIFT.drop(columns="ci95"), "x", "s", {"difference": 0.0, "ci95": 0.0})


def test_a_run_trained_on_another_omniglot_split_is_a_setting_of_its_own():
    """The official (alphabet) split's models sit beside the character split's in results.csv: their
    settings must differ, and the study's own (maml split, MiniImageNet) keep their names."""
    assert reuseresults.run_setting("omniglot", "maml-conv-5w1s") == "omniglot maml conv 5w1s"
    assert reuseresults.run_setting("omniglot", "maml-conv-5w1s", "maml") == "omniglot maml conv 5w1s"
    assert reuseresults.run_setting("miniimagenet", "anil-conv-5w1s", None) == "miniimagenet anil conv 5w1s"
    assert reuseresults.run_setting("omniglot", "maml-conv-5w1s", "official") == "omniglot official split maml conv 5w1s"


def test_seeds_scale_says_whether_the_interval_is_over_seeds_or_over_one_seeds_tasks():
    assert reuseresults.seeds_scale([0, 1, 2], "train_seeds") == (
        "mean over 3 seeds (0, 1, 2) of train_seeds, 95% interval over the seeds")
    assert reuseresults.seeds_scale([0], "campaign_omniglot") == (
        "seed 0 of campaign_omniglot, 95% interval over the test tasks")
