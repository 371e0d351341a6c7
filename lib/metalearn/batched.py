"""The tasks of a meta-batch run together: one set of operator calls for all T tasks.

:func:`meta_loss` is :func:`metalearn.core.meta_loss` (MAML, first-order MAML, ANIL: the same
:class:`~metalearn.core.InnerLoop`) computed for the Conv4 models of :func:`metalearn.models.conv4`
with every tensor carrying the tasks in one extra axis, written with ordinary operators rather
than ``torch.vmap``:

- each task's copy of a parameter is a row of ``params[k].expand(T, ...)``, so the T tasks adapt
  their own weights while the meta-gradient flows back to the one shared tensor;
- a convolution of T tasks is one grouped convolution: the activations stay ``[N, T*C, H, W]``
  (tasks side by side on the channel axis) and the kernels ``[T*C_out, C_in, k, k]``, groups T;
- batch norm of T tasks is one batch norm over the T*C channels (mean and variance per task and
  channel over N, H, W: the same statistics as each task's own; no vmap, so ``F.batch_norm`` is
  exact here);
- the head is one batched matrix product ``[T, N, F] x [T, F, n]``, the loss one call over the
  T*N examples (the tasks' losses all average over the same number of examples).

So one meta-iteration makes about as many operator calls as one task does in the per-task loop
(``tests/test_batched.py`` counts them with ``torch.profiler``): the launch-bound path a GPU
needs, where the loop launches T times as many small kernels. On a CPU the grouped convolutions
are not faster (``reports/benchmark``). Batch norm is transductive (each set normalised with its
own statistics, the papers' setting); the inductive mode is refused.

:class:`CapturedStep` goes one step further on a GPU: the whole meta-iteration (this meta-loss,
its backward, the optimiser's step) recorded once as a CUDA graph and replayed, so the host
launches one graph instead of thousands of kernels per iteration (static shapes, the episodes
copied into fixed device buffers, no host synchronisation inside the step).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .models import BatchNorm, Block, Net, Params

if TYPE_CHECKING:  # metalearn.core dispatches here: its types for the signatures only
    from .core import InnerLoop, LossFn


def supports(model) -> bool:
    """Whether ``model`` is a Conv4 of :func:`metalearn.models.conv4` (conv blocks with batch norm, a
    linear head): the models this path computes."""
    return (isinstance(model, Net) and model.reduce in ("mean", "flatten") and isinstance(model.head, torch.nn.Linear)
            and all(isinstance(b, Block) and isinstance(b.layer, torch.nn.Conv2d) and isinstance(b.norm, BatchNorm)
                    for b in model.body))


def side_by_side(x: Tensor) -> Tensor:
    """Images of T tasks [T, N, C, H, W] -> [N, T*C, H, W]: the tasks side by side on the channel axis."""
    return x.transpose(0, 1).flatten(1, 2)


def grouped(model: Net, params: Params, n_tasks: int) -> Params:
    """Each task's copy of the shared ``params``, laid out as the batched operators take them: the
    body's tensors [T*C_out, ...] (task-major, one grouped convolution and one batch norm for all
    tasks), the head's [T, ...]. The copies are views of ``params`` where a layout allows, so the
    meta-gradient of each task's copy flows back to the shared tensor."""
    out = {}
    for k, v in params.items():
        copies = v.expand(n_tasks, *v.shape)
        out[k] = copies if k.startswith("head.") else copies.reshape(n_tasks * v.shape[0], *v.shape[1:])
    return out


def features(model: Net, params: Params, h: Tensor, n_tasks: int) -> Tensor:
    """The body of T tasks at once: h [N, T*C, H, W] (:func:`side_by_side`), ``params`` as
    :func:`grouped` lays them out -> features [T, N, F]."""
    for name, block in model.body.named_children():
        conv, p = block.layer, f"body.{name}."
        h = F.conv2d(h, params[p + "layer.weight"], params[p + "layer.bias"], stride=conv.stride, padding=conv.padding,
                     groups=n_tasks)
        h = torch.relu(F.batch_norm(h, None, None, params[p + "norm.weight"], params[p + "norm.bias"], training=True,
                                    eps=block.norm.eps))
        if block.pool:
            h = F.max_pool2d(h, 2)
    h = h.unflatten(1, (n_tasks, -1))  # [N, T, C, h, w]
    h = h.flatten(3).mean(3) if model.reduce == "mean" else h.flatten(2)
    return h.transpose(0, 1)  # [T, N, F]


def head(params: Params, h: Tensor, prefix: str = "head.") -> Tensor:
    """The linear head of T tasks: h [T, N, F], weight [T, n, F], bias [T, n] -> logits [T, N, n]."""
    return torch.baddbmm(params[prefix + "bias"].unsqueeze(1), h, params[prefix + "weight"].transpose(1, 2))


def adapt(model: Net, params: Params, x: Tensor, y: Tensor, inner: InnerLoop, loss_fn: LossFn,
          body: Tensor | None = None) -> Params:
    """Every task's parameters after ``inner.steps`` steps on its own support set: x [N, T*C, H, W]
    (:func:`side_by_side`), y [T, K]; ``params`` as :func:`grouped` lays them out. With ``body`` (the
    support features [T, K, F]) only the head runs, for an inner loop that adapts the head alone.
    Each task's gradient is that of its own loss: the tasks' losses are summed (T times the mean
    over all examples), and no task's loss reaches another's weights."""
    names = [k for k in params if inner.adapt is None or k in inner.adapt]
    fixed = {k: v for k, v in params.items() if k not in names}
    if inner.first_order:
        fixed = {k: v.detach() for k, v in fixed.items()}
    current = {k: params[k] for k in names}
    n_tasks = len(y)
    for step in range(inner.steps):
        at = {k: v.detach().requires_grad_() for k, v in current.items()} if inner.first_order else current
        both = {**fixed, **at}
        logits = head(both, body if body is not None else features(model, both, x, n_tasks))
        loss = loss_fn(logits.flatten(0, 1), y.flatten()) * n_tasks
        grads = torch.autograd.grad(loss, [at[k] for k in names], create_graph=not inner.first_order)
        lr = inner.lr_at(step)
        current = {k: current[k] - lr * g for k, g in zip(names, grads)}
    return {**params, **current}


def meta_loss(model: Net, params: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, inner: InnerLoop,
              loss_fn: LossFn, bn: str = "transductive") -> tuple[Tensor, Tensor]:
    """:func:`metalearn.core.meta_loss` with the T tasks batched: xs, ys [T, K, ...]; xq, yq [T, Q, ...];
    ``params`` the shared parameters (unbatched). Returns (the mean of the tasks' query losses
    after adaptation, whose gradient w.r.t. ``params`` is the meta-gradient; query logits
    [T, Q, n], detached)."""
    if bn != "transductive":
        raise ValueError(f"the batched path normalises each set with its own statistics (bn='transductive'), "
                         f"not bn={bn!r}: use the per-task loop")
    if not supports(model):
        raise ValueError("the batched path computes the Conv4 models of metalearn.models.conv4; use the per-task loop")
    n_tasks = len(xs)
    copies = grouped(model, params, n_tasks)
    support, query = side_by_side(xs), side_by_side(xq)
    if inner.adapt is not None and all(k.startswith("head.") for k in inner.adapt):
        # the body does not change in the inner loop: run it once (as core.query_outputs does)
        support, query = features(model, copies, support, n_tasks), features(model, copies, query, n_tasks)
        adapted = adapt(model, copies, support, ys, inner, loss_fn,
                        body=support.detach() if inner.first_order else support)
        logits = head(adapted, query)
    else:
        adapted = adapt(model, copies, support, ys, inner, loss_fn)
        logits = head(adapted, features(model, adapted, query, n_tasks))
    return loss_fn(logits.flatten(0, 1), yq.flatten()), logits.detach()


#: eager meta-iterations a :class:`CapturedStep` runs before it records its graph
WARMUP = 3


class Result(NamedTuple):
    """What one meta-iteration of :class:`CapturedStep` returns: the meta-loss (0-dim, detached)
    and the query logits after adaptation [T, Q, n] (detached). On CUDA both are the graph's own
    output buffers, overwritten by the next iteration: read them (``.item()``) before it."""
    loss: Tensor
    logits: Tensor


class CapturedStep:
    """One MAML-family meta-iteration on the batched path: :func:`meta_loss`, its backward into
    the parameters' ``.grad``, then ``optimizer.step()``; called once per meta-batch (``xs, ys,
    xq, yq`` [T, ...] as :func:`meta_loss` takes them, on the model's device) -> :class:`Result`.

    With ``capture`` (default: on a CUDA device) the first ``warmup`` calls run eagerly on a side
    stream (the papers' iterations all the same: they train), the next is recorded as a CUDA
    graph (``torch.cuda.graph``) and replayed at once, and every later call only copies its
    episodes into the graph's input buffers and replays it: the same kernels on the same
    buffers, with the host launching one graph. The optimiser must update on the device
    without host synchronisation (``torch.optim.Adam(..., capturable=True)``). Without
    ``capture`` every call runs the same step eagerly on the same buffers (the CPU; what the tests
    compare with the plain training step). Every call must have the first call's shapes and
    dtypes (a graph replays fixed shapes): another batch shape is refused. Inputs are copied, so
    the caller may reuse its tensors."""

    def __init__(self, model: Net, optimizer: torch.optim.Optimizer, inner: InnerLoop, loss_fn: LossFn,
                 warmup: int = WARMUP, capture: bool | None = None):
        device = next(model.parameters()).device
        self.capture = device.type == "cuda" if capture is None else capture
        if self.capture and device.type != "cuda":
            raise ValueError(f"a CUDA graph needs the model on a CUDA device, not {device}: capture=False on the CPU")
        if self.capture and not all(group.get("capturable", False) for group in optimizer.param_groups):
            raise ValueError("a captured step needs an optimiser that steps without host synchronisation: "
                             "torch.optim.Adam(..., capturable=True)")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (eager iterations before the capture), got {warmup}")
        if not supports(model):
            raise ValueError("the batched path computes the Conv4 models of metalearn.models.conv4")
        self.model, self.optimizer, self.inner, self.loss_fn, self.warmup = model, optimizer, inner, loss_fn, warmup
        self.inputs: tuple[Tensor, ...] | None = None  # the static input buffers, from the first call
        self.graph = None
        self.result: Result | None = None
        self.calls = 0

    def _step(self) -> Result:
        """The meta-iteration on the input buffers (eager, or recorded into the graph)."""
        loss, logits = meta_loss(self.model, dict(self.model.named_parameters()), *self.inputs, self.inner,
                                 self.loss_fn)
        loss.backward()
        self.optimizer.step()
        return Result(loss.detach(), logits)

    def _load(self, batch: tuple[Tensor, ...]) -> None:
        if self.inputs is None:
            self.inputs = tuple(t.detach().clone() for t in batch)
            return
        shapes = [(tuple(t.shape), t.dtype, t.device) for t in batch]
        expected = [(tuple(t.shape), t.dtype, t.device) for t in self.inputs]
        if shapes != expected:
            raise ValueError(f"a captured step replays fixed shapes: this batch is {shapes}, the first was {expected}")
        for buffer, t in zip(self.inputs, batch):
            buffer.copy_(t)

    def __call__(self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> Result:
        self._load((xs, ys, xq, yq))
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return self.result
        if not self.capture:
            self.optimizer.zero_grad(set_to_none=True)
            return self._step()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.optimizer.zero_grad(set_to_none=True)  # the graph's backward allocates .grad in its own pool
            if self.calls <= self.warmup:
                result = self._step()
            else:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.result = self._step()
        torch.cuda.current_stream().wait_stream(side)
        if self.graph is None:
            return result
        self.graph.replay()  # recording ran nothing: this call's iteration
        return self.result
