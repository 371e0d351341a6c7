"""Models, each split into a ``body`` (feature layers) and a ``head`` (last layer).

Parameter names therefore start with ``body.<layer>.`` or ``head.``, which is what
the masks of :mod:`metalearn.core` select on (ANIL adapts ``head.*`` only; freezing
layers 1-2 removes ``body.layer1.*`` and ``body.layer2.*``).

Models are ordinary ``nn.Module``; the meta-learning core runs them functionally
with :func:`forward` on a dictionary of parameter tensors.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]


class Net(nn.Module):
    """``head(body(x))``; ``body`` is an ``nn.Sequential`` of named layers."""

    def __init__(self, body: nn.Sequential, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    @property
    def layers(self) -> list[str]:
        """Names of the layers in order, e.g. ``['body.layer1', 'body.layer2', 'head']``."""
        return [f"body.{name}" for name, _ in self.body.named_children()] + ["head"]


def mlp(sizes: list[int]) -> Net:
    """Fully connected ReLU network, e.g. ``mlp([1, 40, 40, 1])`` for the MAML sinusoid.

    Shapes: input [B, sizes[0]] -> output [B, sizes[-1]]. Every hidden layer is a
    ``Linear`` + ``ReLU`` block of the body; the last ``Linear`` is the head.
    """
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"an MLP needs at least two positive layer sizes, got {sizes}")
    blocks = OrderedDict(
        (f"layer{i + 1}", nn.Sequential(nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()))
        for i in range(len(sizes) - 2)
    )
    return Net(nn.Sequential(blocks), nn.Linear(sizes[-2], sizes[-1]))


def params_of(model: nn.Module, requires_grad: bool = True) -> Params:
    """Detached copies of the model's parameters, as leaves (optionally requiring grad)."""
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in model.named_parameters()}


def forward(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """``model(x)`` with ``params`` in place of the model's own parameters."""
    return functional_call(model, params, (x,))


def activations(model: Net, params: Params, x: Tensor, layers: list[str] | None = None) -> dict[str, Tensor]:
    """Output of each named layer (default: all of ``model.layers``) for input ``x``.

    Read with forward hooks during one functional forward pass, so it works for the
    parameters before and after adaptation alike. Shapes: layer-dependent, leading
    dimension B.
    """
    layers = layers or model.layers
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; the model has {model.layers}")
    seen: dict[str, Tensor] = {}

    def hook_for(name: str) -> Callable:
        def hook(_module, _inputs, output):
            seen[name] = output.detach()
        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    try:
        forward(model, params, x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: seen[name] for name in layers}


def init_model(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model with weights drawn from a fixed seed (the global RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()
