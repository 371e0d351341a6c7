"""M-sine's multi-task baselines and tuned fine-tuning (metalearn.sine), against independent
computations: training.train_independent composed by hand, and gradient descent written out."""
import math

import pytest
import torch

from metalearn import evaluation, models, sine, tasks, training

FAMILY = tasks.SineFamily(amplitude=(0.1, 5.0), phase=(0.0, math.pi))


def factory():
    return models.mlp([1, 8, 1])


def test_anchored_groups_go_towards_the_mean_of_the_groups_before():
    averaged, errors = sine.averaged_regressors(factory, FAMILY, 4, steps=3, lr=0.01, seed=7, weight=0.5,
                                                anchored=True, groups=2)
    first, e1 = training.train_independent(factory, FAMILY, 2, 3, 0.01, seed=7)  # no mean yet: not penalised
    anchor = {k: v.mean(0) for k, v in first.items()}
    second, e2 = training.train_independent(factory, FAMILY, 2, 3, 0.01, seed=9, weight=0.5, anchor=anchor)
    for k in averaged:
        assert torch.allclose(averaged[k], torch.cat([first[k], second[k]]).mean(0))
    assert torch.equal(errors, torch.cat([e1, e2]))
    plain, _ = sine.averaged_regressors(factory, FAMILY, 2, steps=3, lr=0.01, seed=7, weight=0.5)  # l2 to the origin
    decayed, _ = training.train_independent(factory, FAMILY, 2, 3, 0.01, seed=7, weight=0.5)
    assert all(torch.allclose(plain[k], decayed[k].mean(0)) for k in plain)


def test_the_penalty_chosen_is_the_largest_that_keeps_the_pilots_error_low_enough():
    args = dict(factory=factory, family=FAMILY, n=2, pilot=2, groups=2, steps=2, lr=0.01, weights=[0.0, 0.1, 1.0],
                seed=0)
    averaged, errors, chosen = sine.multitask_baselines(**args, max_error=math.inf)
    assert chosen == {"noreg": 0.0, "l2": 1.0, "regmean": 1.0} and set(averaged) == set(sine.VARIANTS)
    assert all(e.shape == (2,) for e in errors.values())
    _, _, none_ok = sine.multitask_baselines(**args, max_error=-1.0)
    assert none_ok == {"noreg": 0.0, "l2": 0.0, "regmean": 0.0}
    noreg, _ = sine.averaged_regressors(factory, FAMILY, 2, 2, 0.01, seed=100)  # the baselines' seeds start at seed + 100
    assert all(torch.equal(averaged["noreg"][k], noreg[k]) for k in noreg)


def _gradient_descent_mse(params, batch, steps, lr):
    """Mean query MSE after ``steps`` gradient steps, task by task, with torch.autograd."""
    net, errors = models.mlp([1, 8, 1]), []
    for t in range(len(batch.xs)):
        p = {k: v.clone().requires_grad_() for k, v in params.items()}
        for _ in range(steps):
            loss = ((models.forward(net, p, batch.xs[t]) - batch.ys[t]) ** 2).mean()
            grads = torch.autograd.grad(loss, list(p.values()))
            p = {k: (v - lr * g).detach().requires_grad_() for (k, v), g in zip(p.items(), grads)}
        errors.append(((models.forward(net, p, batch.xq[t]) - batch.yq[t]) ** 2).mean().item())
    return sum(errors) / len(errors)


def test_the_tuned_step_is_the_candidate_with_the_lowest_validation_error():
    params = models.params_of(models.init_model(factory, 0), False)
    val = FAMILY.batch(6, 5, 10, torch.Generator().manual_seed(1))
    candidates = [0.0001, 0.003, 0.03, 1e6]  # 1e6 diverges: infinite or NaN, never chosen
    by_hand = {c: _gradient_descent_mse(params, val, 3, c) for c in candidates[:-1]}
    assert sine.tuned_step(models.mlp([1, 8, 1]), params, val, 3, candidates) == min(by_hand, key=by_hand.get)
    curve = sine.finetune_curves(models.mlp([1, 8, 1]), params, val, 3, 0.03)
    assert curve.shape == (6, 4) and curve[:, -1].mean().item() == pytest.approx(by_hand[0.03], rel=1e-5)


def test_the_finetune_table_uses_fixed_steps_tunes_the_others_and_starts_from_the_unadapted_error():
    net = models.mlp([1, 8, 1])
    methods = {"a": models.params_of(models.init_model(factory, 0), False),
               "b": models.params_of(models.init_model(factory, 1), False)}
    val, test = (FAMILY.batch(5, 5, 10, torch.Generator().manual_seed(s)) for s in (1, 2))
    table = sine.finetune_table(net, methods, val, test, 2, [0.001, 0.01], fixed={"a": 0.5})
    assert list(table.method) == ["a"] * 3 + ["b"] * 3 and list(table.step) == [0, 1, 2] * 2
    assert set(table[table.method == "a"].lr) == {0.5}
    assert set(table[table.method == "b"].lr) == {sine.tuned_step(net, methods["b"], val, 2, [0.001, 0.01])}
    unadapted = ((models.forward(net, methods["b"], test.xq) - test.yq) ** 2).mean((1, 2))
    mean, ci = evaluation.mean_ci95(unadapted)
    row = table[(table.method == "b") & (table.step == 0)].iloc[0]
    assert (row.mse, row.ci95) == (pytest.approx(mean, rel=1e-5), pytest.approx(ci, rel=1e-4))


def test_the_oracle_error_is_its_query_mse_given_the_task():
    batch = FAMILY.batch(3, 5, 10, torch.Generator().manual_seed(0))

    def perfect(x):  # knows amplitude and phase (the last two inputs): exact
        return x[..., 1:2] * torch.sin(x[..., :1] + x[..., 2:3])

    truth = FAMILY(batch.task, batch.xq)
    assert torch.allclose(truth, perfect(tasks.with_task_input(batch.xq, batch.task)), atol=1e-6), "input layout"
    assert torch.allclose(sine.oracle_error(perfect, batch), torch.zeros(3), atol=1e-10)
    assert torch.allclose(sine.oracle_error(lambda x: torch.zeros_like(x[..., :1]), batch), (batch.yq ** 2).mean((1, 2)))


def test_the_pooled_batch_is_each_fresh_tasks_points_in_one_regression_batch_and_draws_as_a_task_batch():
    gen = torch.Generator().manual_seed(3)
    x, y = sine.pooled_batch(FAMILY, 4, 5, gen)
    after = torch.rand(1, generator=gen)  # the stream continues where a batch of 4 tasks x 5 points leaves it
    again = torch.Generator().manual_seed(3)
    task = FAMILY.sample_tasks(4, again)
    xs = FAMILY.sample_x(4, 5, again)
    FAMILY.sample_x(4, 0, again)  # no queries
    assert torch.equal(after, torch.rand(1, generator=again))
    assert x.shape == (20, 1) and y.shape == (20, 1)
    assert torch.equal(x, xs.reshape(20, 1))
    amplitude, phase = task.repeat_interleave(5, dim=0).unbind(1)  # points 0..4 are task 0's, 5..9 task 1's ...
    assert torch.allclose(y[:, 0], amplitude * torch.sin(x[:, 0] + phase))
    ox, oy = sine.pooled_batch(FAMILY, 4, 5, torch.Generator().manual_seed(3), oracle=True)
    assert ox.shape == (20, 3) and torch.equal(ox[:, :1], x) and torch.equal(oy, y)
    assert torch.equal(ox[:, 1:], task.repeat_interleave(5, dim=0))  # each point told its task's amplitude, phase
