"""HalfCheetah meta-RL tasks (MAML paper sec. 5.3, Fig. 5, Table 5; ANIL paper Table 2) as an
environment of :mod:`metalearn.rl` (:class:`metalearn.rl.Env`): the same rollout, inner loop,
baseline, TRPO and training loop as 2D navigation.

:class:`HalfCheetah` steps gymnasium's MuJoCo model of the planar cheetah (its
``half_cheetah.xml`` asset, MuJoCo through the ``mujoco`` package; one ``MjData`` per episode, so
T tasks x N episodes are stepped together and the policy runs batched in torch). Two task
families, with the control cost ``0.05 |a|^2`` of the MAML authors' rllab environments
(``half_cheetah_env_rand*.py``) and of pytorch-maml-rl (the ANIL authors' code):

- ``"velocity"``: reward ``-|v - goal| - 0.05 |a|^2``, goal velocity uniform in [0, 2];
- ``"direction"``: reward ``goal * v - 0.05 |a|^2``, goal direction -1 or +1 with
  probability 1/2 each (backward or forward).

What follows pytorch-maml-rl and gymnasium's HalfCheetah-v5 where the codes differ:

- ``v`` is the forward velocity of one step, ``(x_after - x_before) / dt`` of the root's x
  position, ``dt = 5 x 0.01 s`` (gymnasium's ``x_velocity``; rllab reads the torso's
  centre-of-mass velocity);
- the action is clipped to the actuators' range [-1, 1] before it is applied and before its
  control cost (pytorch-maml-rl's ``NormalizedActionWrapper``, rllab's ``normalize``);
- the observation (20 numbers) is ``qpos[1:]`` (8), ``qvel`` (9) and the torso's position (3),
  as both codes (rllab takes the torso's subtree centre of mass; pytorch-maml-rl the body's
  frame, as here, read as MuJoCo leaves it after the step: computed before the step's last
  integration sub-step, exactly gymnasium's ``data.xpos``);
- an episode starts at the model's ``qpos0`` plus uniform noise in [-0.1, 0.1] and a velocity
  of 0.1 x standard normal noise (gymnasium's ``reset_noise_scale = 0.1``), drawn from the
  rollout's generator; it never ends early (H = 200 steps).
"""
from __future__ import annotations

import functools
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import torch
from torch import Tensor

TASKS = ("velocity", "direction")


def asset_path() -> Path:
    """gymnasium's ``half_cheetah.xml`` (found without importing gymnasium's MuJoCo package)."""
    spec = importlib.util.find_spec("gymnasium")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("HalfCheetah uses gymnasium's MuJoCo model: install the pinned gymnasium "
                                  "(pip install -c requirements.lock -e .)")
    path = Path(spec.origin).parent / "envs" / "mujoco" / "assets" / "half_cheetah.xml"
    if not path.is_file():
        raise FileNotFoundError(f"gymnasium has no HalfCheetah model at {path}")
    return path


@functools.lru_cache(maxsize=None)
def load_model(path: str | None = None) -> mujoco.MjModel:
    """The compiled MuJoCo model (cached: every episode shares it).

    Compiled through ``MjSpec``, so MuJoCo's deprecation warning about the asset's
    ``settotalmass`` comes as a Python warning (silenced here) instead of a
    ``MUJOCO_LOG.TXT`` written to the working directory; the model is the same.
    """
    spec = mujoco.MjSpec.from_file(str(path or asset_path()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'settotalmass' is deprecated")
        return spec.compile()


@dataclass
class CheetahState:
    """T x n running episodes: one ``MjData`` each (row-major: task, then episode) and the
    current observation [T, n, 20]."""

    datas: list
    obs: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.obs.shape[:2])


@dataclass(frozen=True)
class HalfCheetah:
    """Goal velocity (``task="velocity"``) or forward/backward (``"direction"``) HalfCheetah;
    see the module's description. ``goal_low``, ``goal_high``: the range of goal velocities."""

    task: str = "velocity"
    horizon: int = 200
    goal_low: float = 0.0
    goal_high: float = 2.0
    ctrl_cost: float = 0.05
    reset_noise: float = 0.1
    frame_skip: int = 5

    obs_dim = 20     # qpos[1:] (8), qvel (9), torso position (3) (class constants, not fields)
    action_dim = 6   # torques of the six joints, in [-1, 1]
    goal_dim = 1     # goal velocity, or direction -1 / +1

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown HalfCheetah task {self.task!r}; choose one of {TASKS}")
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {self.horizon!r}")
        if not isinstance(self.frame_skip, int) or self.frame_skip < 1:
            raise ValueError(f"frame_skip must be a positive integer, got {self.frame_skip!r}")
        if not self.goal_low < self.goal_high:
            raise ValueError(f"goal_low must be below goal_high, got {self.goal_low}, {self.goal_high}")
        if self.ctrl_cost < 0 or self.reset_noise < 0:
            raise ValueError(f"ctrl_cost and reset_noise must be >= 0, got {self.ctrl_cost}, {self.reset_noise}")

    @property
    def model(self) -> mujoco.MjModel:
        return load_model()

    @property
    def dt(self) -> float:
        """Seconds per step: ``frame_skip`` MuJoCo steps (0.05 s)."""
        return self.frame_skip * self.model.opt.timestep

    # --- tasks --------------------------------------------------------------------------

    def sample_goals(self, n: int, gen: torch.Generator) -> Tensor:
        """n task goals [n, 1]: velocities uniform in [goal_low, goal_high], or directions
        -1 / +1 with probability 1/2 each."""
        if self.task == "velocity":
            return self.goal_low + (self.goal_high - self.goal_low) * torch.rand(n, 1, generator=gen)
        return torch.randint(0, 2, (n, 1), generator=gen).float() * 2 - 1

    def check_goals(self, goals: Tensor) -> None:
        """Goals must be [T, 1], velocities in [goal_low, goal_high], directions -1 or +1."""
        if goals.dim() != 2 or goals.shape[1] != 1:
            raise ValueError(f"HalfCheetah goals must be [T, 1], got {tuple(goals.shape)}")
        if not torch.isfinite(goals).all():
            raise ValueError("HalfCheetah goals must be finite")
        if self.task == "velocity" and not ((goals >= self.goal_low) & (goals <= self.goal_high)).all():
            raise ValueError(f"goal velocities must lie in [{self.goal_low}, {self.goal_high}], got "
                             f"{goals.min().item():g}..{goals.max().item():g}")
        if self.task == "direction" and not (goals.abs() == 1).all():
            raise ValueError(f"goal directions must be -1 (backward) or +1 (forward), got {goals.flatten().tolist()}")

    # --- dynamics -----------------------------------------------------------------------

    def start(self, qpos: Tensor, qvel: Tensor) -> CheetahState:
        """Episodes starting from given joint positions [T, n, 9] and velocities [T, n, 9]."""
        model = self.model
        if qpos.dim() != 3 or qpos.shape[-1] != model.nq or qvel.shape != qpos.shape[:2] + (model.nv,):
            raise ValueError(f"qpos and qvel must be [T, n, {model.nq}] and [T, n, {model.nv}], got "
                             f"{tuple(qpos.shape)}, {tuple(qvel.shape)}")
        T, n = qpos.shape[:2]
        datas = []
        for p, v in zip(qpos.reshape(T * n, -1).double().numpy(), qvel.reshape(T * n, -1).double().numpy()):
            data = mujoco.MjData(model)
            data.qpos[:], data.qvel[:] = p, v
            mujoco.mj_forward(model, data)  # positions of the bodies, as gymnasium's set_state
            datas.append(data)
        return CheetahState(datas, self._observe(datas).reshape(T, n, -1))

    def reset(self, goals: Tensor, n: int, gen: torch.Generator) -> CheetahState:
        """n episodes per task: ``qpos0 + U(-r, r)``, ``r N(0, 1)`` velocities (r = ``reset_noise``),
        drawn from ``gen``."""
        self.check_goals(goals)
        if n < 1:
            raise ValueError(f"need at least one episode per task, got {n}")
        model, T = self.model, len(goals)
        qpos = torch.as_tensor(model.qpos0) + self.reset_noise * (
            2 * torch.rand(T, n, model.nq, dtype=torch.float64, generator=gen) - 1)
        qvel = self.reset_noise * torch.randn(T, n, model.nv, dtype=torch.float64, generator=gen)
        return self.start(qpos, qvel)

    def observe(self, state: CheetahState) -> Tensor:
        """The observation [T, n, 20] (float32)."""
        return state.obs

    def _observe(self, datas: list, out: np.ndarray | None = None) -> Tensor:
        torso = self.model.body("torso").id
        out = np.empty((len(datas), self.obs_dim)) if out is None else out
        for i, data in enumerate(datas):
            out[i, :8] = data.qpos[1:]
            out[i, 8:17] = data.qvel
            out[i, 17:] = data.xpos[torso]
        return torch.from_numpy(out).float()

    def step(self, state: CheetahState, action: Tensor, goal: Tensor) -> tuple[CheetahState, Tensor, Tensor]:
        """Apply action [T, n, 6] (clipped to [-1, 1]) for ``frame_skip`` MuJoCo steps in every
        episode; goal [T, n, 1]. Returns (the state, updated in place; reward [T, n]; done
        [T, n], always False)."""
        T, n = state.shape
        if action.shape != (T, n, self.action_dim) or goal.shape != (T, n, 1):
            raise ValueError(f"action and goal must be [{T}, {n}, {self.action_dim}] and [{T}, {n}, 1], got "
                             f"{tuple(action.shape)}, {tuple(goal.shape)}")
        model = self.model
        low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
        applied = np.clip(action.detach().double().reshape(T * n, -1).numpy(), low, high)
        x_before = np.array([data.qpos[0] for data in state.datas])
        for data, a in zip(state.datas, applied):
            data.ctrl[:] = a
            mujoco.mj_step(model, data, nstep=self.frame_skip)
        obs = np.empty((T * n, self.obs_dim))
        state.obs = self._observe(state.datas, obs).reshape(T, n, -1)
        x_after = np.array([data.qpos[0] for data in state.datas])
        velocity = torch.from_numpy((x_after - x_before) / self.dt).reshape(T, n)
        ctrl = self.ctrl_cost * torch.from_numpy((applied ** 2).sum(-1)).reshape(T, n)
        goal = goal[..., 0].double()
        run = -(velocity - goal).abs() if self.task == "velocity" else goal * velocity
        return state, (run - ctrl).float(), torch.zeros(T, n, dtype=torch.bool)

    def forward_velocity(self, obs: Tensor) -> Tensor:
        """The root's x velocity at the end of each step, from observations [..., 20] (qvel[0])."""
        return obs[..., 8]
