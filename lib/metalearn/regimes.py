"""Training the network body without a meta-learning inner loop (ANIL paper Sec. 5.2,
Reptile review Sec. 6.5). Entry point: :func:`pretrain`.

==========  ===========================================================================
regime      what trains the body
==========  ===========================================================================
multiclass  plain classification of single images over all M training classes, through
            a temporary M-way head (:meth:`datasets.EpisodeSampler.labelled`)
multitask   N-way tasks through one shared N-way head, with no per-task adaptation: the
            MAML step with zero inner steps (the query loss at the initialisation)
niltrain    no head: the logits of a query are NIL's, from the cosine similarity of its
            features to the support set's (:func:`core.nil_logits`)
==========  ===========================================================================

Afterwards the head is thrown away, as in the papers: the model keeps the head it had
before pre-training (its seeded initialisation) and the run's own algorithm takes over
(:mod:`metalearn.fewshot`: ``head`` freezes the body and meta-trains that head,
``reptile`` runs Reptile from the pre-trained weights).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import core, models, training
from .tasks import Batch

REGIMES = ("multiclass", "multitask", "niltrain")


def nil_loss(model: nn.Module, params: models.Params, batch: Batch, bn: str = "transductive") -> tuple[Tensor, Tensor]:
    """Mean over T tasks of NIL's query loss: the negative log of the cosine-weighted support
    labels (:func:`core.nil_logits`) of each query, from penultimate features.

    batch: support [T, N*K, ...] / [T, N*K], queries [T, N*Q, ...] / [T, N*Q].
    Returns (scalar loss, query log-probabilities [T, N*Q, N], detached).
    """
    losses, outputs = [], []
    for xs, ys, xq, yq in zip(batch.xs, batch.ys, batch.xq, batch.yq):
        n_way = int(ys.max()) + 1
        support = models.forward(model, params, xs, features=True)
        query = core.predict(model, params, xq, xs, bn, features=True)
        log_probs = core.nil_logits(query, support, ys, n_way)
        losses.append(F.nll_loss(log_probs, yq))
        outputs.append(log_probs.detach())
    return torch.stack(losses).mean(), torch.stack(outputs)


def _multiclass_net(model: models.Net, n_classes: int, seed: int) -> models.Net:
    """``model``'s body (the same module: training it trains the model's) under a new
    ``n_classes``-way linear head, initialised from ``seed``."""
    head = models.init_model(lambda: nn.Linear(model.head.in_features, n_classes), seed)
    return models.Net(model.body, head.to(next(model.parameters()).device), reduce=model.reduce)


def pretrain(regime: str, model: models.Net, sampler, iterations: int, batch: int, lr: float, seed: int,
             name: str, config: dict, bn: str = "transductive", checkpoint_every: int = 200,
             log_every: int = 50) -> list[dict]:
    """Train ``model``'s body in place by ``regime``, resumably; returns the history.

    ``iterations`` Adam steps of size ``lr``; each on ``batch`` images (multiclass, drawn
    by ``sampler.labelled``) or ``batch`` tasks (multitask, niltrain: ``sampler.batch``,
    the sampler's N-way K-shot with its queries). The model's head comes out as it went
    in. ``name`` and ``config`` key the checkpoint (:class:`training.Run`).
    """
    if regime not in REGIMES:
        raise ValueError(f"unknown pre-training regime {regime!r}; choose one of {REGIMES}")
    if iterations < 1 or batch < 1:
        raise ValueError(f"pre-training needs iterations >= 1 and batch >= 1, got {iterations} and {batch}")
    key = {**config, "regime": regime, "iterations": iterations, "batch": batch, "lr": lr, "bn": bn, "seed": seed}
    if regime != "multiclass":
        key.update(n_way=sampler.n_way, k_shot=sampler.k_shot, n_query=sampler.n_query)
    head = copy.deepcopy(model.head.state_dict())
    if regime == "multiclass":
        net = _multiclass_net(model, len(sampler.classes), seed + 1)
        trainable = list(net.parameters())
    else:
        net = model
        trainable = list(model.body.parameters()) if regime == "niltrain" else list(model.parameters())
    run = training.Run(name, key, net, seed, torch.optim.Adam(trainable, lr=lr), checkpoint_every)
    training.cleanup_stale(name, run.path)

    if regime == "multiclass":
        def step(run):
            x, y = sampler.labelled(batch, run.gen)
            logits = run.model(x)
            loss = F.cross_entropy(logits, y)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            return {"loss": loss.item(), "accuracy": (logits.argmax(-1) == y).float().mean().item()}
    elif regime == "multitask":
        no_adaptation = core.InnerLoop(steps=0, lr=0.0)

        def step(run):
            return training.maml_step(run, lambda gen: sampler.batch(batch, gen), no_adaptation,
                                      core.cross_entropy, bn=bn)
    else:
        def step(run):
            tasks = sampler.batch(batch, run.gen)
            loss, log_probs = nil_loss(run.model, dict(run.model.named_parameters()), tasks, bn)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            return {"loss": loss.item(), "accuracy": (log_probs.argmax(-1) == tasks.yq).float().mean().item()}

    history = run.train(iterations, step, log_every=log_every, desc=f"{regime} pre-training")
    model.head.load_state_dict(head)
    return history
