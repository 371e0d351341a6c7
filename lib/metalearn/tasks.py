"""Task distributions for regression: sinusoids and the sine/Fourier mixture.

A task is ``y = a sin(x + p)`` (MAML: a ~ U[0.1, 5], p ~ U[0, pi], x ~ U[-5, 5];
Reptile: p ~ U[0, 2 pi], x on a 50-point grid) or, for the Reptile review's
mixture, the Fourier series ``y = a sin(x + p) + 3 a sin(x / 3 + p)``.
The MAML code writes ``sin(x - p)``: the two families are mirror images under
(x, y) -> (-x, -y), a symmetry of the task distribution and of the MLP, so every
statistic reported is the same.

All sampling draws from an explicit ``torch.Generator``, so a seed fixes every task.
Shapes: T tasks, n points, inputs and outputs [T, n, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


class Batch(NamedTuple):
    """A batch of T regression tasks: support (xs, ys) [T, K, 1], query (xq, yq) [T, Q, 1],
    and the task parameters [T, 2] (amplitude, phase) that only an oracle may see."""

    xs: Tensor
    ys: Tensor
    xq: Tensor
    yq: Tensor
    task: Tensor


def _uniform(low: float, high: float, shape: tuple, gen: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


@dataclass(frozen=True)
class SineFamily:
    """Sinusoids ``a sin(x + p)`` (or the Fourier series when ``fourier``)."""

    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)
    fourier: bool = False

    def __post_init__(self):
        for name in ("amplitude", "phase", "x_range"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"SineFamily.{name} must be an interval (low < high), got {(low, high)}")

    def sample_tasks(self, n_tasks: int, gen: torch.Generator) -> Tensor:
        """[T, 2]: amplitude and phase of ``n_tasks`` tasks."""
        return torch.stack([_uniform(*self.amplitude, (n_tasks,), gen), _uniform(*self.phase, (n_tasks,), gen)], 1)

    def sample_x(self, n_tasks: int, n_points: int, gen: torch.Generator) -> Tensor:
        """[T, n, 1] inputs drawn uniformly from ``x_range``."""
        return _uniform(*self.x_range, (n_tasks, n_points, 1), gen)

    def grid(self, n_tasks: int, n_points: int) -> Tensor:
        """[T, n, 1] evenly spaced inputs over ``x_range`` (the Reptile code's 50-point grid)."""
        return torch.linspace(*self.x_range, n_points).reshape(1, n_points, 1).expand(n_tasks, -1, -1).clone()

    def __call__(self, task: Tensor, x: Tensor) -> Tensor:
        """Targets [T, n, 1] of tasks [T, 2] at inputs [T, n, 1]."""
        a, p = task[:, 0, None, None], task[:, 1, None, None]
        y = a * torch.sin(x + p)
        if self.fourier:
            y = y + 3 * a * torch.sin(x / 3 + p)
        return y

    def batch(self, n_tasks: int, n_support: int, n_query: int, gen: torch.Generator) -> Batch:
        """T tasks with K support and Q query points drawn independently from ``x_range``."""
        task = self.sample_tasks(n_tasks, gen)
        xs, xq = self.sample_x(n_tasks, n_support, gen), self.sample_x(n_tasks, n_query, gen)
        return Batch(xs, self(task, xs), xq, self(task, xq), task)


@dataclass(frozen=True)
class SurfaceFamily(SineFamily):
    """Surfaces ``z = a sin(x^2 + y^2 + p)`` over the square ``x_range`` x ``x_range`` (the Reptile
    review's two-dimensional task, Sec. 5.2): inputs [T, n, 2], targets [T, n, 1]; amplitude and
    phase drawn as :class:`SineFamily` draws them (the review: a in [0, 2], p in [0, 2 pi])."""

    amplitude: tuple[float, float] = (0.0, 2.0)
    phase: tuple[float, float] = (0.0, 2 * math.pi)
    x_range: tuple[float, float] = (-3.0, 3.0)

    def __post_init__(self):
        super().__post_init__()
        if self.fourier:
            raise ValueError("SurfaceFamily has no Fourier variant")

    def sample_x(self, n_tasks: int, n_points: int, gen: torch.Generator) -> Tensor:
        """[T, n, 2] inputs drawn uniformly from the square."""
        return _uniform(*self.x_range, (n_tasks, n_points, 2), gen)

    def grid(self, n_tasks: int, n_points: int) -> Tensor:
        """[T, n, 2]: a side x side grid over the square, n = side^2 points (the review: 100 x 100)."""
        side = math.isqrt(n_points)
        if side * side != n_points or side < 2:
            raise ValueError(f"a square grid needs a square number of points (at least 4), got {n_points}")
        axis = torch.linspace(*self.x_range, side)
        points = torch.cartesian_prod(axis, axis)
        return points.expand(n_tasks, -1, -1).clone()

    def __call__(self, task: Tensor, x: Tensor) -> Tensor:
        """Targets [T, n, 1] of tasks [T, 2] at inputs [T, n, 2]."""
        a, p = task[:, 0, None, None], task[:, 1, None, None]
        return a * torch.sin((x ** 2).sum(-1, keepdim=True) + p)


def with_task_input(x: Tensor, task: Tensor) -> Tensor:
    """The oracle's input: [T, n, 1] inputs with the task's (amplitude, phase) appended -> [T, n, 3]."""
    return torch.cat([x, task[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)


def minibatches(n_points: int, batch_size: int, n_steps: int, gen: torch.Generator) -> Tensor:
    """[n_steps, batch_size] indices into ``n_points``: successive minibatches of a shuffled
    order, reshuffled after each pass (the Reptile code's inner-loop epochs)."""
    if batch_size > n_points:
        raise ValueError(f"a minibatch of {batch_size} cannot be drawn from {n_points} points")
    per_pass = n_points // batch_size
    passes = -(-n_steps // per_pass)
    order = torch.cat([torch.randperm(n_points, generator=gen)[: per_pass * batch_size] for _ in range(passes)])
    return order.reshape(-1, batch_size)[:n_steps]


def reptile_tasks(families: list[SineFamily], n_points: int, batch_size: int, steps: int,
                  gen: torch.Generator, visited_only: bool = False) -> list[tuple[Tensor, Tensor, Tensor]]:
    """One task from each family, as Reptile's inner loop takes them: a list of
    (x [n, d] on the family's ``n_points`` grid (d = 1, or 2 for a :class:`SurfaceFamily`), y [n, 1],
    minibatch indices [steps, batch_size]). ``visited_only``: x and y hold only the points the
    minibatches visit, in order, and the indices count into them (the same inner loop; the loss a
    Reptile step logs is then taken on those points, not on a 10 000-point grid)."""
    out = []
    for family in families:
        task = family.sample_tasks(1, gen)
        x = family.grid(1, n_points)
        y = family(task, x)[0]
        batches = minibatches(n_points, batch_size, steps, gen)
        if visited_only:
            visited, batches = batches.unique(return_inverse=True)
            out.append((x[0, visited], y[visited], batches))
        else:
            out.append((x[0], y, batches))
    return out
