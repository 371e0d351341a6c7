"""The verdict rule of the claims table, Holm's adjustment and paired differences: known answers."""
import math

import numpy as np
import pytest
import scipy.stats

from metalearn import claims
from metalearn.claims import Claim, verdict


@pytest.mark.parametrize("value,ci,relation,threshold,expected", [
    (0.5, 0.3, "<", 1.0, "reproduced"),                   # [0.2, 0.8] < 1
    (1.5, 0.3, "<", 1.0, "contradicted"),                 # [1.2, 1.8] > 1
    (0.9, 0.3, "<", 1.0, "not testable at this scale"),   # [0.6, 1.2] contains 1
    (0.95, 0.02, ">", 0.9, "reproduced"),
    (0.65, 0.02, "<", 0.5, "contradicted"),               # the ANIL paper's head < 0.5, ours 0.65
    (0.5, math.nan, "<", 1.0, "not testable at this scale"),  # no interval: no verdict
])
def test_verdict_reads_the_interval_against_the_threshold(value, ci, relation, threshold, expected):
    assert verdict(value, ci, relation, threshold)[0] == expected


def test_a_model_no_better_than_its_control_tests_nothing():
    """MiniImageNet MAML 28.9 ± 0.7 against a random body with a NIL head 29.7 ± 0.7: not testable,
    whatever the threshold says; well above the control, the threshold decides."""
    decided, why = verdict(0.2, 0.5, "<", 1.0, control=((28.9, 0.7), (29.7, 0.7)))  # a freezing cost of that model
    assert decided == "not testable at this scale" and "control" in why
    assert verdict(0.2, 0.5, "<", 1.0, control=((31.0, 0.7), (29.7, 0.7)))[0] == "not testable at this scale"  # touch
    assert verdict(0.2, 0.5, "<", 1.0, control=((45.0, 0.7), (29.7, 0.7)))[0] == "reproduced"
    assert verdict(-0.4, 0.5, "~", 1.0)[0] == "reproduced"           # [-0.9, 0.1] within +-1
    assert verdict(2.5, 0.5, "~", 1.0)[0] == "contradicted"          # [2.0, 3.0] outside
    assert verdict(1.0, 0.5, "~", 1.0)[0] == "not testable at this scale"
    with pytest.raises(ValueError, match="relation"):
        verdict(1.0, 0.1, "<=", 1.0)
    with pytest.raises(ValueError, match="finite"):
        verdict(math.nan, 0.1, "<", 1.0)


def test_judge_reads_results_rows_and_says_what_is_missing():
    row = ("A-freeze", "miniimagenet maml conv 5w1s freeze body", "accuracy drop")
    control = ("A-nil", "miniimagenet random conv 5w1s nil-head", "accuracy")
    table = [{"experiment": "A-freeze", "setting": row[1], "metric": row[2], "value": "0.4", "ci95": "0.3", "scale": "s"},
             {"experiment": "A-freeze", "setting": row[1], "metric": row[2], "value": "2.0", "ci95": "0.3",
              "scale": "t"}]
    got = claims.judge([Claim("freeze", "ANIL paper", "freezing costs < 1 point", row, "<", 1.0)], table)
    assert [(g["scale"], g["verdict"]) for g in got] == [("s", "reproduced"), ("t", "contradicted")]
    missing = claims.judge([Claim("x", "p", "s", ("A-nothing", "a", "b"), ">", 0.0)], table)
    assert missing[0]["verdict"] == "not measured"
    uncontrolled = claims.judge([Claim("y", "p", "s", row, "<", 1.0, control=control)], table)
    assert {g["verdict"] for g in uncontrolled} == {"not testable at this scale"}  # no control row
    model = ("M-mini", "miniimagenet maml conv 5w1s", "accuracy")
    table += [{"experiment": "A-nil", "setting": control[1], "metric": control[2], "value": "29.7", "ci95": "0.8",
               "scale": "s; other test"},
              {"experiment": "M-mini", "setting": model[1], "metric": model[2], "value": "28.9", "ci95": "0.7",
               "scale": "s (training); more"}]
    controlled = claims.judge([Claim("y", "p", "s", row, "<", 1.0, control=control, model=model)], table)
    assert controlled[0]["verdict"] == "not testable at this scale" and "not above its control" in controlled[0]["why"]
    with pytest.raises(ValueError, match="relation"):
        Claim("z", "p", "s", row, "≈", 1.0)


def test_holm_known_answer():
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> 0.06 (non-decreasing)
    assert claims.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert claims.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert claims.holm([]) == []
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        claims.holm([0.1, 1.2])


def test_paired_difference_is_the_one_sample_t_on_differences():
    rng = np.random.default_rng(0)
    a = rng.normal(50, 5, 40)
    b = a - 1.0 + rng.normal(0, 0.5, 40)  # paired: the task noise cancels
    got = claims.paired(a, b)
    d = a - b
    assert got["difference"] == pytest.approx(d.mean()) and got["n"] == 40
    assert got["p"] == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue)
    assert got["ci95"] == pytest.approx(scipy.stats.t.ppf(0.975, 39) * d.std(ddof=1) / math.sqrt(40))
    assert got["ci95"] < 0.5  # far narrower than the unpaired spread of the tasks (about 5)
    with pytest.raises(ValueError, match="equal length"):
        claims.paired([1, 2, 3], [1, 2])


def test_the_claims_page_says_what_the_rule_decided():
    row = ("A-freeze", "omniglot maml conv 5w1s freeze 1-4", "cost vs none (points, paired)")
    table = [{"experiment": row[0], "setting": row[1], "metric": row[2], "value": "20.8", "ci95": "1.8", "scale": "s"}]
    judged = claims.judge([Claim("A-freeze omniglot", "ANIL paper", "freezing costs little", row, "<", 1.0),
                           Claim("gone", "p", "s", ("X", "y", "z"), ">", 0.0)], table)
    page = claims.markdown(judged)
    assert "reproduced: 0; contradicted: 1; not testable at this scale: 0; not measured: 1" in page
    assert "| A-freeze omniglot | ANIL paper | freezing costs little | 20.8 ± 1.8 | < 1 | **contradicted** |" in page
    assert "| gone | p | s | - | > 0 | **not measured** |" in page


def test_every_claim_names_a_row_the_study_can_make():
    """The claims are rules over results rows of known experiment ids (a typo would read 'not measured')."""
    from metalearn import results
    for claim in claims.CLAIMS:
        for row in (claim.row, claim.model, claim.control):
            if row is not None:
                assert row[0] in results.EXPERIMENTS, (claim.id, row)


def test_a_control_measured_once_guards_a_model_trained_on_another_budget():
    """A random body's NIL head is measured once (its own training clause); Reptile's claim finds it."""
    model = ("R-omni", "omniglot reptile conv 5w1s", "accuracy")
    control = ("A-nil", "omniglot random conv 5w1s nil-head", "accuracy")
    row = ("R-pretrain", "omniglot reptile from multiclass - reptile conv 5w1s", "difference (points, paired)")
    table = [{"experiment": e, "setting": s, "metric": m, "value": v, "ci95": "1.0", "scale": scale}
             for (e, s, m), v, scale in ((model, "67.5", "500 iterations x 5 tasks; t"),
                                         (control, "41.9", "1000 iterations x 4 tasks; t"),
                                         (row, "-0.7", "500 iterations x 5 tasks; t"))]
    got = claims.judge([Claim("r", "p", "s", row, "~", 2.0, control=control, model=model)], table)
    assert got[0]["verdict"] == "reproduced"  # [-1.7, 0.3] within +-2, the model above its control
    table.append({**table[1], "scale": "300 iterations x 2 tasks; t"})  # two controls, neither the model's: no guess
    assert claims.judge([Claim("r", "p", "s", row, "~", 2.0, control=control, model=model)], table)[0]["verdict"] == \
        "not testable at this scale"


def _row(setting: str, value: float, ci95: float, scale: str = "s") -> dict:
    return {"experiment": "A-cca", "setting": setting, "metric": "cca", "value": repr(float(value)), "ci95": repr(float(ci95)),
            "scale": scale}


def test_a_family_is_judged_with_holms_adjustment_and_a_family_of_one_by_its_interval():
    """Three layers above 0.9 with unadjusted p-values 0.01, 0.03, 0.04 (each interval excludes 0.9):
    Holm makes them 0.03, 0.06, 0.06, so only the first stays reproduced; alone, each would be."""
    z = lambda p: scipy.stats.norm.isf(p / 2)  # noqa: E731
    table = [_row(f"layer{i}", 0.95, 0.05 * 1.959964 / z(p)) for i, p in ((1, 0.01), (2, 0.03), (3, 0.04))]
    family = [Claim(f"l{i}", "p", "s", ("A-cca", f"layer{i}", "cca"), ">", 0.9, family="A-cca x") for i in (1, 2, 3)]
    got = claims.judge(family, table)
    assert [g["verdict"] for g in got] == ["reproduced", "not testable at this scale", "not testable at this scale"]
    assert "Holm-adjusted p = 0.03 over 3 claims of A-cca x" in got[0]["why"]
    assert "not clear of 0.9; Holm-adjusted p = 0.06" in got[1]["why"]
    alone = claims.judge([Claim(c.id, c.source, c.statement, c.row, c.relation, c.threshold) for c in family], table)
    assert [g["verdict"] for g in alone] == ["reproduced"] * 3
    assert [g["verdict"] for g in claims.judge(family[:1], table)] == ["reproduced"]  # a family of one
    # the other side: a layer clearly below 0.9 is contradicted after the adjustment too
    low = claims.judge(family, [_row("layer1", 0.5, 0.01)] + table[1:])
    assert low[0]["verdict"] == "contradicted"


def test_p_value_matches_the_interval_rule():
    for value, ci in ((0.95, 0.04), (0.95, 0.06), (0.85, 0.049), (0.9, 0.01)):
        excludes = abs(value - 0.9) > ci
        assert (claims.p_value(value, ci, 0.9) < 0.05) == excludes
    assert claims.p_value(0.9 + 0.02, 0.02, 0.9) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="half-width"):
        claims.p_value(1.0, 0.0, 0.9)


def test_claims_held_back_by_their_control_do_not_count_in_their_family():
    control = ("A-nil", "random nil", "accuracy")
    model = ("A-anil", "maml", "accuracy")
    table = [_row("layer1", 0.95, 0.049 * 1.959964 / scipy.stats.norm.isf(0.02 / 2)),
             {**_row("layer2", 0.99, 0.01), "experiment": "A-cca"},
             {"experiment": "A-nil", "setting": "random nil", "metric": "accuracy", "value": "30", "ci95": "1",
              "scale": "s"},
             {"experiment": "A-anil", "setting": "maml", "metric": "accuracy", "value": "29", "ci95": "1", "scale": "s"}]
    weak = Claim("l2", "p", "s", ("A-cca", "layer2", "cca"), ">", 0.9, control=control, model=model, family="f")
    strong = Claim("l1", "p", "s", ("A-cca", "layer1", "cca"), ">", 0.9, family="f")
    got = claims.judge([strong, weak], table)
    assert got[1]["verdict"] == "not testable at this scale" and "not above its control" in got[1]["why"]
    assert got[0]["verdict"] == "reproduced" and "over 1 claims of f" in got[0]["why"]  # p = 0.02, family of one


def test_an_error_must_lie_below_its_control():
    """R-2d: an MSE claim is tested only once the model's MSE lies below predicting 0."""
    row, model, control = ("R-2d", "adam - sgd", "d"), ("R-2d", "adam after adaptation", "mse"), ("R-2d", "zero", "mse")
    claim = Claim("r", "p", "s", row, "<", 0.0, model=model, control=control, better="lower")
    def table(adam):
        return [{"experiment": e, "setting": s, "metric": m, "value": v, "ci95": c, "scale": "s"}
                for (e, s, m), v, c in ((row, "-0.06", "0.05"), (model, adam, "0.05"), (control, "0.80", "0.05"))]
    got = claims.judge([claim], table("0.76"))[0]
    assert got["verdict"] == "not testable at this scale" and "not below its control" in got["why"]
    assert claims.judge([claim], table("0.20"))[0]["verdict"] == "reproduced"
    with pytest.raises(ValueError, match="better"):
        Claim("x", "p", "s", row, "<", 0.0, better="smaller")


def test_tally_counts_every_verdict_and_refuses_an_unknown_one():
    judged = [{"verdict": "reproduced"}, {"verdict": "contradicted"}, {"verdict": "reproduced"}]
    assert claims.tally(judged) == {"reproduced": 2, "contradicted": 1, "not testable at this scale": 0,
                                    "not measured": 0}
    assert list(claims.tally([])) == list(claims.VERDICTS)
    with pytest.raises(ValueError, match="reproducd"):
        claims.tally([{"verdict": "reproducd"}])


def _early_row(setting, metric, value, ci95, experiment="A-early", scale="s"):
    return {"experiment": experiment, "setting": setting, "metric": metric, "value": str(value), "ci95": str(ci95),
            "scale": scale}


def test_early_claims_are_the_final_models_rules_at_each_iteration_the_rows_hold():
    where = "miniimagenet maml conv 5w1s iteration 50"
    rows = [_early_row(f"{where} freeze 1-4", "cost vs none (points, paired)", 0.2, 0.5),
            _early_row(f"{where} freeze 1-4", "accuracy", 40, 1),  # not a claim: the frozen model's accuracy
            _early_row(f"{where} body.layer2 pre vs post", "cca", 0.97, 0.01),
            _early_row(f"{where} body.layer2 pre vs post", "cka", 0.5, 0.01),
            _early_row(f"{where} head pre vs post", "cca", 0.3, 0.05),
            _early_row(f"{where} head pre vs post", "cka", 0.3, 0.05),  # the paper states the head's CCA only
            _early_row("miniimagenet maml conv 5w1s iteration 100 body.layer1 pre vs post", "cca", 0.95, 0.01),
            _early_row("miniimagenet maml conv 5w1s body.layer1 pre vs post", "cca", 0.95, 0.01, experiment="A-cca")]
    early = claims.early_claims(rows)
    assert [(c.id, c.relation, c.threshold) for c in early] == [
        ("A-early miniimagenet 5w1s iteration 50 freeze", "<", 1.0),
        ("A-early miniimagenet 5w1s iteration 50 layer2 cca", ">", 0.9),
        ("A-early miniimagenet 5w1s iteration 50 layer2 cka", ">", 0.9),
        ("A-early miniimagenet 5w1s iteration 50 head cca", "<", 0.5),
        ("A-early miniimagenet 5w1s iteration 100 layer1 cca", ">", 0.9)]
    assert {c.family for c in early[1:]} == {"A-early miniimagenet 5w1s iteration 50",
                                            "A-early miniimagenet 5w1s iteration 100"}
    assert early[0].model == ("A-early", f"{where} freeze none", "accuracy")
    assert early[-1].model == ("A-early", "miniimagenet maml conv 5w1s iteration 100 freeze none", "accuracy")
    assert claims.claims_for(rows) == claims.CLAIMS + early
    guard = [_early_row(f"{where} freeze none", "accuracy", 45, 1),
             _early_row("miniimagenet random conv 5w1s nil-head", "accuracy", 30, 1, experiment="A-nil")]
    judged = {j["id"]: j["verdict"] for j in claims.judge(early, rows + guard)}
    assert judged["A-early miniimagenet 5w1s iteration 50 freeze"] == "reproduced"  # [-0.3, 0.7] < 1
    assert judged["A-early miniimagenet 5w1s iteration 50 layer2 cca"] == "reproduced"
    assert judged["A-early miniimagenet 5w1s iteration 50 layer2 cka"] == "contradicted"
    unguarded = [_early_row(f"{where} freeze none", "accuracy", 30, 1), guard[1]]
    assert {j["verdict"] for j in claims.judge(early, rows + unguarded)} == {"not testable at this scale"}


def test_claims_of_rows_without_a_control_borrow_it_and_judge_only_their_own_scales():
    """The campaign's rows hold a model and its freezing cost but no random body: the control comes
    from the study's results; the study's own rows of the same claims are not judged again."""
    model = ("A-anil", "miniimagenet maml conv 5w1s", "accuracy")
    cost = ("A-freeze", "miniimagenet maml conv 5w1s freeze 1-4", "cost vs none (points, paired)")
    control = ("A-nil", "miniimagenet random conv 5w1s nil-head", "accuracy")

    def row(key, value, ci95, scale):
        return dict(zip(("experiment", "setting", "metric"), key), value=value, ci95=ci95, scale=scale)

    campaign = [row(model, "44.0", "0.8", "5000 iterations x 4 tasks; c"),
                row(cost, "0.4", "0.3", "5000 iterations x 4 tasks (training); c")]
    study = [row(control, "29.7", "0.8", "150 iterations x 2 tasks; s"),
             row(model, "28.9", "0.8", "150 iterations x 2 tasks; s"),
             row(cost, "0.2", "0.7", "150 iterations x 2 tasks (training); s")]
    got = claims.judge_borrowing_controls(campaign, study)
    assert [(j["id"], j["scale"], j["verdict"]) for j in got] == [
        ("A-freeze miniimagenet 5w1s", "5000 iterations x 4 tasks (training); c", "reproduced")]  # [0.1, 0.7] < 1
    assert claims.judge_borrowing_controls(campaign, [])[0]["verdict"] == "not testable at this scale"  # no control
    beaten = [campaign[0] | {"value": "30.0"}, campaign[1]]  # the model no better than the borrowed control
    assert claims.judge_borrowing_controls(beaten, study)[0]["verdict"] == "not testable at this scale"


def test_the_learning_curves_claim_reads_the_rows_the_seeds_report_makes():
    """A-curves over seeds: the claim's row is the one metalearn.seeds.curve_rows writes (a typo
    between the two would read 'not measured'), guarded by MAML's accuracy at the same training."""
    import pandas as pd

    from metalearn import results, seeds
    last = {"maml-conv-20w1s": (0.50, 0.60, 0.55), "anil-conv-20w1s": (0.51, 0.605, 0.56)}  # per seed
    history = pd.DataFrame([dict(iteration=10, run=f"{run}-seed{seed}", seed=seed, val_accuracy=acc)
                            for run, accs in last.items() for seed, acc in enumerate(accs)])
    scores = pd.DataFrame({"run": ["maml-conv-20w1s", "anil-conv-20w1s"], "training": "300 iterations x 2 tasks"})
    rows = seeds.curve_rows("omniglot", history, scores, "{training}; 3 seeds; validation")
    rows = [{k: str(v) for k, v in r.items()} for r in rows]
    rows += [results.row("A-anil", "omniglot maml conv 20w1s", "accuracy", 55.0, "300 iterations x 2 tasks; test", 0.5),
             results.row("A-nil", "omniglot random conv 20w1s nil-head", "accuracy", 30.0, "r; test", 0.5)]
    curve_claims = [c for c in claims.CLAIMS if c.id.startswith("A-curves")]
    got = {j["id"]: j for j in claims.judge(curve_claims, rows)}
    # per seed ANIL - MAML: +1, +0.5, +1 -> [0.12, 1.55] within +-2, the model (55) above its control (30)
    assert got["A-curves omniglot 20w1s, over seeds"]["verdict"] == "reproduced"
    assert got["A-curves omniglot 20w1s, over seeds"]["ours"] == pytest.approx(2.5 / 3, rel=1e-4)
    assert got["A-curves omniglot 20w5s, over seeds"]["verdict"] == "not measured"
