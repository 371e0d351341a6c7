"""Verdicts on the papers' claims: each claim a rule over rows of ``reports/results.csv``.

A :class:`Claim` names the row that holds our number (experiment, setting, metric), what the
paper states as a threshold and a direction (``value < 1`` for "freezing costs under a point"),
and, where one exists, the row of a control the number must beat first (a random body with a
NIL head, chance): a model no better than its control tests nothing. :func:`verdict` is the one
rule, on the number's 95% interval:

=============================  ===============================================================
reproduced                     the interval lies on the paper's side of the threshold
contradicted                   the interval lies on the other side
not testable at this scale     the model's interval does not lie above its control's, or the
                               interval contains the threshold, or the number has no interval
not measured                   no row: the study has no such result
=============================  ===============================================================

:func:`holm` adjusts the p-values of a family of contrasts (Holm 1979), so that a family of
yes/no verdicts keeps its error rate; :func:`paired` gives a paired difference with its interval
and p-value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.stats

VERDICTS = ("reproduced", "contradicted", "not testable at this scale", "not measured")
RELATIONS = ("<", ">")

Row = tuple[str, str, str]  # experiment, setting, metric


@dataclass(frozen=True)
class Claim:
    """A paper's claim as a rule: our number at ``row`` is ``relation`` ``threshold`` (e.g.
    ``("A-freeze", "...", "accuracy drop")``, ``"<"``, ``1.0``), once it beats ``control``."""

    id: str
    source: str  # where the paper says it, e.g. "ANIL paper, Sec. 4.1"
    statement: str  # the paper's words, shortened
    row: Row
    relation: str
    threshold: float
    control: Row | None = None

    def __post_init__(self):
        if self.relation not in RELATIONS:
            raise ValueError(f"claim {self.id}: relation must be one of {RELATIONS}, got {self.relation!r}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"claim {self.id}: the threshold must be a finite number, got {self.threshold}")


def verdict(value: float, ci95: float, relation: str, threshold: float,
            control: tuple[float, float] | None = None) -> tuple[str, str]:
    """(verdict, why) for a number ``value`` ± ``ci95`` against ``relation threshold``; ``control``:
    (value, ci95) of the control the number must beat first (intervals apart, not touching)."""
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    if not math.isfinite(value):
        raise ValueError(f"the value must be finite, got {value}")
    if not math.isfinite(ci95) or ci95 < 0:
        return "not testable at this scale", "the number has no confidence interval"
    low, high = value - ci95, value + ci95
    if control is not None:
        c_value, c_ci = control
        c_high = c_value + (c_ci if math.isfinite(c_ci) else 0.0)
        if not low > c_high:
            return ("not testable at this scale",
                    f"{value:.3g} ± {ci95:.2g} is not above its control's {c_value:.3g} ± {c_ci:.2g}")
    above, below = low > threshold, high < threshold
    if not (above or below):
        return "not testable at this scale", f"the interval [{low:.3g}, {high:.3g}] contains {threshold:g}"
    holds = below if relation == "<" else above
    side = f"[{low:.3g}, {high:.3g}] {'<' if below else '>'} {threshold:g}"
    return ("reproduced", side) if holds else ("contradicted", side)


def judge(claims: Sequence[Claim], rows: Sequence[dict]) -> list[dict]:
    """Each claim judged on ``rows`` (as :func:`metalearn.results.read` returns them: strings):
    {id, source, statement, setting, ours, ci95, threshold, verdict, why, scale}. A claim whose
    row appears under several scales is judged on each (one line per scale)."""
    def number(text: str) -> float:
        return float(text) if text not in ("", None) else math.nan

    found: dict[Row, list[dict]] = {}
    for r in rows:
        found.setdefault((r["experiment"], r["setting"], r["metric"]), []).append(r)
    out = []
    for claim in claims:
        base = {"id": claim.id, "source": claim.source, "statement": claim.statement, "setting": claim.row[1],
                "threshold": f"{claim.relation} {claim.threshold:g}"}
        if claim.row not in found:
            out.append({**base, "ours": math.nan, "ci95": math.nan, "verdict": "not measured",
                        "why": f"no row {claim.row} in the results", "scale": ""})
            continue
        for r in found[claim.row]:
            control = None
            if claim.control is not None:
                same = [c for c in found.get(claim.control, []) if c["scale"] == r["scale"]] or found.get(claim.control)
                if not same:
                    out.append({**base, "ours": number(r["value"]), "ci95": number(r["ci95"]),
                                "verdict": "not testable at this scale", "why": f"no control row {claim.control}",
                                "scale": r["scale"]})
                    continue
                control = (number(same[0]["value"]), number(same[0]["ci95"]))
            decided, why = verdict(number(r["value"]), number(r["ci95"]), claim.relation, claim.threshold, control)
            out.append({**base, "ours": number(r["value"]), "ci95": number(r["ci95"]), "verdict": decided,
                        "why": why, "scale": r["scale"]})
    return out


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
