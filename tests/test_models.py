"""Models: hand-written batch norm against torch and against formulas, its exactness under
``torch.vmap`` for second-order MAML, the Conv4 / MLP shapes, and batch-norm modes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalearn import core, models
from metalearn.models import forward

EPS = 1e-5


pytestmark = pytest.mark.usefixtures("float64")  # every test in float64 (tests/testenv.py)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randomised_norm(channels, seed, eps=EPS):
    """A BatchNorm with non-trivial weight and bias."""
    g = gen(seed)
    bn = models.BatchNorm(channels, eps=eps)
    with torch.no_grad():
        bn.weight.copy_(1 + 0.5 * torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
    return bn


def per_channel_axes(x):
    return [0, *range(2, x.dim())]


# ------------------------------------------------------------------------ 1. BatchNorm


@pytest.mark.parametrize("shape", [(6, 3, 5, 4), (7, 5), (4, 2, 9)])
@pytest.mark.parametrize("eps", [EPS, 0.3])
@pytest.mark.parametrize("hand_written", [False, True])
def test_batch_norm_equals_torch_training_mode_batch_norm(shape, eps, hand_written):
    bn = randomised_norm(shape[1], seed=1, eps=eps)
    x = 3 * torch.randn(shape, generator=gen(2)) + 1.5
    expected = F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=eps)
    with models.hand_written_batch_norm(hand_written):
        torch.testing.assert_close(bn(x), expected, atol=1e-12, rtol=1e-12)
    # the affine part is really applied (the comparison above can tell it apart)
    plain = F.batch_norm(x, None, None, None, None, training=True, eps=eps)
    assert (bn(x) - plain).abs().max() > 0.1


@pytest.mark.parametrize("shape", [(6, 3, 5, 4), (7, 5)])
def test_batch_norm_with_unit_weight_and_zero_bias_standardises_each_channel(shape):
    x = 4 * torch.randn(shape, generator=gen(3)) - 2
    x = x * torch.arange(1, shape[1] + 1).view(1, -1, *[1] * (len(shape) - 2))  # channel scales differ
    y = models.BatchNorm(shape[1])(x)
    axes = per_channel_axes(x)
    torch.testing.assert_close(y.mean(axes), torch.zeros(shape[1]), atol=1e-12, rtol=0)
    var = x.var(axes, unbiased=False)
    # biased variance of the output: var / (var + eps), i.e. 1 up to eps
    torch.testing.assert_close(y.var(axes, unbiased=False), var / (var + EPS), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(y.var(axes, unbiased=False), torch.ones(shape[1]), atol=1e-4, rtol=0)


def test_batch_norm_has_no_running_statistics_and_ignores_train_eval_mode():
    bn = randomised_norm(3, seed=4)
    assert [name for name, _ in bn.named_buffers()] == []
    x = torch.randn(5, 3, 2, 2, generator=gen(5))
    train = bn.train()(x)
    torch.testing.assert_close(bn.eval()(x), train, atol=0, rtol=0)


# ------------------------------------------------------------------------ 2. stats_rows


@pytest.mark.parametrize("shape,n", [((9, 3, 4, 4), 4), ((8, 5), 3), ((8, 5), 8)])
def test_stats_rows_normalises_every_row_with_the_first_rows_statistics(shape, n):
    bn = randomised_norm(shape[1], seed=6)
    x = torch.randn(shape, generator=gen(7))
    x[n:] = 5 * x[n:] + 3  # the other rows have quite different statistics
    axes = per_channel_axes(x)
    view = [1, -1] + [1] * (x.dim() - 2)
    ref = x[:n]
    mean = ref.mean(axes, keepdim=True)
    var = ref.var(axes, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + EPS) * bn.weight.view(view) + bn.bias.view(view)
    got = bn(x, stats_rows=n)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got[:n], bn(x[:n]), atol=1e-12, rtol=1e-12)
    if n < len(x):  # and it is not the full-batch normalisation
        assert (got - bn(x)).abs().max() > 0.1
    else:
        torch.testing.assert_close(got, bn(x), atol=1e-12, rtol=1e-12)


def test_stats_rows_rows_after_n_do_not_influence_any_output_but_their_own():
    bn = randomised_norm(3, seed=8)
    x = torch.randn(7, 3, 3, 3, generator=gen(9))
    y = x.clone()
    y[5] = y[5] * 10 - 4
    a, b = bn(x, stats_rows=4), bn(y, stats_rows=4)
    rows = [0, 1, 2, 3, 4, 6]
    torch.testing.assert_close(a[rows], b[rows], atol=0, rtol=0)
    assert (a[5] - b[5]).abs().max() > 1


def test_stats_rows_reach_every_block_of_a_network():
    net = models.init_model(lambda: models.conv4(3, 1, 4, 12, strided=True), seed=0).double()
    x = torch.randn(6, 1, 12, 12, generator=gen(10))
    torch.testing.assert_close(net(x, stats_rows=4)[:4], net(x[:4]), atol=1e-12, rtol=1e-12)
    assert (net(x, stats_rows=4)[4:] - net(x)[4:]).abs().max() > 1e-6


# ------------------------------------------------------- 3. vmap-exact second-order MAML


def perturbed_params(net, seed):
    """The net's parameters with batch-norm weights/biases away from 1/0, as leaves."""
    g = gen(seed)
    params = models.params_of(net, requires_grad=False)
    for k, v in params.items():
        if ".norm.weight" in k:
            params[k] = 1 + 0.3 * torch.randn(v.shape, generator=g)
        elif ".norm.bias" in k:
            params[k] = 0.2 * torch.randn(v.shape, generator=g)
    return {k: v.requires_grad_() for k, v in params.items()}


def reference_conv4(p, x, stats_rows=None):
    """Strided Conv4 written with F.conv2d and F.batch_norm (or torch.var_mean for the
    support-statistics mode): independent of metalearn.models."""
    for i in range(1, 5):
        x = F.conv2d(x, p[f"body.layer{i}.layer.weight"], p[f"body.layer{i}.layer.bias"], stride=2, padding=1)
        w, b = p[f"body.layer{i}.norm.weight"], p[f"body.layer{i}.norm.bias"]
        if stats_rows is None:
            x = F.batch_norm(x, None, None, w, b, training=True, eps=EPS)
        else:
            var, mean = torch.var_mean(x[:stats_rows], dim=(0, 2, 3), unbiased=False, keepdim=True)
            x = (x - mean) / torch.sqrt(var + EPS) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
        x = torch.relu(x)
    return F.linear(x.mean((2, 3)), p["head.weight"], p["head.bias"])


def unrolled_meta_gradient(p, data, steps, lr, bn, adapted=None):
    """Per-task loop, inner SGD unrolled with torch.autograd.grad(create_graph=True) on the
    parameters named in ``adapted`` (default: all)."""
    xs, ys, xq, yq = data
    names = list(p) if adapted is None else [k for k in p if k in adapted]
    total = 0
    for t in range(len(xs)):
        current = dict(p)
        for _ in range(steps):
            loss = F.cross_entropy(reference_conv4(current, xs[t]), ys[t])
            grads = torch.autograd.grad(loss, [current[k] for k in names], create_graph=True)
            current = {**current, **{k: current[k] - lr * g for k, g in zip(names, grads)}}
        if bn == "transductive":
            logits = reference_conv4(current, xq[t])
        else:
            logits = reference_conv4(current, torch.cat([xs[t], xq[t]]), stats_rows=len(xs[t]))[len(xs[t]):]
        total = total + F.cross_entropy(logits, yq[t])
    return torch.autograd.grad(total / len(xs), list(p.values()))


@pytest.fixture(scope="module")
def maml_problem():
    net = models.init_model(lambda: models.conv4(3, 1, 4, 8, strided=True), seed=0).double()
    g = gen(11)
    T, n_way, k, q = 2, 3, 2, 2
    xs = torch.randn(T, n_way * k, 1, 8, 8, generator=g, dtype=torch.float64)
    xq = torch.randn(T, n_way * q, 1, 8, 8, generator=g, dtype=torch.float64)
    ys = torch.arange(n_way).repeat_interleave(k).expand(T, -1)
    yq = torch.arange(n_way).repeat_interleave(q).expand(T, -1)
    return net, (xs, ys, xq, yq)


def lib_meta_gradient(net, params, data, inner, bn, path):
    loss, _ = core.meta_loss(net, params, *data, inner, core.cross_entropy, path=path, bn=bn)
    return torch.autograd.grad(loss, list(params.values()))


def assert_all_close(a, b, tol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)


@pytest.mark.parametrize("bn", core.BN_MODES)
def test_second_order_maml_with_batch_norm_is_exact_under_vmap(maml_problem, bn):
    net, data = maml_problem
    params = perturbed_params(net, seed=12)
    inner = core.inner_loop("maml", params, steps=2, lr=0.3)
    vmapped = lib_meta_gradient(net, params, data, inner, bn, path="vmap")
    looped = lib_meta_gradient(net, params, data, inner, bn, path="loop")
    assert all(torch.isfinite(g).all() for g in vmapped)
    assert_all_close(vmapped, looped, tol=1e-10)
    # the meta-gradient is really second order (so the comparison involves Hessian terms)
    fo = lib_meta_gradient(net, params, data, core.inner_loop("fomaml", params, 2, 0.3), bn, path="loop")
    assert max((a - b).abs().max() for a, b in zip(looped, fo)) > 1e-4


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
@pytest.mark.parametrize("bn", core.BN_MODES)
def test_second_order_meta_gradient_with_batch_norm_equals_an_unrolled_reference(maml_problem, bn, algorithm):
    net, data = maml_problem
    params = perturbed_params(net, seed=13)
    inner = core.inner_loop(algorithm, params, steps=2, lr=0.3)
    adapted = None if algorithm == "maml" else [k for k in params if k.startswith("head.")]
    expected = unrolled_meta_gradient(params, data, steps=2, lr=0.3, bn=bn, adapted=adapted)
    for path in core.PATHS if bn == "transductive" else ("loop", "vmap"):  # batched: transductive only
        assert_all_close(lib_meta_gradient(net, params, data, inner, bn, path), expected, tol=1e-10)
    body = {k: g for k, g in zip(params, expected) if k.startswith("body.")}
    # a conv bias right before batch norm cancels out: its gradient is exactly zero ...
    assert all(g.abs().max() < 1e-12 for k, g in body.items() if k.endswith(".layer.bias"))
    # ... every other body gradient is not (for ANIL it flows through the adapted head)
    assert all(g.abs().max() > 1e-8 for k, g in body.items() if not k.endswith(".layer.bias"))


def test_the_reference_network_is_the_models_conv4(maml_problem):
    net, (xs, _, xq, _) = maml_problem
    params = perturbed_params(net, seed=14)
    torch.testing.assert_close(forward(net, params, xs[0]), reference_conv4(params, xs[0]), atol=1e-12, rtol=1e-12)
    both = torch.cat([xs[0], xq[0]])
    torch.testing.assert_close(forward(net, params, both, stats_rows=6), reference_conv4(params, both, 6),
                               atol=1e-12, rtol=1e-12)


# ------------------------------------------------------------------------ 4. shapes


def test_omniglot_conv4_shapes_and_mean_over_space_features():
    net = models.conv4(n_way=5, channels=1, filters=8, image_size=28, strided=True)
    x = torch.rand(4, 1, 28, 28, generator=gen(15))
    assert net(x).shape == (4, 5)
    h = net(x, features=True)
    assert h.shape == (4, 8)
    last = models.activations(net, models.params_of(net), x, ["body.layer4"])["body.layer4"]
    assert last.shape == (4, 8, 2, 2)  # 28 -> 14 -> 7 -> 4 -> 2
    torch.testing.assert_close(h, last.mean((2, 3)))
    torch.testing.assert_close(net(x), net.head(h))
    torch.testing.assert_close(net.features(x), h)


def test_miniimagenet_conv4_shapes_and_flattened_features():
    net = models.conv4(5, 3, 8, 84, strided=False)
    x = torch.rand(2, 3, 84, 84, generator=gen(16))
    assert net(x).shape == (2, 5)
    h = net(x, features=True)
    assert h.shape == (2, 8 * 5 * 5)
    last = models.activations(net, models.params_of(net), x, ["body.layer4"])["body.layer4"]
    assert last.shape == (2, 8, 5, 5)  # 84 -> 42 -> 21 -> 10 -> 5
    torch.testing.assert_close(h, last.flatten(1))
    assert net.head.in_features == 200


def test_bn_mlp_shapes_names_and_layers():
    net = models.bn_mlp([784, 256, 128, 64, 64, 5])
    x = torch.rand(3, 1, 28, 28, generator=gen(17))
    assert net(x).shape == (3, 5)
    assert net(x, features=True).shape == (3, 64)
    assert net.layers == ["body.layer1", "body.layer2", "body.layer3", "body.layer4", "head"]
    assert "body.flatten" not in net.layers
    assert [tuple(p.shape) for p in net.body.layer1.parameters()] == [(256, 784), (256,), (256,), (256,)]


def test_mlp_maps_each_row_of_a_batch_of_tasks_on_its_own():
    """[T, B, D] inputs (the sinusoid oracle's tasks x points) give [T, B, out], each row
    as if it were passed alone: no flattening across points."""
    net = models.init_model(lambda: models.mlp([3, 40, 40, 1]), 0)
    x = torch.randn(4, 7, 3, generator=gen(5))
    out = net(x)
    assert out.shape == (4, 7, 1)
    torch.testing.assert_close(out[2, 3], net(x[2, 3:4])[0])
    assert net(x, features=True).shape == (4, 7, 40)


@pytest.mark.parametrize("factory", [
    lambda: models.conv4(5, 1, 8, 28, True),
    lambda: models.conv4(5, 3, 8, 84, False),
    lambda: models.bn_mlp([784, 256, 128, 64, 64, 5]),
    lambda: models.mlp([1, 40, 40, 1]),
])
def test_parameter_names_start_with_a_listed_layer(factory):
    net = factory()
    names = [k for k, _ in net.named_parameters()]
    assert all(k.startswith("head.") or k.split(".")[0] == "body" and k.split(".")[1].startswith("layer")
               for k in names)
    # every parameter belongs to exactly one entry of Net.layers, and every entry owns some
    owners = [[layer for layer in net.layers if k.startswith(layer + ".")] for k in names]
    assert all(len(o) == 1 for o in owners)
    assert {o[0] for o in owners} == set(net.layers)
    assert net.layers[-1] == "head"


def test_conv4_parameter_counts():
    net = models.conv4(5, 1, 8, 28, True)
    counts = {layer: sum(p.numel() for k, p in net.named_parameters() if k.startswith(layer + "."))
              for layer in net.layers}
    assert counts == {"body.layer1": 8 * 9 + 8 + 16, "body.layer2": 8 * 8 * 9 + 8 + 16,
                      "body.layer3": 8 * 8 * 9 + 8 + 16, "body.layer4": 8 * 8 * 9 + 8 + 16,
                      "head": 8 * 5 + 5}


@pytest.mark.parametrize("make,match", [
    (lambda: models.conv4(0, 1, 8, 28), "positive sizes"),
    (lambda: models.conv4(5, 0, 8, 28), "positive sizes"),
    (lambda: models.conv4(5, 1, 0, 28), "positive sizes"),
    (lambda: models.conv4(5, 1, 8, 0), "positive sizes"),
    (lambda: models.conv4(5, 3, 8, 8, strided=False), "too small"),
    (lambda: models.bn_mlp([784, 5]), "at least three"),
    (lambda: models.bn_mlp([784, 0, 5]), "positive"),
    (lambda: models.mlp([3, 0, 1]), "positive"),
    (lambda: models.Net(nn.Sequential(), nn.Linear(1, 1), reduce="max"), "reduce"),
])
def test_bad_sizes_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_smallest_pooled_image_still_works():
    net = models.conv4(2, 3, 4, 16, strided=False)  # 16 -> 8 -> 4 -> 2 -> 1
    assert net(torch.rand(2, 3, 16, 16), features=True).shape == (2, 4)


# ---------------------------------------------------- 5. transductive vs inductive


@pytest.fixture
def bn_net():
    net = models.init_model(lambda: models.conv4(3, 1, 4, 12, strided=True), seed=1).double()
    g = gen(18)
    xs = torch.randn(6, 1, 12, 12, generator=g)
    xq = torch.randn(4, 1, 12, 12, generator=g)
    return net, perturbed_params(net, seed=19), xs, xq


@pytest.mark.parametrize("features", [False, True])
def test_inductive_queries_do_not_see_each_other(bn_net, features):
    net, params, xs, xq = bn_net
    other = xq.clone()
    other[2] = 3 * other[2] + 1
    other[3] = -other[3]
    a = core.predict(net, params, xq, xs, bn="inductive", features=features)
    b = core.predict(net, params, other, xs, bn="inductive", features=features)
    torch.testing.assert_close(a[:2], b[:2], atol=0, rtol=0)
    assert (a[2] - b[2]).abs().max() > 1e-6
    # each query: as if it came alone after the support set
    for i in range(len(xq)):
        alone = forward(net, params, torch.cat([xs, xq[i:i + 1]]), stats_rows=len(xs), features=features)
        torch.testing.assert_close(a[i:i + 1], alone[len(xs):], atol=1e-12, rtol=1e-12)


def test_inductive_depends_on_the_support_set(bn_net):
    net, params, xs, xq = bn_net
    a = core.predict(net, params, xq, xs, bn="inductive")
    b = core.predict(net, params, xq, 2 * xs + 1, bn="inductive")
    assert (a - b).abs().max() > 1e-6


def test_transductive_queries_share_their_statistics(bn_net):
    net, params, xs, xq = bn_net
    other = xq.clone()
    other[2] = 3 * other[2] + 1
    a = core.predict(net, params, xq, xs, bn="transductive")
    b = core.predict(net, params, other, xs, bn="transductive")
    assert (a[:2] - b[:2]).abs().max() > 1e-6
    # and the support set plays no part
    torch.testing.assert_close(a, core.predict(net, params, xq, 5 * xs, bn="transductive"), atol=0, rtol=0)
    torch.testing.assert_close(a, core.predict(net, params, xq, bn="transductive"), atol=0, rtol=0)
    torch.testing.assert_close(a, forward(net, params, xq), atol=0, rtol=0)


def test_without_batch_norm_both_modes_agree():
    net = models.init_model(lambda: models.mlp([4, 7, 3]), seed=2).double()
    params = models.params_of(net)
    g = gen(20)
    xs, xq = torch.randn(5, 4, generator=g), torch.randn(6, 4, generator=g)
    for features in (False, True):
        t = core.predict(net, params, xq, xs, bn="transductive", features=features)
        i = core.predict(net, params, xq, xs, bn="inductive", features=features)
        torch.testing.assert_close(t, i, atol=1e-14, rtol=1e-14)
    assert core.predict(net, params, xq, xs, bn="inductive", features=True).shape == (6, 7)


def test_bad_batch_norm_modes_are_refused(bn_net):
    net, params, xs, xq = bn_net
    with pytest.raises(ValueError, match="support set"):
        core.predict(net, params, xq, bn="inductive")
    with pytest.raises(ValueError, match="bn must be one of"):
        core.predict(net, params, xq, xs, bn="batch")
    with pytest.raises(ValueError, match="bn must be one of"):
        core.meta_loss(net, params, xs[None], torch.zeros(1, 6, dtype=torch.long), xq[None],
                       torch.zeros(1, 4, dtype=torch.long), core.InnerLoop(1, 0.1), core.cross_entropy,
                       bn="Inductive")


def test_hand_written_and_fused_batch_norm_give_the_same_second_order_meta_gradient():
    """The per-task loop uses F.batch_norm (fast), vmap the written-out formula: the
    second-order MAML meta-gradients through either must agree."""
    net = models.init_model(lambda: models.conv4(3, 1, 4, 12), seed=0)
    params = {k: (v.detach() + 0.1 * torch.randn(v.shape, generator=gen(k.__len__()))).requires_grad_()
              for k, v in net.named_parameters()}
    xs, xq = torch.randn(2, 3, 1, 12, 12, generator=gen(8)), torch.randn(2, 6, 1, 12, 12, generator=gen(9))
    ys, yq = torch.arange(3).repeat(2, 1), torch.arange(3).repeat(2, 2)
    inner = core.inner_loop("maml", params, 2, 0.4)

    def meta_gradient():
        loss, _ = core.meta_loss(net, params, xs, ys, xq, yq, inner, core.cross_entropy)
        return torch.autograd.grad(loss, list(params.values()))

    fused = meta_gradient()
    with models.hand_written_batch_norm():
        written = meta_gradient()
    scale = max(g.abs().max() for g in written)
    assert max((a - b).abs().max() for a, b in zip(fused, written)) < 1e-12 * scale
    assert not models._HAND_WRITTEN  # the switch is restored
