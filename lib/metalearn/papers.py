"""The papers' own numbers, for the ``paper`` column of ``reports/results.csv`` only.

Keyed by (experiment id, setting, metric) exactly as the stages write their rows.
Nothing in the pipeline reads these values except to print them beside ours;
no computation, default or tuning uses them.
Sources: ``shared/papers/`` and ``shared/STUDY.md``.
"""
from __future__ import annotations

PAPER: dict[tuple[str, str, str], float] = {}

# MAML paper, Appendix C, Table 2: sinusoid, 5-shot MSE after 1 / 5 / 10 gradient steps.
for _method, _values in {
    "maml": (0.67, 0.38, 0.35),
    "pretrained": (2.41, 2.23, 2.19),
    "multitask-noreg": (4.19, 3.85, 3.69),
    "multitask-l2": (7.18, 5.69, 5.60),
    "multitask-regmean": (2.91, 2.72, 2.71),
}.items():
    for _steps, _value in zip((1, 5, 10), _values):
        PAPER[("M-sine", f"{_method} K=5 steps={_steps}", "mse")] = _value


def paper_value(experiment: str, setting: str, metric: str) -> float | None:
    """The paper's number for this cell of the results table, or None where it gives none."""
    return PAPER.get((experiment, setting, metric))
