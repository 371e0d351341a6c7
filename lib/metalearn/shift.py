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
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import torch
from PIL import Image

from . import datasets, fewshot, paths, reuse
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
