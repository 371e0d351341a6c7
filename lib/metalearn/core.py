"""The meta-learning core: one inner loop, one meta-loss, one Reptile update.

MAML, first-order MAML and ANIL are the same inner loop with two switches:

=========  ==========================  ==========================================
algorithm  parameters adapted          gradient through the inner loop
=========  ==========================  ==========================================
maml       all (or any ``adapt`` set)  kept: second order
fomaml     all                         inner gradients detached: first order
anil       ``head.*`` only             kept: second order through the head
=========  ==========================  ==========================================

Reptile adapts with an ordinary optimiser (SGD, Adam, RMSProp from ``torch.optim``)
and moves the initialisation towards the adapted weights: :func:`reptile_update`.

Parameters are dictionaries of tensors (``name -> tensor``) run through the model
with ``torch.func.functional_call``; inner gradients come from ``torch.func.grad``,
so :func:`adapt` also runs under ``torch.vmap`` over tasks (exact with batch norm written out
by hand: :func:`models.hand_written_batch_norm`). The per-task loop is the reference; the other
paths of :func:`meta_loss` (``"vmap"``; ``"batched"``, :mod:`metalearn.batched`) are tested against it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vmap

from . import batched
from .models import Net, Params, flat, forward, hand_written_batch_norm

LossFn = Callable[[Tensor, Tensor], Tensor]
ALGORITHMS = ("maml", "fomaml", "anil")
INNER_OPTIMIZERS = ("sgd", "adam", "rmsprop")
#: how :func:`meta_loss` runs the tasks of a meta-batch: a Python loop (the reference), ``torch.vmap``,
#: or batched operators (:mod:`metalearn.batched`, Conv4 models)
PATHS = ("loop", "vmap", "batched")


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements (the MAML paper's regression loss)."""
    return ((prediction - target) ** 2).mean()


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of logits [B, N] against integer labels [B]."""
    return F.cross_entropy(logits, labels)


def class_sum_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy summed over examples and divided by the examples per class: logits
    [B, N], labels [B] -> N * mean cross-entropy.

    This is the MAML code's classification loss (``softmax_cross_entropy / update_batch_size``
    per example, differentiated as a vector, so summed), with N*K examples: the inner step
    sizes of the papers (Omniglot 0.4 and 0.1, MiniImageNet 0.01) are step sizes on this
    loss. On the mean cross-entropy they would be N times smaller steps.
    """
    return F.cross_entropy(logits, labels) * logits.shape[-1]


def layer_mask(params: Params, layers: Sequence[str]) -> frozenset[str]:
    """Names of the parameters that belong to any of ``layers`` (prefixes such as ``'head'``)."""
    names = frozenset(k for k in params if any(k == layer or k.startswith(layer + ".") for layer in layers))
    if not names:
        raise ValueError(f"no parameter belongs to layers {list(layers)}; parameters are {list(params)}")
    return names


@dataclass(frozen=True)
class InnerLoop:
    """How a task adapts: ``steps`` SGD steps of size ``lr`` (one per step, or a list),
    on the parameters named in ``adapt`` (None: all), first or second order."""

    steps: int
    lr: float | tuple[float, ...]
    first_order: bool = False
    adapt: frozenset[str] | None = field(default=None)

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"inner steps must be >= 0, got {self.steps}")
        lrs = self.lr if isinstance(self.lr, tuple) else (self.lr,)
        if any(lr < 0 for lr in lrs):
            raise ValueError(f"inner step sizes must be >= 0, got {self.lr}")

    def lr_at(self, step: int) -> float:
        """Step size of inner step ``step`` (0-based); a list's last value repeats."""
        if isinstance(self.lr, tuple):
            return self.lr[min(step, len(self.lr) - 1)]
        return self.lr


def inner_loop(algorithm: str, params: Params, steps: int, lr: float | tuple[float, ...],
               adapt_layers: Sequence[str] | None = None) -> InnerLoop:
    """The inner loop of ``algorithm`` (maml, fomaml, anil) for a model with ``params``.

    ``adapt_layers`` restricts adaptation further (e.g. freezing layers at test time).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    adapt = layer_mask(params, ["head"]) if algorithm == "anil" else None
    if adapt_layers is not None:
        chosen = layer_mask(params, adapt_layers)
        adapt = chosen if adapt is None else adapt & chosen
    return InnerLoop(steps=steps, lr=lr, first_order=algorithm == "fomaml", adapt=adapt)


def adapt_path(model: nn.Module, params: Params, x: Tensor, y: Tensor, inner: InnerLoop,
               loss_fn: LossFn = mse) -> Iterator[Params]:
    """Yield the parameters after each of ``inner.steps`` SGD steps on (x, y).

    x, y: one task's support set (e.g. [K, 1] and [K, 1]). Parameters outside
    ``inner.adapt`` are passed through unchanged (same tensors). With
    ``first_order`` the gradient is taken at detached parameters, so the adapted
    parameters depend on the initial ones through the identity only.
    """
    names = [k for k in params if inner.adapt is None or k in inner.adapt]
    fixed = {k: v for k, v in params.items() if k not in names}
    fixed_in_grad = {k: v.detach() for k, v in fixed.items()} if inner.first_order else fixed

    def loss_of(adaptable: Params) -> Tensor:
        return loss_fn(forward(model, {**fixed_in_grad, **adaptable}, x), y)

    gradient = grad(loss_of)
    current = {k: params[k] for k in names}
    for step in range(inner.steps):
        at = {k: v.detach() for k, v in current.items()} if inner.first_order else current
        g = gradient(at)
        lr = inner.lr_at(step)
        current = {k: current[k] - lr * g[k] for k in names}
        yield {**fixed, **current}


def adapt(model: nn.Module, params: Params, x: Tensor, y: Tensor, inner: InnerLoop,
          loss_fn: LossFn = mse) -> Params:
    """The parameters after ``inner.steps`` steps on (x, y) (``params`` itself for 0 steps)."""
    adapted = params
    for adapted in adapt_path(model, params, x, y, inner, loss_fn):
        pass
    return adapted


BN_MODES = ("transductive", "inductive")


def predict(model: nn.Module, params: Params, xq: Tensor, xs: Tensor | None = None,
            bn: str = "transductive", features: bool = False) -> Tensor:
    """The model's output on one task's queries xq [Q, ...] -> [Q, ...].

    ``bn="transductive"`` (the papers' code): batch norm uses the statistics of the
    query set itself. ``bn="inductive"``: of the support set xs [K, ...], so each
    query's output depends on the support set and on itself only. Models without
    batch norm give the same output either way. ``features``: penultimate features.
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    kwargs = {"features": True} if features else {}
    if bn == "transductive":
        return forward(model, params, xq, **kwargs)
    if xs is None:
        raise ValueError("inductive batch norm needs the support set xs")
    return forward(model, params, torch.cat([xs, xq]), stats_rows=len(xs), **kwargs)[len(xs):]


def nil_logits(query_features: Tensor, support_features: Tensor, support_labels: Tensor,
               n_way: int) -> Tensor:
    """NIL (no head): log of the cosine-similarity-weighted support labels.

    query_features [Q, F], support_features [K, F], support_labels int [K] in
    0..n_way-1 -> log-probabilities [Q, n_way]: ``p(c | q) = sum_i softmax_i(cos(q, s_i))
    [y_i = c]``, the attention of Matching Networks on the raw cosine similarities.
    """
    cos = F.normalize(query_features, dim=1) @ F.normalize(support_features, dim=1).T  # [Q, K]
    weights = cos.softmax(dim=1)
    probs = weights @ F.one_hot(support_labels, n_way).to(weights.dtype)  # [Q, n_way]
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def query_outputs(model: nn.Module, params: Params, xs: Tensor, ys: Tensor, xq: Tensor, inner: InnerLoop,
                  loss_fn: LossFn = mse, bn: str = "transductive", every_step: bool = False) -> list[Tensor]:
    """One task's query outputs [Q, ...] after adapting on (xs [K, ...], ys [K, ...]).

    Returns [after ``inner.steps`` steps], or with ``every_step`` [after 0, 1, ..., steps].
    When only head parameters adapt (ANIL, random features) the body runs once: the
    support and query features are computed once and the head adapts on them. This is
    the same computation (the body's output does not change in the inner loop), at the
    cost of one body pass instead of ``steps + 1``; a test holds it to the full path.
    """
    head_only = (isinstance(model, Net) and inner.adapt is not None
                 and all(k.startswith("head.") for k in inner.adapt))
    if head_only:
        support = forward(model, params, xs, features=True)
        query = predict(model, params, xq, xs, bn, features=True)
        net, x, xq, bn = model.head, support.detach() if inner.first_order else support, query, "transductive"
        params = {k.removeprefix("head."): v for k, v in params.items() if k.startswith("head.")}
        inner = replace(inner, adapt=frozenset(k.removeprefix("head.") for k in inner.adapt))
    else:
        net, x = model, xs
    outputs = [predict(net, params, xq, xs, bn)] if every_step or inner.steps == 0 else []
    for step, adapted in enumerate(adapt_path(net, params, x, ys, inner, loss_fn), start=1):
        if every_step or step == inner.steps:
            outputs.append(predict(net, adapted, xq, xs, bn))
    return outputs


def meta_loss(model: nn.Module, params: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor,
              inner: InnerLoop, loss_fn: LossFn = mse, path: str = "loop",
              bn: str = "transductive") -> tuple[Tensor, Tensor]:
    """Mean over T tasks of the query loss after adapting on the support set.

    xs, ys: support sets [T, K, ...]; xq, yq: query sets [T, Q, ...].
    Returns (loss, a scalar whose gradient w.r.t. ``params`` is the meta-gradient;
    query predictions after adaptation [T, Q, ...], detached).
    ``path`` (:data:`PATHS`): the tasks one after another (``"loop"``), under ``torch.vmap``, or
    ``"batched"`` (:func:`metalearn.batched.meta_loss`: Conv4, transductive batch norm; one set of
    operator calls for all tasks); ``bn``: how the queries are normalised (:func:`predict`).
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if path == "batched":
        return batched.meta_loss(model, params, xs, ys, xq, yq, inner, loss_fn, bn)

    def task(xs_t, ys_t, xq_t, yq_t):
        prediction = query_outputs(model, params, xs_t, ys_t, xq_t, inner, loss_fn, bn)[-1]
        return loss_fn(prediction, yq_t), prediction.detach()

    if path == "vmap":
        with hand_written_batch_norm():
            losses, predictions = vmap(task)(xs, ys, xq, yq)
    else:
        per_task = [task(*t) for t in zip(xs, ys, xq, yq)]
        losses = torch.stack([loss for loss, _ in per_task])
        predictions = torch.stack([prediction for _, prediction in per_task])
    return losses.mean(), predictions


def task_meta_gradients(model: nn.Module, params: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor,
                        inner: InnerLoop, loss_fn: LossFn = mse, bn: str = "transductive",
                        tasks: Sequence[int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per task, the gradient of its own query loss after adaptation (:func:`meta_loss` of that
    task alone) with respect to ``params``, one task at a time.

    xs, ys, xq, yq: as in :func:`meta_loss`, [T, ...]; ``tasks``: which of the T (default all).
    Returns (gradients [n, P], flattened as :func:`models.flat` orders ``params``, zeros where a
    parameter does not reach the loss; losses [n]; query predictions after adaptation
    [n, Q, ...], detached). The mean of the rows is :func:`meta_loss`'s meta-gradient, summed in
    an order of our choosing rather than autograd's; only one task's graph is alive at a time.
    """
    names = list(params)
    rows, losses, predictions = [], [], []
    for t in range(len(xs)) if tasks is None else tasks:
        prediction = query_outputs(model, params, xs[t], ys[t], xq[t], inner, loss_fn, bn)[-1]
        loss = loss_fn(prediction, yq[t])
        grads = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True, materialize_grads=True)
        rows.append(flat(dict(zip(names, grads))))
        losses.append(loss.detach())
        predictions.append(prediction.detach())
    return torch.stack(rows), torch.stack(losses), torch.stack(predictions)


# --- Reptile --------------------------------------------------------------------------

@dataclass(frozen=True)
class InnerOptimizer:
    """Reptile's inner optimiser: ``name`` in sgd / adam / rmsprop with its settings.

    ``beta1``, ``beta2``: Adam's moment decays (Reptile uses beta1 = 0);
    ``rho``: RMSProp's squared-gradient decay; ``eps``: both's denominator term.
    """

    name: str = "sgd"
    lr: float = 0.02
    beta1: float = 0.0
    beta2: float = 0.999
    rho: float = 0.9
    eps: float = 1e-8

    def __post_init__(self):
        if self.name not in INNER_OPTIMIZERS:
            raise ValueError(f"unknown inner optimiser {self.name!r}; choose one of {INNER_OPTIMIZERS}")
        if self.lr <= 0:
            raise ValueError(f"inner learning rate must be > 0, got {self.lr}")
        for name in ("beta1", "beta2", "rho"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def build(self, tensors: list[Tensor]) -> torch.optim.Optimizer:
        if self.name == "sgd":
            return torch.optim.SGD(tensors, lr=self.lr)
        if self.name == "adam":
            return torch.optim.Adam(tensors, lr=self.lr, betas=(self.beta1, self.beta2), eps=self.eps)
        return torch.optim.RMSprop(tensors, lr=self.lr, alpha=self.rho, eps=self.eps)


def optimize_path(model: nn.Module, params: Params, x: Tensor, y: Tensor, batches: Tensor,
                  optimizer: InnerOptimizer, state: dict | None = None,
                  loss_fn: LossFn = mse) -> Iterator[tuple[Params, dict]]:
    """Reptile's inner loop: one optimiser step per row of ``batches`` on one task.

    x, y: the task's data [n, ...]; batches: [k, b] indices into it (k steps on
    minibatches of b). ``state``: an optimiser state to continue from (None: fresh).
    Yields, after each step, the adapted parameters (detached views that the next
    step updates in place: clone them to keep them) and the optimiser state.
    """
    phi = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    opt = optimizer.build(list(phi.values()))
    if state is not None:
        opt.load_state_dict(state)
    for idx in batches:
        opt.zero_grad(set_to_none=True)
        loss_fn(forward(model, phi, x[idx]), y[idx]).backward()
        opt.step()
        yield {k: v.detach() for k, v in phi.items()}, opt.state_dict()


def optimize(model: nn.Module, params: Params, x: Tensor, y: Tensor, batches: Tensor,
             optimizer: InnerOptimizer, state: dict | None = None,
             loss_fn: LossFn = mse) -> tuple[Params, dict | None]:
    """The parameters and optimiser state after all of :func:`optimize_path`'s steps."""
    result = ({k: v.detach() for k, v in params.items()}, state)
    for result in optimize_path(model, params, x, y, batches, optimizer, state, loss_fn):
        pass
    return result


def reptile_update(params: Params, adapted: Sequence[Params], step_size: float) -> Params:
    """``theta + step_size * mean_i(phi_i - theta)``: serial (one phi) or batched Reptile."""
    if not adapted:
        raise ValueError("Reptile needs at least one adapted parameter set")
    return {
        k: (v + step_size * torch.stack([phi[k] - v for phi in adapted]).mean(0)).detach()
        for k, v in params.items()
    }
