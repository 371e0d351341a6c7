"""X-shift, this study's own question: does feature reuse still hold when the test tasks differ
more from the training tasks than the papers' test tasks do?

The ANIL paper measures feature reuse on test tasks drawn like the training tasks (new classes
of the same dataset). Here the same measures (:mod:`metalearn.reuse`: the cost of freezing the
body at test time, how far each layer's weights move in adaptation, CCA / CKA before vs after
adaptation with their chance levels; ANIL against MAML; a random-body control) are taken on
test tasks that move away from training, in named steps (:data:`SHIFTS`, in order):

- ``same``: the training stage's own test tasks (new classes, same dataset);
- ``one-alphabet`` (Omniglot): each task's N classes come from one alphabet of the test
  characters, so they look alike (fine-grained);
- ``miniimagenet`` / ``omniglot``: the other dataset's test images, prepared as this dataset's
  are (:func:`metalearn.datasets.omniglot_image`, :func:`metalearn.datasets.miniimagenet_image`).

Batches are :class:`metalearn.tasks.Batch` of T image tasks (support xs [T, N*K, C, H, W],
ys [T, N*K]; queries xq, yq; task: the classes drawn [T, N, 2]).

Sinusoids (the MAML paper's regression: ``a sin(x + p)``, a in [0.1, 5], p in [0, pi], x in
[-5, 5]) shift along named axes (:func:`sine_shifts`), each in steps of a stated size: the
amplitude range moved up, the phase range moved on, the inputs moved outside the training range,
a higher frequency, and other families (the Fourier mixture of R-mix, cubics). The measures
(:func:`sine_task_measures`) are those of the images with the error relative to the signal,
MSE / mean(y^2) (0: perfect, 1: predicting 0), in place of accuracy.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image

from . import core, datasets, evaluation, fewshot, models, paths, reuse, similarity, tasks
from .datasets import EpisodeSampler
from .tasks import Batch

#: the shifts of each training dataset, from none to another dataset
SHIFTS = {"omniglot": ("same", "one-alphabet", "miniimagenet"), "miniimagenet": ("same", "omniglot")}


def as_omniglot(images: np.ndarray, size: int = 28, resample: str = "lanczos") -> np.ndarray:
    """MiniImageNet-like images uint8 [C, M, H, W, 3] prepared as Omniglot is (grey, ``size``
    square, inverted; :func:`datasets.omniglot_image`) -> uint8 [C, M, size, size]."""
    return np.stack([np.stack([datasets.omniglot_image(Image.fromarray(image), size, resample) for image in row])
                     for row in images])


def as_miniimagenet(images: np.ndarray, image_size: int = 84, resample: str = "lanczos") -> np.ndarray:
    """Prepared Omniglot drawings uint8 [C, M, H, W] (ink 255 on 0) as MiniImageNet holds its
    images: black ink on white again, RGB, ``image_size`` square (:func:`datasets.miniimagenet_image`)
    -> uint8 [C, M, image_size, image_size, 3]."""
    return np.stack([np.stack([datasets.miniimagenet_image(Image.fromarray(255 - image), image_size, resample)
                               for image in row]) for row in images])


def one_alphabet_tasks(images: torch.Tensor, classes: torch.Tensor, alphabets: np.ndarray, spec: fewshot.Spec,
                       n_tasks: int, queries: int, seed: int) -> Batch:
    """``n_tasks`` N-way K-shot tasks whose N classes all come from one alphabet: for each task
    an alphabet is drawn uniformly among those with at least N of ``classes``, then the task
    from its classes alone (:class:`datasets.EpisodeSampler`), all from one generator seeded
    with ``seed``.

    Args:
        images: uint8 [characters, drawings, H, W]; classes: [M, 2] (character, quarter turns),
            e.g. the test classes of :func:`datasets.omniglot_split`; alphabets: each
            character's alphabet [characters].
    Raises:
        ValueError: no alphabet has N classes.
    """
    names = np.asarray(alphabets)[classes[:, 0].numpy()]
    groups = {a: classes[torch.from_numpy(names == a)] for a in dict.fromkeys(names.tolist())}
    eligible = [a for a, members in groups.items() if len(members) >= spec.n_way]
    if not eligible:
        raise ValueError(f"no alphabet has {spec.n_way} classes among the {len(classes)} given")
    generator = torch.Generator().manual_seed(seed)
    samplers = {a: EpisodeSampler(images, groups[a], spec.n_way, spec.k_shot, queries) for a in eligible}
    tasks = [samplers[eligible[int(torch.randint(len(eligible), (1,), generator=generator))]].batch(1, generator)
             for _ in range(n_tasks)]
    return Batch(*(torch.cat(parts) for parts in zip(*tasks)))


@functools.lru_cache(maxsize=2)
def _prepared(dataset: str) -> dict[str, np.ndarray]:
    return datasets.load(paths.input(f"data/prepared/{dataset}.npz"))


def shifted_tasks(case: reuse.Case, shift: str, n_tasks: int) -> tuple[Batch, str]:
    """The first ``n_tasks`` test tasks of ``case``'s setting under ``shift`` (one of
    :data:`SHIFTS` for its dataset), with the case's queries per class and test seed, and a
    description of their data. ``same`` is the training stage's own test list."""
    dataset, spec, seed, queries = case.trained.dataset, case.trained.spec, case.seed, case.queries
    if shift not in SHIFTS[dataset]:
        raise ValueError(f"shift {shift!r} is none of {SHIFTS[dataset]} for {dataset}")
    if shift == "same":
        return Batch(*(t[:n_tasks] for t in case.test)), case.data
    if shift == "one-alphabet":
        data = _prepared("omniglot")
        classes = datasets.omniglot_split(data, case.trained.identity.get("split", "maml"), seed=1)["test"]
        return (one_alphabet_tasks(torch.from_numpy(data["images"]), classes, data["alphabets"], spec, n_tasks,
                                   queries, seed + 2000),
                f"{case.data}; each task's classes from one alphabet")
    if shift == "miniimagenet":  # an Omniglot model on MiniImageNet's test images
        pool, convert = torch.from_numpy(_prepared("miniimagenet")["test_images"]), as_omniglot
        description = "MiniImageNet test images (20 classes x 100) as Omniglot: grey, 28x28, inverted"
    else:  # a MiniImageNet model on Omniglot's test characters, unrotated
        data = _prepared("omniglot")
        characters = datasets.omniglot_split(data, "maml", seed=1)["test"][:, 0].unique()
        pool, convert = torch.from_numpy(data["images"][characters.numpy()]), as_miniimagenet
        description = (f"Omniglot test characters ({len(characters)} x 20 drawings, maml split, unrotated) as "
                       "MiniImageNet: black on white, RGB, 84x84")
    episodes = fewshot.episode_factory({"test": pool}, None, seed)
    return converted(fewshot.test_episodes(episodes, spec, n_tasks, queries, seed), convert), description


def converted(batch: Batch, convert) -> Batch:
    """``batch`` with each of its images passed through ``convert`` (:func:`as_omniglot` or
    :func:`as_miniimagenet`, uint8 [T, n, H, W(, 3)] -> uint8 [T, n, H', W'(, 3)]): the tasks drawn
    from the images as they are, then prepared as the other dataset's, the same tasks as drawing
    from the whole pool converted first (the draws depend only on the pool's shape), converting
    only the images drawn."""
    def images(x: torch.Tensor) -> torch.Tensor:  # float [T, n, C, H, W] in [0, 1], as the sampler gives
        raw = (x * 255).round().to(torch.uint8)
        raw = raw[:, :, 0] if raw.shape[2] == 1 else raw.permute(0, 1, 3, 4, 2)
        out = torch.from_numpy(convert(raw.numpy()))
        out = out[:, :, None] if out.dim() == 4 else out.permute(0, 1, 4, 2, 3)
        return out.float().div_(255)
    return batch._replace(xs=images(batch.xs), xq=images(batch.xq))


def reuse_measures(case: reuse.Case, test: Batch, methods=reuse.METHODS, chance_tasks: int = 5,
                   permutations: int = 5) -> pd.DataFrame:
    """The feature-reuse measures of ``case``'s (MAML-family) model on the tasks ``test``, each with
    its 95% CI over the tasks -> rows measure, layer, method, value, ci95:

    - ``accuracy``: test accuracy (%) after full adaptation;
    - ``freeze cost``: that minus the accuracy with the whole body frozen (only the head adapts),
      paired over the tasks (:func:`reuse.freeze_accuracy`);
    - ``relative movement``: per layer, ||theta - theta'|| / ||theta|| in adaptation
      (:func:`reuse.weight_distances`);
    - ``similarity`` and ``chance``: per layer and method, before vs after adaptation
      (:func:`reuse.pre_post_similarity`) and its chance level on the first ``chance_tasks``
      tasks (:func:`reuse.pre_post_chance`).
    """
    spec, model, settings = case.trained.spec, case.trained.model, case.settings
    frozen = reuse.freeze_accuracy(spec, model, test, settings, ["none", "1-4"]).set_index("frozen")
    rows = [dict(measure="accuracy", layer="", method="", value=frozen.accuracy["none"], ci95=frozen.ci95["none"]),
            dict(measure="freeze cost", layer="body", method="", value=frozen.cost["1-4"],
                 ci95=frozen.cost_ci95["1-4"])]
    for r in reuse.weight_distances(spec, model, test, settings).itertuples():
        rows.append(dict(measure="relative movement", layer=r.layer, method="", value=r.relative, ci95=r.relative_ci95))
    for r in reuse.pre_post_similarity(spec, model, test, settings, methods=methods).itertuples():
        rows.append(dict(measure="similarity", layer=r.layer, method=r.method, value=r.value, ci95=r.ci95))
    chance = reuse.pre_post_chance(spec, model, test, settings, min(chance_tasks, len(test.xs)), permutations,
                                   methods=methods)
    for r in chance.itertuples():
        rows.append(dict(measure="chance", layer=r.layer, method=r.method, value=r.chance, ci95=r.ci95))
    return pd.DataFrame(rows, columns=["measure", "layer", "method", "value", "ci95"])


def task_scores(case: reuse.Case, test: Batch) -> pd.DataFrame:
    """Per-task accuracy (%) of ``case``'s model on ``test`` (:func:`fewshot.test_scores`) -> one
    row per task: ``adapt`` after its test-time adaptation, ``nil`` with the NIL head (no
    adaptation: the control of :mod:`metalearn.claims` is a random body's NIL head)."""
    scores = fewshot.test_scores(case.trained.spec, case.trained.model, case.settings, test, every_step=False)
    return pd.DataFrame({"adapt": scores[f"adapt@{case.settings.test_steps}"].astype(np.float64),
                         "nil": scores["nil"].astype(np.float64)})


# --- sinusoids ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShiftedSine(tasks.SineFamily):
    """:class:`tasks.SineFamily` at angular frequency ``frequency``: ``a sin(w x + p)`` (and the
    Fourier mixture's second term at w x / 3); w = 1 is the family itself."""

    frequency: float = 1.0

    def __call__(self, task: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return super().__call__(task, self.frequency * x)


@dataclass(frozen=True)
class CubicFamily(tasks.SineFamily):
    """Cubics ``sum_i c_i (x / 5)^i``, i = 0..3, each c_i uniform in [-coefficient, coefficient]
    (about the sinusoids' spread of values on [-5, 5]); tasks [T, 4] are the coefficients."""

    coefficient: float = 2.5

    def sample_tasks(self, n_tasks: int, gen: torch.Generator) -> torch.Tensor:
        return (torch.rand(n_tasks, 4, generator=gen) * 2 - 1) * self.coefficient

    def __call__(self, task: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        u = x / 5
        return sum(task[:, i, None, None] * u ** i for i in range(4))


def sine_shifts(family: tasks.SineFamily) -> dict[str, list[tuple[float | str, tasks.SineFamily]]]:
    """The shifts of the training ``family`` (sinusoids, frequency 1), by axis -> [(distance,
    family)], the first of each axis ``family`` itself (distance 0, or its name):

    - ``amplitude``: the amplitude range moved up by 0, 2.5, 5, 10;
    - ``phase``: the phase range moved on by 0, pi/4, pi/2, pi (pi: disjoint from training);
    - ``inputs``: x drawn from the range moved by 0, 5, 10, 20 (the same functions, met where
      the network never saw inputs);
    - ``frequency``: w = 1, 1.25, 1.5, 2;
    - ``family``: sine, the Fourier mixture of R-mix (``a sin(x + p) + 3a sin(x / 3 + p)``), cubics.
    """
    base = ShiftedSine(family.amplitude, family.phase, family.x_range)
    (a_low, a_high), (p_low, p_high), (x_low, x_high) = family.amplitude, family.phase, family.x_range
    return {
        "amplitude": [(d, replace(base, amplitude=(a_low + d, a_high + d))) for d in (0.0, 2.5, 5.0, 10.0)],
        "phase": [(d, replace(base, phase=(p_low + d, p_high + d))) for d in (0.0, math.pi / 4, math.pi / 2, math.pi)],
        "inputs": [(d, replace(base, x_range=(x_low + d, x_high + d))) for d in (0.0, 5.0, 10.0, 20.0)],
        "frequency": [(w, replace(base, frequency=w)) for w in (1.0, 1.25, 1.5, 2.0)],
        "family": [("sine", base), ("fourier", replace(base, fourier=True)),
                   ("cubic", CubicFamily(family.amplitude, family.phase, family.x_range))],
    }


class SineModel(NamedTuple):
    """A model the ``sine_maml`` stage trained: the network, its parameters, and its record's identity
    (how it was trained: hidden sizes, K, inner steps and step size, iterations, ...)."""

    net: models.Net
    params: models.Params
    identity: dict


def sine_model(run: str, stage: str = "sine_maml") -> SineModel:
    """``stage``'s trained ``run`` (``maml``, ``anil``) as it recorded it (data/models/<stage>/<run>.json
    and .pt, :func:`metalearn.training.reuse_or_train`).

    Raises:
        FileNotFoundError: the stage has not trained ``run`` (run it first).
    """
    record = paths.input(f"data/models/{stage}/{run}.json")
    if not record.exists():
        raise FileNotFoundError(f"{record} is missing: run the {stage} stage first (dvc repro {stage})")
    identity = json.loads(record.read_text())["identity"]
    net = models.mlp([1, *identity["hidden"], 1])
    net.load_state_dict(torch.load(paths.input(f"data/models/{stage}/{run}.pt"), weights_only=True))
    return SineModel(net, models.params_of(net, requires_grad=False), identity)


def relative_error(prediction: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each task's MSE over the signal's mean square across all the tasks, predictions and
    targets [T, Q, 1] -> [T]: 0 is a perfect fit, about 1 what predicting 0 scores. (One scale for
    all the tasks of a shift: a task's own mean square would let its smallest amplitudes dominate.)"""
    return ((prediction - y) ** 2).mean((1, 2)) / (y ** 2).mean()


def adapted(net: models.Net, params: models.Params, xs: torch.Tensor, ys: torch.Tensor,
            inner: core.InnerLoop) -> models.Params:
    """``params`` after ``inner`` on each task's support set (xs, ys [T, K, 1]) -> {name: [T, ...]},
    tasks under ``torch.vmap`` (an MLP: no batch norm), no graph kept."""
    params = {k: v.detach() for k, v in params.items()}

    def one_task(x, y):
        out = params
        for out in core.adapt_path(net, params, x, y, inner):
            pass
        return {k: v.detach() for k, v in out.items()}
    return torch.func.vmap(one_task)(xs, ys)


def sine_task_measures(net: models.Net, maml: models.Params, anil: models.Params, control: models.Params,
                       batch: Batch, steps: int, lr: float, chance_tasks: int = 0,
                       permutations: int = 10) -> pd.DataFrame:
    """Per-task feature-reuse measures of the MLP ``net`` on the tasks ``batch`` (support
    [T, K, 1], queries [T, Q, 1]), each adapting ``steps`` SGD steps of size ``lr`` on its support
    set -> one row per task:

    - ``maml``, ``frozen``, ``anil``, ``control``: the error relative to the signal on the
      queries (:func:`relative_error`) of MAML's parameters adapted whole, MAML's with the body
      frozen (only the head adapts), ANIL's (its head adapts, as in training), and an untrained
      network's adapted whole (inf where an adaptation diverged);
    - ``moved <layer>``: ||theta' - theta|| / ||theta|| of each layer's weight and bias in MAML's
      adaptation (:func:`reuse.weight_distance`);
    - ``cka <layer>``: linear CKA of each body layer's activations on the queries, before vs after
      MAML's adaptation; ``chance <layer>``: its chance level (the points re-paired at random,
      ``permutations`` times, :func:`similarity.chance`) on the first ``chance_tasks`` tasks, NaN
      on the others; NaN where the adaptation diverged or left a layer constant over the queries
      (every unit dead).
    """
    whole, head = (core.inner_loop(algorithm, maml, steps, lr) for algorithm in ("maml", "anil"))
    after = {"maml": adapted(net, maml, batch.xs, batch.ys, whole), "frozen": adapted(net, maml, batch.xs, batch.ys, head),
             "anil": adapted(net, anil, batch.xs, batch.ys, head),
             "control": adapted(net, control, batch.xs, batch.ys, whole)}
    with torch.no_grad():
        errors = {role: relative_error(torch.func.vmap(lambda p, x: models.forward(net, p, x))(params, batch.xq), batch.yq)
                  for role, params in after.items()}
    body = [layer for layer in net.layers if layer != "head"]
    rows = []
    for t, xq in enumerate(batch.xq):
        row = {role: float(e[t].nan_to_num(math.inf)) for role, e in errors.items()}
        task = {k: v[t] for k, v in after["maml"].items()}
        row.update({f"moved {layer}": distance / norm
                    for layer, (distance, norm) in reuse.weight_distance(maml, task, net.layers).items()})
        finite = all(torch.isfinite(v).all() for v in task.values())
        with torch.no_grad():
            pre, post = models.activations(net, maml, xq, body), models.activations(net, task, xq, body)
        for layer in body:
            comparable = finite and bool(post[layer].std(0).gt(0).any() and pre[layer].std(0).gt(0).any())
            row[f"cka {layer}"] = similarity.compare(pre[layer], post[layer], "cka").value if comparable else math.nan
            row[f"chance {layer}"] = (similarity.chance(pre[layer], post[layer], "cka", permutations).mean
                                      if comparable and t < chance_tasks else math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def sine_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """:func:`sine_task_measures`'s rows summarised over the tasks, each with its 95% CI -> rows
    measure, layer, value, ci95: ``relative error`` of each method, ``freeze cost`` (frozen -
    maml) and ``anil - maml``, paired over the tasks, ``relative movement``, ``cka`` and its
    ``chance`` level per layer (over the tasks that have it)."""
    out = [dict(measure="relative error", layer=role, **dict(zip(("value", "ci95"), evaluation.mean_ci95(scores[role]))))
           for role in ("maml", "frozen", "anil", "control")]
    for measure, a, b in (("freeze cost", "frozen", "maml"), ("anil - maml", "anil", "maml")):
        value, ci = evaluation.mean_ci95(scores[a].to_numpy() - scores[b].to_numpy())
        out.append(dict(measure=measure, layer="", value=value, ci95=ci))
    for column in scores.columns:
        kind, _, layer = column.partition(" ")
        if kind in ("moved", "cka", "chance") and scores[column].notna().any():
            value, ci = evaluation.mean_ci95(scores[column].dropna())
            out.append(dict(measure={"moved": "relative movement"}.get(kind, kind), layer=layer, value=value, ci95=ci))
    return pd.DataFrame(out, columns=["measure", "layer", "value", "ci95"])


