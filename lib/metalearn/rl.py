"""Meta-reinforcement learning (MAML paper sec. 5.3, App. A.2): 2D point navigation here,
HalfCheetah in :mod:`metalearn.cheetah`, both through the same code.

Every rollout steps T tasks x N trajectories at once, the policy batched in torch:

- :class:`Env`: what an environment provides (goals, reset, observation, step); every
  function below takes any such environment.
- :class:`Navigation`: a point starts at the origin, observes its position, moves by its
  action clipped to [-0.1, 0.1] per axis (optionally scaled first, as rllab's ``normalize``
  wrapper in the MAML authors' code: ``action_scale=0.1``); the reward is minus the distance to the goal
  (``reward="distance"``, the authors' code) or minus its square (``"squared"``, the
  paper's words); an episode ends within 0.01 of the goal or after ``horizon`` steps.
- :func:`gaussian_policy`: an MLP whose output packs a mean and a state-independent
  log-std, ``[..., 2A]``; its last layer and the log-std form the ``head``, so ANIL is
  :func:`metalearn.core.inner_loop` ("anil") unchanged.
- :func:`reinforce_loss`: the vanilla policy-gradient surrogate as a ``loss_fn(output, y)``
  with ``y`` packing actions, advantages and masks, so :func:`metalearn.core.adapt` is the
  inner loop (MAML, first-order MAML, ANIL) without a copy of it.
- :func:`fit_baseline`, :func:`advantages`: the linear feature baseline of rllab, fitted
  per task, and normalised advantages of discounted returns.
- :func:`trpo_step`: conjugate gradient on Hessian-vector products of the mean KL and a
  backtracking line search; :func:`meta_iteration` is one TRPO step on the post-adaptation
  surrogate, differentiated through the inner step; :func:`train` a resumable run of them
  (its weights recorded, and reused by a later execution) and :func:`summary` its one-line account.
- :func:`policy_for`: a seed's policy for an environment; :func:`method_setting`: how a method
  (MAML, FOMAML, ANIL, the pretrained policy, the oracle) trains.
- :func:`evaluate`: average return after 0..k policy-gradient steps on fresh trajectories;
  :class:`TestTime` runs it for a named method (what it adapts, the oracle unadapted), and
  :meth:`TestTime.validate`, :func:`best_step_size` tune a baseline's step size on validation tasks.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from . import core
from .models import Net, Params, forward, init_model, mlp, params_of
from .training import Run, cleanup_stale, reuse_or_train

REWARDS = ("distance", "squared")


# --- environment --------------------------------------------------------------------------

class Env(Protocol):
    """An environment of T tasks x N episodes stepped together.

    ``horizon`` (H), ``obs_dim``, ``action_dim``, ``goal_dim``: sizes. ``sample_goals(n, gen)``
    draws n task goals [n, goal_dim]; ``reset(goals [T, goal_dim], n, gen)`` starts n episodes
    per task and returns the state (any object; initial-state noise from ``gen``);
    ``observe(state)`` is the observation [T, n, obs_dim]; ``step(state, action [T, n, A], goal
    [T, n, goal_dim])`` returns (next state, reward [T, n], done [T, n] bool).
    """

    horizon: int
    obs_dim: int
    action_dim: int
    goal_dim: int

    def sample_goals(self, n: int, gen: torch.Generator) -> Tensor: ...

    def reset(self, goals: Tensor, n: int, gen: torch.Generator) -> Any: ...

    def observe(self, state: Any) -> Tensor: ...

    def step(self, state: Any, action: Tensor, goal: Tensor) -> tuple[Any, Tensor, Tensor]: ...


@dataclass(frozen=True)
class Navigation:
    """2D point navigation to a goal drawn uniformly from ``[goal_low, goal_high]^2``.

    MAML paper: goals "within a unit square"; the authors' code (and pytorch-maml-rl) draws
    them from [-0.5, 0.5]^2 around the start at the origin, as here. ``action_scale``
    multiplies the action before clipping: 1 as the paper's text and pytorch-maml-rl (the
    ANIL authors' code); the MAML authors' rllab code wraps the environment in ``normalize``,
    which maps policy actions in [-1, 1] to [-0.1, 0.1], i.e. ``action_scale = 0.1``.
    The episode ends when the distance is below ``success_radius`` (the paper's words; the
    authors' code tests ``|dx| < 0.01 and |dy| < 0.01``).
    """

    horizon: int = 100
    max_action: float = 0.1
    goal_low: float = -0.5
    goal_high: float = 0.5
    success_radius: float = 0.01
    reward: str = "distance"
    action_scale: float = 1.0

    def __post_init__(self):
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {self.horizon!r}")
        if self.max_action <= 0 or self.success_radius < 0 or self.action_scale <= 0:
            raise ValueError(f"max_action and action_scale must be > 0 and success_radius >= 0, got "
                             f"{self.max_action}, {self.action_scale}, {self.success_radius}")
        if not self.goal_low < self.goal_high:
            raise ValueError(f"goal_low must be below goal_high, got {self.goal_low}, {self.goal_high}")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")

    obs_dim = 2      # observation: the position (class constants, not fields)
    action_dim = 2   # action: a velocity
    goal_dim = 2     # task: the goal position

    def sample_goals(self, n: int, gen: torch.Generator) -> Tensor:
        """n goals [n, 2], uniform in the square."""
        return self.goal_low + (self.goal_high - self.goal_low) * torch.rand(n, 2, generator=gen)

    def reset(self, goals: Tensor, n: int, gen: torch.Generator) -> Tensor:
        """n episodes per task [T, n, 2], all at the origin (no random draw)."""
        return torch.zeros(len(goals), n, 2)

    def observe(self, position: Tensor) -> Tensor:
        """The observation is the position [T, n, 2] itself."""
        return position

    def step(self, position: Tensor, action: Tensor, goal: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step from position [..., 2] with action [..., 2] towards goal [..., 2].

        Returns (next position, reward, done) with reward and done [...]: the action, times
        ``action_scale``, is clipped to [-max_action, max_action] per axis, the reward is of the next position,
        done when it lies within ``success_radius`` of the goal.
        """
        if not position.shape == action.shape == goal.shape or position.shape[-1] != 2:
            raise ValueError(f"position, action and goal must have the same shape [..., 2], got "
                             f"{tuple(position.shape)}, {tuple(action.shape)}, {tuple(goal.shape)}")
        position = position + (self.action_scale * action).clamp(-self.max_action, self.max_action)
        distance = (position - goal).norm(dim=-1)
        reward = -distance if self.reward == "distance" else -distance ** 2
        return position, reward, distance < self.success_radius


@dataclass
class Episodes:
    """Trajectories of T tasks x N episodes x H steps.

    obs [T, N, H, D] (the environment's observation, e.g. the position, with the goal appended
    for an oracle), actions [T, N, H, A] (the policy's samples, before clipping), rewards [T, N, H] and masks [T, N, H]: 1 while
    the episode runs, including the step that reaches the goal; 0 after (reward 0 there).
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    masks: Tensor

    def returns(self) -> Tensor:
        """Undiscounted return of each episode [T, N]."""
        return self.rewards.sum(-1)


def stack(params: Params, n: int) -> Params:
    """The same parameters for n tasks: {name: [n, ...]} (views, no copy)."""
    return {k: v.expand(n, *v.shape) for k, v in params.items()}


def observe(obs: Tensor, goal: Tensor, oracle: bool) -> Tensor:
    """The policy's input: the environment's observation [T, N, D] (2D navigation: the
    position), or with ``oracle`` also the task's goal [T, G]: [T, N, D + G]."""
    return torch.cat([obs, goal[:, None].expand(*obs.shape[:-1], goal.shape[-1])], -1) if oracle else obs


def rollout(env: Env, model: nn.Module, params: Params, goals: Tensor, n: int, gen: torch.Generator,
            oracle: bool = False) -> Episodes:
    """Sample n episodes in each of T tasks with each task's own policy parameters.

    params: {name: [T, ...]} (see :func:`stack`); goals [T, G] (G = ``env.goal_dim``). The
    episodes start from ``env.reset`` (its noise from ``gen``); actions are drawn from the
    policy's Gaussian with noise from ``gen``. No graph is kept.
    """
    if goals.dim() != 2 or goals.shape[1] != env.goal_dim:
        raise ValueError(f"goals must be [T, {env.goal_dim}], got {tuple(goals.shape)}")
    if n < 1:
        raise ValueError(f"need at least one episode per task, got {n}")
    T, H = len(goals), env.horizon
    bad = [k for k, v in params.items() if v.shape[0] != T]
    if bad:
        raise ValueError(f"params must be stacked per task with a leading axis of {T} (rl.stack); {bad[0]} is "
                         f"{tuple(params[bad[0]].shape)}")
    policy = vmap(lambda p, x: functional_call(model, p, (x,)))
    state = env.reset(goals, n, gen)
    goal = goals[:, None].expand(T, n, goals.shape[1])
    alive = torch.ones(T, n)
    obs, actions, rewards, masks = [], [], [], []
    with torch.no_grad():
        for _ in range(H):
            x = observe(env.observe(state), goals, oracle)
            mean, log_std = split(policy(params, x))
            action = mean + log_std.exp() * torch.randn(mean.shape, generator=gen)
            state, reward, done = env.step(state, action, goal)
            obs.append(x)
            actions.append(action)
            rewards.append(reward * alive)
            masks.append(alive)
            alive = alive * (~done).float()
    return Episodes(torch.stack(obs, 2), torch.stack(actions, 2), torch.stack(rewards, 2), torch.stack(masks, 2))


# --- policy and policy gradient -----------------------------------------------------------

class GaussianHead(nn.Module):
    """The policy's last layer: features [..., F] -> packed [mean [..., A], log-std [..., A]]
    = [..., 2A]; the log-std is one learned vector [A], the same in every state."""

    def __init__(self, linear: nn.Linear, init_log_std: float = 0.0):
        super().__init__()
        self.linear = linear
        self.log_std = nn.Parameter(torch.full((linear.out_features,), float(init_log_std)))

    def forward(self, h: Tensor) -> Tensor:
        mean = self.linear(h)
        return torch.cat([mean, self.log_std.expand_as(mean)], -1)


def gaussian_policy(obs_dim: int, action_dim: int, hidden: list[int], init_log_std: float = 0.0) -> Net:
    """The papers' policy: MLP obs_dim-hidden-action_dim (ReLU) giving the mean, a learned
    log-std (initial std 1, as rllab and pytorch-maml-rl). Input [..., obs_dim] -> [..., 2 * action_dim].

    Parameters: ``body.layer<i>.0.*`` (hidden layers), ``head.linear.*``, ``head.log_std``:
    ANIL's mask ``head`` adapts the last layer and the log-std.
    """
    base = mlp([obs_dim, *hidden, action_dim])
    return Net(base.body, GaussianHead(base.head, init_log_std), reduce="none")


def policy_for(env: Env, hidden: list[int], seed: int, oracle: bool = False) -> Net:
    """A :func:`gaussian_policy` for ``env`` (anything with its ``obs_dim``, ``goal_dim`` and
    ``action_dim``), its weights drawn from ``seed``: every policy of a seed starts from the same
    initialisation. The oracle's policy also sees the goal: input [..., obs_dim + goal_dim]."""
    inputs = env.obs_dim + (env.goal_dim if oracle else 0)
    return init_model(lambda: gaussian_policy(inputs, env.action_dim, hidden), seed)


def split(output: Tensor) -> tuple[Tensor, Tensor]:
    """Packed policy output [..., 2A] -> (mean [..., A], log-std [..., A])."""
    if output.shape[-1] % 2:
        raise ValueError(f"a Gaussian policy's output packs mean and log-std: [..., 2A], got {tuple(output.shape)}")
    return output.chunk(2, dim=-1)


def log_prob(output: Tensor, actions: Tensor) -> Tensor:
    """Log-density of actions [..., A] under the packed Gaussian output [..., 2A] -> [...]."""
    mean, log_std = split(output)
    if mean.shape != actions.shape:
        raise ValueError(f"actions {tuple(actions.shape)} do not match the policy's means {tuple(mean.shape)}")
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def kl_divergence(old: Tensor, new: Tensor) -> Tensor:
    """KL(old || new) of diagonal Gaussians given as packed outputs [..., 2A] -> [...]."""
    (m0, s0), (m1, s1) = split(old), split(new)
    return (s1 - s0 + (torch.exp(2 * s0) + (m0 - m1) ** 2) / (2 * torch.exp(2 * s1)) - 0.5).sum(-1)


def pack(episodes: Episodes, advantages: Tensor) -> tuple[Tensor, Tensor]:
    """Episodes as the inner loop's (x, y): x = obs [T, N, H, D]; y [T, N, H, A + 2] packs
    actions, advantages [T, N, H] and masks."""
    return episodes.obs, torch.cat([episodes.actions, advantages[..., None], episodes.masks[..., None]], -1)


def _unpack(output: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    A = output.shape[-1] // 2
    if output.shape[-1] != 2 * A or y.shape[-1] != A + 2 or output.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"policy output [..., 2A] and y [..., A + 2] (actions, advantage, mask) must match, "
                         f"got {tuple(output.shape)} and {tuple(y.shape)}")
    return y[..., :A], y[..., A], y[..., A + 1]


def reinforce_loss(output: Tensor, y: Tensor) -> Tensor:
    """Vanilla policy gradient (REINFORCE) surrogate: ``-sum(log pi(a|s) * adv * mask) / sum(mask)``.

    output [..., 2A] (the policy on the observations), y [..., A + 2] (:func:`pack`). Its
    gradient is the policy-gradient estimate (the mean over valid time steps, as rllab's VPG).
    """
    actions, adv, mask = _unpack(output, y)
    return -(log_prob(output, actions) * adv * mask).sum() / mask.sum().clamp_min(1)


def trpo_surrogate(output: Tensor, old: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """TRPO's loss ``-mean(ratio * adv)`` and mean KL(old || new) over valid steps.

    output, old: packed policy outputs [..., 2A] now and when sampled (detached); y [..., A + 2].
    """
    actions, adv, mask = _unpack(output, y)
    n = mask.sum().clamp_min(1)
    ratio = torch.exp(log_prob(output, actions) - log_prob(old, actions))
    return -(ratio * adv * mask).sum() / n, (kl_divergence(old, output) * mask).sum() / n


# --- returns, baseline, advantages ------------------------------------------------------

def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """``R_t = sum_{j >= t} gamma^(j - t) r_j`` for rewards [..., H] -> [..., H]."""
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    H = rewards.shape[-1]
    t = torch.arange(H, dtype=rewards.dtype)
    lag = t[:, None] - t[None, :]  # [j, t] = j - t
    weights = torch.where(lag >= 0, torch.tensor(gamma, dtype=rewards.dtype) ** lag.clamp_min(0), 0.0)
    return rewards @ weights


def baseline_features(obs: Tensor) -> Tensor:
    """rllab's linear-baseline features of obs [..., H, D] -> [..., H, 2D + 4]:
    obs, obs^2 (clipped to [-10, 10]), t, t^2, t^3 with t = step / 100, and 1."""
    o = obs.clamp(-10, 10)
    t = (torch.arange(obs.shape[-2], dtype=obs.dtype) / 100.0)[:, None].expand(*obs.shape[:-1], 1)
    return torch.cat([o, o ** 2, t, t ** 2, t ** 3, torch.ones_like(t)], -1)


def fit_baseline(obs: Tensor, returns: Tensor, masks: Tensor, reg: float = 1e-5) -> Tensor:
    """One task's linear feature baseline fitted to its returns by regularised least squares.

    obs [N, H, D], returns and masks [N, H] -> predicted values [N, H] (0 where masked).
    Solves ``(F'F + reg I) w = F'R`` on the valid steps, raising ``reg`` tenfold (up to 5
    times) if the solution is not finite, as rllab's ``LinearFeatureBaseline``.
    """
    if obs.dim() != 3 or returns.shape != obs.shape[:2] or masks.shape != returns.shape:
        raise ValueError(f"obs must be [N, H, D] with returns and masks [N, H], got {tuple(obs.shape)}, "
                         f"{tuple(returns.shape)}, {tuple(masks.shape)}")
    features = (baseline_features(obs) * masks[..., None]).reshape(-1, 2 * obs.shape[-1] + 4).double()
    target = (returns * masks).reshape(-1).double()
    gram, rhs = features.T @ features, features.T @ target
    eye = torch.eye(len(gram), dtype=gram.dtype)
    for _ in range(5):
        w = torch.linalg.solve(gram + reg * eye, rhs)
        if torch.isfinite(w).all():
            break
        reg *= 10
    return (features @ w).reshape(returns.shape).to(returns.dtype) * masks


def advantages(episodes: Episodes, gamma: float = 0.99, normalize: bool = True) -> Tensor:
    """Discounted returns minus each task's fitted baseline [T, N, H], normalised to mean 0,
    std 1 over each task's valid steps (rllab's ``center_adv``); 0 where masked."""
    returns = discounted_returns(episodes.rewards, gamma)
    values = torch.stack([fit_baseline(o, r, m) for o, r, m in zip(episodes.obs, returns, episodes.masks)])
    adv = (returns - values) * episodes.masks
    if not normalize:
        return adv
    n = episodes.masks.sum((1, 2), keepdim=True).clamp_min(1)
    mean = adv.sum((1, 2), keepdim=True) / n
    std = (((adv - mean) * episodes.masks) ** 2).sum((1, 2), keepdim=True).div(n).sqrt()
    return (adv - mean) / (std + 1e-8) * episodes.masks


# --- TRPO ---------------------------------------------------------------------------------

def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10,
                       tol: float = 1e-10) -> Tensor:
    """Approximate solution of ``A x = b`` for symmetric positive definite A given as
    ``matvec(v) = A v``; b [n] -> x [n]. Exact after n iterations in exact arithmetic."""
    if iters < 1:
        raise ValueError(f"conjugate gradient needs at least one iteration, got {iters}")
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr <= tol:
            break
        Ap = matvec(p)
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = r @ r
        p, rr = r + (rr_new / rr) * p, rr_new
    return x


@dataclass(frozen=True)
class TRPO:
    """TRPO's settings (rllab / pytorch-maml-rl defaults): mean-KL bound, conjugate-gradient
    iterations and damping, backtracking line-search steps and ratio."""

    max_kl: float = 0.01
    cg_iters: int = 10
    damping: float = 1e-5
    ls_steps: int = 15
    ls_ratio: float = 0.8

    def __post_init__(self):
        if self.max_kl <= 0 or self.cg_iters < 1 or self.damping < 0 or self.ls_steps < 1 \
                or not 0 < self.ls_ratio < 1:
            raise ValueError(f"bad TRPO settings {self}")


def trpo_step(params: Params, objective: Callable[[Params], tuple[Tensor, Tensor]],
              trpo: TRPO = TRPO(), curvature: Callable[[Params], Tensor] | None = None) -> tuple[Params, dict]:
    """One TRPO update of ``params`` (leaves requiring grad).

    ``objective(p)`` returns (loss to minimise, mean KL from the sampling policy), both
    differentiable; the KL is 0 with zero gradient at ``params``. The direction solves
    ``(H + damping I) s = -g`` by conjugate gradient, H the KL's Hessian (Hessian-vector
    products by double backprop) of ``curvature(p)`` (default: the objective's KL; a KL on a
    subsample of the data is cheaper, as OpenAI baselines' TRPO), scaled so that its quadratic
    KL is ``max_kl``; the line
    search shrinks it by ``ls_ratio`` until the loss decreases and the KL is within
    ``max_kl``. Returns the new parameters (detached; the old ones if no step is accepted)
    and {"loss_before", "loss_after", "kl", "step_fraction"} (fraction 0: rejected).
    """
    names = list(params)
    leaves = [params[k] for k in names]
    loss, kl = objective(params)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, leaves, retain_graph=True)])
    if curvature is not None:
        kl = curvature(params)
    kl_grad = torch.cat([x.reshape(-1) for x in torch.autograd.grad(kl, leaves, create_graph=True)])

    def hvp(v: Tensor) -> Tensor:
        hv = torch.autograd.grad(kl_grad @ v, leaves, retain_graph=True)
        return torch.cat([x.reshape(-1) for x in hv]) + trpo.damping * v

    direction = conjugate_gradient(hvp, -g, trpo.cg_iters)
    curvature = direction @ hvp(direction)
    full = direction * torch.sqrt(2 * trpo.max_kl / curvature.clamp_min(1e-12))
    old = torch.cat([x.detach().reshape(-1) for x in leaves])
    loss_before = loss.item()

    def unflatten(flat: Tensor) -> Params:
        out, i = {}, 0
        for k, x in zip(names, leaves):
            out[k] = flat[i:i + x.numel()].view_as(x)
            i += x.numel()
        return out

    for i in range(trpo.ls_steps):
        fraction = trpo.ls_ratio ** i
        candidate = unflatten(old + fraction * full.detach())  # no graph: plain tensors
        new_loss, new_kl = (v.item() for v in objective(candidate))
        if new_loss < loss_before and new_kl <= trpo.max_kl:
            return candidate, {"loss_before": loss_before, "loss_after": new_loss, "kl": new_kl,
                               "step_fraction": fraction}
    return ({k: v.detach() for k, v in params.items()},
            {"loss_before": loss_before, "loss_after": loss_before, "kl": 0.0, "step_fraction": 0.0})


# --- meta-training --------------------------------------------------------------------------

@dataclass(frozen=True)
class MetaRL:
    """One meta-RL training setting. ``inner``: the inner loop (:func:`core.inner_loop`) with
    its steps all on the same pre-update trajectories, or None for no inner loop (a policy
    trained on all tasks jointly: the pretrained and oracle baselines). ``oracle``: the policy
    also sees the goal. ``hvp_tasks``: the KL whose Hessian TRPO's conjugate gradient uses is
    taken on the first ``hvp_tasks`` tasks of the meta-batch only (None: all; the line search
    checks the KL of all)."""

    env: Env
    inner: core.InnerLoop | None
    meta_batch: int = 20
    trajectories: int = 20
    gamma: float = 0.99
    trpo: TRPO = TRPO()
    oracle: bool = False
    hvp_tasks: int | None = None

    def __post_init__(self):
        if self.meta_batch < 1 or self.trajectories < 1:
            raise ValueError(f"meta_batch and trajectories must be >= 1, got {self.meta_batch}, {self.trajectories}")
        if self.hvp_tasks is not None and not 1 <= self.hvp_tasks <= self.meta_batch:
            raise ValueError(f"hvp_tasks must be in 1..meta_batch ({self.meta_batch}), got {self.hvp_tasks}")
        if self.inner is not None and self.inner.steps < 1:
            raise ValueError("an inner loop needs at least one step (use inner=None for none)")


#: the methods trained without an inner loop, on all tasks jointly (the oracle also sees the goal)
JOINT = ("pretrained", "oracle")


def method_setting(name: str, env: Env, model: nn.Module, inner_lr: float, **settings) -> MetaRL:
    """How method ``name`` trains on ``env`` with the policy ``model``: MAML, FOMAML and ANIL
    (:data:`core.ALGORITHMS`) meta-train through one inner policy-gradient step of ``inner_lr``
    (ANIL on the head only); ``"pretrained"`` and ``"oracle"`` (:data:`JOINT`) train on all tasks
    jointly, without an inner loop, the oracle seeing the goal. ``settings``: the rest of
    :class:`MetaRL` (meta_batch, trajectories, gamma, trpo, hvp_tasks)."""
    if name not in (*core.ALGORITHMS, *JOINT):
        raise ValueError(f"unknown method {name!r}; choose one of {(*core.ALGORITHMS, *JOINT)}")
    inner = core.inner_loop(name, params_of(model), steps=1, lr=inner_lr) if name in core.ALGORITHMS else None
    return MetaRL(env, inner, oracle=name == "oracle", **settings)


def adapt_tasks(model: nn.Module, params: Params, x: Tensor, y: Tensor, inner: core.InnerLoop) -> Params:
    """Each task's parameters after ``inner`` on its own (x [T, ...], y [T, ...]) -> {name: [T, ...]}.

    ``params``: shared ({name: [...]}), detached: no graph is kept (sampling, evaluation).
    """
    params = {k: v.detach() for k, v in params.items()}
    one = lambda x_t, y_t: core.adapt(model, params, x_t, y_t, inner, reinforce_loss)  # noqa: E731
    return {k: v.detach() for k, v in vmap(one)(x, y).items()}


def meta_objective(model: nn.Module, params: Params, inner: core.InnerLoop | None,
                   pre: tuple[Tensor, Tensor] | None, post: tuple[Tensor, Tensor], old: Tensor,
                   tasks: int | None = None) -> tuple[Tensor, Tensor]:
    """The meta-objective of TRPO: mean over tasks of the post-update surrogate and KL.

    pre = (x [T, N, H, D], y [T, N, H, A + 2]): the pre-update episodes each task adapts on
    with ``inner`` (None: no inner loop); post: the post-update episodes; old [T, N, H, 2A]:
    the adapted policy's outputs on them when sampled. The gradient w.r.t. ``params`` goes
    through the inner step (second order unless ``inner.first_order``). ``tasks``: use the
    first ``tasks`` tasks only. Returns (loss, mean KL), scalars.
    """
    x_post, y_post = post
    losses, kls = [], []
    for t in range(len(x_post) if tasks is None else tasks):
        adapted = params if inner is None else core.adapt(model, params, pre[0][t], pre[1][t], inner, reinforce_loss)
        loss, kl = trpo_surrogate(forward(model, adapted, x_post[t]), old[t], y_post[t])
        losses.append(loss)
        kls.append(kl)
    return torch.stack(losses).mean(), torch.stack(kls).mean()


def meta_iteration(model: nn.Module, setting: MetaRL, gen: torch.Generator) -> dict:
    """One TRPO meta-iteration on ``setting.meta_batch`` fresh tasks; updates ``model`` in place.

    With an inner loop: sample ``trajectories`` episodes per task, adapt (REINFORCE), sample
    again with the adapted policy; the objective is the TRPO surrogate of the post-update
    episodes as a function of the initial parameters through the inner step (second order
    for MAML and ANIL, first order for FOMAML). Returns the mean episode return before
    ("return_pre") and after adaptation ("return", of the parameters before this update),
    and :func:`trpo_step`'s record.
    """
    env, T, n = setting.env, setting.meta_batch, setting.trajectories
    goals = env.sample_goals(T, gen)
    params = dict(model.named_parameters())
    theta = {k: v.detach() for k, v in params.items()}
    metrics = {}
    if setting.inner is not None:
        pre = rollout(env, model, stack(theta, T), goals, n, gen, setting.oracle)
        x_pre, y_pre = pack(pre, advantages(pre, setting.gamma))
        adapted = adapt_tasks(model, theta, x_pre, y_pre, setting.inner)
        metrics["return_pre"] = pre.returns().mean().item()
    else:
        adapted = stack(theta, T)
    post = rollout(env, model, adapted, goals, n, gen, setting.oracle)
    x_post, y_post = pack(post, advantages(post, setting.gamma))
    with torch.no_grad():
        old = vmap(lambda p, x: functional_call(model, p, (x,)))(adapted, x_post)

    pre_data = None if setting.inner is None else (x_pre, y_pre)

    def objective(p: Params, tasks: int = T) -> tuple[Tensor, Tensor]:
        return meta_objective(model, p, setting.inner, pre_data, (x_post, y_post), old, tasks)

    curvature = None if setting.hvp_tasks in (None, T) else lambda p: objective(p, setting.hvp_tasks)[1]
    new, record = trpo_step(params, objective, setting.trpo, curvature)
    with torch.no_grad():
        for k, v in params.items():
            v.copy_(new[k])
    return {**metrics, "return": post.returns().mean().item(), **record}


def train(name: str, config: dict, model: nn.Module, setting: MetaRL, iterations: int, seed: int,
          checkpoint_every: int = 10, work_dir: Path | None = None, record: str | None = None) -> dict:
    """A resumable run of ``iterations`` meta-iterations (:class:`metalearn.training.Run`).

    Keeps the parameters with the best training return ("return": after adaptation, on the
    iteration's fresh tasks, before its update), as the papers select the best of their
    iterations. Returns {"params": last, "best": best, "best_iteration", "history"
    (one dict per iteration), "resumed_from" (iterations found in a checkpoint),
    "seconds_per_iteration" (wall time of the iterations run when it trained)}.

    With ``record`` (e.g. ``data/models/nav/maml-seed0``), the run's best and last parameters
    go to ``<record>.pt`` with a record ``<record>.json``, and a later execution with the same
    settings takes them from there instead of training (:func:`training.reuse_or_train`).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")

    def fit() -> tuple[dict, dict]:
        run = Run(name, config, model, seed, checkpoint_every=checkpoint_every, work_dir=work_dir)
        cleanup_stale(name, run.path, work_dir)

        def step(run: Run) -> dict:
            before = {k: v.detach().clone() for k, v in run.model.named_parameters()}
            metrics = meta_iteration(run.model, setting, run.gen)
            if metrics["return"] > run.extra.get("best_return", -math.inf):
                run.extra.update(best=before, best_return=metrics["return"], best_iteration=run.iteration)
            return metrics

        start = time.perf_counter()
        history = run.train(iterations, step, log_every=1, desc=name)
        seconds = (time.perf_counter() - start) / max(1, iterations - run.resumed_from)
        state = {"best": run.extra["best"], "last": {k: v.detach().clone() for k, v in run.model.named_parameters()},
                 "best_iteration": run.extra["best_iteration"]}
        return state, {"history": history, "resumed_from": run.resumed_from, "seconds_per_iteration": seconds}

    if record is None:
        state, details = fit()
    else:
        state, details = reuse_or_train(record, name, {**config, "iterations": iterations, "generator": seed}, fit)
    return {"params": state["last"], "best": state["best"], "best_iteration": state["best_iteration"],
            **{k: details[k] for k in ("history", "resumed_from", "seconds_per_iteration")}}


def summary(name: str, out: dict) -> str:
    """One line on a run of :func:`train`: its best training return, when, and its speed."""
    best = max(h["return"] for h in out["history"])
    resumed = f" (resumed at {out['resumed_from']})" if out["resumed_from"] else ""
    return (f"{name}: best training return {best:.2f} at iteration {out['best_iteration'] + 1} of "
            f"{len(out['history'])}; {out['seconds_per_iteration']:.2f} s per iteration run now{resumed}")


# --- evaluation -----------------------------------------------------------------------------

def evaluate(env: Env, model: nn.Module, params: Params, goals: Tensor, steps: int,
             lrs: tuple[float, ...], trajectories: int, gen: torch.Generator, adapt: frozenset[str] | None = None,
             gamma: float = 0.99, oracle: bool = False) -> tuple[Tensor, list[Episodes]]:
    """Average return of each task after 0, 1, ..., ``steps`` policy-gradient steps.

    Every step samples ``trajectories`` fresh episodes with the current parameters, and the
    next step adapts on them (REINFORCE, step size ``lrs[k]``, the last repeating; on the
    parameters named in ``adapt``, None: all). goals [T, G]. Returns the returns [T, steps + 1]
    and the episodes of each step.
    """
    if steps < 0 or not lrs:
        raise ValueError(f"need steps >= 0 and at least one step size, got {steps}, {lrs}")
    T = len(goals)
    current = stack({k: v.detach() for k, v in params.items()}, T)
    returns, episodes = [], []
    for k in range(steps + 1):
        ep = rollout(env, model, current, goals, trajectories, gen, oracle)
        returns.append(ep.returns().mean(1))
        episodes.append(ep)
        if k < steps:
            x, y = pack(ep, advantages(ep, gamma))
            inner = core.InnerLoop(1, lrs[min(k, len(lrs) - 1)], adapt=adapt)
            one = lambda p, x_t, y_t: core.adapt(model, p, x_t, y_t, inner, reinforce_loss)  # noqa: E731
            current = {name: v.detach() for name, v in vmap(one)(current, x, y).items()}
    return torch.stack(returns, 1), episodes


@dataclass(frozen=True)
class TestTime:
    """The test protocol: a method takes ``steps`` policy-gradient steps on each task of ``env``,
    each step on ``trajectories`` fresh episodes per task (advantages of returns discounted by
    ``gamma``)."""

    __test__ = False  # a library class, not a pytest test class

    env: Env
    steps: int
    trajectories: int
    gamma: float = 0.99

    def returns(self, model: nn.Module, name: str, params: Params, goals: Tensor, lrs: tuple[float, ...],
                seed: int) -> tuple[Tensor, list[Episodes]]:
        """Method ``name``'s average return on each task of goals [T, G] after 0..steps steps:
        returns [T, steps + 1], and the episodes of each step (:func:`evaluate`).

        ANIL adapts its head (:func:`core.inner_loop`), every other method all its parameters,
        with step sizes ``lrs`` (the first step's, then the next, the last repeating). The
        ``"oracle"`` (its policy sees the goal) is not adapted: its return before any step,
        repeated steps + 1 times, and that step's episodes (``lrs`` unused). The episodes' noise
        comes from a fresh generator seeded with ``seed``: the same stream for every method.
        """
        gen = torch.Generator().manual_seed(seed)
        if name == "oracle":
            returns, episodes = evaluate(self.env, model, params, goals, 0, (0.0,), self.trajectories, gen,
                                         gamma=self.gamma, oracle=True)
            return returns.expand(-1, self.steps + 1), episodes
        if not lrs:
            raise ValueError(f"{name}: need at least one test step size")
        adapt = core.inner_loop(name, params, 1, lrs[0]).adapt if name in core.ALGORITHMS else None
        return evaluate(self.env, model, params, goals, self.steps, tuple(lrs), self.trajectories, gen, adapt=adapt,
                        gamma=self.gamma)

    def validate(self, model: nn.Module, name: str, params: Params, goals: Tensor, lrs: list[float],
                 seed: int) -> dict[float, float]:
        """Each constant step size of ``lrs`` scored by method ``name``'s mean return over the
        tasks of goals [T, G] after the last step: {lr: mean return}, in the order of ``lrs``,
        each on the same episodes' noise (:meth:`returns` with ``seed``)."""
        if not lrs or len(set(lrs)) != len(lrs):
            raise ValueError(f"need distinct candidate step sizes, got {lrs}")
        return {lr: self.returns(model, name, params, goals, (lr,), seed)[0][:, -1].mean().item() for lr in lrs}


def best_step_size(scores: dict[float, float]) -> float:
    """The step size of the highest score, scores {lr: mean return} (:meth:`TestTime.validate`):
    the first of ties; a non-finite score (a diverged run: nan, +-inf) never wins, unless every
    score is non-finite, then the first step size."""
    if not scores:
        raise ValueError("no step sizes to choose from")
    return max(scores, key=lambda lr: scores[lr] if math.isfinite(scores[lr]) else -math.inf)


def tuning_note(scores: dict[float, float], best: float, steps: int) -> str:
    """One line on a step-size choice: each candidate's score (rounded) and the chosen ``best``,
    with a warning when it is the smallest or the largest candidate (the best may lie beyond)."""
    if best not in scores:
        raise ValueError(f"the chosen step size {best} is not among the candidates {list(scores)}")
    edge = " (an end of the candidates: widen baseline_lrs)" if best in (min(scores), max(scores)) else ""
    rounded = {lr: round(v, 2) for lr, v in scores.items()}
    return f"validation return after {steps} steps per step size {rounded} -> {best}{edge}"
