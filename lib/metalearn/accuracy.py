"""Test accuracy of the image runs as the reports show it: tables with 95% confidence
intervals, learning curves, accuracy after each test step, the regimes table and the
rows of ``reports/results.csv``.

Reads what a training stage left under ``data/`` (:func:`load`): its stage record
(``data/models/<stage>/stage.json``: runs in order, data, hardware, test settings), each
run's record (``data/models/<stage>/<run>.json``: settings, history), per-task test scores
(``data/scores/<stage>/<run>.csv``, :func:`metalearn.fewshot.test_scores`) and the final weights'
per-task validation accuracy (``<run>.val.csv``, :func:`metalearn.fewshot.score_validation`). Nothing here
trains or tests: editing this module re-executes the report stages only.
"""
from __future__ import annotations

import json
from typing import NamedTuple

import matplotlib.pyplot as plt
import pandas as pd

from . import paths, report, results
from .evaluation import mean_ci95
from .fewshot import HEAD_ONLY, Spec, read_scores
from .reuse import describe_training


class Stage(NamedTuple):
    """What a training stage left: ``info`` (its stage record), ``records`` {run: the run's
    record}, ``scores`` {run: per-task test scores} and ``validation`` {run: the final weights'
    per-task accuracy (%) on the run's validation tasks}, runs in the stage's order."""

    info: dict
    records: dict[str, dict]
    scores: dict[str, pd.DataFrame]
    validation: dict[str, pd.Series] = {}


def load(stage: str) -> Stage:
    """The records and per-task scores of the training stage ``stage`` (a clear error naming
    the stage when it has not run)."""
    index = paths.input(f"data/models/{stage}/stage.json")
    if not index.is_file():
        raise FileNotFoundError(f"{index.relative_to(paths.ROOT) if index.is_relative_to(paths.ROOT) else index} "
                                f"is missing: run the '{stage}' stage first (dvc repro {stage})")
    info = json.loads(index.read_text())
    records = {run: json.loads(paths.input(f"data/models/{stage}/{run}.json").read_text()) for run in info["runs"]}
    scores = {run: read_scores(paths.input(f"data/scores/{stage}/{run}.csv")) for run in info["runs"]}
    validation = {}
    for run in info["runs"]:
        path = paths.input(f"data/scores/{stage}/{run}.val.csv")
        if not path.is_file():
            raise FileNotFoundError(f"data/scores/{stage}/{run}.val.csv is missing: re-execute the '{stage}' stage "
                                    f"(dvc repro {stage}; its models are reused, only their validation is scored)")
        validation[run] = pd.read_csv(path)["accuracy"]
    return Stage(info, records, scores, validation)


def histories(stage: Stage) -> pd.DataFrame:
    """The training histories of every run in one frame with a ``run`` column."""
    return pd.concat([pd.DataFrame(r["history"]).assign(run=run) for run, r in stage.records.items()],
                     ignore_index=True)


def test_table(stage: Stage) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From the per-task scores: (one row per run and head: run, head, steps, accuracy and ci95
    in %, iterations, meta_batch, training (:func:`reuse.describe_training`); accuracy after each
    measured test step per run, with ci95). ``run`` is the run's name in the stage (spec name and suffix)."""
    rows, curves = [], []
    for run, scores in stage.scores.items():
        settings = stage.records[run]["settings"]
        training = describe_training(stage.records[run])
        adapt = [c for c in scores.columns if c.startswith("adapt@")]
        for column in adapt:
            mean, ci = mean_ci95(scores[column].to_numpy())
            curves.append(dict(run=run, step=int(column.split("@")[1]), accuracy=mean, ci95=ci))
        heads = {"adapt": (settings["test_steps"], scores[adapt[-1]])}
        if "nil" in scores:
            heads["nil"] = (0, scores["nil"])
        for head, (steps, values) in heads.items():
            mean, ci = mean_ci95(values.to_numpy())
            rows.append(dict(run=run, head=head, steps=steps, accuracy=mean, ci95=ci,
                             iterations=settings["iterations"], meta_batch=settings["meta_batch"], training=training))
    return pd.DataFrame(rows), pd.DataFrame(curves)


def _settings_in(frame: pd.DataFrame) -> list[str]:
    return sorted({Spec.parse(name).setting for name in frame.run}, key=lambda t: (len(t), t))


def plot_learning_curves(history: pd.DataFrame, title: str, validation: dict[str, pd.Series] | None = None):
    """Training query loss (top) and validation accuracy (bottom) per N-way K-shot setting; with
    ``validation`` ({run: the final weights' per-task validation accuracy, %}), the last point's 95%
    CI over the validation tasks as an error bar."""
    settings = _settings_in(history)
    fig, axes = plt.subplots(2, len(settings), figsize=(4.2 * len(settings), 6), squeeze=False)
    for col, setting in enumerate(settings):
        for name, h in history[history.run.map(lambda r: Spec.parse(r).setting) == setting].groupby("run"):
            axes[0, col].plot(h.iteration, h.loss, label=name)
            line, = axes[1, col].plot(h.iteration, 100 * h.val_accuracy, label=name)
            if validation is not None and name in validation:
                mean, ci = mean_ci95(validation[name].to_numpy())
                axes[1, col].errorbar(h.iteration.iloc[-1], mean, yerr=ci, color=line.get_color(), capsize=3)
        axes[0, col].set(title=setting, yscale="log", ylabel="training query loss")
        axes[1, col].set(xlabel="iteration", ylabel="validation accuracy (%)")
        axes[1, col].legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    return fig


def plot_test_steps(curves: pd.DataFrame, title: str):
    """Test accuracy (95% CI) after 0..k adaptation steps, one panel per setting."""
    settings = _settings_in(curves)
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for name, c in curves[curves.run.map(lambda r: Spec.parse(r).setting) == setting].groupby("run"):
            ax.errorbar(c.step, c.accuracy, yerr=c.ci95, marker="o", ms=3, capsize=2, label=name)
        ax.set(title=setting, xlabel="test-time steps", ylabel="test accuracy (%)", ylim=(0, 100))
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    return fig


def experiments(dataset: str, spec: Spec, head: str) -> list[tuple[str, str]]:
    """The STUDY.md experiment ids that a test result of ``spec`` with test-time ``head``
    (adapt or nil) belongs to, each with the result's setting in ``reports/results.csv``:
    ``"<dataset> <algorithm> <model> <N>w<K>s"`` (+ ``" nil-head"``, or ``" from <init>"``);
    A-regimes names the body's regime and the head: ``"... multiclass conv 5w1s maml-head"``."""
    base = f"{dataset} {spec.algorithm} {spec.model} {spec.setting}"
    if spec.reptile:
        if head != "adapt":
            return []
        if spec.init:
            return [("R-pretrain", f"{base} from {spec.init}")]
        out = [("R-omni" if dataset == "omniglot" else "R-mini", base)]
        pretrain = spec.algorithm == "reptile" and spec.setting == "5w1s" and spec.model == "conv"
        return out + ([("R-pretrain", base)] if pretrain else [])
    out = []
    if spec.init is None:
        if head == "nil":
            out.append(("A-nil", f"{base} nil-head"))
        elif spec.model == "mlp":
            out.append(("M-omni-mlp", base))
        else:
            maml_id = "M-omni" if dataset == "omniglot" else "M-mini"
            out += [(experiment, base) for experiment in {
                "maml": [maml_id, "A-anil"], "fomaml": [maml_id], "anil": ["A-anil"]}.get(spec.algorithm, ["A-anil"])]
    if spec.model == "conv" and spec.algorithm in ("maml", "anil", *HEAD_ONLY):
        test_head = "maml-head" if head == "adapt" else "nil-head"
        out.append(("A-regimes", f"{dataset} {spec.regime} {spec.model} {spec.setting} {test_head}"))
    return out


#: what an A-curves row measures in place of the test (``tasks``: how many validation tasks)
VALIDATION = ("the last validation in training: the final weights on the stage's {tasks} fixed validation tasks, "
              "adapted as in training (95% CI over those tasks)")


def result_rows(dataset: str, table: pd.DataFrame, validation: dict[str, pd.Series], scale: str) -> list[dict]:
    """``reports/results.csv`` rows: each test result under its experiment ids
    (:func:`experiments`), and for MAML and ANIL runs the final validation accuracy under
    A-curves: the mean and 95% CI over the run's per-task ``validation`` accuracies (%). ``scale``
    describes the scale, ``"{training}; <the test>; ..."``, with ``{training}`` and ``{steps}``
    (the test steps of the row's head) filled in per row; an A-curves row's scale names
    :data:`VALIDATION` in place of the test."""
    out = []
    for r in table.itertuples():
        spec = Spec.parse(r.run)
        described = scale.format(training=r.training, steps=r.steps)
        for experiment, setting in experiments(dataset, spec, r.head):
            out.append(results.row(experiment, setting, "accuracy", r.accuracy, described, r.ci95))
        if r.head == "adapt" and spec.algorithm in ("maml", "anil"):
            final, ci = mean_ci95(validation[r.run].to_numpy())
            setting = f"{dataset} {spec.algorithm} {spec.model} {spec.setting} final validation"
            training, _test, rest = described.split("; ", 2)
            tested = VALIDATION.format(tasks=len(validation[r.run]))
            out.append(results.row("A-curves", setting, "accuracy", final, f"{training}; {tested}; {rest}", ci))
    return out


def _head_scores(stage: Stage, run: str, head: str) -> pd.Series | None:
    """A run's per-task accuracy (%) with ``head``: ``adapt`` after its test steps, or ``nil``
    (None for a run that has no NIL score: Reptile's); None when the stage has no such run."""
    if run not in stage.scores:
        return None
    column = "nil" if head == "nil" else f"adapt@{stage.records[run]['settings']['test_steps']}"
    return stage.scores[run].get(column)


def contrasts(dataset: str, stage: Stage) -> list[dict]:
    """The paired differences the papers' claims are about, over the stage's fixed test tasks: per
    setting, each of these whose two runs the stage has (a - b, in points):

    ==========  ==============================================  =============================
    experiment  a                                               b
    ==========  ==============================================  =============================
    A-anil      ANIL                                            MAML
    A-nil       MAML / ANIL with a NIL head                     the same model, head adapted
    M-*         first-order MAML                                MAML
    R-*         Reptile                                         MAML
    R-*         Reptile with inner SGD                          Reptile (inner Adam)
    R-pretrain  Reptile from multiclass pre-training            Reptile
    A-regimes   each other body (NIL head)                      MAML's body (NIL head)
    ==========  ==============================================  =============================

    Returns dicts {experiment, setting, a, b (the runs), difference, ci95 (paired 95% half-width
    over tasks), n}; ``setting`` as in ``reports/results.csv``, e.g. "omniglot anil - maml conv 20w1s".
    """
    maml_id, reptile_id = ("M-omni", "R-omni") if dataset == "omniglot" else ("M-mini", "R-mini")
    out = []

    def add(experiment, setting, a, head_a, b, head_b):
        scores_a, scores_b = _head_scores(stage, a, head_a), _head_scores(stage, b, head_b)
        if scores_a is not None and scores_b is not None:
            d = scores_a.to_numpy() - scores_b.to_numpy()
            mean, ci = mean_ci95(d)
            out.append(dict(experiment=experiment, setting=f"{dataset} {setting}", a=a, b=b, difference=mean,
                            ci95=ci, n=len(d)))

    for s in sorted({Spec.parse(run).setting for run in stage.scores}, key=lambda t: (len(t), t)):
        maml = f"maml-conv-{s}"
        add("A-anil", f"anil - maml conv {s}", f"anil-conv-{s}", "adapt", maml, "adapt")
        for algorithm in ("maml", "anil"):
            run = f"{algorithm}-conv-{s}"
            add("A-nil", f"{algorithm} conv {s} nil-head - maml-head", run, "nil", run, "adapt")
        add(maml_id, f"fomaml - maml conv {s}", f"fomaml-conv-{s}", "adapt", maml, "adapt")
        add(reptile_id, f"reptile - maml conv {s}", f"reptile-conv-{s}", "adapt", maml, "adapt")
        add(reptile_id, f"reptilesgd - reptile conv {s}", f"reptilesgd-conv-{s}", "adapt", f"reptile-conv-{s}", "adapt")
        add("R-pretrain", f"reptile from multiclass - reptile conv {s}", f"multiclass+reptile-conv-{s}", "adapt",
            f"reptile-conv-{s}", "adapt")
        for run in stage.scores:
            spec = Spec.parse(run)
            if spec.setting == s and spec.model == "conv" and spec.algorithm in ("anil", *HEAD_ONLY):
                add("A-regimes", f"{spec.regime} - maml conv {s} nil-head", run, "nil", maml, "nil")
    return out


def contrast_rows(stage: Stage, found: list[dict], scale: str) -> list[dict]:
    """``reports/results.csv`` rows of :func:`contrasts`' differences, metric "difference (points,
    paired)". The scale's training clause and test steps are run b's; when run a trained or was
    tested otherwise, a clause names how (e.g. Reptile's 500 iterations x 5 tasks x 10 shots/class
    and 20 test steps against MAML's 1000 x 4 x 15 queries/class and 10)."""
    rows = []
    for c in found:
        how = {}
        for run in (c["a"], c["b"]):
            settings = stage.records[run]["settings"]
            how[run] = (describe_training(stage.records[run]), settings["test_steps"])
        described = scale.format(training=how[c["b"]][0], steps=how[c["b"]][1])
        if how[c["a"]] != how[c["b"]]:
            first, rest = described.split("; ", 1)
            described = f"{first}; {c['a']}: {how[c['a']][0]}, {how[c['a']][1]} test steps; {rest}"
        rows.append(results.row(c["experiment"], c["setting"], "difference (points, paired)", c["difference"],
                                described, c["ci95"]))
    return rows


def stage_rows(stage: Stage) -> list[dict]:
    """Every ``reports/results.csv`` row of a one-seed training stage: its test results
    (:func:`result_rows`) and the paired differences of :func:`contrasts` (:func:`contrast_rows`),
    at the stage's :func:`scale`."""
    dataset, described = stage.info["dataset"], scale(stage)
    table, _ = test_table(stage)
    return (result_rows(dataset, table, stage.validation, described)
            + contrast_rows(stage, contrasts(dataset, stage), described))


def save_learning_curves(history: pd.DataFrame, stage: str, folder: str, title: str,
                         validation: dict[str, pd.Series] | None = None):
    """Write the validation accuracy per run as DVC plot data (``reports/plots/<stage>_val_accuracy.csv``)
    and the curves as ``<folder>/<stage>_learning_curves.png`` (:func:`plot_learning_curves`)."""
    wide = history.pivot_table(index="iteration", columns="run", values="val_accuracy").reset_index()
    report.save_table(wide.to_dict("records"), f"reports/plots/{stage}_val_accuracy.csv")
    fig = plot_learning_curves(history, title, validation)
    report.save_figure(fig, f"{folder}/{stage}_learning_curves.png")
    return fig


def save_tests(table: pd.DataFrame, curves: pd.DataFrame, stage: str, folder: str, title: str):
    """Write the test accuracies (``<folder>/<stage>_accuracy.csv``) and the test-steps figure."""
    report.save_table(table.to_dict("records"), f"{folder}/{stage}_accuracy.csv")
    fig = plot_test_steps(curves, title)
    report.save_figure(fig, f"{folder}/{stage}_test_steps.png")
    return fig


def scale(stage: Stage) -> str:
    """The scale column of a one-seed training stage's results, with ``{training}`` and ``{steps}``
    left to fill per row (:func:`result_rows`)."""
    info = stage.info
    return (f"{{training}}; {info['test']['tasks']} test tasks x {info['test']['queries']} queries/class, "
            f"{{steps}} test steps; 1 seed; {info['data']}; bn {info['test']['bn']}; "
            + "; ".join(info["hardware"]))


def metrics(table: pd.DataFrame) -> dict[str, float]:
    """Test accuracy per run and head (``<run>`` after adaptation, ``<run>_nil`` with a NIL head)."""
    return {f"{r.run}{'_nil' if r.head == 'nil' else ''}": r.accuracy for r in table.itertuples()}


def regime_table(table: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy "mean +- ci95" of each body's training regime (rows: maml, anil, random,
    multiclass, ...) with each test-time head (columns: setting x MAML head / NIL head), from
    :func:`test_runs`' table; conv runs of the A-regimes comparison only (ANIL paper Table 7)."""
    rows = []
    for r in table.itertuples():
        spec = Spec.parse(r.run)
        if spec.model == "conv" and spec.algorithm in ("maml", "anil", *HEAD_ONLY):
            rows.append(dict(regime=spec.regime, setting=spec.setting, accuracy=f"{r.accuracy:.1f} +- {r.ci95:.1f}",
                             head="MAML head" if r.head == "adapt" else "NIL head"))
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).pivot(index="regime", columns=["setting", "head"], values="accuracy")


def compare_to_maml(accuracy: dict[str, float]) -> None:
    """Print, per setting, ANIL and random features against MAML (the ordering claims)."""
    settings = sorted({Spec.parse(name.removesuffix("_nil")).setting for name in accuracy})
    for setting in settings:
        maml, anil, rand = (accuracy.get(f"{a}-conv-{setting}") for a in ("maml", "anil", "random"))
        if maml is None:
            continue
        parts = [f"ANIL - MAML = {anil - maml:+.1f} points"] if anil is not None else []
        parts += [f"random features - MAML = {rand - maml:+.1f} points"] if rand is not None else []
        if parts:
            print(f"{setting}: " + "; ".join(parts))
