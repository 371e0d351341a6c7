"""HalfCheetah meta-RL tasks: the dynamics and rewards against gymnasium's own HalfCheetah-v5,
the task and initial-state distributions, batched against one-at-a-time stepping, and the
meta-RL code of metalearn.rl running on it."""
import math

import gymnasium
import numpy as np
import pytest
import torch

from metalearn import core, models, rl
from metalearn.cheetah import HalfCheetah, load_model


@pytest.fixture
def reference(tmp_path, monkeypatch):
    """gymnasium's HalfCheetah-v5, unwrapped (no time limit, no order enforcing). Made in a
    temporary folder: MuJoCo writes its compiler's warnings to MUJOCO_LOG.TXT there."""
    monkeypatch.chdir(tmp_path)
    return gymnasium.make("HalfCheetah-v5").unwrapped


def actions(shape, seed, scale=0.8):
    """Random actions, some of them outside [-1, 1] (they must be clipped)."""
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def per_episode(goals, n):
    return goals[:, None].expand(len(goals), n, 1)


# --- dynamics and rewards against gymnasium ------------------------------------------------

@pytest.mark.parametrize("task", ["velocity", "direction"])
def test_steps_match_gymnasiums_halfcheetah_and_rewards_follow_the_papers(task, reference):
    """From our reset state, gymnasium's HalfCheetah-v5 stepped with the same (clipped) actions
    goes through exactly the same joint positions and velocities for 100 steps; our observation
    is its observation plus its torso position; our reward is -|v - goal| (velocity) or
    goal * v (direction) minus 0.05 |a|^2, computed here from its x-velocity and the action."""
    env = HalfCheetah(task)
    gen = torch.Generator().manual_seed(0)
    goals = torch.tensor([[0.7], [1.6]]) if task == "velocity" else torch.tensor([[1.0], [-1.0]])
    state = env.reset(goals, 2, gen)
    acts = actions((100, 2, 2, 6), seed=1, scale=1.5)
    assert (acts.abs() > 1).any()
    gym_env = reference
    gym_env.reset(seed=0)
    episode = 3  # task 1, episode 1: a row-major slot other than the first
    data = state.datas[episode]
    gym_env.set_state(data.qpos.copy(), data.qvel.copy())
    torso = gym_env.data.body("torso").xpos
    torch.testing.assert_close(state.obs[1, 1], torch.from_numpy(np.concatenate([gym_env._get_obs(), torso])).float())
    goal = goals[1].item()
    for t in range(100):
        state, reward, done = env.step(state, acts[t], per_episode(goals, 2))
        applied = np.clip(acts[t, 1, 1].double().numpy(), -1.0, 1.0)
        obs, _, terminated, _, info = gym_env.step(applied)
        assert np.array_equal(gym_env.data.qpos, data.qpos) and np.array_equal(gym_env.data.qvel, data.qvel), t
        expected_obs = np.concatenate([obs, gym_env.data.body("torso").xpos])
        torch.testing.assert_close(env.observe(state)[1, 1], torch.from_numpy(expected_obs).float())
        velocity = info["x_velocity"]
        run = -abs(velocity - goal) if task == "velocity" else goal * velocity
        assert reward[1, 1].item() == pytest.approx(run - 0.05 * float((applied ** 2).sum()), abs=1e-5, rel=1e-5)
        assert not done.any() and not terminated
    assert data.qpos[0] != 0 and env.dt == pytest.approx(0.05)


def test_actions_are_clipped_to_the_actuator_range_before_the_control_cost():
    env = HalfCheetah("direction")
    goals = torch.tensor([[1.0]])
    s1 = env.reset(goals, 1, torch.Generator().manual_seed(0))
    s2 = env.reset(goals, 1, torch.Generator().manual_seed(0))
    big = torch.full((1, 1, 6), 3.0)
    _, r_big, _ = env.step(s1, big, per_episode(goals, 1))
    _, r_one, _ = env.step(s2, torch.ones(1, 1, 6), per_episode(goals, 1))
    assert torch.equal(r_big, r_one) and torch.equal(s1.obs, s2.obs)  # same motion, same control cost
    assert load_model().actuator_ctrlrange.tolist() == [[-1.0, 1.0]] * 6


def test_forward_and_backward_rewards_differ_by_twice_the_velocity():
    env = HalfCheetah("direction")
    goals = torch.tensor([[1.0], [-1.0]])
    state = env.reset(goals, 3, torch.Generator().manual_seed(2))
    # both tasks start from the same states: copy task 0's episodes to task 1
    qpos = torch.tensor(np.stack([d.qpos for d in state.datas[:3]]))[None].expand(2, 3, 9)
    qvel = torch.tensor(np.stack([d.qvel for d in state.datas[:3]]))[None].expand(2, 3, 9)
    state = env.start(qpos, qvel)
    a = actions((2, 3, 6), seed=3)
    a[1] = a[0]
    x0 = np.array([d.qpos[0] for d in state.datas])
    state, reward, _ = env.step(state, a, per_episode(goals, 3))
    v = torch.from_numpy((np.array([d.qpos[0] for d in state.datas]) - x0) / 0.05).float().reshape(2, 3)
    torch.testing.assert_close(reward[0] - reward[1], 2 * v[0], atol=1e-5, rtol=1e-5)
    cost = 0.05 * (a[0].clamp(-1, 1) ** 2).sum(-1)
    torch.testing.assert_close(reward[0], v[0] - cost, atol=1e-5, rtol=1e-5)


# --- task and initial-state distributions --------------------------------------------------

def test_goals_are_uniform_in_0_2_or_plus_minus_one_and_seeded():
    velocity = HalfCheetah("velocity").sample_goals(20000, torch.Generator().manual_seed(0))
    assert velocity.shape == (20000, 1) and velocity.min() >= 0 and velocity.max() <= 2
    assert abs(velocity.mean().item() - 1) < 0.02 and abs(velocity.var().item() - 4 / 12) < 0.01
    direction = HalfCheetah("direction").sample_goals(20000, torch.Generator().manual_seed(0))
    assert set(direction.flatten().tolist()) == {-1.0, 1.0}
    assert abs((direction > 0).float().mean().item() - 0.5) < 0.02
    for task in ("velocity", "direction"):
        env = HalfCheetah(task)
        a, b, c = (env.sample_goals(50, torch.Generator().manual_seed(s)) for s in (1, 1, 2))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_episodes_start_near_rest_with_gymnasiums_noise_and_are_seeded():
    env = HalfCheetah("velocity")
    goals = torch.ones(4, 1)
    state = env.reset(goals, 100, torch.Generator().manual_seed(0))
    qpos = np.stack([d.qpos for d in state.datas]) - load_model().qpos0
    qvel = np.stack([d.qvel for d in state.datas])
    assert np.abs(qpos).max() <= 0.1 and np.abs(qpos).max() > 0.099 and abs(qpos.mean()) < 0.005
    assert abs(qvel.std() - 0.1) < 0.005 and abs(qvel.mean()) < 0.005
    first, again, other = (env.reset(goals, 5, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert torch.equal(first.obs, again.obs) and not torch.equal(first.obs, other.obs)
    still = HalfCheetah("velocity", reset_noise=0.0).reset(goals, 2, torch.Generator().manual_seed(0))
    assert all(np.array_equal(d.qpos, load_model().qpos0) and not d.qvel.any() for d in still.datas)


# --- batched = one at a time ----------------------------------------------------------------

def test_stepping_a_batch_equals_stepping_each_episode_alone():
    env = HalfCheetah("velocity")
    goals = torch.tensor([[0.2], [1.0], [1.9]])
    batch = env.reset(goals, 2, torch.Generator().manual_seed(0))
    starts = [(d.qpos.copy(), d.qvel.copy()) for d in batch.datas]
    acts = actions((30, 3, 2, 6), seed=4)
    obs, rewards = [], []
    for t in range(30):
        batch, r, _ = env.step(batch, acts[t], per_episode(goals, 2))
        obs.append(batch.obs)
        rewards.append(r)
    obs, rewards = torch.stack(obs), torch.stack(rewards)
    for k, (qpos, qvel) in enumerate(starts):
        task, i = divmod(k, 2)
        alone = env.start(torch.from_numpy(qpos)[None, None], torch.from_numpy(qvel)[None, None])
        for t in range(30):
            alone, r, _ = env.step(alone, acts[t, task, i][None, None], goals[task][None, None])
            assert torch.equal(alone.obs[0, 0], obs[t, task, i]) and torch.equal(r[0, 0], rewards[t, task, i])


def test_a_batched_policy_rollout_equals_rollouts_of_each_task_alone():
    """An oracle policy (it sees the goal, so each task's episodes differ), deterministic
    (std e^-40) from rest: a rollout of 3 tasks x 2 episodes equals each task rolled out alone."""
    env = HalfCheetah("velocity", horizon=25, reset_noise=0.0)
    net = models.init_model(lambda: rl.gaussian_policy(21, 6, [32, 32], init_log_std=-40.0), 0)
    params = models.params_of(net, False)
    goals = torch.tensor([[0.2], [1.0], [1.9]])
    batch = rl.rollout(env, net, rl.stack(params, 3), goals, 2, torch.Generator().manual_seed(0), oracle=True)
    assert batch.obs.shape == (3, 2, 25, 21) and not torch.equal(batch.obs[0], batch.obs[1])
    for t in range(3):
        alone = rl.rollout(env, net, rl.stack(params, 1), goals[t:t + 1], 1, torch.Generator().manual_seed(9),
                           oracle=True)
        for i in range(2):
            torch.testing.assert_close(batch.obs[t, i], alone.obs[0, 0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batch.rewards[t, i], alone.rewards[0, 0], atol=1e-5, rtol=1e-5)


def test_an_episode_lasts_the_horizon_and_never_ends_early():
    env = HalfCheetah("direction", horizon=7)
    net = rl.gaussian_policy(20, 6, [8])
    ep = rl.rollout(env, net, rl.stack(models.params_of(net, False), 2), torch.tensor([[1.0], [-1.0]]), 3,
                    torch.Generator().manual_seed(0))
    assert ep.obs.shape == (2, 3, 7, 20) and ep.actions.shape == (2, 3, 7, 6) and ep.rewards.shape == (2, 3, 7)
    assert (ep.masks == 1).all() and ep.returns().shape == (2, 3)
    assert HalfCheetah().horizon == 200


# --- bad inputs -----------------------------------------------------------------------------

@pytest.mark.parametrize("make,message", [
    (lambda: HalfCheetah("sideways"), "unknown HalfCheetah task"),
    (lambda: HalfCheetah(horizon=0), "horizon must be a positive integer"),
    (lambda: HalfCheetah(goal_low=2.0, goal_high=0.0), "goal_low must be below goal_high"),
    (lambda: HalfCheetah(ctrl_cost=-0.1), "must be >= 0"),
    (lambda: HalfCheetah(frame_skip=0), "frame_skip"),
])
def test_bad_environments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_goals_and_shapes_are_refused_with_clear_errors():
    gen = torch.Generator().manual_seed(0)
    velocity, direction = HalfCheetah("velocity"), HalfCheetah("direction")
    with pytest.raises(ValueError, match=r"goal velocities must lie in \[0.0, 2.0\]"):
        velocity.reset(torch.tensor([[1.0], [2.5]]), 2, gen)
    with pytest.raises(ValueError, match=r"goal velocities must lie in"):
        velocity.reset(torch.tensor([[-0.1]]), 2, gen)
    with pytest.raises(ValueError, match=r"-1 \(backward\) or \+1 \(forward\)"):
        direction.reset(torch.tensor([[0.5]]), 2, gen)
    with pytest.raises(ValueError, match="finite"):
        velocity.reset(torch.tensor([[math.nan]]), 2, gen)
    with pytest.raises(ValueError, match=r"goals must be \[T, 1\]"):
        velocity.reset(torch.ones(3), 2, gen)
    net = rl.gaussian_policy(20, 6, [8])
    with pytest.raises(ValueError, match=r"goals must be \[T, 1\]"):
        rl.rollout(velocity, net, rl.stack(models.params_of(net, False), 2), torch.ones(2, 2), 1, gen)
    state = velocity.reset(torch.ones(2, 1), 3, gen)
    with pytest.raises(ValueError, match=r"action and goal must be \[2, 3, 6\]"):
        velocity.step(state, torch.zeros(2, 3, 2), torch.ones(2, 3, 1))
    with pytest.raises(ValueError, match="qpos and qvel must be"):
        velocity.start(torch.zeros(1, 1, 8), torch.zeros(1, 1, 9))
    with pytest.raises(ValueError, match="at least one episode"):
        velocity.reset(torch.ones(2, 1), 0, gen)


# --- the meta-RL code on HalfCheetah -----------------------------------------------------------

def test_meta_training_and_test_time_adaptation_run_on_halfcheetah():
    """One MAML and one ANIL TRPO meta-iteration (short episodes) improve their surrogate within the
    KL bound; evaluation gives each task's return after 0..2 policy-gradient steps."""
    env = HalfCheetah("velocity", horizon=10)
    for algorithm in ("maml", "anil"):
        net = models.init_model(lambda: rl.gaussian_policy(20, 6, [16]), 0)
        before = models.params_of(net, False)
        setting = rl.MetaRL(env, core.inner_loop(algorithm, models.params_of(net), 1, 0.1), meta_batch=2,
                            trajectories=3, hvp_tasks=1)
        record = rl.meta_iteration(net, setting, torch.Generator().manual_seed(0))
        assert record["step_fraction"] > 0 and record["loss_after"] < record["loss_before"]
        assert 0 < record["kl"] <= 0.01 and math.isfinite(record["return"])
        assert any(not torch.equal(before[k], v) for k, v in net.named_parameters())
    goals = env.sample_goals(3, torch.Generator().manual_seed(1))
    returns, episodes = rl.evaluate(env, net, models.params_of(net, False), goals, 2, (0.1, 0.05), 4,
                                    torch.Generator().manual_seed(2))
    assert returns.shape == (3, 3) and len(episodes) == 3 and torch.isfinite(returns).all()
    assert not torch.equal(returns[:, 0], returns[:, 2])
