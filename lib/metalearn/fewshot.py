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
reptile       Reptile: an inner optimiser on each task's training shots, then
              ``theta += eps * mean(phi - theta)`` (no query split)
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

import re
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import Tensor, nn

from . import core, models, paths, regimes, report, results, training
from .core import InnerOptimizer, class_sum_cross_entropy, cross_entropy, meta_loss
from .datasets import EpisodeSampler
from .evaluation import few_shot, few_shot_optimized, mean_ci95
from .tasks import Batch

ALGORITHMS = ("maml", "fomaml", "anil", "head", "random", "reptile")
HEAD_ONLY = ("head", "random")  # the body stays as it starts; the head is meta-trained
INITIALISED = ("head", "reptile")  # the algorithms that may start from a pre-trained body
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
    Reptile: ``inner_steps`` steps of Adam (``inner_lr``, beta1 0) on minibatches of
    ``inner_batch`` from ``train_shots`` images per class, outer step ``meta_step``
    annealed linearly to 0. Test: ``test_steps`` adaptation steps (Reptile: of its
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


def inner_loop(spec: Spec, params: models.Params, steps: int, lr: float) -> core.InnerLoop:
    """The MAML-family inner loop of the run (head-only runs adapt the head, as ANIL)."""
    algorithm = "anil" if spec.algorithm in HEAD_ONLY else {"reptile": "maml"}.get(spec.algorithm, spec.algorithm)
    return core.inner_loop(algorithm, params, steps, lr)


def loss_of(spec: Spec) -> core.LossFn:
    """The training loss of the run: the MAML code's :func:`core.class_sum_cross_entropy` for
    the MAML family (its step sizes refer to it), the mean cross-entropy for Reptile (as in
    the Reptile code; its Adam inner loop is insensitive to the loss's scale)."""
    return cross_entropy if spec.algorithm == "reptile" else class_sum_cross_entropy


def reptile_optimizer(settings: Settings) -> InnerOptimizer:
    """Reptile's inner optimiser: Adam with beta1 = 0 (Nichol et al.)."""
    return InnerOptimizer("adam", lr=settings.inner_lr, beta1=0.0, beta2=0.999)


def train(spec: Spec, model: models.Net, sampler: EpisodeSampler, val: Batch, settings: Settings,
          seed: int, stage: str, config: dict, snapshots: Sequence[int] = (), suffix: str = "") -> list[dict]:
    """Train ``model`` in place as ``spec`` says; resumable. Returns the history.

    ``sampler`` draws training episodes (its ``k_shot``/``n_query`` are the training
    shots and queries); ``val`` is a fixed batch of validation tasks, scored every
    ``val_every`` iterations after test-time adaptation (``val_loss``, ``val_accuracy``).
    ``config`` (with the spec and settings) keys the checkpoint in ``data/work``.
    A run with an ``init`` first pre-trains the body (:func:`regimes.pretrain`, on the same
    sampler; multiclass pre-training is shared by every run of the stage with that model).
    ``snapshots``: iterations after which a copy of the weights is kept (in the run's state, so
    a killed run keeps them) and finally written to ``data/models/<stage>/<run>@<iteration>.pt``
    (A-early). ``suffix`` tells apart runs of one spec in a stage (e.g. ``"-seed1"``): the run is
    named ``<stage>-<spec.name><suffix>``.
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
    name = f"{stage}-{spec.name}{suffix}"
    key = {**config, **asdict(spec), **asdict(settings), "seed": seed, **({"snapshots": snapshots} if snapshots else {})}
    params = dict(model.named_parameters())
    trainable = model.head.parameters() if spec.algorithm in HEAD_ONLY else model.parameters()
    optimizer = None if spec.algorithm == "reptile" else torch.optim.Adam(trainable, lr=settings.meta_lr)
    run = training.Run(name, key, model, seed, optimizer, settings.checkpoint_every)
    training.cleanup_stale(name, run.path)
    if run.resumed_from:
        print(f"{spec.name}: resuming at iteration {run.resumed_from}")

    if spec.algorithm == "reptile":
        if sampler.k_shot != settings.train_shots:
            raise ValueError(f"run {spec.name}: Reptile trains on {settings.train_shots} shots per class, but "
                             f"the sampler draws {sampler.k_shot}")
        opt = reptile_optimizer(settings)
        n_train = spec.n_way * settings.train_shots

        def sample(gen):
            batch = sampler.batch(settings.meta_batch, gen)
            order = torch.rand(settings.meta_batch, settings.inner_steps, n_train, generator=gen).argsort(-1)
            return [(x, y, idx[:, :settings.inner_batch]) for x, y, idx in zip(batch.xs, batch.ys, order)]

        def update(run):
            eps = settings.meta_step * (1 - run.iteration / settings.iterations)
            return training.reptile_step(run, sample, opt, eps, keep_state=False, loss_fn=loss_of(spec))
        test_inner = None
    else:
        train_inner = inner_loop(spec, params, settings.inner_steps, settings.inner_lr)
        test_inner = train_inner

        def update(run):
            return training.maml_step(run, lambda gen: sampler.batch(settings.meta_batch, gen), train_inner,
                                      loss_of(spec), bn=settings.bn)

    def step(run):
        metrics = update(run)
        if run.iteration + 1 in snapshots:
            run.extra.setdefault("snapshots", {})[run.iteration + 1] = {
                k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if (run.iteration + 1) % settings.val_every == 0 or run.iteration + 1 == settings.iterations:
            metrics.update(validate(spec, model, val, settings, test_inner))
        return metrics

    history = run.train(settings.iterations, step, log_every=settings.val_every, desc=spec.name + suffix)
    for iteration, state in run.extra.get("snapshots", {}).items():
        with paths.atomic_write(paths.output(f"data/models/{stage}/{spec.name}{suffix}@{iteration}.pt"), "wb") as handle:
            torch.save(state, handle)
    return history


def validate(spec: Spec, model: nn.Module, val: Batch, settings: Settings,
             inner: core.InnerLoop | None) -> dict:
    """Mean query loss and accuracy on the validation tasks after training-time adaptation."""
    params = models.params_of(model, requires_grad=False)
    if inner is None:  # Reptile: its own inner optimiser, as at test time
        scores = evaluate(spec, model, params, val, settings, steps=settings.inner_steps)
        return {"val_loss": scores["loss"][:, -1].mean().item(),
                "val_accuracy": scores["accuracy"][:, -1].mean().item()}
    loss, predictions = meta_loss(model, params, val.xs, val.ys, val.xq, val.yq, inner, loss_of(spec),
                                  bn=settings.bn)
    return {"val_loss": loss.item(), "val_accuracy": (predictions.argmax(-1) == val.yq).float().mean().item()}


def evaluate(spec: Spec, model: nn.Module, params: models.Params, test: Batch, settings: Settings,
             steps: int | None = None, head: str = "adapt", frozen: tuple[str, ...] = (),
             every_step: bool = True) -> dict:
    """Per-task query loss and accuracy on ``test`` [T tasks]: [T, steps + 1] (after 0..steps
    adaptation steps; ``steps`` default ``settings.test_steps``; without ``every_step``
    [T, 2]: before and after the last step) or [T, 1] for ``head="nil"``.

    MAML family: SGD with the training step size on the run's inner-loop parameters,
    minus the layers in ``frozen`` (e.g. ``("body.layer1",)``). Reptile: its inner
    optimiser (fresh per task) on the whole support set, all parameters.
    """
    steps = settings.test_steps if steps is None else steps
    if spec.algorithm == "reptile" and head == "adapt":
        if frozen:
            raise ValueError("freezing layers is defined for the MAML-family inner loop")
        return few_shot_optimized(model, params, test.xs, test.ys, test.xq, test.yq,
                                  reptile_optimizer(settings), steps, bn=settings.bn, every_step=every_step)
    unknown = [layer for layer in frozen if layer not in model.layers]
    if unknown:
        raise ValueError(f"cannot freeze {unknown}: the model's layers are {model.layers}")
    inner = inner_loop(spec, params, steps, settings.inner_lr)
    if frozen:
        keep = [layer for layer in model.layers if layer not in frozen]
        inner = core.inner_loop("anil" if spec.algorithm in ("anil", *HEAD_ONLY) else "maml", params, steps,
                                settings.inner_lr, adapt_layers=keep)
    return few_shot(model, params, test.xs, test.ys, test.xq, test.yq, inner, bn=settings.bn, head=head,
                    loss_fn=loss_of(spec), every_step=every_step)


# --- a whole study of runs: train, test, plot, tabulate ---------------------------------

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


def train_runs(specs: list[Spec], dataset: str, filters: int, episodes: Episodes,
               settings_of: Callable[[Spec], Settings], n_val_tasks: int, val_queries: int, seed: int,
               stage: str, config: dict, device: str = "cpu", snapshots: Sequence[int] = (),
               suffix: str = "") -> tuple[dict, pd.DataFrame]:
    """Train every run (resumably) and save its weights to ``data/models/<stage>/<run><suffix>.pt``
    (and its ``snapshots``, see :func:`train`).

    Each run starts from the model initialised with ``seed`` (on the CPU, then moved to
    ``device``, where the episodes must be too), draws training episodes from
    ``episodes("train", ...)`` and is validated on ``n_val_tasks`` fixed episodes of
    ``episodes("val", ...)``. Weights are saved as CPU tensors. Returns ({spec: (model,
    settings)}, the histories in one frame with a ``run`` column).
    """
    trained, histories = {}, []
    config = {**config, "device": device}
    for spec in specs:
        settings = settings_of(spec)
        shots = settings.train_shots if spec.algorithm == "reptile" else spec.k_shot
        queries = 1 if spec.algorithm == "reptile" else settings.train_queries
        model = models.init_model(lambda: build_model(spec, dataset, filters), seed).to(device)
        val = episodes("val", spec, spec.k_shot, val_queries).fixed_episodes(n_val_tasks, seed + 1000)
        history = train(spec, model, episodes("train", spec, shots, queries), val, settings, seed, stage, config,
                        snapshots, suffix)
        trained[spec] = (model, settings)
        histories.append(pd.DataFrame(history).assign(run=spec.name + suffix))
        with paths.atomic_write(paths.output(f"data/models/{stage}/{spec.name}{suffix}.pt"), "wb") as handle:
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, handle)
    return trained, pd.concat(histories, ignore_index=True)


def test_runs(trained: dict, episodes: Episodes, n_test_tasks: int, test_queries: int,
              seed: int, every_step: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test every run on the same fixed episodes per N-way K-shot setting (seeded by ``seed``).

    Returns (one row per run and head: run, head, steps, accuracy and ci95 in %, over
    ``n_test_tasks`` tasks; accuracy after 0..k test steps per run, with ci95: every
    step with ``every_step``, else before adapting and after the last step only).
    MAML-family models are also tested with a NIL head.
    """
    rows, curves = [], []
    for spec, (model, settings) in trained.items():
        test = test_episodes(episodes, spec, n_test_tasks, test_queries, seed)
        params = models.params_of(model, requires_grad=False)
        scores = evaluate(spec, model, params, test, settings, every_step=every_step)["accuracy"] * 100
        steps = list(range(settings.test_steps + 1)) if every_step else [0, settings.test_steps]
        for step, column in zip(steps, scores.T):
            mean, ci = mean_ci95(column)
            curves.append(dict(run=spec.name, step=step, accuracy=mean, ci95=ci))
        heads = {"adapt": scores[:, -1]}
        if spec.algorithm != "reptile":
            heads["nil"] = evaluate(spec, model, params, test, settings, head="nil")["accuracy"][:, 0] * 100
        for head, values in heads.items():
            mean, ci = mean_ci95(values)
            rows.append(dict(run=spec.name, head=head, steps=settings.test_steps if head == "adapt" else 0,
                             accuracy=mean, ci95=ci, iterations=settings.iterations, meta_batch=settings.meta_batch))
    return pd.DataFrame(rows), pd.DataFrame(curves)


def _settings_in(frame: pd.DataFrame) -> list[str]:
    return sorted({Spec.parse(name).setting for name in frame.run}, key=lambda t: (len(t), t))


def plot_learning_curves(history: pd.DataFrame, title: str):
    """Training query loss (top) and validation accuracy (bottom) per N-way K-shot setting."""
    settings = _settings_in(history)
    fig, axes = plt.subplots(2, len(settings), figsize=(4.2 * len(settings), 6), squeeze=False)
    for col, setting in enumerate(settings):
        for name, h in history[history.run.map(lambda r: Spec.parse(r).setting) == setting].groupby("run"):
            axes[0, col].plot(h.iteration, h.loss, label=name)
            axes[1, col].plot(h.iteration, 100 * h.val_accuracy, label=name)
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
    if spec.algorithm == "reptile":
        if head != "adapt":
            return []
        if spec.init:
            return [("R-pretrain", f"{base} from {spec.init}")]
        out = [("R-omni" if dataset == "omniglot" else "R-mini", base)]
        return out + ([("R-pretrain", base)] if spec.setting == "5w1s" and spec.model == "conv" else [])
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


def result_rows(dataset: str, table: pd.DataFrame, history: pd.DataFrame, scale: str) -> list[dict]:
    """``reports/results.csv`` rows: each test result under its experiment ids
    (:func:`experiments`), and for MAML and ANIL runs the final validation accuracy under
    A-curves. ``scale`` describes the scale, with ``{iterations}`` and ``{meta_batch}``
    filled in per run."""
    out = []
    for r in table.itertuples():
        spec = Spec.parse(r.run)
        described = scale.format(iterations=r.iterations, meta_batch=r.meta_batch)
        for experiment, setting in experiments(dataset, spec, r.head):
            out.append(results.row(experiment, setting, "accuracy", r.accuracy, described, r.ci95))
        if r.head == "adapt" and spec.algorithm in ("maml", "anil"):
            final = history[history.run == r.run].val_accuracy.iloc[-1] * 100
            setting = f"{dataset} {spec.algorithm} {spec.model} {spec.setting} final validation"
            out.append(results.row("A-curves", setting, "accuracy", final, described))
    return out


def save_learning_curves(history: pd.DataFrame, stage: str, title: str):
    """Write the validation accuracy per run as DVC plot data and the curves as a figure."""
    wide = history.pivot_table(index="iteration", columns="run", values="val_accuracy").reset_index()
    report.save_table(wide.to_dict("records"), f"reports/plots/{stage}_val_accuracy.csv")
    fig = plot_learning_curves(history, title)
    report.save_figure(fig, f"reports/{stage}/learning_curves.png")
    return fig


def save_tests(table: pd.DataFrame, curves: pd.DataFrame, stage: str, title: str):
    """Write the test accuracies (``reports/<stage>/accuracy.csv``) and the test-steps figure."""
    report.save_table(table.to_dict("records"), f"reports/{stage}/accuracy.csv")
    fig = plot_test_steps(curves, title)
    report.save_figure(fig, f"reports/{stage}/test_steps.png")
    return fig


def save_results(dataset: str, stage: str, table: pd.DataFrame, history: pd.DataFrame, scale: str) -> pd.DataFrame:
    """Write the stage's results rows and metrics (test accuracy per run and head), print the
    ordering claims (:func:`compare_to_maml`), and return the rows beside the papers' values."""
    rows = result_rows(dataset, table, history, scale)
    results.write(rows, stage)
    accuracy = {f"{r.run}{'_nil' if r.head == 'nil' else ''}": r.accuracy for r in table.itertuples()}
    report.save_metrics(accuracy, f"reports/metrics/{stage}.json")
    compare_to_maml(accuracy)
    return pd.DataFrame(rows)[["experiment", "setting", "value", "ci95", "paper"]]


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
