"""Models, each split into a ``body`` (feature layers) and a ``head`` (last layer).

Parameter names therefore start with ``body.<layer>.`` or ``head.``, which is what
the masks of :mod:`metalearn.core` select on (ANIL adapts ``head.*`` only; freezing
layers 1-2 removes ``body.layer1.*`` and ``body.layer2.*``).

Models are ordinary ``nn.Module``; the meta-learning core runs them functionally
with :func:`forward` on a dictionary of parameter tensors.

Batch norm (:class:`BatchNorm`) is written out by hand (mean and biased variance over
every axis but the channel axis), always from the statistics of the batch it is given,
with no running averages: the papers' code does this at training and test time
("transductive": a query set is normalised with its own statistics). Passing
``stats_rows=n`` takes the statistics from the first ``n`` rows only, so a query set
concatenated after its support set is normalised with the support's statistics
("per-episode inductive", :func:`metalearn.core.predict`). Under ``torch.vmap`` it is
written out by hand, where ``F.batch_norm(training=True)`` gives wrong second-order
meta-gradients.
"""
from __future__ import annotations

import hashlib

from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]


_HAND_WRITTEN = False


@contextmanager
def hand_written_batch_norm(enabled: bool = True):
    """Inside this block :class:`BatchNorm` uses its written-out formula even where
    ``F.batch_norm`` would do: needed under ``torch.vmap``, where ``F.batch_norm(training=True)``
    silently gives wrong second-order meta-gradients (:func:`metalearn.core.meta_loss`
    enters it on its ``"vmap"`` path)."""
    global _HAND_WRITTEN
    previous, _HAND_WRITTEN = _HAND_WRITTEN, enabled or _HAND_WRITTEN
    try:
        yield
    finally:
        _HAND_WRITTEN = previous


class BatchNorm(nn.Module):
    """Batch norm over the current batch: x [B, C, ...] -> same shape.

    ``(x - mean) / sqrt(var + eps) * weight + bias`` with mean and (biased) variance
    per channel over every axis but 1, taken from ``x[:stats_rows]`` (default: all rows).
    Computed by ``F.batch_norm`` (training mode, no running statistics: 3-4x faster on
    CPU) unless ``stats_rows`` is given or :func:`hand_written_batch_norm` is on; both
    give the same values and gradients of every order (tested).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, stats_rows: int | None = None) -> Tensor:
        if stats_rows is None and not _HAND_WRITTEN:
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
        ref = x if stats_rows is None else x[:stats_rows]
        var, mean = torch.var_mean(ref, [0, *range(2, x.dim())], correction=0, keepdim=True)
        shape = [1, -1] + [1] * (x.dim() - 2)
        return (x - mean) * (torch.rsqrt(var + self.eps) * self.weight.view(shape)) + self.bias.view(shape)


class Block(nn.Module):
    """``pool(relu(batch_norm(layer(x))))``: one conv (or linear) block of the papers' models."""

    def __init__(self, layer: nn.Module, channels: int, pool: bool = False):
        super().__init__()
        self.layer = layer
        self.norm = BatchNorm(channels)
        self.pool = pool

    def forward(self, x: Tensor, stats_rows: int | None = None) -> Tensor:
        x = torch.relu(self.norm(self.layer(x), stats_rows))
        return F.max_pool2d(x, 2) if self.pool else x


class Net(nn.Module):
    """``head(features(x))``; ``body`` is an ``nn.Sequential`` of named layers.

    ``features`` is the body's output made flat: ``[B, ...] -> [B, F]`` by
    ``flatten`` (``"flatten"``, default) or by a mean over the spatial axes
    (``"mean"``, MAML's strided Omniglot network), or left as it is (``"none"``: fully
    connected bodies, whose inputs may carry extra leading axes, ``[T, B, D]``). ``stats_rows`` reaches every
    :class:`Block` (batch-norm statistics from the first rows only); models without
    batch norm ignore it.
    """

    def __init__(self, body: nn.Sequential, head: nn.Module, reduce: str = "flatten"):
        super().__init__()
        if reduce not in ("flatten", "mean", "none"):
            raise ValueError(f"reduce must be 'flatten', 'mean' or 'none', got {reduce!r}")
        self.body = body
        self.head = head
        self.reduce = reduce

    def features(self, x: Tensor, stats_rows: int | None = None) -> Tensor:
        """Penultimate features [B, F] (the head's input)."""
        for layer in self.body:
            x = layer(x, stats_rows) if isinstance(layer, Block) else layer(x)
        if self.reduce == "none":
            return x
        return x.flatten(2).mean(2) if self.reduce == "mean" else x.flatten(1)

    def forward(self, x: Tensor, stats_rows: int | None = None, features: bool = False) -> Tensor:
        h = self.features(x, stats_rows)
        return h if features else self.head(h)

    @property
    def layers(self) -> list[str]:
        """Names of the layers with parameters, in order, e.g. ``['body.layer1', 'body.layer2', 'head']``."""
        return [f"body.{name}" for name, m in self.body.named_children() if any(True for _ in m.parameters())] + ["head"]


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
    return Net(nn.Sequential(blocks), nn.Linear(sizes[-2], sizes[-1]), reduce="none")


def conv4(n_way: int, channels: int = 1, filters: int = 64, image_size: int = 28,
          strided: bool = True) -> Net:
    """The papers' Conv4: four blocks of 3x3 conv (padding 1), batch norm, ReLU.

    ``strided=True`` (Omniglot, MAML): stride-2 convs, features = mean over space
    [B, filters]; 28 -> 14 -> 7 -> 4 -> 2. ``strided=False`` (MiniImageNet): stride 1
    and 2x2 max-pool per block, features flattened; 84 -> 42 -> 21 -> 10 -> 5, so
    [B, filters * 25]. Input [B, channels, image_size, image_size] -> logits [B, n_way].
    """
    if min(n_way, channels, filters, image_size) < 1:
        raise ValueError(f"conv4 needs positive sizes, got n_way={n_way}, channels={channels}, "
                         f"filters={filters}, image_size={image_size}")
    blocks, side = OrderedDict(), image_size
    for i in range(4):
        conv = nn.Conv2d(channels if i == 0 else filters, filters, 3, stride=2 if strided else 1, padding=1)
        blocks[f"layer{i + 1}"] = Block(conv, filters, pool=not strided)
        side = (side + 1) // 2 if strided else side // 2
    if side < 1:
        raise ValueError(f"images of {image_size}x{image_size} are too small for four blocks")
    n_features = filters if strided else filters * side * side
    return Net(nn.Sequential(blocks), nn.Linear(n_features, n_way), reduce="mean" if strided else "flatten")


def bn_mlp(sizes: list[int]) -> Net:
    """The MAML paper's non-convolutional Omniglot network: Linear + batch norm + ReLU blocks.

    ``bn_mlp([784, 256, 128, 64, 64, 5])``: input [B, 1, 28, 28] (flattened by the
    first block) -> logits [B, 5]; the last Linear is the head.
    """
    if len(sizes) < 3 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"bn_mlp needs at least three positive layer sizes, got {sizes}")
    blocks = OrderedDict()
    blocks["flatten"] = nn.Flatten()
    for i in range(len(sizes) - 2):
        blocks[f"layer{i + 1}"] = Block(nn.Linear(sizes[i], sizes[i + 1]), sizes[i + 1])
    return Net(nn.Sequential(blocks), nn.Linear(sizes[-2], sizes[-1]), reduce="none")


def params_of(model: nn.Module, requires_grad: bool = True) -> Params:
    """Detached copies of the model's parameters, as leaves (optionally requiring grad)."""
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in model.named_parameters()}


def flat(params: Params) -> Tensor:
    """{name: tensor} -> one vector [P], in the dict's order."""
    return torch.cat([t.reshape(-1) for t in params.values()])


def unflat(vector: Tensor, like: Params) -> Params:
    """A vector [P] -> {name: tensor} shaped as ``like`` (the inverse of :func:`flat`)."""
    return {k: piece.view_as(t) for (k, t), piece in zip(like.items(), vector.split([t.numel() for t in like.values()]))}


def forward(model: nn.Module, params: Params, x: Tensor, **kwargs) -> Tensor:
    """``model(x, **kwargs)`` with ``params`` in place of the model's own parameters."""
    return functional_call(model, params, (x,), kwargs)


@contextmanager
def captured(model: nn.Module, layers: list[str]) -> Iterator[dict[str, Tensor]]:
    """Inside the block, each forward pass of ``model`` records the output of each named layer
    (detached) in the yielded dict, by forward hooks removed on leaving it; works for any
    parameters a functional call gives the model (before and after adaptation alike)."""
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; the model has {getattr(model, 'layers', list(modules))}")
    seen: dict[str, Tensor] = {}

    def hook_for(name: str) -> Callable:
        def hook(_module, _inputs, output):
            seen[name] = output.detach()
        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def activations(model: Net, params: Params, x: Tensor, layers: list[str] | None = None) -> dict[str, Tensor]:
    """Output of each named layer (default: all of ``model.layers``) for input ``x``, read during
    one functional forward pass (:func:`captured`). Shapes: layer-dependent, leading dimension B."""
    layers = layers or model.layers
    with captured(model, layers) as seen:
        forward(model, params, x)
    return {name: seen[name] for name in layers}


def init_model(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model with weights drawn from a fixed seed (the global RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def fingerprint(model: nn.Module) -> str:
    """A short hash of ``model``'s state (names, dtypes, shapes, values): the identity of trained
    weights in the records of what was computed from them (e.g. test scores)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]
