"""Verdicts on the papers' claims: each claim a rule over rows of ``reports/results.csv``.

A :class:`Claim` names the row that holds our number (experiment, setting, metric), what the
paper states as a threshold and a direction (``value < 1`` for "freezing costs under a point";
``~``: ``|value| < threshold``), and, where one exists, the row of a control that the model the
claim is about must beat first (its accuracy against a random body with a NIL head): a model no
better than its control tests nothing. :func:`verdict` is the one rule, on the 95% intervals:

=============================  ===============================================================
reproduced                     the interval lies on the paper's side of the threshold
contradicted                   the interval lies on the other side
not testable at this scale     the model's interval does not lie above its control's, or the
                               interval contains the threshold, or the number has no interval
not measured                   no row: the study has no such result
=============================  ===============================================================

Claims of one ``family`` (e.g. the nine layers of A-cca on one setting) are judged together:
each interval gives a two-sided p-value of "our number equals the threshold" (normal
approximation, :func:`p_value`), :func:`holm` adjusts them over the family's tested claims
(Holm 1979), and a claim is reproduced or contradicted only where its adjusted p-value is below
0.05, so the family's yes/no verdicts keep that error rate together. A family of one is the
interval rule above. :func:`paired` gives a paired difference with its interval and p-value.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.stats

VERDICTS = ("reproduced", "contradicted", "not testable at this scale", "not measured")
RELATIONS = ("<", ">", "~")  # below, above, within +- the threshold

Row = tuple[str, str, str]  # experiment, setting, metric


@dataclass(frozen=True)
class Claim:
    """A paper's claim as a rule: our number at ``row`` is ``relation`` ``threshold`` (e.g.
    ``("A-freeze", "...", "cost vs none (points, paired)")``, ``"<"``, ``1.0``), once the model
    it is about (``model``: the row of its accuracy; default ``row``) beats ``control``."""

    id: str
    source: str  # where the paper says it, e.g. "ANIL paper, Sec. 4.1"
    statement: str  # the paper's words, shortened
    row: Row
    relation: str
    threshold: float
    control: Row | None = None
    model: Row | None = None
    family: str | None = None  # claims judged together (Holm); None: alone
    better: str = "higher"  # which way the model must beat its control: "higher" (accuracy) or "lower" (MSE)

    def __post_init__(self):
        if self.relation not in RELATIONS:
            raise ValueError(f"claim {self.id}: relation must be one of {RELATIONS}, got {self.relation!r}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"claim {self.id}: the threshold must be a finite number, got {self.threshold}")
        if self.better not in ("higher", "lower"):
            raise ValueError(f"claim {self.id}: better must be 'higher' or 'lower', got {self.better!r}")


def verdict(value: float, ci95: float, relation: str, threshold: float,
            control: tuple[tuple[float, float], tuple[float, float]] | None = None,
            better: str = "higher") -> tuple[str, str]:
    """(verdict, why) for a number ``value`` ± ``ci95`` against ``relation threshold``; ``control``:
    ((value, ci95) of the model, (value, ci95) of its control), the model's interval to lie wholly
    above the control's first (below it, with ``better="lower"``: an error)."""
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    if not math.isfinite(value):
        raise ValueError(f"the value must be finite, got {value}")
    if control is not None and not beats(*control, better):
        (m_value, m_ci), (c_value, c_ci) = control
        return ("not testable at this scale", f"the model ({m_value:.3g} ± {m_ci:.2g}) is not "
                f"{'above' if better == 'higher' else 'below'} its control ({c_value:.3g} ± {c_ci:.2g})")
    if not math.isfinite(ci95) or ci95 < 0:
        return "not testable at this scale", "the number has no confidence interval"
    low, high = value - ci95, value + ci95
    interval = _interval(value, ci95)
    if relation == "~":
        if -threshold < low and high < threshold:
            return "reproduced", f"{interval} within ± {threshold:g}"
        if low > threshold or high < -threshold:
            return "contradicted", f"{interval} outside ± {threshold:g}"
        return "not testable at this scale", f"{interval} reaches past ± {threshold:g}"
    above, below = low > threshold, high < threshold
    if not (above or below):
        return "not testable at this scale", f"the interval {interval} contains {threshold:g}"
    holds = below if relation == "<" else above
    side = f"{interval} {'<' if below else '>'} {threshold:g}"
    return ("reproduced", side) if holds else ("contradicted", side)


def beats(model: tuple[float, float], control: tuple[float, float], better: str = "higher") -> bool:
    """Whether the model's (value, ci95) interval lies wholly above its control's (below it, with
    ``better="lower"``; an unknown half-width counts as 0)."""
    if better == "lower":
        return model[0] + _half(model[1]) < control[0] - _half(control[1])
    return model[0] - _half(model[1]) > control[0] + _half(control[1])


def p_value(value: float, ci95: float, threshold: float) -> float:
    """Two-sided p-value of ``value`` = ``threshold`` from a 95% half-width, with the normal
    approximation (the half-width is 1.96 standard errors): below 0.05 exactly when the interval
    excludes the threshold."""
    if not (math.isfinite(ci95) and ci95 > 0):
        raise ValueError(f"a p-value needs a positive, finite 95% half-width, got {ci95}")
    z = abs(value - threshold) / (ci95 / scipy.stats.norm.ppf(0.975))
    return float(2 * scipy.stats.norm.sf(z))


def _half(ci95: float) -> float:
    """A half-width for the control test: none known counts as 0 (the interval is the point)."""
    return ci95 if math.isfinite(ci95) else 0.0


def judge(claims: Sequence[Claim], rows: Sequence[dict]) -> list[dict]:
    """Each claim judged on ``rows`` (as :func:`metalearn.results.read` returns them: strings):
    {id, source, statement, setting, ours, ci95, threshold, verdict, why, scale}. A claim whose
    row appears under several scales is judged on each (one line per scale). Claims of a
    ``family`` that pass their control and have an interval are judged together on each scale
    (Holm's adjustment, see the module's docstring); the others by :func:`verdict` alone."""
    def number(text: str) -> float:
        return float(text) if text not in ("", None) else math.nan

    found: dict[Row, list[dict]] = {}
    for r in rows:
        found.setdefault((r["experiment"], r["setting"], r["metric"]), []).append(r)
    out, families = [], {}
    for claim in claims:
        base = {"id": claim.id, "source": claim.source, "statement": claim.statement, "setting": claim.row[1],
                "threshold": f"{claim.relation} {claim.threshold:g}"}
        if claim.row not in found:
            out.append({**base, "ours": math.nan, "ci95": math.nan, "verdict": "not measured",
                        "why": f"no row {claim.row} in the results", "scale": ""})
            continue
        for r in found[claim.row]:
            value, ci95 = number(r["value"]), number(r["ci95"])
            line = {**base, "ours": value, "ci95": ci95, "scale": r["scale"]}
            control = None
            if claim.control is not None:
                pair = [_at_scale(found.get(row, []), r["scale"]) for row in (claim.model or claim.row, claim.control)]
                if None in pair:
                    out.append({**line, "verdict": "not testable at this scale", "why": "no row of the model or its "
                                f"control {claim.model or claim.row}, {claim.control}"})
                    continue
                control = tuple((number(x["value"]), number(x["ci95"])) for x in pair)
            decided, why = verdict(value, ci95, claim.relation, claim.threshold, control, claim.better)
            out.append({**line, "verdict": decided, "why": why})
            tested = (control is None or beats(*control, claim.better)) and math.isfinite(ci95) and ci95 > 0
            if claim.family is not None and claim.relation != "~" and tested:
                families.setdefault((claim.family, r["scale"]), []).append((out[-1], claim))
    for (family, _), members in families.items():
        adjusted = holm([p_value(j["ours"], j["ci95"], c.threshold) for j, c in members])
        for (j, c), p in zip(members, adjusted):
            side = "<" if j["ours"] < c.threshold else ">"
            holds = side == c.relation
            if p < 0.05:
                j["verdict"] = "reproduced" if holds else "contradicted"
            else:
                j["verdict"] = "not testable at this scale"
            where = f"{side} {c.threshold:g}" if p < 0.05 else f"not clear of {c.threshold:g}"
            shown = f"= {p:.2g}" if p > 0 else "< 1e-300"
            j["why"] = (f"{_interval(j['ours'], j['ci95'])} {where}; Holm-adjusted p {shown} over {len(members)} claims "
                        f"of {family}")
    return out


def _interval(value: float, ci95: float) -> str:
    return f"[{value - ci95:.3g}, {value + ci95:.3g}]"


def _at_scale(rows: list[dict], scale: str) -> dict | None:
    """The row of the training a scale names: the same scale, else the one whose scale shares the
    first clause (the training, e.g. "150 iterations x 2 tasks"), else the only row there is (a
    control measured once, e.g. a random body's NIL head, which no training budget changes), else None."""
    for r in rows:
        if r["scale"] == scale:
            return r
    head = scale.split(";")[0].removesuffix(" (training)")
    same = next((r for r in rows if r["scale"].split(";")[0].removesuffix(" (training)") == head), None)
    return same if same is not None or len(rows) != 1 else rows[0]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values, in the given order: the i-th smallest
    p times (m - i + 1), made non-decreasing, capped at 1. A contrast is significant at level a
    for the family when its adjusted p-value is below a."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p-values must be a list of numbers in [0, 1], got {list(pvalues)}")
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order])) if m else p
    out = np.empty_like(p)
    out[order] = adjusted
    return out.tolist()


def paired(a: Sequence[float], b: Sequence[float]) -> dict:
    """The paired difference a - b over matched items (e.g. the same test tasks): mean, 95%
    half-width (Student t), two-sided p-value of a zero mean, and n."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired samples must be 1-D, of equal length and at least 2, got {a.shape} and {b.shape}")
    d = a - b
    half = scipy.stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    p = scipy.stats.ttest_1samp(d, 0.0).pvalue if d.std(ddof=1) > 0 else (0.0 if d.mean() != 0 else 1.0)
    return {"difference": float(d.mean()), "ci95": float(half), "p": float(p), "n": len(d)}


def sine_shift_verdicts(table: pd.DataFrame, freeze_threshold: float, comparable: float) -> pd.DataFrame:
    """X-shift on sinusoids: the verdicts at each shift of ``table`` (:func:`metalearn.shift.sine_summary`'s
    rows with columns axis, step, distance added) by :func:`verdict`, each guarded by the control (MAML's error must lie
    below the untrained network's): freezing the body costs under ``freeze_threshold``, and ANIL -
    MAML lies within +-``comparable`` -> rows axis, step, distance, error, error_ci95, freeze,
    freeze_why, anil, anil_why."""
    rows = []
    for (axis, step), at in table.groupby(["axis", "step"], sort=False):
        at = at.set_index(["measure", "layer"])

        def number(measure, layer=""):
            return float(at.loc[(measure, layer), "value"]), float(at.loc[(measure, layer), "ci95"])
        guard = (number("relative error", "maml"), number("relative error", "control"))
        freeze = verdict(*number("freeze cost"), "<", freeze_threshold, guard, better="lower")
        anil = verdict(*number("anil - maml"), "~", comparable, guard, better="lower")
        rows.append(dict(axis=axis, step=step, distance=at.distance.iloc[0], error=guard[0][0], error_ci95=guard[0][1],
                         freeze=freeze[0], freeze_why=freeze[1], anil=anil[0], anil_why=anil[1]))
    return pd.DataFrame(rows)


#: the (dataset, setting) pairs whose MAML model the ANIL paper's claims are judged on
SETTINGS = (("miniimagenet", "5w1s"), ("miniimagenet", "5w5s"), ("omniglot", "5w1s"), ("omniglot", "20w1s"))


def _anil_paper_claims() -> list[Claim]:
    """The ANIL paper's feature-reuse claims on the settings the study measures, each on MAML's
    model, which must first beat a random body with a NIL head (no training of the body at all)."""
    out = []
    for dataset, setting in SETTINGS:
        where = f"{dataset} maml conv {setting}"
        guard = dict(model=("A-anil", where, "accuracy"),
                     control=("A-nil", f"{dataset} random conv {setting} nil-head", "accuracy"))
        out.append(Claim(f"A-freeze {dataset} {setting}", "ANIL paper, Sec. 3.2.1, Table 1",
                         "freezing the whole body at test time (only the head adapts) costs little accuracy "
                         "(taken here as under 1 point, paired over the test tasks)",
                         ("A-freeze", f"{where} freeze 1-4", "cost vs none (points, paired)"), "<", 1.0, **guard))
        for layer in range(1, 5):
            for metric in ("cca", "cka"):
                out.append(Claim(f"A-cca {dataset} {setting} layer{layer} {metric}", "ANIL paper, Sec. 3.2.2, Fig. 2",
                                 f"the body barely changes in the inner loop: {metric.upper()} of layer {layer} before "
                                 "vs after adaptation above 0.9",
                                 ("A-cca", f"{where} body.layer{layer} pre vs post", metric), ">", 0.9, **guard,
                                 family=f"A-cca {dataset} {setting}"))
        out.append(Claim(f"A-cca {dataset} {setting} head cca", "ANIL paper, Sec. 3.2.2, Fig. 2",
                         "the head changes in the inner loop: CCA before vs after adaptation below 0.5",
                         ("A-cca", f"{where} head pre vs post", "cca"), "<", 0.5, **guard,
                         family=f"A-cca {dataset} {setting}"))
    return out


#: "comparable" in the papers' words, as a number: a paired difference within +- this many points
COMPARABLE = 2.0


def _guard(dataset: str, setting: str, run: str = "maml") -> dict:
    """The model a claim is about (``run``'s accuracy) and its control (a random body, NIL head)."""
    ids = dict.fromkeys(("reptile", "reptilesgd"), "R-omni" if dataset == "omniglot" else "R-mini")
    return dict(model=(ids.get(run, "A-anil"), f"{dataset} {run} conv {setting}", "accuracy"),
                control=("A-nil", f"{dataset} random conv {setting} nil-head", "accuracy"))


def _comparison_claims() -> list[Claim]:
    """The claims that compare two runs on the same test tasks (rows "difference (points, paired)" of
    the report stages, :func:`metalearn.accuracy.contrasts`); "comparable" is taken as a difference
    within ± :data:`COMPARABLE` points, a choice of this study, stated in each row."""
    near = f"(taken here as within ± {COMPARABLE:g} points, paired over the test tasks)"
    paired, over_seeds = "difference (points, paired)", "difference (points, over seeds)"
    out = []
    for dataset, setting in (*SETTINGS, ("omniglot", "20w5s")):
        for metric, how in ((paired, ""), (over_seeds, ", over seeds")):
            out.append(Claim(f"A-anil {dataset} {setting}{how}", "ANIL paper, Sec. 4, Table 2",
                             f"ANIL matches MAML's accuracy: ANIL - MAML is comparable to 0 {near}",
                             ("A-anil", f"{dataset} anil - maml conv {setting}", metric), "~", COMPARABLE,
                             **_guard(dataset, setting)))
        for run in ("anil", "maml"):
            out.append(Claim(f"A-nil {dataset} {setting} {run}", "ANIL paper, Sec. 5.1, Table 4",
                             f"NIL (no head, no test-time adaptation) performs comparably to the {run.upper()} "
                             f"model's adapted head {near}",
                             ("A-nil", f"{dataset} {run} conv {setting} nil-head - maml-head", paired), "~",
                             COMPARABLE, **_guard(dataset, setting, run)))
    for dataset, setting in (("miniimagenet", "5w1s"), ("omniglot", "20w1s"), ("omniglot", "20w5s")):
        out.append(Claim(f"A-curves {dataset} {setting}, over seeds", "ANIL paper, Sec. 4 and C.2, Figs. 5 and 10",
                         "MAML and ANIL learn almost identically through training; here their last validation "
                         f"accuracies, ANIL - MAML comparable to 0 (taken here as within ± {COMPARABLE:g} points, paired "
                         "by seed, interval over the seeds)",
                         ("A-curves", f"{dataset} anil - maml conv {setting} final validation",
                          "difference (points, paired by seed)"), "~", COMPARABLE, **_guard(dataset, setting)))
    for setting in ("5w1s", "5w5s"):
        for regime in ("multiclass", "multitask", "random", "niltrain"):
            out.append(Claim(f"A-regimes miniimagenet {setting} {regime}", "ANIL paper, Sec. 5.2, Tables 5 and 7",
                             f"MAML's body is better than a {regime} body (both with a NIL head): {regime} - MAML < 0",
                             ("A-regimes", f"miniimagenet {regime} - maml conv {setting} nil-head", paired), "<", 0.0,
                             **_guard("miniimagenet", setting), family=f"A-regimes miniimagenet {setting}"))
        out.append(Claim(f"M-mini {setting} first order", "MAML paper, Sec. 5.2, Table 1",
                         f"first-order MAML performs nearly the same as MAML: FOMAML - MAML comparable to 0 {near}",
                         ("M-mini", f"miniimagenet fomaml - maml conv {setting}", paired), "~", COMPARABLE,
                         **_guard("miniimagenet", setting)))
    out.append(Claim("M-omni 5w1s first order", "Reptile review, Sec. 6.4.1, Table 3",
                     f"first-order MAML does as well as MAML on Omniglot 5w1s (98.7 vs 98.3 %, quoted from the MAML "
                     f"authors): FOMAML - MAML comparable to 0 {near}",
                     ("M-omni", "omniglot fomaml - maml conv 5w1s", paired), "~", COMPARABLE,
                     model=("M-omni", "omniglot fomaml conv 5w1s", "accuracy"),
                     control=("A-nil", "omniglot random conv 5w1s nil-head", "accuracy")))
    for dataset in ("omniglot", "miniimagenet"):
        out.append(Claim(f"R-pretrain {dataset} 5w1s", "Reptile review, Sec. 6.5.3, Table 5",
                         f"Reptile from multiclass pre-training ends comparable to Reptile alone {near}",
                         ("R-pretrain", f"{dataset} reptile from multiclass - reptile conv 5w1s", paired), "~",
                         COMPARABLE, **_guard(dataset, "5w1s", "reptile")))
    out.append(Claim("R-omni 5w1s inner sgd", "Reptile review, Sec. 6.4.1, Table 3",
                     f"Reptile with an inner SGD loop reaches nearly the accuracy of inner Adam on Omniglot 5w1s (97.4 "
                     f"vs 97.7 %): SGD - Adam comparable to 0 {near}",
                     ("R-omni", "omniglot reptilesgd - reptile conv 5w1s", paired), "~", COMPARABLE,
                     **_guard("omniglot", "5w1s", "reptile")))
    for metric, how in (("difference (mse, paired)", ""), ("difference (mse, over seeds)", ", over seeds")):
        out.append(Claim(f"R-2d adam vs sgd{how}", "Reptile review, Sec. 5.2, Figs. 6-8",
                         "with inner SGD Reptile cannot fit the 2D surfaces, with inner Adam it can: Adam - SGD test "
                         "MSE below 0, once Adam's fit beats predicting 0", ("R-2d", "adam - sgd", metric), "<", 0.0,
                         model=("R-2d", "adam after adaptation", "mse"), control=("R-2d", "zero prediction", "mse"),
                         better="lower"))
    return out


#: the claims judged in reports/claims.md whatever the results hold (:func:`claims_for` adds those
#: whose settings the results name, e.g. the iterations of A-early)
CLAIMS: list[Claim] = _anil_paper_claims() + _comparison_claims()

_EARLY = re.compile(r"^(?P<where>(?P<dataset>\S+) maml conv (?P<setting>\d+w\d+s)) iteration (?P<iteration>\d+) "
                    r"(?P<what>freeze 1-4|body\.layer\d|head) ?(pre vs post)?$")


def early_claims(rows: Sequence[dict]) -> list[Claim]:
    """The ANIL paper's "feature reuse happens early in learning" (Sec. 3.2.3, Figs. 3 and 9) at
    every iteration the A-early rows of ``rows`` hold: the final model's freezing and CCA claims
    (:data:`CLAIMS`, A-freeze and A-cca) on MAML's model at that iteration, the body layers and
    the head of one iteration judged together (Holm). Each is guarded by the model of that
    iteration (its accuracy, A-early "freeze none") against the random body with a NIL head: a model
    that has learnt nothing yet tests nothing."""
    out, seen = [], set()
    for r in rows:
        match = _EARLY.match(r["setting"]) if r["experiment"] == "A-early" else None
        if match is None or (r["setting"], r["metric"]) in seen:
            continue
        seen.add((r["setting"], r["metric"]))
        dataset, setting, iteration, what = match["dataset"], match["setting"], match["iteration"], match["what"]
        guard = dict(model=("A-early", f"{match['where']} iteration {iteration} freeze none", "accuracy"),
                     control=("A-nil", f"{dataset} random conv {setting} nil-head", "accuracy"))
        name = f"A-early {dataset} {setting} iteration {iteration}"
        source = "ANIL paper, Sec. 3.2.3, Figs. 3 and 9"
        if what == "freeze 1-4" and r["metric"] == "cost vs none (points, paired)":
            out.append(Claim(f"{name} freeze", source, f"from early in training (here iteration {iteration}) freezing "
                             "the whole body at test time costs little accuracy (taken here as under 1 point, paired)",
                             ("A-early", r["setting"], r["metric"]), "<", 1.0, **guard))
        elif what.startswith("body.") and r["metric"] in ("cca", "cka"):
            out.append(Claim(f"{name} {what.removeprefix('body.')} {r['metric']}", source,
                             f"from early in training (here iteration {iteration}) the body barely changes in the "
                             f"inner loop: {r['metric'].upper()} of {what} before vs after adaptation above 0.9",
                             ("A-early", r["setting"], r["metric"]), ">", 0.9, **guard, family=name))
        elif what == "head" and r["metric"] == "cca":
            out.append(Claim(f"{name} head cca", source, f"from early in training (here iteration {iteration}) the "
                             "head changes in the inner loop: CCA before vs after adaptation below 0.5",
                             ("A-early", r["setting"], r["metric"]), "<", 0.5, **guard, family=name))
    return out


def claims_for(rows: Sequence[dict]) -> list[Claim]:
    """Every claim judged on ``rows``: :data:`CLAIMS` and :func:`early_claims`."""
    return CLAIMS + early_claims(rows)


def judge_borrowing_controls(rows: Sequence[dict], reference: Sequence[dict]) -> list[dict]:
    """The claims ``rows`` measure (e.g. the training campaign's, which has no random body of its
    own), judged as :func:`judge` does, each model's control taken from ``reference`` (the study's
    ``reports/results.csv``) where ``rows`` lack it; only the lines of ``rows``' own scales, none
    "not measured"."""
    claims = claims_for(rows)
    have = {(r["experiment"], r["setting"], r["metric"]) for r in rows}
    wanted = {c.control for c in claims if c.control is not None} - have
    borrowed = [r for r in reference if (r["experiment"], r["setting"], r["metric"]) in wanted]
    scales = {r["scale"] for r in rows}
    return [j for j in judge(claims, [*rows, *borrowed]) if j["verdict"] != "not measured" and j["scale"] in scales]


def tally(judged: list[dict]) -> dict[str, int]:
    """How many of :func:`judge`'s rows have each verdict, every verdict of :data:`VERDICTS` named
    (zero included), in that order."""
    unknown = {j["verdict"] for j in judged} - set(VERDICTS)
    if unknown:
        raise ValueError(f"verdicts {sorted(unknown)} are none of {VERDICTS}")
    return {v: sum(j["verdict"] == v for j in judged) for v in VERDICTS}


def markdown(judged: list[dict]) -> str:
    """reports/claims.md from :func:`judge`'s rows: the count of each verdict, then one table row per
    claim and scale (ours ± 95% half-width, the paper's threshold, the verdict and why)."""
    counts = tally(judged)
    lines = ["# The papers' claims, judged on our numbers", "",
             "Generated by the `summarize` stage from `reports/results.csv` with the rule of "
             "`metalearn.claims.verdict` (tested): *reproduced* when our 95% interval lies on the paper's side of "
             "its threshold, *contradicted* when it lies on the other side, *not testable at this scale* when the "
             "model is no better than its control (a random body with a NIL head) or the interval reaches the "
             "threshold, *not measured* when the study has no such number. Each verdict holds at the scale named "
             "in its row, not at the papers'. Where a paper calls two methods comparable, the claim reads a "
             f"paired difference within ± {COMPARABLE:g} points (a choice of this study, fixed before the "
             "differences were computed); differences are paired over the same test tasks, and with several seeds also "
             "judged on their interval over seeds. Claims of one family (the layers of A-cca on one setting, the "
             "regimes against MAML) are judged together: Holm's adjustment of their p-values (from each interval, "
             "normal approximation) over the family's tested claims, reproduced or contradicted only below 0.05 "
             "after it.", "",
             "; ".join(f"{v}: {n}" for v, n in counts.items()), "", table(judged)]
    return "\n".join(lines)


def table(judged: list[dict]) -> str:
    """:func:`judge`'s rows as a markdown table: ours ± 95% half-width, the paper's threshold, the
    verdict, why, and the scale."""
    lines = ["| claim | source | the paper says | ours | threshold | verdict | why | scale |",
             "|---|---|---|---|---|---|---|---|"]
    for j in judged:
        ours = "-" if math.isnan(j["ours"]) else f"{j['ours']:.3g}" + ("" if math.isnan(j["ci95"]) else f" ± {j['ci95']:.2g}")
        lines.append(f"| {j['id']} | {j['source']} | {j['statement']} | {ours} | {j['threshold']} | **{j['verdict']}** "
                     f"| {j['why']} | {j['scale']} |")
    return "\n".join(lines) + "\n"
