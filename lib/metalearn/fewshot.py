"""Few-shot image classification runs: what to train, training, and test-time evaluation.

A run is named ``[<init>+]<algorithm>-<model>-<N>w<K>s``, e.g. ``maml-conv-20w1s`` or
``multiclass+reptile-conv-5w1s`` (:class:`Spec`):

============  =============================================================
algorithm     training
============  =============================================================
maml          second-order MAML, inner loop on every parameter
fomaml        first-order MAML
anil          ANIL: the inner loop adapts the head only (second order)
head          the body is frozen; only the head is meta-trained (ANIL's inner
              loop): the ANIL paper's "MAML head" on a body trained otherwise
random        random features: ``head`` on the body's random initialisation
reptile       Reptile: an inner optimiser (Adam, beta1 0) on each task's training
              shots, then ``theta += eps * mean(phi - theta)`` (no query split)
reptilesgd    Reptile with plain SGD as its inner optimiser (Reptile review, Table 3)
============  =============================================================

``<init>`` first trains the body by a regime without an inner loop
(:mod:`metalearn.regimes`: ``multiclass``, ``multitask``, ``niltrain``), throws its head
away, and hands the network to ``head`` (ANIL paper Tables 5, 7) or ``reptile``
(Reptile review Table 5).

Models: ``conv`` (the papers' Conv4, :func:`models.conv4`) or ``mlp`` (the MAML
paper's 256-128-64-64 network, Omniglot only). Every run of a dataset draws its
training tasks from its own ``torch.Generator`` (resumable, see :mod:`training`)
and is tested on one fixed, seeded list of test episodes per N-way K-shot setting.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from . import batched, core, datasets, distributed, models, paths, regimes, store, training
from .core import InnerOptimizer, class_sum_cross_entropy, cross_entropy, meta_loss
from .datasets import EpisodeSampler
from .evaluation import NUMERICS, few_shot, few_shot_optimized
from .params import Choice, Float, Int, List, Str, require
from .tasks import Batch

REPTILE = {"reptile": "adam", "reptilesgd": "sgd"}  # Reptile's algorithms, by their inner optimiser
ALGORITHMS = ("maml", "fomaml", "anil", "head", "random", *REPTILE)
HEAD_ONLY = ("head", "random")  # the body stays as it starts; the head is meta-trained
INITIALISED = ("head", *REPTILE)  # the algorithms that may start from a pre-trained body
MODELS = ("conv", "mlp")
DATASETS = {  # input channels, image side, Conv4 filters, strided (Omniglot) or max-pooled
    "omniglot": dict(channels=1, image_size=28, strided=True),
    "miniimagenet": dict(channels=3, image_size=84, strided=False),
}
_NAME = re.compile(r"^(?:([a-z]+)\+)?([a-z]+)-([a-z]+)-(\d+)w(\d+)s$")


@dataclass(frozen=True)
class Spec:
    """One run: ``algorithm`` on ``model`` for ``n_way``-way ``k_shot``-shot tasks, from a
    body pre-trained by the regime ``init`` (None: from the seeded initialisation)."""

    algorithm: str
    model: str
    n_way: int
    k_shot: int
    init: str | None = None

    @classmethod
    def parse(cls, name: str) -> "Spec":
        """``"anil-conv-20w1s"`` -> Spec('anil', 'conv', 20, 1); ``"multiclass+head-conv-5w1s"``
        -> Spec('head', 'conv', 5, 1, init='multiclass'); a clear error otherwise."""
        match = _NAME.match(name)
        if not match:
            raise ValueError(f"run {name!r} is not '[<init>+]<algorithm>-<model>-<N>w<K>s', e.g. 'maml-conv-5w1s' "
                             "or 'multiclass+reptile-conv-5w1s'")
        init, algorithm, model, n_way, k_shot = match.groups()
        if algorithm not in ALGORITHMS:
            raise ValueError(f"run {name!r}: unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}")
        if init is not None and init not in regimes.REGIMES:
            raise ValueError(f"run {name!r}: unknown pre-training {init!r}; choose one of {regimes.REGIMES}")
        if init is not None and algorithm not in INITIALISED:
            raise ValueError(f"run {name!r}: a pre-trained body goes to one of {INITIALISED}, not {algorithm!r}")
        if model not in MODELS:
            raise ValueError(f"run {name!r}: unknown model {model!r}; choose one of {MODELS}")
        if int(n_way) < 2 or int(k_shot) < 1:
            raise ValueError(f"run {name!r}: need at least 2 ways and 1 shot")
        return cls(algorithm, model, int(n_way), int(k_shot), init)

    @property
    def name(self) -> str:
        return f"{self.init + '+' if self.init else ''}{self.algorithm}-{self.model}-{self.setting}"

    @property
    def reptile(self) -> bool:
        """Whether the run trains with Reptile (inner Adam, or inner SGD for ``reptilesgd``)."""
        return self.algorithm in REPTILE

    @property
    def regime(self) -> str:
        """What trained the body: the pre-training regime, else the algorithm."""
        return self.init or self.algorithm

    @property
    def setting(self) -> str:
        return f"{self.n_way}w{self.k_shot}s"


@dataclass(frozen=True)
class Settings:
    """Hyperparameters of one run (the notebook picks them per dataset and N-way).

    MAML family: ``meta_batch`` tasks per iteration, ``inner_steps`` SGD steps of
    ``inner_lr``, Adam with ``meta_lr``; ``train_queries`` query images per class.
    Reptile: ``inner_steps`` steps of its inner optimiser (:func:`reptile_optimizer`, step
    ``inner_lr``) on minibatches of ``inner_batch`` from ``train_shots`` images per class, outer
    step ``meta_step`` annealed linearly to 0. Test: ``test_steps`` adaptation steps (Reptile: of its
    inner optimiser on the support set). ``bn``: batch-norm mode (:func:`core.predict`).
    Pre-training (runs with an ``init``): ``pretrain_iterations`` Adam steps of size
    ``meta_lr``, each on ``pretrain_batch`` images (multiclass) or ``meta_batch`` tasks
    (multitask, niltrain).
    """

    iterations: int
    meta_batch: int
    inner_steps: int
    inner_lr: float
    test_steps: int
    meta_lr: float = 0.001
    train_queries: int = 1
    bn: str = "transductive"
    inner_batch: int = 10
    train_shots: int = 10
    meta_step: float = 1.0
    val_every: int = 100
    checkpoint_every: int = 200
    pretrain_iterations: int = 0
    pretrain_batch: int = 32


#: how a MAML-family meta-batch can run its tasks in training: the meta-loss's paths (:data:`core.PATHS`)
#: and ``"graph"``: the batched path with the whole meta-iteration captured as a CUDA graph and replayed
#: (:class:`batched.CapturedStep`; CUDA only)
TRAINING_PATHS = (*core.PATHS, "graph")

#: how the image-training notebooks check their parameters (:func:`metalearn.params.check`), by group:
#: every training stage; one set of step settings for every run (the Omniglot stages name theirs per N-way);
#: Reptile and pre-training; a stage over seeds
RUN_PARAMETERS = dict(
    threads=Int(min=1), workers=Int(min=1), path=Choice(*TRAINING_PATHS), device=Choice("cpu", "cuda"),
    bn=Choice("transductive", "inductive"), filters=Int(min=1), runs=List(Str(Spec.parse), unique=True),
    meta_lr=Float(min=0, strict=True), n_val_tasks=Int(min=1), val_every=Int(min=1), n_test_tasks=Int(min=2),
    test_queries=Int(min=1), checkpoint_every=Int(min=1))
STEP_PARAMETERS = dict(iterations=Int(min=1), inner_steps=Int(min=1), inner_lr=Float(min=0, strict=True),
                       test_steps=Int(min=1))
REPTILE_PARAMETERS = dict(
    reptile_iterations=Int(min=1), reptile_meta_batch=Int(min=1), reptile_inner_steps=Int(min=1),
    reptile_inner_lr=Float(min=0, strict=True), reptile_sgd_inner_lr=Float(min=0, strict=True),
    reptile_inner_batch=Int(min=1), reptile_train_shots=Int(min=1), reptile_meta_step=Float(min=0, strict=True),
    reptile_test_steps=Int(min=1), pretrain_iterations=Int(min=1), pretrain_batch=Int(min=1))
SEEDS_PARAMETERS = dict(seeds=List(Int(min=0), unique=True), test_seed=Int(min=0))
PREPARED = ("miniimagenet", "miniimagenet_full_train")  # the prepared MiniImageNet copies (datasets.prepare_*)


def reptile_settings(spec: Spec, p, **common) -> Settings:
    """A Reptile run's settings from a training stage's parameters ``p`` (:data:`REPTILE_PARAMETERS`,
    as attributes): its inner step ``reptile_inner_lr`` (inner Adam) or ``reptile_sgd_inner_lr``
    (``reptilesgd``); ``common``: the stage's other :class:`Settings` (meta_lr, bn, ...)."""
    lr = p.reptile_sgd_inner_lr if REPTILE[spec.algorithm] == "sgd" else p.reptile_inner_lr
    return Settings(p.reptile_iterations, p.reptile_meta_batch, p.reptile_inner_steps, lr, p.reptile_test_steps,
                    inner_batch=p.reptile_inner_batch, train_shots=p.reptile_train_shots, meta_step=p.reptile_meta_step,
                    **common)


def require_seed_runs(seeds: Sequence[int], runs: Sequence[Spec]) -> None:
    """Stop a stage over seeds whose ``seeds`` or ``runs`` it cannot compare (ParameterError naming which):
    at least two seeds, and MAML-family conv runs trained from scratch."""
    require(len(seeds) >= 2, "seeds", "needs at least two seeds: the stage compares and averages across them")
    for spec in runs:
        require(spec.model == "conv" and spec.init is None and spec.algorithm in ("maml", "fomaml", "anil"), "runs",
                f"has {spec.name}: this stage trains MAML-family conv runs from scratch (maml, fomaml, anil)")


class Images(NamedTuple):
    """A prepared dataset as the training stages use it (:func:`load_images`)."""

    images: Tensor | dict[str, Tensor]  # Omniglot: one uint8 tensor [characters, drawings, ...]; MiniImageNet: one per split
    classes: dict[str, Tensor] | None   # Omniglot: each split's class indices; MiniImageNet: None (a tensor per split)
    description: str                    # how results name the data (their scale)
    fingerprint: str                    # the data's identity in the records of what is trained and tested on it


def load_images(dataset: str, device: str, split: str = "maml", prepared: str = "miniimagenet") -> Images:
    """The prepared ``dataset`` (``omniglot``: ``data/prepared/omniglot.npz`` with the character ``split``,
    ``maml`` or ``official``; ``miniimagenet``: the copy ``data/prepared/<prepared>.npz``) on ``device``."""
    if dataset == "omniglot":
        data = datasets.load(paths.input("data/prepared/omniglot.npz"))
        images = torch.from_numpy(data["images"]).to(device)
        return Images(images, datasets.omniglot_split(data, split, seed=1),
                      f"Omniglot ({len(images)} characters x 20 drawings, 28x28, {split} split, x4 rotations)",
                      datasets.fingerprint(data))
    if dataset == "miniimagenet":
        require(prepared in PREPARED, "prepared", f"is {prepared!r}, not one of {PREPARED}")
        data = datasets.load(paths.input(f"data/prepared/{prepared}.npz"))
        return Images({split: torch.from_numpy(data[f"{split}_images"]).to(device) for split in ("train", "val", "test")},
                      None, datasets.describe_miniimagenet(data), datasets.fingerprint(data))
    raise ValueError(f"dataset {dataset!r} is none of {tuple(DATASETS)}")


def require_enough_images(images: Images, runs: Sequence[Spec], train_queries: int | None, test_queries: int,
                          reptile_train_shots: int = 0) -> None:
    """Stop a stage (ParameterError about ``runs``) whose episodes would need more classes than a
    split has (N ways), or more images per class: in training K shots and ``train_queries`` queries
    (None: K, as MAML's Omniglot code), or Reptile's ``reptile_train_shots`` + 1; in validation and
    test K shots + ``test_queries``."""
    pools = images.images if isinstance(images.images, dict) else dict.fromkeys(("train", "val", "test"), images.images)
    per_class = {split: pool.shape[1] for split, pool in pools.items()}
    n_classes = {split: len(images.classes[split]) if images.classes else len(pool) for split, pool in pools.items()}
    for spec in runs:
        require(spec.n_way <= min(n_classes.values()), "runs",
                f"has {spec.name}: {spec.n_way} ways, but a split has fewer classes ({n_classes})")
        train = (reptile_train_shots + 1 if spec.reptile
                 else spec.k_shot + (spec.k_shot if train_queries is None else train_queries))
        require(train <= per_class["train"] and spec.k_shot + test_queries <= min(per_class["val"], per_class["test"]),
                "runs", f"has {spec.name}: shots plus queries exceed the images per class of a split ({per_class})")


def build_model(spec: Spec, dataset: str, filters: int) -> models.Net:
    """The run's network for ``dataset`` (``omniglot`` or ``miniimagenet``)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    shape = DATASETS[dataset]
    if spec.model == "mlp":
        if dataset != "omniglot":
            raise ValueError(f"run {spec.name}: the non-conv MLP is defined for Omniglot only")
        return models.bn_mlp([shape["image_size"] ** 2, 256, 128, 64, 64, spec.n_way])
    return models.conv4(spec.n_way, shape["channels"], filters, shape["image_size"], shape["strided"])


def inner_loop(spec: Spec, params: models.Params, steps: int, lr: float, layers: Sequence[str] = (),
               frozen: Sequence[str] = ()) -> core.InnerLoop:
    """The MAML-family inner loop of the run (head-only runs adapt the head, as ANIL), with the
    ``frozen`` layers (names among the model's ``layers``) left as they are: the one place that
    says what a run adapts, in training, at test time and in the freezing analysis."""
    algorithm = "anil" if spec.algorithm in HEAD_ONLY else "maml" if spec.reptile else spec.algorithm
    if not frozen:
        return core.inner_loop(algorithm, params, steps, lr)
    unknown = [layer for layer in frozen if layer not in layers]
    if unknown:
        raise ValueError(f"cannot freeze {unknown}: the model's layers are {list(layers)}")
    keep = [layer for layer in layers if layer not in frozen]
    return core.inner_loop("anil" if algorithm == "anil" else "maml", params, steps, lr, adapt_layers=keep)


def loss_of(spec: Spec) -> core.LossFn:
    """The training loss of the run: the MAML code's :func:`core.class_sum_cross_entropy` for
    the MAML family (its step sizes refer to it), the mean cross-entropy for Reptile (as in
    the Reptile code: its Adam inner loop is insensitive to the loss's scale, and the review's
    SGD step size refers to the mean)."""
    return cross_entropy if spec.reptile else class_sum_cross_entropy


def reptile_optimizer(spec: Spec, settings: Settings) -> InnerOptimizer:
    """Reptile's inner optimiser, of step size ``settings.inner_lr``: Adam with beta1 = 0 (Nichol
    et al.), or plain SGD for ``reptilesgd`` (the review's variant on Omniglot, Sec. 6.4.1)."""
    return InnerOptimizer(REPTILE[spec.algorithm], lr=settings.inner_lr, beta1=0.0, beta2=0.999)


def train(spec: Spec, model: models.Net, sampler: EpisodeSampler, val: Batch, settings: Settings,
          seed: int, stage: str, config: dict, snapshots: Sequence[int] = (), suffix: str = "",
          workers: int = 1, work_dir: Path | None = None, path: str = "loop") -> list[dict]:
    """Train ``model`` in place as ``spec`` says; resumable. Returns the history.

    ``sampler`` draws training episodes (its ``k_shot``/``n_query`` are the training
    shots and queries); ``val`` is a fixed batch of validation tasks, scored every
    ``val_every`` iterations after test-time adaptation (``val_loss``, ``val_accuracy``).
    ``config`` (with the spec and settings) keys the checkpoint in ``data/work``
    (:func:`checkpoint_identity`: a MAML-family run given more iterations continues the
    checkpoint of the same run trained for fewer, and ends with the weights of one trained
    that long at once).
    A run with an ``init`` first pre-trains the body (:func:`regimes.pretrain`, on the same
    sampler; multiclass pre-training is shared by every run of the stage with that model).
    ``snapshots``: iterations after which a copy of the weights is kept (in the run's state, so
    a killed run keeps them) and finally written to ``data/models/<stage>/<run>@<iteration>.pt``
    (A-early). ``suffix`` tells apart runs of one spec in a stage (e.g. ``"-seed1"``): the run is
    named ``<stage>-<spec.name><suffix>``. ``workers``: ranks that share each meta-batch's tasks
    (:func:`distributed.run_ranks`; pre-training runs in one process). ``work_dir``: where the
    meta-training checkpoint goes (default :data:`paths.WORK`; pre-training keeps its own there).
    ``path``: how a MAML-family meta-batch runs its tasks (:func:`meta_path`).
    """
    snapshots = sorted(set(snapshots))
    if any(not 1 <= i <= settings.iterations for i in snapshots):
        raise ValueError(f"run {spec.name}: snapshots {snapshots} must lie in 1..{settings.iterations} (its iterations)")
    if spec.init:
        if settings.pretrain_iterations < 1:
            raise ValueError(f"run {spec.name}: pre-training needs pretrain_iterations >= 1")
        episodic = "" if spec.init == "multiclass" else f"-{spec.setting}"
        batch = settings.pretrain_batch if spec.init == "multiclass" else settings.meta_batch
        regimes.pretrain(spec.init, model, sampler, settings.pretrain_iterations, batch,
                         settings.meta_lr, seed, f"{stage}-{spec.init}-{spec.model}{episodic}",
                         {**config, "model": spec.model}, bn=settings.bn, checkpoint_every=settings.checkpoint_every,
                         log_every=settings.val_every)
    path = meta_path(spec, model, settings, path)
    name, key = run_identity(spec, settings, seed, stage, config, snapshots, suffix, workers, path)
    params = dict(model.named_parameters())
    trainable = model.head.parameters() if spec.algorithm in HEAD_ONLY else model.parameters()
    optimizer = None if spec.reptile else torch.optim.Adam(trainable, lr=settings.meta_lr, capturable=path == "graph")
    if spec.reptile:
        if sampler.k_shot != settings.train_shots:
            raise ValueError(f"run {spec.name}: Reptile trains on {settings.train_shots} shots per class, but "
                             f"the sampler draws {sampler.k_shot}")
        opt = reptile_optimizer(spec, settings)
        n_train = spec.n_way * settings.train_shots

        def sample(gen):
            batch = sampler.batch(settings.meta_batch, gen)
            order = torch.rand(settings.meta_batch, settings.inner_steps, n_train, generator=gen).argsort(-1)
            return [(x, y, idx[:, :settings.inner_batch]) for x, y, idx in zip(batch.xs, batch.ys, order)]

        def update(run, group):
            eps = settings.meta_step * (1 - run.iteration / settings.iterations)
            return training.reptile_step(run, sample, opt, eps, keep_state=False, loss_fn=loss_of(spec), group=group)
        test_inner = None
    else:
        train_inner = inner_loop(spec, params, settings.inner_steps, settings.inner_lr)
        test_inner = train_inner

        captured = batched.CapturedStep(model, optimizer, train_inner, loss_of(spec)) if path == "graph" else None

        def update(run, group):
            return training.maml_step(run, lambda gen: sampler.batch(settings.meta_batch, gen), train_inner,
                                      loss_of(spec), bn=settings.bn, group=group, path=path, captured=captured)

    def loop(group: distributed.Group | None) -> tuple[list[dict], dict]:
        writes = group is None or group.writes
        run = training.Run(name, checkpoint_identity(spec, key), model, seed, optimizer, settings.checkpoint_every,
                           work_dir, writes=writes)
        lost = [i for i in snapshots if i <= run.iteration and i not in run.extra.get("snapshots", {})]
        if lost:
            raise ValueError(f"run {spec.name}{suffix} continues its checkpoint {run.path} at iteration {run.iteration}, "
                             f"which did not keep the weights after iterations {lost}: delete the checkpoint to "
                             "train again from the start")
        if writes:
            training.cleanup_stale(name, run.path, work_dir)
            if run.resumed_from:
                print(f"{spec.name}: resuming at iteration {run.resumed_from}")

        def step(run):
            metrics = update(run, group)
            if run.iteration + 1 in snapshots:
                run.extra.setdefault("snapshots", {})[run.iteration + 1] = {
                    k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            # every rank validates (the others would wait for rank 0 anyway): equal histories everywhere
            if (run.iteration + 1) % settings.val_every == 0 or run.iteration + 1 == settings.iterations:
                metrics.update(validate(spec, model, val, settings, test_inner))
            return metrics

        return (run.train(settings.iterations, step, log_every=settings.val_every, desc=spec.name + suffix),
                run.extra.get("snapshots", {}))

    history, kept = distributed.run_ranks(workers, loop)
    for iteration in snapshots:  # those asked for (a continued checkpoint may hold others)
        with paths.atomic_write(paths.output(snapshot_file(stage, spec.name + suffix, iteration)), "wb") as handle:
            torch.save(kept[iteration], handle)
    return history


#: what a MAML-family run's checkpoint is not keyed by: the first N iterations of a run do not depend
#: on how many follow (constant step sizes, Adam) nor on which iterations' weights are kept
EXTENDABLE = ("iterations", "snapshots")


def checkpoint_identity(spec: Spec, key: dict) -> dict:
    """What keys the run's checkpoint in ``data/work``: its identity (:func:`run_identity`) less
    :data:`EXTENDABLE` for the MAML family, so raising ``iterations`` continues a finished shorter
    run instead of starting again (bit for bit the weights of the longer run trained at once; its
    history too when the shorter one ended on a multiple of ``val_every``). Reptile keeps its total:
    its outer step anneals to 0 over it."""
    if spec.reptile:
        return key
    return {k: v for k, v in key.items() if k not in EXTENDABLE}


def meta_path(spec: Spec, model: nn.Module, settings: Settings, path: str) -> str:
    """The path (:data:`core.PATHS`) a run's meta-batch takes: ``path`` for a MAML-family run whose
    model and batch norm it computes (``"batched"`` and ``"graph"``: Conv4 with transductive batch norm,
    :func:`batched.supports`), else the per-task loop; Reptile and pre-training have no other.
    ``"graph"`` (:data:`TRAINING_PATHS`) needs the model on a CUDA device."""
    require(path in TRAINING_PATHS, "path", f"must be one of {TRAINING_PATHS}, got {path!r}")
    if path == "graph":
        device = next(model.parameters()).device
        require(device.type == "cuda", "path", f"'graph' captures the meta-iteration as a CUDA graph: it needs device "
                f"cuda, not {device.type} (use 'batched' or 'loop' on the CPU)")
    if spec.reptile:
        return "loop"
    if path in ("batched", "graph") and not (batched.supports(model) and settings.bn == "transductive"):
        return "loop"
    return path


def run_identity(spec: Spec, settings: Settings, seed: int, stage: str, config: dict,
                 snapshots: Sequence[int] = (), suffix: str = "", workers: int = 1,
                 path: str = "loop") -> tuple[str, dict]:
    """The run's name (``<stage>-<spec.name><suffix>``) and the settings that key it
    (:func:`training.run_key`): ``config`` (the stage's data and network), the spec, the training
    settings that bear on it (:func:`settings_of_run`), the seed and the kept iterations, and for
    the MAML family trained on several ranks, that its meta-gradient is summed task by task
    (:func:`training.maml_step`: the same for any number of ranks, equal to one process's to
    rounding only). Reptile on several ranks computes exactly what one process does. A run whose
    meta-batch takes another path than the loop (:func:`meta_path`: ``"vmap"``, ``"batched"``, ``"graph"``;
    equal to rounding) is another run too."""
    snapshots = sorted(set(snapshots))
    ordered = workers > 1 and not spec.reptile
    return (f"{stage}-{spec.name}{suffix}", {**config, **asdict(spec), **settings_of_run(spec, settings), "seed": seed,
                                             **({"snapshots": snapshots} if snapshots else {}),
                                             **({"meta_gradient": "summed task by task"} if ordered else {}),
                                             **({"meta_path": path} if path != "loop" else {})})


#: settings that only some runs use: Reptile's own, and pre-training's (runs with an ``init``)
REPTILE_ONLY, PRETRAIN_ONLY = ("inner_batch", "train_shots", "meta_step"), ("pretrain_iterations", "pretrain_batch")


def settings_of_run(spec: Spec, settings: Settings) -> dict:
    """The settings that bear on how ``spec`` trains, by name: all but how often it checkpoints,
    Reptile's own for the MAML family, the query count for Reptile (it trains on support sets
    only), the pre-training ones for runs without an ``init``. Two runs that differ only in the
    others train the same weights, so they are the same run."""
    unused = {"checkpoint_every", *(("train_queries",) if spec.reptile else REPTILE_ONLY),
              *(() if spec.init else PRETRAIN_ONLY)}
    return {k: v for k, v in asdict(settings).items() if k not in unused}


def snapshot_file(stage: str, run: str, iteration: int) -> str:
    """Where the weights of ``run`` (spec name and suffix) after ``iteration`` iterations are kept."""
    return f"data/models/{stage}/{run}@{iteration}.pt"


def _validated(spec: Spec, model: nn.Module, val: Batch, settings: Settings,
               inner: core.InnerLoop | None) -> tuple[float, Tensor]:
    """(mean query loss, hits) on the validation tasks [T] after training-time adaptation: hits are
    the correct query predictions [T, Q] (0/1) of the MAML family, or Reptile's per-task accuracy [T]."""
    params = models.params_of(model, requires_grad=False)
    if inner is None:  # Reptile: its own inner optimiser, as at test time
        scores = evaluate(spec, model, params, val, settings, steps=settings.inner_steps)
        return scores["loss"][:, -1].mean().item(), scores["accuracy"][:, -1]
    loss, predictions = meta_loss(model, params, val.xs, val.ys, val.xq, val.yq, inner, loss_of(spec),
                                  bn=settings.bn)
    return loss.item(), (predictions.argmax(-1) == val.yq).float()


def validate(spec: Spec, model: nn.Module, val: Batch, settings: Settings,
             inner: core.InnerLoop | None) -> dict:
    """Mean query loss and accuracy on the validation tasks after training-time adaptation."""
    loss, hits = _validated(spec, model, val, settings, inner)
    return {"val_loss": loss, "val_accuracy": hits.mean().item()}


def validation_scores(spec: Spec, model: nn.Module, val: Batch, settings: Settings) -> Tensor:
    """Per-task accuracy (%) [T] of ``model`` on the validation tasks ``val``, adapted as in training's
    validations (:func:`validate`; its ``val_accuracy`` is their mean, up to float rounding)."""
    inner = None if spec.reptile else inner_loop(spec, dict(model.named_parameters()), settings.inner_steps,
                                                 settings.inner_lr)
    _, hits = _validated(spec, model, val, settings, inner)
    return 100 * (hits if spec.reptile else hits.mean(-1))


def evaluate(spec: Spec, model: nn.Module, params: models.Params, test: Batch, settings: Settings,
             steps: int | None = None, head: str = "adapt", frozen: tuple[str, ...] = (),
             every_step: bool = True, progress: str | None = None) -> dict:
    """Per-task query loss and accuracy on ``test`` [T tasks]: [T, steps + 1] (after 0..steps
    adaptation steps; ``steps`` default ``settings.test_steps``; without ``every_step``
    [T, 2]: before and after the last step) or [T, 1] for ``head="nil"``.

    MAML family: SGD with the training step size on the run's inner-loop parameters,
    minus the layers in ``frozen`` (e.g. ``("body.layer1",)``). Reptile: its inner
    optimiser (fresh per task) on the whole support set, all parameters.
    """
    steps = settings.test_steps if steps is None else steps
    if spec.reptile and head == "adapt":
        if frozen:
            raise ValueError("freezing layers is defined for the MAML-family inner loop")
        return few_shot_optimized(model, params, test.xs, test.ys, test.xq, test.yq,
                                  reptile_optimizer(spec, settings), steps, bn=settings.bn, every_step=every_step,
                                  progress=progress)
    inner = inner_loop(spec, params, steps, settings.inner_lr, model.layers, frozen)
    return few_shot(model, params, test.xs, test.ys, test.xq, test.yq, inner, bn=settings.bn, head=head,
                    loss_fn=loss_of(spec), every_step=every_step, progress=progress)


# --- a stage of runs: train (or reuse), test on fixed episodes (or reuse) ----------------

#: ``episodes(split, spec, shots, queries)`` -> the sampler of that split for that N-way setting
Episodes = Callable[[str, Spec, int, int], EpisodeSampler]


def episode_factory(images: Tensor | dict[str, Tensor], classes: dict[str, Tensor] | None, seed: int) -> Episodes:
    """The ``episodes`` of one dataset, seeded by ``seed``: either ``images`` [C, M, ...] shared
    by every split with the class indices of each split in ``classes`` (Omniglot), or one
    tensor of images per split, each using all its classes (``classes`` None: MiniImageNet)."""
    def episodes(split: str, spec: Spec, shots: int, queries: int) -> EpisodeSampler:
        pool = images[split] if isinstance(images, dict) else images
        chosen = torch.arange(len(pool)) if classes is None else classes[split]
        return EpisodeSampler(pool, chosen, spec.n_way, shots, queries, seed=seed)
    return episodes


def test_episodes(episodes: Episodes, spec: Spec, n_tasks: int, queries: int, seed: int) -> Batch:
    """The fixed test tasks of ``spec``'s N-way K-shot setting: the same list in every stage
    that tests a model of that setting (training stages, freezing, similarity)."""
    return episodes("test", spec, spec.k_shot, queries).fixed_episodes(n_tasks, seed + 2000)


class Trained(NamedTuple):
    """A trained run of a stage: the model, its settings, and the record of how it was made
    (``data/models/<stage>/<run>.json``: identity, settings, history; :mod:`metalearn.store`)."""

    model: models.Net
    settings: Settings
    record: dict


def model_file(stage: str, run: str) -> str:
    """Where a stage keeps the trained weights of ``run`` (spec name and suffix)."""
    return f"data/models/{stage}/{run}.pt"


def train_runs(specs: list[Spec], dataset: str, filters: int, episodes: Episodes,
               settings_of: Callable[[Spec], Settings], n_val_tasks: int, val_queries: int, seed: int,
               stage: str, config: dict, device: str = "cpu", snapshots: Sequence[int] = (),
               suffix: str = "", about: dict | None = None,
               same_run_in: str | None = None, workers: int = 1,
               work_dir: Path | None = None, path: str = "loop") -> tuple[dict[Spec, Trained], pd.DataFrame]:
    """Train every run, or take its trained model from an earlier execution of the stage.

    A run's weights go to ``data/models/<stage>/<run><suffix>.pt`` (and its ``snapshots``, see
    :func:`train`) with a record ``<run><suffix>.json``: its identity (:func:`run_identity` and
    :data:`training.NUMERICS`), settings, seed, dataset, and training history, plus ``about``
    (e.g. a description of the data). When an earlier execution left a record of the same
    identity (the committed models, :mod:`metalearn.store`), its model is used as it is;
    otherwise, when the stage ``same_run_in`` trained the same run (its model of the spec, of the
    same identity but for the stage's name: settings, data, seed, kept iterations, numerics), that
    model is copied (:func:`copy_trained`); otherwise the run trains, resuming from its checkpoint
    in ``data/work`` if it has one.

    Each run starts from the model initialised with ``seed`` (on the CPU, then moved to
    ``device``, where the episodes must be too), draws training episodes from
    ``episodes("train", ...)`` and is validated on ``n_val_tasks`` fixed episodes of
    ``episodes("val", ...)`` (:func:`validation_tasks`); its final weights are then scored on them
    task by task (:func:`score_validation`). Weights are saved as CPU tensors. ``workers``: ranks sharing each
    meta-batch (:mod:`metalearn.distributed`; at most the meta-batch, else a ParameterError naming
    ``workers``; under ``torchrun``, the launcher's ranks); the record says how many trained the run.
    ``work_dir``: where the checkpoints go (:func:`train`). ``path``: how a MAML-family meta-batch
    runs its tasks (:func:`meta_path`: ``"batched"``, or on CUDA ``"graph"``, where the run's model
    allows; one process, so with ``workers`` 1). Returns ({spec: Trained}, the histories in one frame with a ``run`` column).
    """
    trained, histories = {}, []
    config = {**config, "device": device}
    workers = distributed.ranks(workers)
    require(path in TRAINING_PATHS, "path", f"must be one of {TRAINING_PATHS}, got {path!r}")
    require(workers == 1 or path == "loop", "path",
            f"{path!r} runs a meta-batch's tasks together in one process: use workers 1 with it (got {workers})")
    for spec in specs:
        settings = settings_of(spec)
        require(workers == 1 or torch.device(device).type == "cpu" or distributed.launched(), "workers",
                f"shares training among forked CPU processes: use 1 with device {device} (or launch with torchrun)")
        require(1 <= workers <= settings.meta_batch, "workers",
                f"must lie in 1..{settings.meta_batch} for run {spec.name}: the ranks share the tasks of its meta-batch "
                f"of {settings.meta_batch}, got {workers}")
        model = models.init_model(lambda: build_model(spec, dataset, filters), seed).to(device)
        name, key = run_identity(spec, settings, seed, stage, config, snapshots, suffix, workers,
                                 meta_path(spec, model, settings, path))
        identity = {"run": name, **key, "numerics": training.NUMERICS}
        run = spec.name + suffix
        record_file, weights = f"data/models/{stage}/{run}.json", model_file(stage, run)
        record = store.find(record_file, identity)
        if record is None and same_run_in:
            record = copy_trained(same_run_in, spec.name, identity, stage, run)
        if record is not None:
            print(f"{run}: trained model of an earlier execution (same settings and numerics"
                  + (f", trained by {record['copied_from']})" if "copied_from" in record else ")"))
            model.load_state_dict(torch.load(paths.output(weights), map_location=device, weights_only=True))
        else:
            shots = settings.train_shots if spec.reptile else spec.k_shot
            queries = 1 if spec.reptile else settings.train_queries
            val = validation_tasks(episodes, spec, n_val_tasks, val_queries, seed)
            history = train(spec, model, episodes("train", spec, shots, queries), val, settings, seed, stage, config,
                            snapshots, suffix, workers, work_dir, path)
            with paths.atomic_write(paths.output(weights), "wb") as handle:
                torch.save({k: v.cpu() for k, v in model.state_dict().items()}, handle)
            kept = [snapshot_file(stage, run, i) for i in sorted(set(snapshots))]
            record = store.save(record_file, identity, [weights, *kept], stage=stage, run=run, spec=spec.name,
                                dataset=dataset, seed=seed, filters=filters, settings=asdict(settings),
                                snapshots=sorted(set(snapshots)), workers=workers, history=history, **(about or {}))
        trained[spec] = Trained(model, settings, record)
        histories.append(pd.DataFrame(record["history"]).assign(run=run))
        score_validation(spec, trained[spec], episodes, n_val_tasks, val_queries, seed, stage, run, config)
    return trained, pd.concat(histories, ignore_index=True)


def validation_tasks(episodes: Episodes, spec: Spec, n_tasks: int, queries: int, seed: int) -> Batch:
    """The fixed validation tasks of a run trained with ``seed`` (its ``episodes``): those its
    training validates on every ``val_every`` iterations."""
    return episodes("val", spec, spec.k_shot, queries).fixed_episodes(n_tasks, seed + 1000)


def score_validation(spec: Spec, trained: Trained, episodes: Episodes, n_tasks: int, queries: int, seed: int,
                     stage: str, run: str, config: dict) -> None:
    """The final weights of a run on its fixed validation tasks, per task (:func:`validation_scores`),
    written to ``data/scores/<stage>/<run>.val.csv`` (one column, ``accuracy`` in %) with a record
    ``.val.json`` keyed by the weights' fingerprint, settings, tasks, ``config`` and numerics (an
    earlier execution's are reused). Their mean is the training history's last validation (up to
    rounding); their spread gives the A-curves rows of one-seed stages an interval over tasks."""
    model, settings, _ = trained
    identity = {"weights": models.fingerprint(model), "spec": spec.name, "settings": asdict(settings),
                "tasks": n_tasks, "queries": queries, "seed": seed, "config": config, "numerics": NUMERICS}
    record_file, table_file = f"data/scores/{stage}/{run}.val.json", f"data/scores/{stage}/{run}.val.csv"
    if store.find(record_file, identity) is not None:
        return
    scores = validation_scores(spec, model, validation_tasks(episodes, spec, n_tasks, queries, seed), settings)
    with paths.atomic_write(paths.output(table_file)) as handle:
        pd.DataFrame({"accuracy": scores.cpu().numpy()}).to_csv(handle, index=False)
    store.save(record_file, identity, [table_file], stage=stage, run=run, spec=spec.name)


def copy_trained(other: str, other_run: str, identity: dict, stage: str, run: str) -> dict | None:
    """The model the stage ``other`` trained as ``other_run``, if its record's identity equals
    ``identity`` but for the run's name (kept iterations included): its weights and kept weights
    copied to ``stage``'s files of ``run`` (:func:`model_file`, :func:`snapshot_file`) and its record
    (history, hardware, ...) saved there with ``identity``, ``stage``, ``run`` and ``copied_from``.
    None (nothing written) if ``other`` has no such model."""
    try:
        saved = json.loads(paths.input(f"data/models/{other}/{other_run}.json").read_text())
    except (OSError, ValueError):
        return None
    unnamed = store.canonical({k: v for k, v in identity.items() if k != "run"})
    if {k: v for k, v in saved.get("identity", {}).items() if k != "run"} != unnamed:
        return None
    files = {model_file(other, other_run): model_file(stage, run),
             **{snapshot_file(other, other_run, i): snapshot_file(stage, run, i) for i in saved.get("snapshots", [])}}
    for source, target in files.items():
        with open(paths.input(source), "rb") as src, paths.atomic_write(paths.output(target), "wb") as dst:
            shutil.copyfileobj(src, dst)
    details = {k: v for k, v in saved.items() if k not in ("identity", "files", "stage", "run")}
    return store.save(f"data/models/{stage}/{run}.json", identity, list(files.values()), **details, stage=stage,
                      run=run, copied_from=f"{other}/{other_run}")


def train_seeds(specs: list[Spec], seeds: Sequence[int], episodes_of: Callable[[int], Episodes], n_test_tasks: int,
                test_queries: int, test_seed: int, stage: str, data: dict, every_step: bool = False,
                **train_args) -> tuple[dict[int, dict[Spec, Trained]], dict[int, dict[Spec, pd.DataFrame]]]:
    """Every run trained once per seed (:func:`train_runs` with ``episodes_of(seed)``, the seed and
    the suffix ``-seed<s>``; ``train_args`` its other arguments) and every seed tested on the same
    fixed tasks, those of ``test_seed`` (:func:`score_runs`; ``data`` identifies the test data).
    Returns ({seed: {spec: Trained}}, {seed: {spec: scores}})."""
    trained, scores = {}, {}
    for seed in seeds:
        trained[seed], _ = train_runs(specs, episodes=episodes_of(seed), seed=seed, stage=stage, suffix=f"-seed{seed}",
                                      **train_args)
        scores[seed] = score_runs(trained[seed], episodes_of(test_seed), n_test_tasks, test_queries, test_seed, stage,
                                  data, every_step, suffix=f"-seed{seed}")
    return trained, scores


def save_seeds_stage(stage: str, dataset: str, trained: dict[int, dict[Spec, Trained]], test_seed: int,
                     other: str, must_match: bool, param: str, **details) -> dict[str, bool | None]:
    """Check and record an over-seeds stage (:func:`train_seeds`): the seed ``test_seed`` against
    the one-seed stage ``other``'s models (:func:`same_as`; with ``must_match``, a difference stops
    the stage with a :class:`ParameterError` naming ``param``), then the stage record
    (:func:`save_stage`: runs seed by seed, hardware, ``details``). Returns {run: identical?}."""
    same = same_as(trained[test_seed], other) if test_seed in trained else {}
    for name, equal in same.items():
        require(equal or not must_match, param,
                f"is true, but {name}-seed{test_seed} differs from {other}'s {name} "
                f"({'no such model' if equal is None else 'other weights'}): the settings here must repeat that stage's")
    save_stage(stage, dataset, [f"{spec.name}-seed{seed}" for seed, runs in trained.items() for spec in runs],
               hardware=sorted({t.record["hardware"] for runs in trained.values() for t in runs.values()}),
               seeds=list(trained), same_as={"stage": other, "runs": same}, **details)
    return same


def same_as(trained: dict[Spec, Trained], stage: str) -> dict[str, bool | None]:
    """Per run: whether its weights equal those ``stage`` trained for the same spec, bit for bit
    (None: that stage has no such model)."""
    return {spec.name: same_weights(t.model, paths.input(model_file(stage, spec.name))) for spec, t in trained.items()}


def test_scores(spec: Spec, model: nn.Module, settings: Settings, test: Batch, every_step: bool = True) -> pd.DataFrame:
    """Per-task test accuracy (%) of one run on the fixed tasks ``test`` [T]: one row per task,
    columns ``adapt@<s>`` after s test-time adaptation steps (s = 0..settings.test_steps; without
    ``every_step`` 0 and the last only) and, for the MAML family, ``nil`` (NIL head, no
    adaptation). Values are float32, as computed."""
    params = models.params_of(model, requires_grad=False)
    adapted = evaluate(spec, model, params, test, settings, every_step=every_step,
                       progress=f"{spec.name}: test")["accuracy"] * 100
    steps = range(settings.test_steps + 1) if every_step else (0, settings.test_steps)
    columns = {f"adapt@{s}": adapted[:, i].numpy() for i, s in enumerate(steps)}
    if not spec.reptile:
        nil = evaluate(spec, model, params, test, settings, head="nil", progress=f"{spec.name}: NIL head")
        columns["nil"] = (nil["accuracy"][:, 0] * 100).numpy()
    return pd.DataFrame(columns)


def score_runs(trained: dict[Spec, Trained], episodes: Episodes, n_test_tasks: int, test_queries: int, seed: int,
               stage: str, data: dict, every_step: bool = True, suffix: str = "") -> dict[Spec, pd.DataFrame]:
    """Every run tested on its setting's fixed test tasks (:func:`test_episodes`, seeded by
    ``seed``), or its scores taken from an earlier execution of the stage.

    Per run, :func:`test_scores` goes to ``data/scores/<stage>/<run><suffix>.csv`` with a record
    (``.json``) whose identity is the weights' fingerprint, the test settings, ``data`` (what
    identifies the test data, e.g. its fingerprint and split) and :data:`evaluation.NUMERICS`.
    Returns {spec: scores}.
    """
    out, tasks = {}, {}
    for spec, (model, settings, _) in trained.items():
        run = spec.name + suffix
        identity = {"weights": models.fingerprint(model), "spec": spec.name, "settings": asdict(settings),
                    "tasks": n_test_tasks, "queries": test_queries, "seed": seed, "every_step": every_step,
                    "data": data, "numerics": NUMERICS}
        record_file, table_file = f"data/scores/{stage}/{run}.json", f"data/scores/{stage}/{run}.csv"
        if store.find(record_file, identity) is None:
            if spec.setting not in tasks:
                tasks[spec.setting] = test_episodes(episodes, spec, n_test_tasks, test_queries, seed)
            scores = test_scores(spec, model, settings, tasks[spec.setting], every_step)
            with paths.atomic_write(paths.output(table_file)) as handle:
                scores.to_csv(handle, index=False)
            store.save(record_file, identity, [table_file], stage=stage, run=run, spec=spec.name)
        else:
            print(f"{run}: test scores of an earlier execution (same weights, tasks and numerics)")
        out[spec] = read_scores(paths.output(table_file))
    return out


def save_stage(stage: str, dataset: str, runs: list[str], **details) -> None:
    """The stage record ``data/models/<stage>/stage.json``: the dataset, the stage's runs in order
    (spec names with suffixes) and what describes the stage as a whole (``details``: its data,
    hardware, how it tests), which the report stages read (:func:`metalearn.accuracy.load`)."""
    with paths.atomic_write(paths.output(f"data/models/{stage}/stage.json")) as handle:
        json.dump(store.canonical({"stage": stage, "dataset": dataset, "runs": runs, **details}), handle, indent=1,
                  sort_keys=True)
        handle.write("\n")


def same_weights(model: nn.Module, path) -> bool | None:
    """Whether ``model``'s state equals the state_dict saved at ``path`` exactly (None: no file)."""
    if not path.exists():
        return None
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    ours = model.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k].cpu(), theirs[k]) for k in theirs)


def progress(stage: str, work_dir: Path) -> list[dict]:
    """Where each run of ``stage`` stands, read from its checkpoint in ``work_dir`` (while the stage
    trains, or after): one dict per checkpoint ``<stage>-<run>-<key>.pt`` (:class:`training.Run`)
    with the run's name, its iteration, the seconds it has trained and its history."""
    out = []
    for file in sorted(work_dir.glob(f"{stage}-*.pt")):
        state = torch.load(file, map_location="cpu", weights_only=False)
        out.append({"run": file.stem.removeprefix(f"{stage}-").rsplit("-", 1)[0], "iteration": state["iteration"],
                    "seconds": state.get("seconds", 0.0), "history": state["history"]})
    return out


def target_iterations(section: dict, spec: Spec) -> int:
    """The iterations a training stage's parameters (``section``) give the MAML-family run ``spec``:
    ``iterations`` (MiniImageNet), or ``iterations_5way`` / ``iterations_20way`` (Omniglot)."""
    if "iterations" in section:
        return section["iterations"]
    return section["iterations_5way" if spec.n_way == 5 else "iterations_20way"]


def glance(trained: dict[Spec, Trained], scores: dict[Spec, pd.DataFrame]) -> pd.DataFrame:
    """A quick look at a stage's runs (no confidence intervals: the reports have them): per run
    its iterations, final validation accuracy and mean test accuracy per score column (%)."""
    return pd.DataFrame([{"run": spec.name, "iterations": t.settings.iterations,
                          "final validation": 100 * t.record["history"][-1]["val_accuracy"], **scores[spec].mean()}
                         for spec, t in trained.items()]).set_index("run").round(1)


def read_scores(path) -> pd.DataFrame:
    """A run's per-task scores as :func:`test_scores` wrote them (float32)."""
    return pd.read_csv(path, dtype="float32")
