"""Meta-RL on 2D navigation: the environment, the policy gradient, the baseline, TRPO, and
resumable training, against hand computations and closed forms."""
import math

import pytest
import torch

from metalearn import core, models, rl


def constant_policy(mean, log_std, obs_dim=2):
    """A policy whose output ignores the observation: mean [A], log-std (a number)."""
    net = rl.gaussian_policy(obs_dim, len(mean), [])
    with torch.no_grad():
        net.head.linear.weight.zero_()
        net.head.linear.bias.copy_(torch.tensor(mean, dtype=torch.float32))
        net.head.log_std.fill_(log_std)
    return net


def run_policy(env, net, goal, n=1, seed=0):
    return rl.rollout(env, net, rl.stack(models.params_of(net, False), 1), torch.tensor([goal]), n,
                      torch.Generator().manual_seed(seed))


# --- environment --------------------------------------------------------------------------

def test_step_clips_each_axis_and_rewards_the_new_position():
    env = rl.Navigation()
    pos, reward, done = env.step(torch.tensor([[0.0, 0.0]]), torch.tensor([[-5.0, 0.05]]), torch.tensor([[0.3, 0.45]]))
    torch.testing.assert_close(pos, torch.tensor([[-0.1, 0.05]]))
    torch.testing.assert_close(reward, -torch.tensor([math.hypot(0.4, 0.4)]))
    assert not done.item()
    squared = rl.Navigation(reward="squared").step(torch.zeros(1, 2), torch.tensor([[-5.0, 0.05]]),
                                                   torch.tensor([[0.3, 0.45]]))[1]
    torch.testing.assert_close(squared, -torch.tensor([0.32]))
    scaled = rl.Navigation(action_scale=0.1).step(torch.zeros(1, 2), torch.tensor([[0.5, -2.0]]), torch.ones(1, 2))[0]
    torch.testing.assert_close(scaled, torch.tensor([[0.05, -0.1]]))  # rllab's normalize(): [-1, 1] -> [-0.1, 0.1]


def test_an_episode_moves_by_clipped_steps_from_the_origin_until_the_horizon():
    # mean (0, 1) is clipped to (0, 0.1); std e^-40: deterministic. Goal 0.35 up: never within 0.01.
    ep = run_policy(rl.Navigation(horizon=4), constant_policy([0.0, 1.0], -40.0), [0.0, 0.35])
    torch.testing.assert_close(ep.obs[0, 0, :, 1], torch.tensor([0.0, 0.1, 0.2, 0.3]))
    torch.testing.assert_close(ep.obs[0, 0, :, 0], torch.zeros(4))
    torch.testing.assert_close(ep.rewards[0, 0], -torch.tensor([0.25, 0.15, 0.05, 0.05]))
    torch.testing.assert_close(ep.masks[0, 0], torch.ones(4))
    torch.testing.assert_close(ep.actions[0, 0], torch.tensor([[0.0, 1.0]] * 4))  # stored before clipping
    assert ep.returns().item() == pytest.approx(-0.5)


def test_an_episode_ends_within_001_of_the_goal_and_earns_nothing_after():
    env = rl.Navigation(horizon=6)
    ep = run_policy(env, constant_policy([0.0, 1.0], -40.0), [0.0, 0.305])
    torch.testing.assert_close(ep.rewards[0, 0], -torch.tensor([0.205, 0.105, 0.005, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(ep.masks[0, 0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    # 0.015 short of the goal is not within 0.01: the episode runs on (and overshoots)
    far = run_policy(env, constant_policy([0.0, 1.0], -40.0), [0.0, 0.315])
    assert far.masks[0, 0].sum() == 6


def test_goals_are_uniform_in_the_square_and_trajectories_random_but_seeded():
    env = rl.Navigation()
    goals = env.sample_goals(20000, torch.Generator().manual_seed(0))
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.mean(0).abs().max() < 0.01 and abs(goals.var(0).mean() - 1 / 12) < 0.002
    net = constant_policy([0.0, 0.0], 0.0)
    a, b, c = (run_policy(env, net, [0.2, 0.2], n=3, seed=s).obs for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("make", [
    lambda: rl.Navigation(horizon=0),
    lambda: rl.Navigation(horizon=-3),
    lambda: rl.Navigation(reward="cubed"),
    lambda: rl.Navigation(goal_low=1.0, goal_high=0.0),
    lambda: rl.Navigation(action_scale=0.0),
])
def test_bad_environments_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_bad_shapes_are_refused_with_clear_errors():
    env, net = rl.Navigation(horizon=3), constant_policy([0.0, 0.0], 0.0)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"goals must be \[T, 2\]"):
        rl.rollout(env, net, rl.stack(models.params_of(net, False), 1), torch.zeros(2), 1, gen)
    with pytest.raises(ValueError, match="stacked per task"):
        rl.rollout(env, net, models.params_of(net, False), torch.zeros(3, 2), 1, gen)
    with pytest.raises(ValueError, match="same shape"):
        env.step(torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="must match"):
        rl.reinforce_loss(torch.zeros(5, 4), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"obs must be \[N, H, D\]"):
        rl.fit_baseline(torch.zeros(2, 5, 2), torch.zeros(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="at least one iteration"):
        rl.conjugate_gradient(lambda v: v, torch.ones(3), iters=0)
    with pytest.raises(ValueError, match="hvp_tasks"):
        rl.MetaRL(env, None, meta_batch=4, hvp_tasks=5)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        rl.train("x", {}, net, rl.MetaRL(env, None), 0, 0)


# --- policy gradient ----------------------------------------------------------------------

def test_reinforce_gradient_matches_the_exact_gradient_of_a_gaussian_bandit():
    """One-step bandit: a ~ N(mu, sigma^2), r = -(a - c)^2, so E r = -((mu - c)^2 + sigma^2),
    dE/dmu = -2 (mu - c), dE/dlog sigma = -2 sigma^2. The REINFORCE estimate (advantage = r,
    no baseline) of 400k samples must lie within 4 of its own standard errors of them, and
    those errors must be small enough (< 3 % of the gradient) for a wrong gradient to fail."""
    torch.set_default_dtype(torch.float64)
    try:
        mu, log_std, c, n = 0.3, math.log(0.5), -0.2, 400_000
        net = constant_policy([mu], log_std, obs_dim=1).double()
        params = models.params_of(net)
        gen = torch.Generator().manual_seed(0)
        a = mu + math.exp(log_std) * torch.randn(n, 1, generator=gen)
        r = -((a[:, 0] - c) ** 2)
        y = torch.cat([a, r[:, None], torch.ones(n, 1)], -1)
        loss = rl.reinforce_loss(models.forward(net, params, torch.zeros(n, 1)), y)
        g_mu, g_log_std = torch.autograd.grad(-loss, [params["head.linear.bias"], params["head.log_std"]])
        sigma = math.exp(log_std)
        per_sample = {"mu": (a[:, 0] - mu) / sigma ** 2 * r, "log_std": ((a[:, 0] - mu) ** 2 / sigma ** 2 - 1) * r}
        exact = {"mu": -2 * (mu - c), "log_std": -2 * sigma ** 2}
        for name, estimate in (("mu", g_mu.item()), ("log_std", g_log_std.item())):
            se = per_sample[name].std().item() / math.sqrt(n)
            assert se < 0.03 * abs(exact[name])
            assert abs(estimate - exact[name]) < 4 * se, name
    finally:
        torch.set_default_dtype(torch.float32)


def test_gaussian_log_prob_and_kl_agree_with_torch_distributions():
    g = torch.Generator().manual_seed(0)
    old, new, a = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g), torch.randn(7, 2, generator=g)
    dist = lambda o: torch.distributions.Normal(o[:, :2], o[:, 2:].exp())  # noqa: E731
    torch.testing.assert_close(rl.log_prob(old, a), dist(old).log_prob(a).sum(-1))
    torch.testing.assert_close(rl.kl_divergence(old, new), torch.distributions.kl_divergence(dist(old), dist(new)).sum(-1))


def test_trpo_surrogate_has_the_policy_gradient_and_zero_kl_at_the_sampling_policy():
    net = rl.gaussian_policy(2, 2, [8])
    params = models.params_of(net)
    g = torch.Generator().manual_seed(1)
    x, a, adv = torch.randn(6, 5, 2, generator=g), torch.randn(6, 5, 2, generator=g), torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    y = torch.cat([a, adv[..., None], mask[..., None]], -1)
    out = models.forward(net, params, x)
    loss, kl = rl.trpo_surrogate(out, out.detach(), y)
    assert kl.item() == pytest.approx(0.0, abs=1e-7) and loss.item() == pytest.approx(-(adv * mask).sum() / mask.sum())
    got = torch.autograd.grad(loss, list(params.values()))
    want = torch.autograd.grad(rl.reinforce_loss(models.forward(net, params, x), y), list(params.values()))
    for u, v in zip(got, want):
        torch.testing.assert_close(u, v)


# --- returns, baseline, advantages ------------------------------------------------------

def test_discounted_returns_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(rl.discounted_returns(r, 0.5), torch.tensor([[1 + 1 + 0.75, 2 + 1.5, 3.0]]))
    torch.testing.assert_close(rl.discounted_returns(r, 1.0), torch.tensor([[6.0, 5.0, 3.0]]))


def test_baseline_recovers_a_linear_function_of_its_features_ignoring_masked_steps():
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(0)
        obs = torch.randn(5, 30, 2, generator=g) * 0.3
        w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, 0.7, -0.4])
        returns = rl.baseline_features(obs) @ w
        masks = torch.ones(5, 30)
        masks[2, 20:] = 0
        garbage = returns.clone()
        garbage[2, 20:] = 1000.0
        fitted = rl.fit_baseline(obs, garbage, masks, reg=1e-10)
        torch.testing.assert_close(fitted, returns * masks, atol=1e-6, rtol=0)
        assert (fitted[2, 20:] == 0).all()
    finally:
        torch.set_default_dtype(torch.float32)


def test_advantages_are_normalised_per_task_on_valid_steps_and_zero_after_done():
    env = rl.Navigation(horizon=20)
    net = constant_policy([0.05, 0.05], math.log(0.05))
    goals = torch.tensor([[0.3, 0.3], [-0.2, 0.4]])
    ep = rl.rollout(env, net, rl.stack(models.params_of(net, False), 2), goals, 8, torch.Generator().manual_seed(0))
    ep.masks[0, 0, 10:] = 0  # as if the episode had ended there
    ep.rewards[0, 0, 10:] = 0
    adv = rl.advantages(ep, 0.99)
    for t in range(2):
        valid = adv[t][ep.masks[t] > 0]
        assert valid.mean().item() == pytest.approx(0, abs=1e-5)
        assert valid.std(unbiased=False).item() == pytest.approx(1, abs=1e-4)
    assert (adv[0, 0, 10:] == 0).all()


# --- inner loop ---------------------------------------------------------------------------

def episodes_xy(net, seed=0, T=2, n=4, H=10):
    env = rl.Navigation(horizon=H)
    goals = env.sample_goals(T, torch.Generator().manual_seed(seed))
    ep = rl.rollout(env, net, rl.stack(models.params_of(net, False), T), goals, n, torch.Generator().manual_seed(seed))
    return rl.pack(ep, rl.advantages(ep))


def test_anil_adapts_only_the_head_and_maml_everything():
    net = models.init_model(lambda: rl.gaussian_policy(2, 2, [16, 16]), 0)
    params = models.params_of(net)
    x, y = episodes_xy(net)
    anil = core.adapt(net, params, x[0], y[0], core.inner_loop("anil", params, 1, 0.1), rl.reinforce_loss)
    maml = core.adapt(net, params, x[0], y[0], core.inner_loop("maml", params, 1, 0.1), rl.reinforce_loss)
    assert sorted(k for k in params if k.startswith("head.")) == ["head.linear.bias", "head.linear.weight",
                                                                   "head.log_std"]
    for k in params:
        assert (anil[k] is params[k]) == k.startswith("body.")
        assert not torch.equal(maml[k], params[k])
    assert not torch.equal(anil["head.log_std"], params["head.log_std"])


def test_meta_objective_is_differentiated_through_the_inner_step():
    """Its gradient matches central finite differences (float64), and first-order MAML's
    gradient measurably differs from it."""
    torch.set_default_dtype(torch.float64)
    try:
        net = models.init_model(lambda: rl.gaussian_policy(2, 2, [8]), 0).double()
        params = models.params_of(net)
        pre, post = episodes_xy(net, seed=0), episodes_xy(net, seed=1)
        maml = core.inner_loop("maml", params, 1, 0.5)
        adapted = [core.adapt(net, params, pre[0][t], pre[1][t], maml, rl.reinforce_loss) for t in range(2)]
        old = torch.stack([models.forward(net, a, post[0][t]) for t, a in enumerate(adapted)]).detach()
        loss = lambda p, inner=maml: rl.meta_objective(net, p, inner, pre, post, old)[0]  # noqa: E731
        grads = torch.autograd.grad(loss(params), list(params.values()))
        direction = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(3)) for k, v in params.items()}
        eps = 1e-6
        shifted = lambda s: {k: (v + s * eps * direction[k]).detach() for k, v in params.items()}  # noqa: E731
        numeric = (loss(shifted(1)).item() - loss(shifted(-1)).item()) / (2 * eps)
        analytic = sum((g * direction[k]).sum() for g, k in zip(grads, params)).item()
        assert analytic == pytest.approx(numeric, rel=1e-5)
        fo = torch.autograd.grad(loss(params, core.inner_loop("fomaml", params, 1, 0.5)), list(params.values()))
        first_order = sum((g * direction[k]).sum() for g, k in zip(fo, params)).item()
        assert abs(first_order - numeric) > 1e-3 * abs(numeric)
    finally:
        torch.set_default_dtype(torch.float32)


# --- TRPO ---------------------------------------------------------------------------------

def test_conjugate_gradient_solves_a_known_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(rl.conjugate_gradient(lambda v: A @ v, b, iters=6), torch.linalg.solve(A, b))
    one_step = rl.conjugate_gradient(lambda v: A @ v, b, iters=1)  # the Cauchy point, not the solution
    assert (A @ one_step - b).norm() > 1e-3


def quadratic_problem(penalty=0.0):
    """loss = g.d + penalty |d|^2, KL = d' A d / 2 with d = theta - theta0 (KL's Hessian A)."""
    A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]], dtype=torch.float64)
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    theta0 = torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64)

    def objective(p):
        d = p["theta"] - theta0
        return g @ d + penalty * (d @ d), 0.5 * d @ A @ d

    return {"theta": theta0.clone().requires_grad_()}, objective, A, g, theta0


def test_trpo_steps_along_the_natural_gradient_to_the_kl_bound():
    params, objective, A, g, theta0 = quadratic_problem()
    trpo = rl.TRPO(max_kl=0.01, cg_iters=3, damping=0.0)
    new, record = rl.trpo_step(params, objective, trpo)
    step = new["theta"] - theta0
    natural = -torch.linalg.solve(A, g)
    assert torch.nn.functional.cosine_similarity(step, natural, dim=0) > 1 - 1e-9
    assert record["kl"] <= 0.01 and record["kl"] >= 0.8 ** 2 * 0.01  # the full step or one backtrack
    assert record["loss_after"] < record["loss_before"] == 0.0


def test_trpo_backtracks_until_the_true_kl_is_within_the_bound():
    """The KL grows faster than its quadratic model: the full step breaks the bound, so the
    line search must shrink it."""
    params, objective, A, g, theta0 = quadratic_problem()

    def steep(p):
        loss, kl = objective(p)
        return loss, kl + 1e4 * kl ** 2

    new, record = rl.trpo_step(params, steep, rl.TRPO(max_kl=0.01, cg_iters=3, damping=0.0))
    assert record["step_fraction"] < 0.5 and record["kl"] <= 0.01
    assert steep({"theta": new["theta"]})[1].item() == pytest.approx(record["kl"])


def test_trpo_keeps_the_parameters_when_no_step_improves():
    params, objective, *_ , theta0 = quadratic_problem(penalty=1e6)
    new, record = rl.trpo_step(params, objective, rl.TRPO(max_kl=0.01, cg_iters=3))
    assert torch.equal(new["theta"], theta0) and record["step_fraction"] == 0.0


def test_a_meta_iteration_improves_its_surrogate_within_the_kl_bound():
    net = models.init_model(lambda: rl.gaussian_policy(2, 2, [16]), 0)
    setting = rl.MetaRL(rl.Navigation(horizon=15), core.inner_loop("maml", models.params_of(net), 1, 0.1),
                        meta_batch=3, trajectories=5, trpo=rl.TRPO(max_kl=0.01), hvp_tasks=2)
    before = models.params_of(net, False)
    record = rl.meta_iteration(net, setting, torch.Generator().manual_seed(0))
    assert record["step_fraction"] > 0 and record["loss_after"] < record["loss_before"]
    assert 0 < record["kl"] <= 0.01
    assert any(not torch.equal(before[k], v) for k, v in net.named_parameters())


# --- resumable training -------------------------------------------------------------------

class Killed(Exception):
    pass


def rl_run(work_dir, monkeypatch, kill_at=None):
    net = models.init_model(lambda: rl.gaussian_policy(2, 2, [8]), 0)
    setting = rl.MetaRL(rl.Navigation(horizon=8), core.inner_loop("anil", models.params_of(net), 1, 0.1),
                        meta_batch=2, trajectories=3)
    calls = {"n": 0}
    real = rl.meta_iteration

    def maybe_killed(*args):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise Killed
        return real(*args)

    monkeypatch.setattr(rl, "meta_iteration", maybe_killed)
    try:
        return rl.train("t-nav", {"x": 1}, net, setting, 7, seed=0, checkpoint_every=3, work_dir=work_dir)
    finally:
        monkeypatch.setattr(rl, "meta_iteration", real)


def test_rl_training_killed_and_restarted_ends_identically(tmp_path, monkeypatch):
    reference = rl_run(tmp_path / "a", monkeypatch)
    with pytest.raises(Killed):
        rl_run(tmp_path / "b", monkeypatch, kill_at=5)  # after the checkpoint at iteration 3
    resumed = rl_run(tmp_path / "b", monkeypatch)
    assert reference["history"] == resumed["history"] and len(resumed["history"]) == 7
    assert resumed["resumed_from"] == 3 and reference["resumed_from"] == 0
    assert reference["best_iteration"] == resumed["best_iteration"]
    for key in ("params", "best"):
        assert all(torch.equal(reference[key][k], resumed[key][k]) for k in reference[key])
    returns = [h["return"] for h in reference["history"]]
    assert reference["best_iteration"] == returns.index(max(returns))
    line = rl.summary("t-nav", resumed)
    assert f"best training return {max(returns):.2f} at iteration {reference['best_iteration'] + 1} of 7" in line
    assert "(resumed at 3)" in line and "resumed" not in rl.summary("t-nav", reference)


def test_a_recorded_run_saves_best_and_last_parameters_and_is_reused_not_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("METALEARN_STAGING", str(tmp_path / "staging"))
    net = models.init_model(lambda: rl.gaussian_policy(2, 2, [8]), 0)
    setting = rl.MetaRL(rl.Navigation(horizon=8), core.inner_loop("anil", models.params_of(net), 1, 0.1),
                        meta_batch=2, trajectories=3)
    out = rl.train("t-nav", {"x": 1}, net, setting, 7, seed=0, checkpoint_every=3, work_dir=tmp_path / "w",
                   record="data/models/nav/maml-seed3")
    saved = torch.load(tmp_path / "staging/data/models/nav/maml-seed3.pt")
    assert saved["best_iteration"] == out["best_iteration"]
    for key, field in (("best", "best"), ("last", "params")):
        assert saved[key].keys() == out[field].keys()
        assert all(torch.equal(saved[key][k], out[field][k]) for k in saved[key])
    assert not all(torch.equal(saved["best"][k], saved["last"][k]) for k in saved["best"])  # 7 updates moved it

    def no_training(*args):
        raise AssertionError("a recorded run trained again")

    monkeypatch.setattr(rl, "meta_iteration", no_training)
    again = rl.train("t-nav", {"x": 1}, net, setting, 7, seed=0, checkpoint_every=3, work_dir=tmp_path / "other",
                     record="data/models/nav/maml-seed3")
    assert again["history"] == out["history"] and again["best_iteration"] == out["best_iteration"]
    assert all(torch.equal(again["best"][k], out["best"][k]) for k in out["best"])
    with pytest.raises(AssertionError, match="trained again"):  # other settings: no reuse
        rl.train("t-nav", {"x": 2}, net, setting, 7, seed=0, work_dir=tmp_path / "other",
                 record="data/models/nav/maml-seed3")


# --- evaluation -----------------------------------------------------------------------------

def test_the_oracle_observes_position_and_goal():
    pos, goals = torch.rand(2, 3, 2), torch.tensor([[0.1, 0.2], [0.3, -0.4]])
    assert torch.equal(rl.observe(pos, goals, oracle=False), pos)
    seen = rl.observe(pos, goals, oracle=True)
    assert seen.shape == (2, 3, 4) and torch.equal(seen[..., :2], pos)
    assert torch.equal(seen[1, 2, 2:], goals[1])


def test_a_test_time_policy_gradient_step_raises_the_return_of_a_task():
    """From a policy that wanders (mean 0, std 0.3), one REINFORCE step of 0.1 on 50 episodes
    must move it towards far goals: the return after the step beats the one before by more
    than the 95% CI of the per-task difference; and step size 0 changes nothing but the noise."""
    env = rl.Navigation(horizon=30)
    net = constant_policy([0.0, 0.0], math.log(0.3))
    goals = torch.tensor([[0.45, 0.45], [-0.45, 0.4], [0.4, -0.45], [-0.4, -0.4]])
    params = models.params_of(net, False)
    returns, episodes = rl.evaluate(env, net, params, goals, 1, (0.1,), 50, torch.Generator().manual_seed(0))
    assert returns.shape == (4, 2) and len(episodes) == 2 and episodes[1].obs.shape == (4, 50, 30, 2)
    from metalearn.evaluation import mean_ci95
    gain, ci = mean_ci95(returns[:, 1] - returns[:, 0])
    assert gain > ci > 0
    frozen, _ = rl.evaluate(env, net, params, goals, 1, (0.0,), 50, torch.Generator().manual_seed(0))
    same, _ = mean_ci95(frozen[:, 1] - frozen[:, 0])
    assert abs(same) < gain / 3


# --- the stages' policies, training settings and test protocol ------------------------------

def test_a_seeds_policy_has_the_environments_sizes_and_the_seeds_weights():
    env = rl.Navigation()
    net, oracle = rl.policy_for(env, [5], seed=3), rl.policy_for(env, [5], seed=3, oracle=True)
    assert net(torch.zeros(1, 2)).shape == (1, 4) and oracle(torch.zeros(1, 4)).shape == (1, 4)  # mean, log-std
    by_hand = models.init_model(lambda: rl.gaussian_policy(2, 2, [5]), 3)
    assert models.fingerprint(net) == models.fingerprint(by_hand)
    assert models.fingerprint(rl.policy_for(env, [5], seed=4)) != models.fingerprint(net)

    class Sizes:  # any object with the three sizes will do (a class of environments, e.g.)
        obs_dim, goal_dim, action_dim = 7, 3, 2

    assert rl.policy_for(Sizes, [5], 0, oracle=True)(torch.zeros(1, 10)).shape == (1, 4)


def test_each_method_trains_with_its_own_inner_loop_or_none():
    env, net = rl.Navigation(), rl.gaussian_policy(2, 2, [4])
    setting = {name: rl.method_setting(name, env, net, 0.1, meta_batch=3, trajectories=2, hvp_tasks=1)
               for name in ("maml", "fomaml", "anil", "pretrained", "oracle")}
    assert setting["maml"].inner == core.InnerLoop(1, 0.1, first_order=False, adapt=None)
    assert setting["fomaml"].inner.first_order and setting["fomaml"].inner.adapt is None
    assert setting["anil"].inner.adapt == {"head.linear.weight", "head.linear.bias", "head.log_std"}
    assert setting["pretrained"].inner is None and not setting["pretrained"].oracle
    assert setting["oracle"].inner is None and setting["oracle"].oracle
    assert all(s.meta_batch == 3 and s.hvp_tasks == 1 and s.env is env for s in setting.values())
    with pytest.raises(ValueError, match="unknown method 'random'"):
        rl.method_setting("random", env, net, 0.1)


def test_test_time_adapts_what_each_method_adapts_on_one_noise_stream_and_never_the_oracle():
    env = rl.Navigation(horizon=5)
    net = constant_policy([0.0, 0.0], math.log(0.3))
    params, goals = models.params_of(net, False), torch.tensor([[0.3, 0.3], [-0.3, 0.2]])
    testing = rl.TestTime(env, steps=2, trajectories=4, gamma=0.9)
    anil, _ = testing.returns(net, "anil", params, goals, (0.5, 0.1), seed=7)
    head = core.layer_mask(params, ["head"])
    by_hand, _ = rl.evaluate(env, net, params, goals, 2, (0.5, 0.1), 4, torch.Generator().manual_seed(7), adapt=head,
                             gamma=0.9)
    assert anil.shape == (2, 3) and torch.equal(anil, by_hand)
    pretrained, _ = testing.returns(net, "pretrained", params, goals, (0.5,), seed=7)
    every, _ = rl.evaluate(env, net, params, goals, 2, (0.5,), 4, torch.Generator().manual_seed(7), gamma=0.9)
    assert torch.equal(pretrained, every) and torch.equal(pretrained[:, 0], anil[:, 0])  # same start, same noise
    seer = constant_policy([0.0, 0.0], math.log(0.3), obs_dim=4)
    oracle, episodes = testing.returns(seer, "oracle", models.params_of(seer, False), goals, (), seed=7)
    assert oracle.shape == (2, 3) and len(episodes) == 1 and torch.equal(oracle[:, 1], oracle[:, 0])
    with pytest.raises(ValueError, match="at least one test step size"):
        testing.returns(net, "maml", params, goals, (), seed=7)


def test_validation_scores_each_step_size_after_the_last_step_on_the_same_noise():
    env = rl.Navigation(horizon=4)
    net = constant_policy([0.0, 0.0], math.log(0.3))
    params, goals = models.params_of(net, False), torch.tensor([[0.3, 0.3], [-0.3, 0.2]])
    testing = rl.TestTime(env, steps=1, trajectories=3)
    scores = testing.validate(net, "random", params, goals, [1.0, 0.1], seed=5)
    assert list(scores) == [1.0, 0.1]
    for lr, score in scores.items():
        assert score == testing.returns(net, "random", params, goals, (lr,), 5)[0][:, -1].mean().item()
    for bad in ([], [0.1, 0.1]):
        with pytest.raises(ValueError, match="distinct candidate step sizes"):
            testing.validate(net, "random", params, goals, bad, seed=5)


def test_the_best_step_size_is_the_argmax_of_the_finite_scores():
    assert rl.best_step_size({0.1: -5.0, 0.3: -2.0, 1.0: -3.0}) == 0.3
    assert rl.best_step_size({0.1: -5.0, 0.3: math.nan, 1.0: math.inf, 3.0: -math.inf}) == 0.1  # diverged: never
    assert rl.best_step_size({0.1: -2.0, 0.3: -2.0}) == 0.1  # ties: the first
    assert rl.best_step_size({0.1: math.nan, 0.3: math.nan}) == 0.1  # nothing finite: the first
    with pytest.raises(ValueError, match="no step sizes"):
        rl.best_step_size({})


def test_the_tuning_note_flags_a_choice_at_an_end_of_the_candidates():
    scores = {0.1: -5.0, 0.3: -2.345, 1.0: -3.0}
    assert rl.tuning_note(scores, 0.3, 3) == ("validation return after 3 steps per step size "
                                              "{0.1: -5.0, 0.3: -2.35, 1.0: -3.0} -> 0.3")
    for end in (0.1, 1.0):
        assert rl.tuning_note(scores, end, 3).endswith(f"-> {end} (an end of the candidates: widen baseline_lrs)")
    with pytest.raises(ValueError, match="not among the candidates"):
        rl.tuning_note(scores, 0.5, 3)
