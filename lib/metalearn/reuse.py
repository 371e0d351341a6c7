"""Feature reuse analyses: freezing, per-layer weight distance, per-layer representational
similarity before/after adaptation and between models (Raghu et al. 2019, "Rapid Learning or
Feature Reuse?", Sec. 3 and App. B).

Every analysis runs over one fixed list of test tasks ``test`` (a :class:`metalearn.tasks.Batch`
of few-shot episodes: support xs [T, N*K, C, H, W], ys [T, N*K]; queries xq [T, N*Q, C, H, W],
yq [T, N*Q]) and returns a ``pandas.DataFrame`` of means over the T tasks with 95% confidence
half-widths (Student t over tasks, :func:`metalearn.evaluation.mean_ci95`):

============  =============================  ================================================
experiment    entry point                    what is measured on each task
============  =============================  ================================================
A-freeze      :func:`freeze_accuracy`        query accuracy after test-time adaptation with a
                                             contiguous block of layers frozen
A-dist        :func:`weight_distances`       ||theta_l - theta'_l|| per layer l, theta' after
                                             full adaptation (absolute and / ||theta_l||)
A-cca         :func:`pre_post_similarity`    CCA / CKA of each layer's activations on the
                                             task's queries, before vs after adaptation
A-repr,       :func:`model_similarity`       CCA / CKA of two models' activations on the same
A-regime-sim                                 queries, per layer and mean over chosen layers
A-seeds       :func:`seed_pair_similarity`   CCA / CKA across two seeds' models, each before or
                                             after adaptation (pre,pre ... post,post)
A-early       :func:`snapshot` + the above   the same at weights kept through training
============  =============================  ================================================

The analysed runs come from the training stages through :func:`load_case`, which reads how each
was trained and tested from what its stage recorded (:mod:`metalearn.store`), never from the
analysis' own parameters.

Test-time adaptation is the one of :func:`metalearn.fewshot.evaluate` (same inner loop, step
size ``settings.inner_lr``, ``settings.test_steps`` steps, loss and batch-norm mode
``settings.bn``), for MAML-family runs (not Reptile). A layer is a name of ``model.layers``
(``body.layer1`` .. ``body.layer4``, ``head``); its parameters are every tensor under that
prefix (a conv block: conv weight and bias, batch-norm scale and shift).

Activations are read on the task's query images, as the model predicts them
(:func:`metalearn.core.predict`: transductive batch norm uses the queries' own statistics,
inductive the support set's). Conv activations [Q, C, H, W] become Q*H*W data points of C
units (:func:`metalearn.similarity.conv_to_points`); the head's output [Q, N] is Q points of
N units. CCA needs more data points than units: a comparison with ``units >= points - 1`` on a
side is refused (:func:`layer_similarity`: ValueError, or NaN with a note when asked).
"""
from __future__ import annotations

import copy
import functools
import json
import math
import re
import warnings
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import scipy.stats
import torch
from torch import Tensor, nn

from . import core, datasets, fewshot, models, paths, similarity
from .evaluation import NUMERICS, each_task, mean_ci95
from .models import Params
from .params import require
from .tasks import Batch

METHODS = ("cca", "cka")  # the ANIL paper's two measures: mean CCA and linear CKA
_FROZEN = re.compile(r"^(?:none|(\d+)(?:-(\d+))?)$")


# ----------------------------------------------------------------------------- inputs
def check_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """``layers`` as a list, each one of ``model.layers``; ValueError naming unknown ones."""
    if isinstance(layers, str):
        raise ValueError(f"layers must be a list of names, got the string {layers!r}")
    layers = list(layers)
    unknown = [layer for layer in layers if layer not in model.layers]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; the model's layers are {model.layers}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers repeat: {layers}")
    return layers


def check_freeze(name: str) -> str:
    """``name`` if it spells a freeze setting ("none", "<i>" or "<i>-<j>", 1 <= i <= j), else
    ValueError."""
    match = _FROZEN.match(name) if isinstance(name, str) else None
    if not match:
        raise ValueError(f"freeze setting {name!r} is not 'none', '<i>' or '<i>-<j>' (e.g. '1-3')")
    if name != "none" and not 1 <= int(match.group(1)) <= int(match.group(2) or match.group(1)):
        raise ValueError(f"freeze setting {name!r}: need 1 <= first <= last layer")
    return name


def frozen_layers(name: str, model: nn.Module) -> tuple[str, ...]:
    """A freeze setting of the ANIL paper's Table 1 -> the layers it freezes.

    ``"none"`` -> (); ``"1"`` -> ("body.layer1",); ``"1-3"`` -> ("body.layer1", "body.layer2",
    "body.layer3"). ValueError for another spelling, an empty range or a layer the model lacks.
    """
    if check_freeze(name) == "none":
        return ()
    match = _FROZEN.match(name)
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    return tuple(check_layers(model, [f"body.layer{i}" for i in range(first, last + 1)]))


def evaluation_settings(inner_lr: float, test_steps: int, bn: str = "transductive") -> fewshot.Settings:
    """Test-time settings for :func:`fewshot.evaluate`: only ``inner_lr``, ``test_steps`` and
    ``bn`` are read at test time (the training fields are set to 0: unused here)."""
    if not inner_lr > 0 or not isinstance(test_steps, int) or test_steps < 0:
        raise ValueError(f"need inner_lr > 0 and test_steps >= 0, got {inner_lr}, {test_steps}")
    if bn not in core.BN_MODES:
        raise ValueError(f"bn must be one of {core.BN_MODES}, got {bn!r}")
    return fewshot.Settings(iterations=0, meta_batch=0, inner_steps=0, inner_lr=inner_lr,
                            test_steps=test_steps, bn=bn)


def load_model(spec: fewshot.Spec, dataset: str, filters: int, path) -> nn.Module:
    """The network of ``spec`` (:func:`fewshot.build_model`) with the state_dict saved at ``path``;
    a clear error when the file is missing or does not fit (e.g. other ``filters``)."""
    model = fewshot.build_model(spec, dataset, filters)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no trained model at {path}: run the stage that trains {spec.name}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit {spec.name} on {dataset} with {filters} filters: {error}") from None
    return model.eval()


class Trained(NamedTuple):
    """A model of a training stage with that stage's test of it (``row``: accuracy and ci95 over
    its test tasks after ``steps`` test steps, and its training ``iterations`` and ``meta_batch``),
    the number of test tasks the stage used, the stage and the run's name there (``spec.name``,
    plus e.g. ``-seed1`` in ``train_seeds``), the identity of the trained run (what an analysis
    of it is keyed by, :mod:`metalearn.store`) and its whole record (settings, data, history)."""

    dataset: str
    spec: fewshot.Spec
    model: nn.Module
    row: pd.Series
    tasks: int
    stage: str = ""
    name: str = ""
    identity: dict | None = None
    record: dict | None = None


def _read_json(relative: str, param: str, name: str) -> dict:
    path = paths.input(relative)
    require(path.is_file(), param, f"has {name}, but there is no {relative}: run the stage that trains it first")
    return json.loads(path.read_text())


def load_trained(stage: str, name: str, device: str = "cpu", param: str = "runs") -> Trained:
    """The run ``name`` of the training stage ``stage`` (a spec name, plus e.g. ``-seed1`` in
    ``train_seeds``) on ``device``, with that stage's test of it, all read from what the stage
    saved: the run's record ``data/models/<stage>/<name>.json`` (its spec, dataset, network and
    settings), its weights ``<name>.pt``, the stage record ``stage.json`` (how it tests) and the
    per-task scores ``data/scores/<stage>/<name>.csv``. A run the stage did not train stops with
    a :class:`ParameterError` naming ``param`` (the analysis' parameter that chose it)."""
    record = _read_json(f"data/models/{stage}/{name}.json", param, name)
    tested = _read_json(f"data/models/{stage}/stage.json", param, name)["test"]
    spec, dataset, settings = fewshot.Spec.parse(record["spec"]), record["dataset"], record["settings"]
    model = load_model(spec, dataset, record["filters"], paths.input(fewshot.model_file(stage, name)))
    scores = fewshot.read_scores(paths.input(f"data/scores/{stage}/{name}.csv"))[f"adapt@{settings['test_steps']}"]
    accuracy, ci95 = mean_ci95(scores.to_numpy())
    row = pd.Series(dict(accuracy=accuracy, ci95=ci95, steps=settings["test_steps"], iterations=settings["iterations"],
                         meta_batch=settings["meta_batch"]), dtype=object)  # counts stay ints (150, not 150.0)
    return Trained(dataset, spec, model.to(device), row, tested["tasks"], stage, name, record["identity"], record)


def analysis_identity(P: Any, trained: Sequence[Trained], apart: Sequence[str] = ()) -> dict:
    """What an analysis' tables are computed from (their records' identity, :mod:`metalearn.store`):
    the analysis' parameters ``P`` (all but ``threads``, the stage's own name and the training stages
    it reads (``stage``, ``*_stage``: each analysed run's identity names its stage), and those
    ``apart``: parameters of a table of its own, which adds them to its identity, so changing them
    recomputes that table only), the identity of every analysed run, and
    :data:`metalearn.evaluation.NUMERICS`."""
    kept = {k: v for k, v in vars(P).items()
            if k not in ("threads", "stage", *apart) and not k.endswith("_stage")}
    return {"parameters": kept,
            "runs": {f"{t.stage}/{t.name}": t.identity for t in trained}, "numerics": NUMERICS}


def snapshot(trained: Trained, iteration: int) -> nn.Module:
    """The weights of ``trained`` kept after ``iteration`` training iterations
    (``data/models/<stage>/<name>@<iteration>.pt``, :func:`fewshot.train`'s ``snapshots``); the
    trained model itself at its last iteration. A clear error when the stage kept no such copy."""
    if iteration == trained.row.iterations:
        return trained.model
    path = paths.input(f"data/models/{trained.stage}/{trained.name}@{iteration}.pt")
    if not path.exists():
        raise FileNotFoundError(f"{trained.stage} kept no weights of {trained.name} at iteration {iteration} "
                                f"(no {path.name}; it trained {trained.row.iterations} iterations): "
                                "add it to its snapshots")
    model = copy.deepcopy(trained.model)
    model.load_state_dict(torch.load(path, map_location=next(model.parameters()).device, weights_only=True))
    return model


@functools.lru_cache(maxsize=4)
def _test_images(dataset: str, split: str, device: str) -> tuple[Tensor, Tensor, str]:
    """(images [C, M, ...] on ``device``, the test classes' indices, a description of the data)."""
    data = datasets.load(paths.input(f"data/prepared/{dataset}.npz"))
    if dataset == "miniimagenet":
        images = torch.from_numpy(data["test_images"]).to(device)
        return images, torch.arange(len(images)), datasets.describe_miniimagenet(data)
    images = torch.from_numpy(data["images"]).to(device)
    classes = datasets.omniglot_split(data, split, seed=1)["test"]  # as train_omniglot
    return images, classes, (f"Omniglot ({len(images)} characters x 20 drawings, 28x28, {split} split, "
                             "x4 rotations)")


def test_tasks(dataset: str, spec: fewshot.Spec, n_tasks: int, queries: int, seed: int, split: str = "maml",
               device: str = "cpu") -> tuple[Batch, str]:
    """The first ``n_tasks`` of the fixed test tasks that ``train_<dataset>`` (with ``seed``, and
    Omniglot's character ``split``) tests ``spec``'s setting on (:func:`fewshot.test_episodes`),
    and a description of the data they come from."""
    images, classes, description = _test_images(dataset, split, device)
    if spec.k_shot + queries > images.shape[1]:
        raise ValueError(f"{spec.name} with {queries} queries per class needs {spec.k_shot + queries} images per "
                         f"class; {dataset} has {images.shape[1]}")
    episodes = fewshot.episode_factory({"test": images}, {"test": classes}, seed)
    return fewshot.test_episodes(episodes, spec, n_tasks, queries, seed), description



def describe_training(record: dict) -> str:
    """How a run was trained, as a results scale's first clause (no ";"), from its model record
    (``spec`` and ``settings``, as :func:`fewshot.train_runs` saves it): the meta-training budget
    and what each iteration does (MAML family: training queries per class and inner steps;
    Reptile: shots, inner Adam / SGD steps and batch), after the body's pre-training when the run
    has an ``init``. E.g. "1000 iterations x 4 tasks x 15 queries/class, 5 inner steps of 0.4" or
    "multiclass pre-training 600 iterations x 64 images, then 150 iterations x 5 tasks x 15
    shots/class, 8 inner Adam steps of 10 images (lr 0.001)"."""
    spec, s = fewshot.Spec.parse(record["spec"]), record["settings"]
    if spec.reptile:
        optimiser = {"adam": "Adam", "sgd": "SGD"}[fewshot.REPTILE[spec.algorithm]]
        each = (f"{s['train_shots']} shots/class, {s['inner_steps']} inner {optimiser} steps of {s['inner_batch']} "
                f"images (lr {s['inner_lr']})")
    else:
        each = f"{s['train_queries']} queries/class, {s['inner_steps']} inner steps of {s['inner_lr']}"
    budget = f"{s['iterations']} iterations x {s['meta_batch']} tasks x {each}"
    if spec.init:
        batch = f"{s['pretrain_batch']} images" if spec.init == "multiclass" else f"{s['meta_batch']} tasks"
        return f"{spec.init} pre-training {s['pretrain_iterations']} iterations x {batch}, then {budget}"
    return budget


class Case(NamedTuple):
    """One analysed run: the trained model, its test-time settings (the training stage's step
    size, steps and batch norm), its first test tasks, the description of their data, the
    query images per class and the seed of the stage's test tasks."""

    trained: Trained
    settings: fewshot.Settings
    test: Batch
    data: str
    queries: int
    seed: int = 0  # the seed of the stage's fixed test tasks (:func:`fewshot.test_episodes`)

    def scale(self, hardware: str, adapted: bool = True, seeds: str = "1 seed", at: int | None = None) -> str:
        """The scale column of a result computed on this case (``at``: on the weights kept
        after that many of the training iterations)."""
        t, st = self.trained, self.settings
        adaptation = f", {st.test_steps} test steps of {st.inner_lr}" if adapted else ", no adaptation"
        return (f"{'' if at is None else f'{at} of '}{describe_training(t.record)} (training); "
                f"{len(self.test.xs)} test tasks x {self.queries} queries/class{adaptation}; {seeds}; "
                f"{self.data}; bn {st.bn}; {hardware}")


def load_case(stage: str, name: str, n_tasks: int, device: str = "cpu", param: str = "runs") -> Case:
    """The run ``name`` of the training stage ``stage`` (:func:`load_trained`) with the first
    ``n_tasks`` of the fixed test tasks that stage tested it on, and its test-time settings:
    everything as the stage recorded it (the seed of its test episodes, queries per class,
    Omniglot's character split, step size, steps, batch norm), so an analysis repeats the
    stage's test exactly. More test tasks than the stage used stop with a ParameterError naming
    ``param``."""
    trained = load_trained(stage, name, device, param)
    tested = _read_json(f"data/models/{stage}/stage.json", param, name)["test"]
    require(n_tasks <= tested["tasks"], param, f"{name}: {n_tasks} test tasks asked here, but {stage} tested it on "
                                               f"{tested['tasks']}")
    trained_with = trained.record["settings"]
    settings = evaluation_settings(trained_with["inner_lr"], trained_with["test_steps"], trained_with["bn"])
    split = trained.identity.get("split", "maml")
    test, _ = test_tasks(trained.dataset, trained.spec, n_tasks, tested["queries"], tested["seed"], split, device)
    return Case(trained, settings, test, trained.record.get("data", trained.dataset), tested["queries"], tested["seed"])


def _mean_ci(values) -> tuple[float, float]:
    """Mean and 95% CI half-width of a list of numbers; (nan, nan) if any is nan."""
    values = torch.as_tensor(np.array(values, dtype=np.float64))  # a writable copy (pandas' arrays are read-only)
    if torch.isnan(values).any():
        return math.nan, math.nan
    return mean_ci95(values)


# ------------------------------------------------------------------ test-time adaptation
def adaptation_loop(spec: fewshot.Spec, model: nn.Module, params: Params, settings: fewshot.Settings,
                    frozen: Sequence[str] = ()) -> core.InnerLoop:
    """The inner loop :func:`fewshot.evaluate` adapts with, minus the ``frozen`` layers."""
    if spec.reptile:
        raise ValueError("the feature reuse analyses adapt with the MAML-family inner loop; "
                         f"{spec.name} adapts with Reptile's optimiser")
    return fewshot.inner_loop(spec, params, settings.test_steps, settings.inner_lr, model.layers,
                              check_layers(model, frozen))


def adapted_params(spec: fewshot.Spec, model: nn.Module, params: Params, xs: Tensor, ys: Tensor,
                   settings: fewshot.Settings, frozen: Sequence[str] = ()) -> Params:
    """One task's parameters after test-time adaptation on its support set xs [N*K, ...],
    ys [N*K] (``params`` unchanged for 0 steps); detached."""
    params = {k: v.detach() for k, v in params.items()}
    inner = adaptation_loop(spec, model, params, settings, frozen)
    adapted = core.adapt(model, params, xs, ys, inner, fewshot.loss_of(spec))
    return {k: v.detach() for k, v in adapted.items()}


def over_seeds(table: pd.DataFrame, by: Sequence[str], columns: Mapping[str, str]) -> pd.DataFrame:
    """The mean over seeds of each of ``columns`` of ``table`` (one row per seed and group of ``by``),
    with its 95% half-width: over the seeds (Student t on the seeds' values) when the group has
    several, else the one seed's own half-width over its test tasks.

    Args:
        table: rows with a ``seed`` column, the ``by`` columns and the ``columns`` (numbers).
        columns: {column: the column of ``table`` holding its 95% half-width over the test tasks},
            e.g. ``{"accuracy": "ci95", "cost": "cost_ci95"}``.
    Returns:
        one row per group of ``by`` (in order of appearance): the ``by`` columns, ``<column>`` (the
        mean) and ``<column>_ci95`` for each column, and ``seeds`` (how many: the half-widths are
        over the seeds when more than one, else over that seed's test tasks).
    Raises:
        ValueError: a group has one seed twice (the rows would not be seeds).
    """
    twice = table.duplicated([*by, "seed"])
    if twice.any():
        raise ValueError(f"rows {table[twice][[*by, 'seed']].to_dict('records')[:3]} repeat a seed of their group")
    rows = []
    for key, group in table.groupby(list(by), sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for column, tasks_ci in columns.items():
            row[column], row[f"{column}_ci95"] = (_mean_ci(group[column].to_numpy()) if len(group) > 1 else
                                                  (float(group[column].iloc[0]), float(group[tasks_ci].iloc[0])))
        rows.append({**row, "seeds": len(group)})
    return pd.DataFrame(rows)


def seed_run(stage: str, name: str, seed: int, param: str = "seeds") -> str:
    """The name under which the training stage ``stage`` saved the run ``name`` trained with
    ``seed``: ``<name>-seed<seed>`` in a stage that trains several seeds (``train_seeds``), else
    ``name`` itself when that run's seed is ``seed`` (a campaign stage trains one). Anything else
    stops with a :class:`ParameterError` naming ``param``."""
    seeded = f"{name}-seed{seed}"
    if paths.input(f"data/models/{stage}/{seeded}.json").is_file():
        return seeded
    trained = _read_json(f"data/models/{stage}/{name}.json", param, name)["identity"]["seed"]
    require(trained == seed, param, f"has {seed}, but {stage} trained {name} with seed {trained} only")
    return name


# ------------------------------------------------------------------------- A-freeze
def freeze_accuracy(spec: fewshot.Spec, model: nn.Module, test, settings: fewshot.Settings,
                    freezes: Sequence[str] = ("none", "1", "1-2", "1-3", "1-4")) -> pd.DataFrame:
    """A-freeze: query accuracy (%) over the T tasks of ``test`` after test-time adaptation
    with each freeze setting (:func:`frozen_layers`) -> one row per setting: frozen, layers
    (the frozen layers' names), accuracy, ci95, cost and cost_ci95 (the paired difference
    "none" minus this setting over the same tasks, in points; NaN without "none"), tasks."""
    freezes = list(freezes)
    if not freezes or len(set(freezes)) != len(freezes):
        raise ValueError(f"need distinct freeze settings, got {freezes}")
    params = models.params_of(model, requires_grad=False)
    scores = {}
    for name in freezes:
        frozen = frozen_layers(name, model)
        accuracy = fewshot.evaluate(spec, model, params, test, settings, frozen=frozen, every_step=False,
                                    progress=f"{spec.name}: frozen {name}")["accuracy"]
        scores[name] = (frozen, accuracy[:, -1].to(torch.float64) * 100)
    rows = []
    for name, (frozen, values) in scores.items():
        mean, ci = mean_ci95(values)
        cost, cost_ci = mean_ci95(scores["none"][1] - values) if "none" in scores else (math.nan, math.nan)
        rows.append(dict(frozen=name, layers=", ".join(frozen) or "-", accuracy=mean, ci95=ci, cost=cost,
                         cost_ci95=cost_ci, tasks=len(values)))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- A-dist
def layer_vector(params: Params, layer: str) -> Tensor:
    """All parameters of ``layer`` (those named ``layer.*``), flattened and concatenated, in
    the order of ``params`` -> (P_l,), float64."""
    names = [k for k in params if k.startswith(layer + ".")]
    if not names:
        raise ValueError(f"no parameter belongs to layer {layer!r}; parameters are {list(params)}")
    return torch.cat([params[k].detach().reshape(-1).to(torch.float64) for k in names])


def weight_distance(before: Params, after: Params, layers: Sequence[str]) -> dict[str, tuple[float, float]]:
    """{layer: (||theta_l - theta'_l||_2, ||theta_l||_2)} over each layer's parameter vector
    (:func:`layer_vector`), theta = ``before``, theta' = ``after`` (same names and shapes)."""
    if set(before) != set(after):
        raise ValueError(f"parameter names differ: {sorted(set(before) ^ set(after))}")
    out = {}
    for layer in layers:
        a, b = layer_vector(before, layer), layer_vector(after, layer)
        if a.shape != b.shape:
            raise ValueError(f"layer {layer}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
        out[layer] = (torch.linalg.vector_norm(a - b).item(), torch.linalg.vector_norm(a).item())
    return out


def weight_distances(spec: fewshot.Spec, model: nn.Module, test, settings: fewshot.Settings,
                     layers: Sequence[str] | None = None) -> pd.DataFrame:
    """A-dist (ANIL paper Fig. 6): per layer, the mean over the T tasks of ``test`` of
    ||theta_l - theta_l^(b)|| (theta^(b): after full test-time adaptation to task b) ->
    one row per layer: layer, parameters (P_l), norm (||theta_l||), distance, distance_ci95,
    relative (distance / ||theta_l||, mean over tasks), relative_ci95, tasks."""
    layers = check_layers(model, model.layers if layers is None else layers)
    params = models.params_of(model, requires_grad=False)
    per_task = []
    for xs, ys in each_task(f"{spec.name}: weight distance", test.xs, test.ys):
        per_task.append(weight_distance(params, adapted_params(spec, model, params, xs, ys, settings), layers))
    rows = []
    for layer in layers:
        norm = per_task[0][layer][1]
        distance, distance_ci = mean_ci95([d[layer][0] for d in per_task])
        relative, relative_ci = mean_ci95([d[layer][0] / norm for d in per_task])
        rows.append(dict(layer=layer, parameters=layer_vector(params, layer).numel(), norm=norm, distance=distance,
                         distance_ci95=distance_ci, relative=relative, relative_ci95=relative_ci, tasks=len(per_task)))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------ similarity
def layer_outputs(model: nn.Module, params: Params, xq: Tensor, xs: Tensor | None, bn: str,
                  layers: Sequence[str]) -> dict[str, Tensor]:
    """{layer: its output on the queries xq [Q, ...]} as :func:`core.predict` computes them
    (``bn``: transductive or inductive with the support set xs [K, ...]): body blocks
    [Q, C, H, W] (after ReLU and pooling), ``head`` [Q, N]; detached."""
    layers = check_layers(model, layers)
    with models.captured(model, layers) as seen, torch.no_grad():
        core.predict(model, params, xq, xs, bn)
    skip = 0 if bn == "transductive" else len(xs)  # inductive: the support rows come first
    return {name: seen[name][skip:] for name in layers}


def layer_similarity(X: Tensor, Y: Tensor, method: str, too_few: str = "raise") -> tuple[similarity.Similarity, str]:
    """X, Y: one layer's activations on the same inputs, (n, units) or (N, C, H, W) (folded
    by :func:`similarity.conv_to_points`) -> (:class:`similarity.Similarity`, note).

    CCA ("cca") needs more data points than units: with ``units >= n - 1`` on a side it is
    refused: ``too_few="raise"`` raises ValueError, ``"nan"`` returns value NaN and a note
    saying why. The note is "" otherwise. CKA ("cka") is computed for any n >= 2.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if too_few not in ("raise", "nan"):
        raise ValueError(f"too_few must be 'raise' or 'nan', got {too_few!r}")
    Xp, Yp = similarity.conv_to_points(torch.as_tensor(X)), similarity.conv_to_points(torch.as_tensor(Y))
    n, units = Xp.shape[0], max(Xp.shape[1], Yp.shape[1])
    if method == "cca" and units >= n - 1:
        note = (f"CCA undefined: {n} data points for {units} units (needs more than units + 1 points; "
                "every canonical correlation would be trivially 1)")
        if too_few == "raise":
            raise ValueError(note)
        return similarity.Similarity(method, math.nan, n, Xp.shape[1], Yp.shape[1],
                                     similarity.dead_units(Xp), similarity.dead_units(Yp), 0, 0), note
    return forced_as_note(lambda: similarity.compare(Xp, Yp, method))


def forced_as_note(compute: Callable[[], Any]) -> tuple[Any, str]:
    """``compute()``'s value and, instead of a printed warning, the text of any
    :class:`similarity.ForcedCorrelationWarning` it raised (CCA with more kept directions than data
    points allow: some correlations are 1 whatever the data), as a note for the row it feeds
    ("" if none). Other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = compute()
    notes = []
    for w in caught:
        if issubclass(w.category, similarity.ForcedCorrelationWarning):
            notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return value, "; ".join(dict.fromkeys(notes))


def _compare_layers(acts_a: dict[str, Tensor], acts_b: dict[str, Tensor], methods: Sequence[str],
                    too_few: str) -> list[dict]:
    rows = []
    for layer in acts_a:
        for method in methods:
            s, note = layer_similarity(acts_a[layer], acts_b[layer], method, too_few)
            rows.append(dict(layer=layer, method=method, value=s.value, points=s.n, units=s.units_x,
                             dead_a=s.dead_x, dead_b=s.dead_y, note=note))
    return rows


def _summarise(per_task: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per-task rows -> mean and ci95 of ``value`` per ``keys``, with the data points and units,
    the mean dead units of each side and the notes."""
    rows = []
    for key, group in per_task.groupby(keys, sort=False):
        mean, ci = _mean_ci(group.value.tolist())
        notes = sorted({n for n in group.note if n})
        rows.append(dict(zip(keys, key if isinstance(key, tuple) else (key,)), value=mean, ci95=ci,
                         points=int(group.points.iloc[0]), units=int(group.units.iloc[0]),
                         dead_a=group.dead_a.mean(), dead_b=group.dead_b.mean(), tasks=len(group),
                         note="; ".join(notes)))
    return pd.DataFrame(rows)


def task_pre_post(spec: fewshot.Spec, model: nn.Module, params: Params, xs: Tensor, ys: Tensor, xq: Tensor,
                  settings: fewshot.Settings, layers: Sequence[str], methods: Sequence[str] = METHODS,
                  too_few: str = "nan") -> list[dict]:
    """One task: similarity of each layer's activations on the queries xq [Q, ...] before vs
    after full test-time adaptation on (xs, ys) -> rows: layer, method, value, points, units,
    dead_a (before), dead_b (after), note."""
    after = adapted_params(spec, model, params, xs, ys, settings)
    pre = layer_outputs(model, params, xq, xs, settings.bn, layers)
    post = layer_outputs(model, after, xq, xs, settings.bn, layers)
    return _compare_layers(pre, post, methods, too_few)


def pre_post_similarity(spec: fewshot.Spec, model: nn.Module, test, settings: fewshot.Settings,
                        layers: Sequence[str] | None = None, methods: Sequence[str] = METHODS,
                        too_few: str = "nan") -> pd.DataFrame:
    """A-cca (ANIL paper Fig. 2): per layer and method, the mean over the T tasks of ``test`` of
    the similarity of the layer's activations on the task's queries before vs after full
    test-time adaptation -> rows: layer, method, value, ci95, points (data points per task),
    units, dead_a / dead_b (mean dead units before / after), tasks, note (why a value is NaN)."""
    layers = check_layers(model, model.layers if layers is None else layers)
    params = models.params_of(model, requires_grad=False)
    rows = []
    for t, (xs, ys, xq) in enumerate(each_task(f"{spec.name}: pre vs post", test.xs, test.ys, test.xq)):
        rows += [dict(task=t, **r) for r in task_pre_post(spec, model, params, xs, ys, xq, settings, layers,
                                                           methods, too_few)]
    return _summarise(pd.DataFrame(rows), ["layer", "method"])


def pre_post_chance(spec: fewshot.Spec, model: nn.Module, test, settings: fewshot.Settings, tasks: int,
                    permutations: int, layers: Sequence[str] | None = None, methods: Sequence[str] = METHODS,
                    seed: int = 0) -> pd.DataFrame:
    """The chance level of :func:`pre_post_similarity`: on each of the first ``tasks`` tasks of ``test``,
    each layer's activations before adaptation against those after with the data points paired at
    random (:func:`similarity.chance`, ``permutations`` permutations seeded by ``seed`` and the task)
    -> rows: layer, method, chance (the mean over the tasks of the permutations' mean), ci95 (over
    the tasks), tasks, permutations. Same shapes, same activations, no correspondence: a score is
    worth as much as it stands above this. CCA with units >= points - 1 is NaN, as in
    :func:`layer_similarity`."""
    layers = check_layers(model, model.layers if layers is None else layers)
    if not 2 <= tasks <= len(test.xs):
        raise ValueError(f"chance levels need 2..{len(test.xs)} tasks (those of the test list), got {tasks}")
    params = models.params_of(model, requires_grad=False)
    rows = []
    for t, (xs, ys, xq) in enumerate(each_task(f"{spec.name}: chance", test.xs[:tasks], test.ys[:tasks],
                                               test.xq[:tasks])):
        after = adapted_params(spec, model, params, xs, ys, settings)
        pre = layer_outputs(model, params, xq, xs, settings.bn, layers)
        post = layer_outputs(model, after, xq, xs, settings.bn, layers)
        for layer in layers:
            X, Y = similarity.conv_to_points(pre[layer]), similarity.conv_to_points(post[layer])
            for method in methods:
                undefined = method == "cca" and max(X.shape[1], Y.shape[1]) >= len(X) - 1
                value, note = (math.nan, "") if undefined else forced_as_note(
                    lambda: similarity.chance(X, Y, method, permutations, seed=seed * 100003 + t).mean)
                rows.append(dict(layer=layer, method=method, task=t, value=value, note=note))
    out = []
    for (layer, method), group in pd.DataFrame(rows).groupby(["layer", "method"], sort=False):
        mean, ci = _mean_ci(group.value.tolist())
        out.append(dict(layer=layer, method=method, chance=mean, ci95=ci, tasks=len(group), permutations=permutations,
                        note="; ".join(sorted({n for n in group.note if n}))))
    return pd.DataFrame(out)


def random_body(trained: Trained, seed: int) -> nn.Module:
    """An untrained network of ``trained``'s architecture (its spec, dataset and filters), initialised
    from ``seed``, on its device: the ANIL paper's random body (Table 8), an initialisation of its
    own rather than the one a run of the same seed started from."""
    device = next(trained.model.parameters()).device
    factory = lambda: fewshot.build_model(trained.spec, trained.dataset, trained.record["filters"])  # noqa: E731
    return models.init_model(factory, seed).to(device)


def model_similarity(model_a: nn.Module, model_b: nn.Module, test, bn: str, layers: Sequence[str],
                     methods: Sequence[str] = METHODS, too_few: str = "raise") -> pd.DataFrame:
    """A-repr / A-regime-sim (ANIL paper Tables 3, 8): similarity of two models' activations
    (their meta-initialisations: no adaptation) on the queries of each task of ``test``, per
    layer, and the mean over ``layers`` taken per task -> rows: layer (and "mean"), method,
    value, ci95, points, units, dead_a, dead_b, tasks, note. Both models must have ``layers``.
    The "mean" row's points / units are the fewest points / most units of its layers, its dead
    units the sum over them."""
    layers = check_layers(model_a, layers)
    check_layers(model_b, layers)
    if not layers:
        raise ValueError("need at least one layer to compare")
    params_a = models.params_of(model_a, requires_grad=False)
    params_b = models.params_of(model_b, requires_grad=False)
    rows = []
    for t, (xs, xq) in enumerate(each_task("two models", test.xs, test.xq)):
        acts_a = layer_outputs(model_a, params_a, xq, xs, bn, layers)
        acts_b = layer_outputs(model_b, params_b, xq, xs, bn, layers)
        task_rows = _compare_layers(acts_a, acts_b, methods, too_few)
        for method in methods:
            mine = [r for r in task_rows if r["method"] == method]
            task_rows.append(dict(layer="mean", method=method, value=sum(r["value"] for r in mine) / len(mine),
                                  points=min(r["points"] for r in mine), units=max(r["units"] for r in mine),
                                  dead_a=sum(r["dead_a"] for r in mine), dead_b=sum(r["dead_b"] for r in mine),
                                  note="; ".join(sorted({r["note"] for r in mine if r["note"]}))))
        rows += [dict(task=t, **r) for r in task_rows]
    return _summarise(pd.DataFrame(rows), ["layer", "method"])


# --------------------------------------------------------------------------- A-seeds
SEED_COMPARISONS = ("pre,pre", "pre,post", "post,pre", "post,post")


def seed_pair_similarity(spec: fewshot.Spec, model_a: nn.Module, model_b: nn.Module, test,
                         settings: fewshot.Settings, layers: Sequence[str] | None = None,
                         methods: Sequence[str] = METHODS, too_few: str = "nan") -> pd.DataFrame:
    """A-seeds (ANIL paper App. B.4, Fig. 7, 8): two models of ``spec`` trained with different
    seeds, a and b. On each task of ``test``, each layer's activations on the task's queries, of
    a and of b, before (pre) and after (post) full test-time adaptation to the task's support
    set, compared across the models -> rows per comparison "<a>,<b>" (:data:`SEED_COMPARISONS`:
    pre,pre; pre,post; post,pre; post,post), layer and method: value (mean over the T tasks),
    ci95, points, units, dead_a, dead_b, tasks, note. If adaptation changes no representation,
    all four comparisons agree."""
    layers = check_layers(model_a, model_a.layers if layers is None else layers)
    check_layers(model_b, layers)
    sides = {"a": (model_a, models.params_of(model_a, requires_grad=False)),
             "b": (model_b, models.params_of(model_b, requires_grad=False))}
    rows = []
    for t, (xs, ys, xq) in enumerate(each_task(f"{spec.name}: two seeds", test.xs, test.ys, test.xq)):
        acts = {}
        for side, (model, params) in sides.items():
            acts[side, "pre"] = layer_outputs(model, params, xq, xs, settings.bn, layers)
            acts[side, "post"] = layer_outputs(model, adapted_params(spec, model, params, xs, ys, settings), xq, xs,
                                               settings.bn, layers)
        for comparison in SEED_COMPARISONS:
            first, second = comparison.split(",")
            rows += [dict(task=t, comparison=comparison, **r)
                     for r in _compare_layers(acts["a", first], acts["b", second], methods, too_few)]
    return _summarise(pd.DataFrame(rows), ["comparison", "layer", "method"])


def seed_fits(cross: pd.DataFrame) -> pd.DataFrame:
    """A-seeds' summary (ANIL paper Fig. 7, 8): for each method and each comparison other than
    (pre, pre), the least-squares line through the body layers' points ((pre, pre) similarity on
    x, that comparison's on y) over every seed pair. On the line y = x adaptation changed no
    representation. The head is left out (adaptation is expected to change it), and so is a point
    with any comparison missing (NaN); with fewer than 3 points there is no fit.

    Args:
        cross: :func:`seed_pair_similarity` rows of several seed pairs, with a ``pair`` column
            (pair, comparison, layer, method, value).
    Returns:
        one row per fitted (method, comparison), methods in order of appearance: method,
        comparison, slope, intercept, r2 (squared Pearson r), points.
    """
    others = [c for c in SEED_COMPARISONS if c != "pre,pre"]
    wide = cross.pivot_table(index=["pair", "layer", "method"], columns="comparison", values="value").reset_index()
    fits = []
    for method in dict.fromkeys(cross.method):
        part = wide[wide.method == method]
        body = part[part.layer != "head"].dropna(subset=["pre,pre", *others])
        if len(body) < 3:
            continue
        for other in others:
            fit = scipy.stats.linregress(body["pre,pre"], body[other])
            fits.append(dict(method=method, comparison=other, slope=fit.slope, intercept=fit.intercept,
                             r2=fit.rvalue ** 2, points=len(body)))
    return pd.DataFrame(fits, columns=["method", "comparison", "slope", "intercept", "r2", "points"])
