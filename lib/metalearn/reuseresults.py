"""The feature-reuse analyses (:mod:`metalearn.reuse`; the ``freeze`` and ``similarity`` stages) as rows
of ``reports/results.csv`` (:func:`metalearn.results.row`) and as DVC metrics: which experiment and
setting each row of an analysis table is, its metric, value, 95% half-width and scale.

Each ``*_rows`` function takes the table its analysis computed (the frame the notebook already has) and
returns the rows in the table's order; a function of one analysed run takes that run's dataset and name
(``run``, a :class:`metalearn.fewshot.Spec` name such as ``maml-conv-5w1s``) and its scale, the one
:meth:`metalearn.reuse.Case.scale` describes. Where the scale changes along the table it is a function:
of the training iteration (A-early, ``scale_at``) or of the number of seed pairs (A-repr across seeds,
``scale_over``). A table without a column a function reads, or without a row of the run asked for, is
refused with a ValueError naming it.

Settings name the run as ``<dataset> <algorithm> <model> <N>w<K>s`` ("miniimagenet maml conv 5w1s"),
then what the row is: ``freeze 1-4``, a layer, ``body.layer1 pre vs post``, ``iteration 50 ...``.

Presentation only: nothing here computes an analysis, and no computing module imports it.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

import pandas as pd

from . import results
from .fewshot import Spec

#: the metric of a freezing cost: accuracy without freezing minus with it, paired over the same tasks
COST = "cost vs none (points, paired)"
#: the regime of the paper's random body (untrained, from another seed than MAML's)
INDEPENDENT = "random"
#: the regime of the study's random-features run (the untrained initialisation MAML started from)
OWN_START = "random, MAML's own start"


def _check(table: pd.DataFrame, what: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"the {what} table has no column {', '.join(map(repr, missing))} "
                         f"(it has {', '.join(map(repr, table.columns)) or 'none'})")


def _of(table: pd.DataFrame, what: str, columns: Sequence[str], **where) -> pd.DataFrame:
    """The rows of ``table`` whose columns equal ``where``, after checking it has ``columns``."""
    _check(table, what, [*where, *columns])
    mask = pd.Series(True, index=table.index)
    for column, value in where.items():
        mask &= table[column] == value
    if not mask.any():
        raise ValueError(f"the {what} table has no rows of "
                         + ", ".join(f"{column} {value!r}" for column, value in where.items()))
    return table[mask]


def trained_on(dataset: str, split: str | None = None) -> str:
    """How settings name the data a run trained on: the dataset, with the Omniglot character split
    where it is not the study's ``maml`` one (``"omniglot official split"``)."""
    return dataset if split in (None, "maml") else f"{dataset} {split} split"


def run_setting(dataset: str, run: str, split: str | None = None) -> str:
    """How a setting names an analysed run: ``"miniimagenet maml conv 5w1s"``, or with the split it
    trained on (:func:`trained_on`): ``"omniglot official split maml conv 5w1s"``."""
    spec = Spec.parse(run)
    return f"{trained_on(dataset, split)} {spec.algorithm} {spec.model} {spec.setting}"


# ------------------------------------------------------------------- the freeze stage
FREEZE = ("frozen", "accuracy", "ci95", "cost", "cost_ci95")


def freeze_rows(freeze: pd.DataFrame, dataset: str, run: str, scale: str) -> list[dict[str, str]]:
    """A-freeze rows of one run (the table of :func:`metalearn.reuse.freeze_accuracy` with ``dataset`` and
    ``run`` columns, several runs in one table): per freeze setting, its ``accuracy`` (ci95 over the test
    tasks) and, for a setting that freezes something, its :data:`COST` with the paired ci95."""
    rows = []
    for r in _of(freeze, "A-freeze", FREEZE, dataset=dataset, run=run).itertuples():
        setting = f"{run_setting(dataset, run)} freeze {r.frozen}"
        rows.append(results.row("A-freeze", setting, "accuracy", r.accuracy, scale, r.ci95))
        if r.frozen != "none":
            rows.append(results.row("A-freeze", setting, COST, r.cost, scale, r.cost_ci95))
    return rows


DISTANCE = ("layer", "distance", "distance_ci95", "relative", "relative_ci95")


def distance_rows(dist: pd.DataFrame, dataset: str, run: str, scale: str) -> list[dict[str, str]]:
    """A-dist rows of one run (the table of :func:`metalearn.reuse.weight_distances` with ``dataset`` and
    ``run`` columns): per layer, the ``distance`` its weights move in adaptation and the ``relative
    distance`` (divided by their norm), each with its ci95 over the test tasks."""
    rows = []
    for r in _of(dist, "A-dist", DISTANCE, dataset=dataset, run=run).itertuples():
        setting = f"{run_setting(dataset, run)} {r.layer}"
        rows.append(results.row("A-dist", setting, "distance", r.distance, scale, r.distance_ci95))
        rows.append(results.row("A-dist", setting, "relative distance", r.relative, scale, r.relative_ci95))
    return rows


EARLY_FREEZE = ("iteration", "frozen", "accuracy", "accuracy_ci95", "cost", "cost_ci95")


def seeds_scale(seeds: Sequence[int], stage: str) -> str:
    """How the A-early rows pool the seeds of the training stage ``stage``, for their scale: the mean
    over several seeds with a 95% interval over them, or one seed with its interval over the test
    tasks (:func:`metalearn.reuse.over_seeds`)."""
    if len(seeds) > 1:
        return f"mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}) of {stage}, 95% interval over the seeds"
    return f"seed {seeds[0]} of {stage}, 95% interval over the test tasks"


def early_freeze_rows(early_mean: pd.DataFrame, run: str, scale_at: Callable[[int], str],
                      dataset: str) -> list[dict[str, str]]:
    """A-early rows of the freezing test through training for one run: ``early_mean`` is the mean over
    seeds (:func:`metalearn.reuse.over_seeds` by run, iteration and frozen of accuracy and cost), and
    ``scale_at(iteration)`` the scale of the weights kept after that iteration. Per iteration and freeze
    setting, its ``accuracy`` and, when the run was also tested unfrozen (``none``), the :data:`COST` of a
    setting that freezes something; their ci95 is over the seeds (over the test tasks with one seed)."""
    part = _of(early_mean, "A-early", EARLY_FREEZE, run=run)
    unfrozen = (part.frozen == "none").any()
    rows = []
    for r in part.itertuples():
        setting = f"{run_setting(dataset, run)} iteration {r.iteration} freeze {r.frozen}"
        scale = scale_at(r.iteration)
        rows.append(results.row("A-early", setting, "accuracy", r.accuracy, scale, r.accuracy_ci95))
        if r.frozen != "none" and unfrozen:
            rows.append(results.row("A-early", setting, COST, r.cost, scale, r.cost_ci95))
    return rows


def freeze_metrics(freeze: pd.DataFrame, dist: pd.DataFrame, early_mean: pd.DataFrame | None = None
                   ) -> dict[str, float]:
    """The freeze stage's DVC metrics: ``<dataset>_<run>_freeze_<frozen>`` (accuracy),
    ``<dataset>_<run>_<layer>_relative_distance`` and, with ``early_mean``,
    ``early_<run>_<iteration>_freeze_<frozen>`` (accuracy, mean over seeds)."""
    _check(freeze, "A-freeze", ("dataset", "run", "frozen", "accuracy"))
    _check(dist, "A-dist", ("dataset", "run", "layer", "relative"))
    metrics = {f"{r.dataset}_{r.run}_freeze_{r.frozen}": r.accuracy for r in freeze.itertuples()}
    metrics |= {f"{r.dataset}_{r.run}_{r.layer}_relative_distance": r.relative for r in dist.itertuples()}
    if early_mean is not None:
        _check(early_mean, "A-early", ("run", "iteration", "frozen", "accuracy"))
        metrics |= {f"early_{r.run}_{r.iteration}_freeze_{r.frozen}": r.accuracy for r in early_mean.itertuples()}
    return metrics


# --------------------------------------------------------------- the similarity stage
CCA = ("layer", "method", "value", "ci95", "chance", "chance_ci95")


def cca_rows(cca: pd.DataFrame, dataset: str, run: str, scale: str, chance_tasks: int,
             chance_permutations: int) -> list[dict[str, str]]:
    """A-cca rows of one run: ``cca`` is :func:`metalearn.reuse.pre_post_similarity`'s table with
    ``dataset`` and ``run`` columns and its chance level beside it (``chance``, ``chance_ci95``:
    :func:`metalearn.reuse.pre_post_chance` on the first ``chance_tasks`` test tasks with
    ``chance_permutations`` random pairings). Per layer and method, the similarity before vs after
    adaptation and, where the chance level is defined (not NaN), ``<method> chance level``, its scale
    saying how the chance level was taken."""
    rows = []
    for r in _of(cca, "A-cca", CCA, dataset=dataset, run=run).itertuples():
        setting = f"{run_setting(dataset, run)} {r.layer} pre vs post"
        rows.append(results.row("A-cca", setting, r.method, r.value, scale, r.ci95))
        if pd.notna(r.chance):
            rows.append(results.row("A-cca", setting, f"{r.method} chance level", r.chance,
                                    f"{scale}; chance: first {chance_tasks} tasks x {chance_permutations} random "
                                    "pairings of the data points", r.chance_ci95))
    return rows


def regime_experiment(regime: str) -> str:
    """The experiment of a body compared with MAML's: ANIL's is A-repr (paper Table 3), any other
    regime's A-regime-sim (Table 8)."""
    return "A-repr" if regime == "anil" else "A-regime-sim"


def regime_setting(regime: str, setting: str) -> str:
    """The setting of a body of the reference's seed against MAML's (``setting``: the reference's
    ``<N>w<K>s``). ANIL's shares MAML's initialisation (seed), unlike the paper's Table 3 pairs, which
    :func:`across_seed_rows` gives; the random-features run (:data:`OWN_START`) starts where MAML
    started."""
    if regime == OWN_START:
        return f"miniimagenet random vs maml conv {setting} maml's own start"
    return f"miniimagenet {regime} vs maml conv {setting}{' same seed' if regime == 'anil' else ''}"


REGIME = ("body", "regime", "layer", "method", "value", "ci95")


def regime_rows(pairs: pd.DataFrame, setting: str, scales: Mapping[str, str], untrained_scale: str
                ) -> list[dict[str, str]]:
    """A-repr and A-regime-sim rows of the bodies compared with MAML's (:func:`metalearn.reuse.model_similarity`
    tables with ``body`` and ``regime`` columns, one body after another): per body, layer and method, the
    similarity with its ci95 over tasks, under :func:`regime_experiment` and :func:`regime_setting` (the
    ``mean`` over layers named by the regime alone, a layer's with the layer after it). ``scales``: each
    trained body's scale by name; a body not in it (the untrained random body) has ``untrained_scale``."""
    _check(pairs, "bodies", REGIME)
    rows = []
    for (body, regime), part in pairs.groupby(["body", "regime"], sort=False):
        for r in part.itertuples():
            name = regime_setting(regime, setting) + ("" if r.layer == "mean" else f" {r.layer}")
            rows.append(results.row(regime_experiment(regime), name, r.method, r.value,
                                    scales.get(body, untrained_scale), r.ci95))
    return rows


EARLY_SIMILARITY = ("iteration", "layer", "method", "value", "value_ci95")


def early_similarity_rows(early_mean: pd.DataFrame, run: str, scale_at: Callable[[int], str],
                          dataset: str) -> list[dict[str, str]]:
    """A-early rows of the similarity before vs after adaptation through training for one run:
    ``early_mean`` is the mean over seeds (:func:`metalearn.reuse.over_seeds` by run, iteration, layer and
    method of value), ``scale_at(iteration)`` the scale of the weights kept after that iteration. Per
    iteration, layer and method, the mean with its ci95 over the seeds (over the test tasks with one seed)."""
    rows = []
    for r in _of(early_mean, "A-early", EARLY_SIMILARITY, run=run).itertuples():
        setting = f"{run_setting(dataset, run)} iteration {r.iteration} {r.layer} pre vs post"
        rows.append(results.row("A-early", setting, r.method, r.value, scale_at(r.iteration), r.value_ci95))
    return rows


SEED_FITS = ("method", "comparison", "slope", "intercept", "r2")


def seed_fit_rows(fits: pd.DataFrame, run: str, scale: str, dataset: str) -> list[dict[str, str]]:
    """A-seeds rows of the lines fitted across seeds (:func:`metalearn.reuse.seed_fits` of ``run``'s seed
    pairs): per method and comparison, ``<method> slope``, ``<method> intercept`` and ``<method> r2`` of
    that comparison against (pre,pre), without intervals (the points are not independent)."""
    _check(fits, "A-seeds", SEED_FITS)
    rows = []
    for fit in fits.to_dict("records"):
        setting = f"{run_setting(dataset, run)} ({fit['comparison']}) vs (pre,pre)"
        for metric in ("slope", "intercept", "r2"):
            rows.append(results.row("A-seeds", setting, f"{fit['method']} {metric}", fit[metric], scale))
    return rows


ACROSS = ("pair", "layer", "method", "mean", "count")


def across_seed_rows(across_mean: pd.DataFrame, run: str, regime_layers: Sequence[str],
                     scale_over: Callable[[int], str], dataset: str) -> list[dict[str, str]]:
    """A-repr rows across seeds (paper Table 3): ``across_mean`` holds per pair of algorithms
    (``"maml vs maml"``, ``"anil vs maml"``...), layer and method the ``mean`` over ``count`` seed pairs
    of :func:`metalearn.reuse.model_similarity`; its ``mean`` layer (over the body) is the row, without an
    interval, its scale ``scale_over(count)``. MAML against MAML of another seed is also MAML's own row
    of Table 8 (A-regime-sim): the mean of its ``regime_layers``' means, when the table has all of them.
    ``run`` (the first seed run) gives the setting's N-way K-shot."""
    _check(across_mean, "A-repr", ACROSS)
    shots = Spec.parse(run).setting
    rows = []
    for r in across_mean[across_mean.layer == "mean"].itertuples():
        setting = f"{dataset} {r.pair} conv {shots}"
        scale = scale_over(r.count)
        rows.append(results.row("A-repr", setting, r.method, r.mean, scale))
        if r.pair == "maml vs maml":
            per_layer = across_mean[(across_mean.pair == r.pair) & (across_mean.method == r.method)
                                    & across_mean.layer.isin(regime_layers)]
            if len(per_layer) == len(regime_layers):
                rows.append(results.row("A-regime-sim", setting, r.method, per_layer["mean"].mean(), scale))
    return rows


def _given(table: pd.DataFrame | None) -> bool:
    return table is not None and len(table) > 0


def similarity_metrics(cca: pd.DataFrame | None, pairs: pd.DataFrame | None, fits: pd.DataFrame | None,
                       across_mean: pd.DataFrame | None, dataset: str = "miniimagenet") -> dict[str, float]:
    """The similarity stage's DVC metrics, from each table the stage computed (None or empty: none of
    its metrics): ``<dataset>_<run>_<layer>_<method>`` (A-cca), ``miniimagenet_<regime>_vs_maml_<method>``
    (each body's mean over layers, the regime's non-word characters as ``_``),
    ``seeds_<comparison>_<method>_r2`` (A-seeds) and ``repr_<pair>_<method>`` (A-repr across seeds)."""
    metrics = {}
    if _given(cca):
        _check(cca, "A-cca", ("dataset", "run", "layer", "method", "value"))
        metrics |= {f"{r.dataset}_{r.run}_{r.layer}_{r.method}": r.value for r in cca.itertuples()}
    if _given(pairs):
        _check(pairs, "bodies", ("body", "regime", "layer", "method", "value"))
        for (_, regime), part in pairs.groupby(["body", "regime"], sort=False):
            key = re.sub(r"\W+", "_", regime)
            metrics |= {f"{dataset}_{key}_vs_maml_{r.method}": r.value for r in part[part.layer == "mean"].itertuples()}
    if _given(fits):
        _check(fits, "A-seeds", ("method", "comparison", "r2"))
        metrics |= {f"seeds_{fit['comparison']}_{fit['method']}_r2": fit["r2"] for fit in fits.to_dict("records")}
    if _given(across_mean):
        _check(across_mean, "A-repr", ("pair", "layer", "method", "mean"))
        metrics |= {f"repr_{r.pair.replace(' ', '_')}_{r.method}": r.mean
                    for r in across_mean[across_mean.layer == "mean"].itertuples()}
    return metrics


# ------------------------------------------------------------------- the shift stage
SHIFT = ("measure", "layer", "method", "value", "ci95")
#: the metric each non-layer measure of :func:`metalearn.shift.reuse_measures` is reported as
SHIFT_METRICS = {"accuracy": "accuracy", "freeze cost": "freeze cost (points, paired)"}


def shift_rows(measures: pd.DataFrame, setting: str, scale: str, anil_minus_maml: Mapping[str, float],
               control: tuple[str, float, float] | None = None) -> list[dict[str, str]]:
    """X-shift rows of one MAML model at one shift (``setting``: its :func:`run_setting` and the shift's
    name): ``measures`` is that shift's table of :func:`metalearn.shift.reuse_measures` (measure, layer,
    method, value, ci95), in order: its accuracy and freezing cost (:data:`SHIFT_METRICS`), each layer's
    ``relative movement``, and each layer's similarity before vs after adaptation (the method, e.g.
    ``cca``) and its ``chance level``, left out where undefined (NaN); then ``anil - maml (points,
    paired)`` from ``anil_minus_maml`` ({"difference", "ci95"}: :func:`metalearn.claims.paired`) and,
    with a ``control`` (its run's name, accuracy, ci95), the control's accuracy with its NIL head."""
    _check(measures, "X-shift", SHIFT)
    rows = []
    for r in measures.itertuples():
        if r.measure in SHIFT_METRICS:
            rows.append(results.row("X-shift", setting, SHIFT_METRICS[r.measure], r.value, scale, r.ci95))
        elif r.measure == "relative movement":
            rows.append(results.row("X-shift", f"{setting} {r.layer}", "relative movement", r.value, scale, r.ci95))
        elif pd.notna(r.value):  # NaN where CCA is undefined
            metric = r.method if r.measure == "similarity" else f"{r.method} chance level"
            rows.append(results.row("X-shift", f"{setting} {r.layer} pre vs post", metric, r.value, scale, r.ci95))
    rows.append(results.row("X-shift", setting, "anil - maml (points, paired)", anil_minus_maml["difference"], scale,
                            anil_minus_maml["ci95"]))
    if control is not None:
        name, accuracy, ci95 = control
        rows.append(results.row("X-shift", setting, f"control accuracy ({name}, NIL head)", accuracy, scale, ci95))
    return rows
