"""Resumable training: a run killed at any moment ends with the numbers of an uninterrupted one."""
import math

import pytest
import torch
from torch import nn

from metalearn import core, evaluation, models, tasks, training

FAMILY = tasks.SineFamily()


class Killed(Exception):
    pass


def maml_run(work_dir, kill_at=None, seed=0):
    model = models.init_model(lambda: models.mlp([1, 8, 8, 1]), seed=0)
    run = training.Run("t-maml", {"x": 1}, model, seed=seed, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                       checkpoint_every=4, work_dir=work_dir)
    inner = core.inner_loop("maml", models.params_of(model), 1, 0.01)

    def step(r):
        if kill_at is not None and r.iteration == kill_at:
            raise Killed
        return training.maml_step(r, lambda g: FAMILY.batch(4, 5, 5, g), inner)

    run.train(13, step, log_every=1)
    return run


def reptile_run(work_dir, kill_at=None):
    model = models.init_model(lambda: models.mlp([1, 8, 8, 1]), seed=0)
    count = {"n": 0}

    def sample(gen):
        count["n"] += 1
        if kill_at is not None and count["n"] == kill_at:
            raise Killed
        return tasks.reptile_tasks([FAMILY], 20, 5, 3, gen)

    return training.train_reptile("t-reptile", {"x": 1}, model, 0, sample,
                                  core.InnerOptimizer("adam", lr=0.01, beta1=0.0), 11, 0.5, keep_state=True,
                                  snapshot_at=(5, 11), checkpoint_every=3, work_dir=work_dir)


def params_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kill_at", [3, 4, 9])
def test_maml_run_killed_and_restarted_ends_identically(tmp_path, kill_at):
    reference = maml_run(tmp_path / "a")
    with pytest.raises(Killed):
        maml_run(tmp_path / "b", kill_at=kill_at)
    resumed = maml_run(tmp_path / "b")
    assert resumed.resumed_from == (kill_at // 4) * 4
    assert params_equal(dict(reference.model.state_dict()), dict(resumed.model.state_dict()))
    assert reference.history == resumed.history


def test_reptile_run_with_kept_optimizer_state_resumes_identically(tmp_path):
    reference = reptile_run(tmp_path / "a")
    with pytest.raises(Killed):
        reptile_run(tmp_path / "b", kill_at=8)
    resumed = reptile_run(tmp_path / "b")
    assert params_equal(reference["params"], resumed["params"])
    assert reference["history"] == resumed["history"]
    assert sorted(resumed["snapshots"]) == [5, 11]
    assert params_equal(reference["snapshots"][5], resumed["snapshots"][5])


def test_same_seed_same_numbers_and_another_seed_others(tmp_path):
    a, b = maml_run(tmp_path / "a"), maml_run(tmp_path / "b")
    c = maml_run(tmp_path / "c", seed=1)
    assert a.history == b.history
    assert a.history != c.history
    assert all(math.isfinite(h["loss"]) for h in a.history)


def test_checkpoint_key_changes_with_the_settings(tmp_path):
    model = models.mlp([1, 2, 1])
    one = training.Run("k", {"lr": 1}, model, 0, work_dir=tmp_path)
    two = training.Run("k", {"lr": 2}, model, 0, work_dir=tmp_path)
    assert one.path != two.path
    with pytest.raises(ValueError, match="checkpoint_every"):
        training.Run("k", {}, model, 0, checkpoint_every=0, work_dir=tmp_path)


def test_checkpoint_key_follows_settings_and_the_numerics_version_not_the_source(monkeypatch):
    """The key is the run's name, its settings and training.NUMERICS: editing any module's
    source (a refactor, a report) keeps it; new settings or a bumped version change it."""
    key = training.run_key("k", {"lr": 1})
    assert training.run_key("k", {"lr": 1}) == key
    assert training.run_key("k", {"lr": 2}) != key
    assert training.run_key("j", {"lr": 1}) != key
    assert training.run_key("k", {"lr": 1}).startswith("k-")
    monkeypatch.setattr(training, "NUMERICS", training.NUMERICS + 1)
    assert training.run_key("k", {"lr": 1}) != key


def test_minibatches_cover_each_pass_without_repeats():
    idx = tasks.minibatches(50, 10, 12, torch.Generator().manual_seed(0))
    assert idx.shape == (12, 10)
    for p in range(2):
        assert sorted(idx[5 * p:5 * p + 5].flatten().tolist()) == list(range(50))
    with pytest.raises(ValueError, match="minibatch of 60"):
        tasks.minibatches(50, 60, 1, torch.Generator())


def test_independent_regressors_fit_their_own_tasks_and_penalties_pull_as_asked():
    factory = lambda: models.mlp([1, 16, 1])  # noqa: E731
    free, err = training.train_independent(factory, FAMILY, 3, 300, 0.01, seed=0)
    assert err.shape == (3,)
    assert err.mean() < 1.0  # fitted well below the variance of a sinusoid (about 3.4)
    anchor = {k: torch.full_like(v[0], 0.5) for k, v in free.items()}
    pulled, _ = training.train_independent(factory, FAMILY, 3, 300, 0.01, seed=0, weight=100.0, anchor=anchor)
    decayed, _ = training.train_independent(factory, FAMILY, 3, 300, 0.01, seed=0, weight=100.0)

    def distance(params, to):
        return sum(((v - to[k]) ** 2).sum() for k, v in params.items())

    zero = {k: 0.0 for k in free}
    assert distance(pulled, anchor) < distance(free, anchor) / 10
    assert distance(decayed, zero) < distance(free, zero) / 10


def test_surface_tasks_are_the_reviews_function_on_a_square_grid():
    """z = a sin(x^2 + y^2 + p) on a side x side grid of the square; a in [0, 2], p in [0, 2 pi]."""
    family = tasks.SurfaceFamily()
    grid = family.grid(2, 9)
    assert grid.shape == (2, 9, 2) and set(grid[0, :, 0].tolist()) == {-3.0, 0.0, 3.0}
    assert torch.equal(grid[0], grid[1])
    task = torch.tensor([[2.0, 0.5]])
    x = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [-3.0, 3.0]]])
    expected = 2.0 * torch.sin(torch.tensor([0.0, 5.0, 18.0]) + 0.5)
    torch.testing.assert_close(family(task, x)[0, :, 0], expected)
    drawn = family.sample_tasks(500, torch.Generator().manual_seed(0))
    assert 0 <= drawn[:, 0].min() and drawn[:, 0].max() <= 2 and 0 <= drawn[:, 1].min() and drawn[:, 1].max() <= 2 * math.pi
    [(xt, yt, batches)] = tasks.reptile_tasks([family], 16, 4, 5, torch.Generator().manual_seed(1))
    assert xt.shape == (16, 2) and yt.shape == (16, 1) and batches.shape == (5, 4)
    with pytest.raises(ValueError, match="square number"):
        family.grid(1, 10)
    with pytest.raises(ValueError, match="Fourier"):
        tasks.SurfaceFamily(fourier=True)


def test_optimized_mse_is_adam_on_the_fit_points_scored_on_all_points():
    """Known answer: a linear model from 0 fitted by SGD on its fit points; the curve is the MSE over
    every point after each step, computed here by hand."""
    model = nn.Linear(2, 1, bias=False)
    params = {"weight": torch.zeros(1, 2)}
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    y = torch.tensor([[[1.0], [2.0], [3.0]]])
    fit = torch.tensor([[0, 1]])
    curve = evaluation.optimized_mse(model, params, x, y, fit, core.InnerOptimizer("sgd", lr=0.5), 2)
    w, expected = torch.zeros(2), []
    for _ in range(3):
        expected.append(((x[0] @ w - y[0, :, 0]) ** 2).mean().item())
        grad = 2 * x[0, :2].T @ (x[0, :2] @ w - y[0, :2, 0]) / 2
        w = w - 0.5 * grad
    torch.testing.assert_close(curve[0], torch.tensor(expected))
    assert curve.shape == (1, 3) and curve[0, -1] < curve[0, 0]


def test_paired_over_seeds_known_answer():
    a = torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 5.0]])
    b = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 2.0]])
    got = evaluation.paired_over_seeds(a, b)  # per task mean difference: 1, 1, 2.5; per seed: 4/3, 5/3
    assert got["difference"] == pytest.approx(1.5)
    assert got["per seed"] == pytest.approx([4 / 3, 5 / 3])
    assert got["ci95"] == pytest.approx(evaluation.mean_ci95(torch.tensor([1.0, 1.0, 2.5]))[1])
    assert got["ci95 over seeds"] == pytest.approx(evaluation.mean_ci95(torch.tensor([4 / 3, 5 / 3]))[1])
    assert math.isnan(evaluation.paired_over_seeds(a[:1], b[:1])["ci95 over seeds"])
    with pytest.raises(ValueError, match="seeds, tasks"):
        evaluation.paired_over_seeds(a, b[:, :2])


def test_reptile_tasks_on_visited_points_only_feed_the_inner_loop_the_same_minibatches():
    family = tasks.SurfaceFamily()
    [(x, y, batches)] = tasks.reptile_tasks([family], 400, 20, 5, torch.Generator().manual_seed(3))
    [(xv, yv, bv)] = tasks.reptile_tasks([family], 400, 20, 5, torch.Generator().manual_seed(3), visited_only=True)
    assert xv.shape == (100, 2) and bv.shape == (5, 20)  # 5 minibatches of 20 distinct points
    for step in range(5):
        assert torch.equal(xv[bv[step]], x[batches[step]]) and torch.equal(yv[bv[step]], y[batches[step]])
