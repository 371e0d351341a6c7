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
    decided, why = verdict(28.9, 0.7, "<", 40.0, control=(29.7, 0.7))
    assert decided == "not testable at this scale" and "control" in why
    assert verdict(31.0, 0.7, ">", 20.0, control=(29.7, 0.7))[0] == "not testable at this scale"  # intervals touch
    assert verdict(45.0, 0.7, ">", 40.0, control=(29.7, 0.7))[0] == "reproduced"
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
    assert {g["verdict"] for g in uncontrolled} == {"not testable at this scale"}
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
