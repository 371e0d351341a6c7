"""The meta-learning core against independent computations (float64 throughout)."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

from metalearn import core, models, theory
from metalearn.models import forward

LR, STEPS, T = 0.1, 2, 3


pytestmark = pytest.mark.usefixtures("float64")  # every test in float64 (tests/testenv.py)


@pytest.fixture
def setup():
    net = models.init_model(lambda: models.mlp([1, 6, 5, 1]), seed=3).double()
    params = models.params_of(net)
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(T, n, 1, generator=g, dtype=torch.float64) for n in (4, 4, 7, 7)]
    return net, params, data


def unrolled_meta_gradient(net, params, data, adapt_names, first_order, lrs):
    """Reference: the inner loop unrolled by hand with torch.autograd.grad(create_graph)."""
    xs, ys, xq, yq = data
    total = 0
    for t in range(len(xs)):
        current = dict(params)
        for lr in lrs:
            loss = core.mse(forward(net, current, xs[t]), ys[t])
            grads = torch.autograd.grad(loss, [current[k] for k in adapt_names], create_graph=not first_order)
            current = {**current, **{k: current[k] - lr * (g.detach() if first_order else g)
                                     for k, g in zip(adapt_names, grads)}}
        total = total + core.mse(forward(net, current, xq[t]), yq[t])
    return torch.autograd.grad(total / len(xs), list(params.values()))


def core_meta_gradient(net, params, data, inner, path="loop"):
    loss, _ = core.meta_loss(net, params, *data, inner, path=path)
    return torch.autograd.grad(loss, list(params.values()))


def assert_close(a, b, tol=1e-12):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)


@pytest.mark.parametrize("algorithm", core.ALGORITHMS)
def test_meta_gradient_equals_unrolled_reference(setup, algorithm):
    net, params, data = setup
    inner = core.inner_loop(algorithm, params, steps=STEPS, lr=LR)
    names = [k for k in params if algorithm != "anil" or k.startswith("head.")]
    expected = unrolled_meta_gradient(net, params, data, names, algorithm == "fomaml", [LR] * STEPS)
    assert_close(core_meta_gradient(net, params, data, inner), expected)


def test_maml_meta_gradient_matches_finite_differences(setup):
    net, params, data = setup
    inner = core.inner_loop("maml", params, steps=STEPS, lr=LR)
    grads = core_meta_gradient(net, params, data, inner)
    direction = {k: torch.randn_like(v) for k, v in params.items()}
    eps = 1e-6

    def loss_at(sign):
        shifted = {k: (v + sign * eps * direction[k]).detach() for k, v in params.items()}
        return core.meta_loss(net, shifted, *data, inner)[0].item()

    numeric = (loss_at(1) - loss_at(-1)) / (2 * eps)
    analytic = sum((g * direction[k]).sum() for g, k in zip(grads, params)).item()
    assert analytic == pytest.approx(numeric, rel=1e-6)
    # and a first-order gradient is measurably different: the check can tell them apart
    fo = core_meta_gradient(net, params, data, core.inner_loop("fomaml", params, steps=STEPS, lr=LR))
    first_order = sum((g * direction[k]).sum() for g, k in zip(fo, params)).item()
    assert abs(first_order - numeric) > 1e-4 * abs(numeric)


def test_fomaml_is_the_query_gradient_at_the_adapted_parameters(setup):
    net, params, data = setup
    inner = core.inner_loop("fomaml", params, steps=STEPS, lr=LR)
    xs, ys, xq, yq = data
    expected = [torch.zeros_like(v) for v in params.values()]
    for t in range(T):
        adapted = {k: v.detach().requires_grad_() for k, v in core.adapt(net, params, xs[t], ys[t], inner).items()}
        g = torch.autograd.grad(core.mse(forward(net, adapted, xq[t]), yq[t]), list(adapted.values()))
        expected = [e + gi / T for e, gi in zip(expected, g)]
    assert_close(core_meta_gradient(net, params, data, inner), expected)


def test_anil_is_maml_with_the_body_masked_and_stays_second_order(setup):
    net, params, data = setup
    anil = core_meta_gradient(net, params, data, core.inner_loop("anil", params, STEPS, LR))
    masked = core_meta_gradient(net, params, data, core.InnerLoop(STEPS, LR, adapt=core.layer_mask(params, ["head"])))
    maml = core_meta_gradient(net, params, data, core.inner_loop("maml", params, STEPS, LR))
    head_first_order = core_meta_gradient(
        net, params, data, core.InnerLoop(STEPS, LR, first_order=True, adapt=core.layer_mask(params, ["head"])))
    assert_close(anil, masked)
    body = [i for i, k in enumerate(params) if k.startswith("body.")]
    assert all((anil[i] - maml[i]).abs().max() > 1e-8 for i in body)           # ANIL is not MAML
    assert any((anil[i] - head_first_order[i]).abs().max() > 1e-8 for i in body)  # second order through the head


def test_adapted_parameters_outside_the_mask_are_untouched(setup):
    net, params, data = setup
    adapted = core.adapt(net, params, data[0][0], data[1][0], core.inner_loop("anil", params, 3, LR))
    for k in params:
        assert (adapted[k] is params[k]) == k.startswith("body.")


def test_vectorized_tasks_equal_the_loop(setup):
    net, params, data = setup
    for algorithm in core.ALGORITHMS:
        inner = core.inner_loop(algorithm, params, STEPS, LR)
        assert_close(core_meta_gradient(net, params, data, inner, path="vmap"),
                     core_meta_gradient(net, params, data, inner), tol=1e-10)


def test_step_size_schedule_uses_one_step_per_entry_and_repeats_the_last(setup):
    net, params, data = setup
    lrs = (0.1, 0.05)
    inner = core.InnerLoop(steps=3, lr=lrs)
    expected = unrolled_meta_gradient(net, params, data, list(params), False, [0.1, 0.05, 0.05])
    assert_close(core_meta_gradient(net, params, data, inner), expected)


def test_zero_inner_steps_is_plain_training_on_the_query_set(setup):
    net, params, data = setup
    got = core_meta_gradient(net, params, data, core.InnerLoop(0, LR))
    xq, yq = data[2], data[3]
    loss = sum(core.mse(forward(net, params, xq[t]), yq[t]) for t in range(T)) / T
    assert_close(got, torch.autograd.grad(loss, list(params.values())))


def test_reptile_with_one_step_is_a_joint_sgd_step(setup):
    net, params, data = setup
    xs, ys = data[0], data[1]
    theta = {k: v.detach() for k, v in params.items()}
    alpha, eps = 0.05, 0.7
    whole = torch.arange(xs.shape[1])[None]
    adapted = [core.optimize(net, theta, xs[t], ys[t], whole, core.InnerOptimizer("sgd", lr=alpha))[0]
               for t in range(T)]
    new = core.reptile_update(theta, adapted, eps)
    joint = {k: v.clone().requires_grad_() for k, v in theta.items()}
    loss = sum(core.mse(forward(net, joint, xs[t]), ys[t]) for t in range(T)) / T
    grads = torch.autograd.grad(loss, list(joint.values()))
    for (k, v), g in zip(theta.items(), grads):
        torch.testing.assert_close(new[k], v - eps * alpha * g, atol=1e-12, rtol=1e-12)


def test_reptile_with_two_steps_is_not_a_joint_step(setup):
    net, params, data = setup
    theta = {k: v.detach() for k, v in params.items()}
    x, y = data[0][0], data[1][0]
    two = core.optimize(net, theta, x, y, torch.arange(4).expand(2, -1), core.InnerOptimizer("sgd", lr=0.1))[0]
    g = torch.autograd.grad(core.mse(forward(net, {k: v.requires_grad_() for k, v in dict(theta).items()}, x), y),
                            list(theta.values()))
    straight = {k: v - 0.2 * gi for (k, v), gi in zip(theta.items(), g)}
    assert max((two[k] - straight[k]).abs().max() for k in theta) > 1e-8


def test_inner_optimizer_state_continues_when_kept(setup):
    net, params, data = setup
    theta = {k: v.detach() for k, v in params.items()}
    adam = core.InnerOptimizer("adam", lr=0.01, beta1=0.0, beta2=0.99)
    batches = torch.arange(4).expand(3, -1)
    _, state = core.optimize(net, theta, data[0][0], data[1][0], batches, adam)
    assert all(s["step"].item() == 3 for s in state["state"].values())
    kept, state2 = core.optimize(net, theta, data[0][1], data[1][1], batches, adam, state)
    fresh, _ = core.optimize(net, theta, data[0][1], data[1][1], batches, adam)
    assert all(s["step"].item() == 6 for s in state2["state"].values())
    assert max((kept[k] - fresh[k]).abs().max() for k in theta) > 1e-8


@pytest.mark.parametrize("name,kwargs", [("sgd", {}), ("adam", {"beta1": 0.1, "beta2": 0.99}), ("rmsprop", {"rho": 0.9})])
def test_inner_optimizers_are_torch_optim(setup, name, kwargs):
    net, params, data = setup
    theta = {k: v.detach() for k, v in params.items()}
    spec = core.InnerOptimizer(name, lr=0.01, **kwargs)
    got, _ = core.optimize(net, theta, data[0][0], data[1][0], torch.arange(4).expand(3, -1), spec)
    module = models.init_model(lambda: models.mlp([1, 6, 5, 1]), seed=3).double()
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.01),
           "adam": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.1, 0.99)),
           "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9)}[name](module.parameters())
    for _ in range(3):
        opt.zero_grad()
        core.mse(module(data[0][0]), data[1][0]).backward()
        opt.step()
    for k, v in module.named_parameters():
        torch.testing.assert_close(got[k], v.detach(), atol=1e-12, rtol=1e-12)


def test_anil_closed_form_of_the_two_layer_linear_network():
    net = models.Net(nn.Sequential(OrderedDict(layer1=nn.Linear(1, 1, bias=False))), nn.Linear(1, 1, bias=False))
    g = torch.Generator().manual_seed(1)
    t1, t2 = torch.randn(2, generator=g)
    x1, y1, x2, y2 = torch.randn(4, 6, generator=g)
    params = {"body.layer1.weight": t1.reshape(1, 1).requires_grad_(), "head.weight": t2.reshape(1, 1).requires_grad_()}
    grads = {}
    for algorithm in core.ALGORITHMS:
        loss, _ = core.meta_loss(net, params, *(v[:, None, None] for v in (x1, y1, x2, y2)),
                                 core.inner_loop(algorithm, params, 1, 0.05))
        auto = torch.autograd.grad(loss * 6, list(params.values()))
        closed = theory.two_layer_meta_gradient(t1, t2, x1, y1, x2, y2, 0.05, algorithm)
        torch.testing.assert_close(torch.stack([a.reshape(()) for a in auto]), torch.stack(closed))
        grads[algorithm] = closed
    assert not torch.allclose(grads["anil"][0], grads["maml"][0])


def test_reptile_expansions_are_second_order_accurate():
    net = models.init_model(lambda: models.mlp([1, 8, 8, 1]), seed=0).double()
    theta = models.params_of(net, requires_grad=False)
    g = torch.Generator().manual_seed(2)
    b1 = (torch.randn(5, 1, generator=g), torch.randn(5, 1, generator=g))
    b2 = (torch.randn(5, 1, generator=g), torch.randn(5, 1, generator=g))
    for alg in ["fomaml", "maml", "reptile"]:
        err = [(lambda t: (t[alg] - t[f"{alg}_expansion"]).norm() / t[alg].norm())(
            theory.reptile_k2_terms(net, theta, b1, b2, beta)) for beta in (1e-2, 1e-3)]
        assert err[1] < err[0] / 50  # quadratic: a tenth of beta, a hundredth of the error


def test_activations_are_read_before_and_after_adaptation(setup):
    net, params, data = setup
    x = data[0][0]
    before = models.activations(net, params, x)
    assert list(before) == ["body.layer1", "body.layer2", "head"]
    assert before["body.layer1"].shape == (4, 6)
    torch.testing.assert_close(before["head"], forward(net, params, x).detach())
    after = models.activations(net, core.adapt(net, params, x, data[1][0], core.InnerLoop(1, LR)), x)
    assert (after["head"] - before["head"]).abs().max() > 0
    with pytest.raises(ValueError, match="unknown layers"):
        models.activations(net, params, x, ["body.layer9"])


def test_bad_inputs_are_refused_with_clear_messages(setup):
    _, params, _ = setup
    with pytest.raises(ValueError, match="unknown algorithm"):
        core.inner_loop("mamll", params, 1, 0.1)
    with pytest.raises(ValueError, match="step sizes must be >= 0"):
        core.InnerLoop(1, -0.1)
    with pytest.raises(ValueError, match="inner steps must be >= 0"):
        core.InnerLoop(-1, 0.1)
    with pytest.raises(ValueError, match="no parameter belongs"):
        core.layer_mask(params, ["body.layer7"])
    with pytest.raises(ValueError, match="unknown inner optimiser"):
        core.InnerOptimizer("adagrad")
    with pytest.raises(ValueError, match="beta1"):
        core.InnerOptimizer("adam", beta1=1.0)
    with pytest.raises(ValueError, match="at least one"):
        core.reptile_update(params, [], 0.1)
    with pytest.raises(ValueError, match="layer sizes"):
        models.mlp([1])
