"""Few-shot classification: NIL known answers, test-time learning curves against independent
adaptation loops, run names, resumable training, and the window-averaged history."""
import copy
import dataclasses
import math
import re
import shutil

import pytest
import torch
import torch.nn.functional as F

import metalearn.paths
from metalearn import core, evaluation, fewshot, models, training
from metalearn.datasets import EpisodeSampler
from metalearn.models import forward
from metalearn.tasks import Batch
from metalearn.params import ParameterError

N_WAY, K_SHOT, N_QUERY, T = 3, 2, 3, 3
SIDE = 12


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------ 6. NIL


def test_the_maml_family_steps_on_the_maml_codes_loss_reptile_on_the_mean():
    logits = torch.randn(12, 4, generator=gen(11))
    labels = torch.arange(4).repeat(3)  # 4-way, 3 per class
    assert core.class_sum_cross_entropy(logits, labels).item() == pytest.approx(maml_code_xent(logits, labels).item())
    assert core.class_sum_cross_entropy(logits, labels).item() == pytest.approx(4 * F.cross_entropy(logits, labels).item())
    assert fewshot.loss_of(fewshot.Spec.parse("anil-conv-5w1s")) is core.class_sum_cross_entropy
    assert fewshot.loss_of(fewshot.Spec.parse("reptile-conv-5w1s")) is core.cross_entropy


def test_nil_logits_known_answer_when_the_query_is_one_support_item():
    K, labels, n_way = 5, torch.tensor([0, 0, 1, 2, 1]), 3
    support = torch.eye(K, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64)[:, None]
    queries = 2.5 * torch.eye(K, dtype=torch.float64)  # query j points exactly along support item j
    got = core.nil_logits(queries, support, labels, n_way)
    assert got.shape == (K, n_way)
    e = math.e
    for j in range(K):
        # weight e^1 on item j, e^0 on the K - 1 others (all orthogonal to the query)
        weights = torch.full((K,), 1 / (e + K - 1), dtype=torch.float64)
        weights[j] = e / (e + K - 1)
        expected = torch.stack([weights[labels == c].sum() for c in range(n_way)])
        torch.testing.assert_close(got[j].exp(), expected, atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(K, dtype=torch.float64), atol=1e-14, rtol=0)
    # the query's own class wins
    assert got.argmax(1).tolist() == labels.tolist()


def test_nil_logits_of_an_orthogonal_query_are_the_label_frequencies():
    support = torch.eye(4, 6, dtype=torch.float64)
    labels = torch.tensor([1, 1, 1, 0])
    query = torch.zeros(1, 6, dtype=torch.float64)
    query[0, 5] = 1.0
    got = core.nil_logits(query, support, labels, n_way=3)
    torch.testing.assert_close(got.exp(), torch.tensor([[0.25, 0.75, 0.0]], dtype=torch.float64),
                               atol=1e-14, rtol=0)
    assert torch.isfinite(got).all()  # a class without support items: log of a tiny number, not -inf


def test_nil_logits_are_log_probabilities_and_invariant_to_feature_scale():
    g = gen(1)
    q, s = torch.randn(7, 10, generator=g, dtype=torch.float64), torch.randn(6, 10, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 0, 2])
    got = core.nil_logits(q, s, labels, 4)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(7, dtype=torch.float64), atol=1e-14, rtol=0)
    assert (got <= 1e-15).all()
    scaled = core.nil_logits(q * (0.1 + torch.rand(7, 1, generator=g, dtype=torch.float64) * 10),
                             s * (0.1 + torch.rand(6, 1, generator=g, dtype=torch.float64) * 10), labels, 4)
    torch.testing.assert_close(scaled, got, atol=1e-13, rtol=1e-13)
    # a plain dot product would not be scale-invariant: flipping a support item's sign does matter
    flipped = s.clone()
    flipped[0] = -flipped[0]
    assert (core.nil_logits(q, flipped, labels, 4) - got).abs().max() > 1e-3
    # reference: softmax over cosine similarities, summed per label
    cos = torch.stack([torch.stack([F.cosine_similarity(a, b, dim=0) for b in s]) for a in q])
    expected = cos.softmax(1) @ F.one_hot(labels, 4).double()
    torch.testing.assert_close(got.exp(), expected, atol=1e-14, rtol=1e-12)


# ------------------------------------------------------------------- 7. few_shot


@pytest.fixture(scope="module")
def problem():
    """A small Conv4 (float64, non-trivial batch-norm affine parameters) and T tasks."""
    net = models.init_model(lambda: models.conv4(N_WAY, 1, 4, SIDE, strided=True), seed=0).double()
    g = gen(2)
    with torch.no_grad():
        for k, p in net.named_parameters():
            if ".norm." in k:
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    xs = torch.rand(T, N_WAY * K_SHOT, 1, SIDE, SIDE, generator=g, dtype=torch.float64)
    xq = torch.rand(T, N_WAY * N_QUERY, 1, SIDE, SIDE, generator=g, dtype=torch.float64)
    xq = xq + 0.3 * xs[:, ::K_SHOT].repeat_interleave(N_QUERY, 1)  # queries resemble their class's support
    ys = torch.arange(N_WAY).repeat_interleave(K_SHOT).expand(T, -1).clone()
    yq = torch.arange(N_WAY).repeat_interleave(N_QUERY).expand(T, -1).clone()
    return net, Batch(xs, ys, xq, yq, torch.zeros(T, N_WAY, 2))


def query_logits(net, params, xs, xq, bn):
    if bn == "transductive":
        return forward(net, params, xq)
    return forward(net, params, torch.cat([xs, xq]), stats_rows=len(xs))[len(xs):]


def maml_code_xent(logits, labels):
    """The MAML code's loss, written as it is there: per-example cross-entropy / K, summed."""
    return F.cross_entropy(logits, labels, reduction="none").div(len(labels) / logits.shape[1]).sum()


def reference_curves(net, batch, steps, lr, bn, adapted_names):
    """Plain SGD with torch.autograd.grad on the support loss (the MAML code's), per task."""
    losses, accuracies = [], []
    for xs, ys, xq, yq in zip(batch.xs, batch.ys, batch.xq, batch.yq):
        current = {k: v.detach().clone() for k, v in net.named_parameters()}
        task_losses, task_acc = [], []
        for step in range(steps + 1):
            with torch.no_grad():
                logits = query_logits(net, current, xs, xq, bn)
            task_losses.append(maml_code_xent(logits, yq))
            task_acc.append((logits.argmax(1) == yq).double().mean())
            if step == steps:
                break
            leaves = {k: v.requires_grad_(k in adapted_names) for k, v in current.items()}
            loss = maml_code_xent(forward(net, leaves, xs), ys)
            names = [k for k in leaves if k in adapted_names]
            grads = torch.autograd.grad(loss, [leaves[k] for k in names])
            update = dict(zip(names, grads))
            current = {k: (v - lr * update[k] if k in update else v).detach() for k, v in leaves.items()}
        losses.append(torch.stack(task_losses))
        accuracies.append(torch.stack(task_acc))
    return torch.stack(losses), torch.stack(accuracies)


def settings_for(bn, test_steps=3, inner_lr=0.5):
    return fewshot.Settings(iterations=1, meta_batch=1, inner_steps=1, inner_lr=inner_lr, test_steps=test_steps,
                            bn=bn)


def assert_curves(got, expected_loss, expected_acc):
    torch.testing.assert_close(got["loss"].double(), expected_loss, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(got["accuracy"].double(), expected_acc, atol=1e-6, rtol=0)


@pytest.mark.parametrize("algorithm,bn", [("maml", "transductive"), ("maml", "inductive"),
                                          ("fomaml", "inductive"), ("anil", "transductive"),
                                          ("random", "inductive")])
def test_few_shot_curves_equal_an_independent_sgd_loop(problem, algorithm, bn):
    net, batch = problem
    spec = fewshot.Spec(algorithm, "conv", N_WAY, K_SHOT)
    params = models.params_of(net, requires_grad=False)
    got = fewshot.evaluate(spec, net, params, batch, settings_for(bn))
    assert got["loss"].shape == got["accuracy"].shape == (T, 4)
    names = [k for k in params if algorithm in ("maml", "fomaml") or k.startswith("head.")]
    loss, acc = reference_curves(net, batch, 3, 0.5, bn, names)
    assert_curves(got, loss, acc)
    # step 0 is the unadapted model
    with torch.no_grad():
        for t in range(T):
            logits = query_logits(net, params, batch.xs[t], batch.xq[t], bn)
            assert got["loss"][t, 0].item() == pytest.approx(maml_code_xent(logits, batch.yq[t]).item(), rel=1e-12)
            assert got["accuracy"][t, 0].item() == pytest.approx((logits.argmax(1) == batch.yq[t]).double().mean().item())
    # adaptation moves the curve (so a wrong step index would be caught)
    assert (got["loss"][:, 1:] - got["loss"][:, :-1]).abs().min() > 1e-6


def test_head_only_adaptation_differs_from_adapting_everything(problem):
    net, batch = problem
    params = models.params_of(net, requires_grad=False)
    maml = fewshot.evaluate(fewshot.Spec("maml", "conv", N_WAY, K_SHOT), net, params, batch, settings_for("inductive"))
    anil = fewshot.evaluate(fewshot.Spec("anil", "conv", N_WAY, K_SHOT), net, params, batch, settings_for("inductive"))
    torch.testing.assert_close(maml["loss"][:, 0], anil["loss"][:, 0], atol=0, rtol=0)
    assert (maml["loss"][:, -1] - anil["loss"][:, -1]).abs().max() > 1e-6


def test_frozen_layers_are_not_adapted(problem):
    net, batch = problem
    params = models.params_of(net, requires_grad=False)
    spec = fewshot.Spec("maml", "conv", N_WAY, K_SHOT)
    got = fewshot.evaluate(spec, net, params, batch, settings_for("transductive"), frozen=("body.layer1",))
    names = [k for k in params if not k.startswith("body.layer1.")]
    assert_curves(got, *reference_curves(net, batch, 3, 0.5, "transductive", names))
    everything = fewshot.evaluate(spec, net, params, batch, settings_for("transductive"))
    assert (got["loss"][:, -1] - everything["loss"][:, -1]).abs().max() > 1e-8
    # two frozen layers: both stay put
    two = fewshot.evaluate(spec, net, params, batch, settings_for("transductive"),
                           frozen=("body.layer1", "body.layer2"))
    names = [k for k in params if not k.startswith(("body.layer1.", "body.layer2."))]
    assert_curves(two, *reference_curves(net, batch, 3, 0.5, "transductive", names))


def test_few_shot_with_an_explicit_mask_and_step_list(problem):
    """evaluation.few_shot directly, with a per-step learning-rate schedule and a mask."""
    net, batch = problem
    params = models.params_of(net, requires_grad=False)
    inner = core.InnerLoop(steps=2, lr=0.7, adapt=core.layer_mask(params, ["body.layer4", "head"]))
    got = evaluation.few_shot(net, params, *batch[:4], inner, bn="inductive", loss_fn=core.class_sum_cross_entropy)
    names = [k for k in params if k.startswith(("body.layer4.", "head."))]
    assert_curves(got, *reference_curves(net, batch, 2, 0.7, "inductive", names))
    with pytest.raises(ValueError, match="head must be one of"):
        evaluation.few_shot(net, params, *batch[:4], inner, head="proto")


@pytest.mark.parametrize("bn", ["transductive", "inductive"])
def test_nil_head_equals_nil_logits_of_hand_computed_features(problem, bn):
    net, batch = problem
    params = models.params_of(net, requires_grad=False)
    got = fewshot.evaluate(fewshot.Spec("maml", "conv", N_WAY, K_SHOT), net, params, batch, settings_for(bn),
                           head="nil")
    assert got["loss"].shape == got["accuracy"].shape == (T, 1)
    with torch.no_grad():
        for t in range(T):
            xs, ys, xq, yq = batch.xs[t], batch.ys[t], batch.xq[t], batch.yq[t]
            support = net(xs, features=True)
            if bn == "transductive":
                query = net(xq, features=True)
            else:
                query = net(torch.cat([xs, xq]), stats_rows=len(xs), features=True)[len(xs):]
            logp = core.nil_logits(query, support, ys, N_WAY)
            nll = -logp[torch.arange(len(yq)), yq].mean() * N_WAY  # in the units of the run's loss
            assert got["loss"][t, 0].item() == pytest.approx(nll.item(), rel=1e-10)
            assert got["accuracy"][t, 0].item() == pytest.approx((logp.argmax(1) == yq).double().mean().item())


def test_nil_modes_differ_on_a_batch_norm_model(problem):
    net, batch = problem
    params = models.params_of(net, requires_grad=False)
    spec = fewshot.Spec("maml", "conv", N_WAY, K_SHOT)
    a = fewshot.evaluate(spec, net, params, batch, settings_for("transductive"), head="nil")
    b = fewshot.evaluate(spec, net, params, batch, settings_for("inductive"), head="nil")
    assert (a["loss"] - b["loss"]).abs().max() > 1e-6


# -------------------------------------------------------------- 8. few_shot_optimized


def reference_adam_curves(net, batch, steps, lr, bn):
    losses = []
    for xs, ys, xq, yq in zip(batch.xs, batch.ys, batch.xq, batch.yq):
        model = copy.deepcopy(net)
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-8)
        curve = []
        for step in range(steps + 1):
            with torch.no_grad():
                curve.append(F.cross_entropy(query_logits(model, dict(model.named_parameters()), xs, xq, bn), yq))
            if step < steps:
                opt.zero_grad()
                F.cross_entropy(model(xs), ys).backward()
                opt.step()
        losses.append(torch.stack(curve))
    return torch.stack(losses)


@pytest.mark.parametrize("bn", ["transductive", "inductive"])
def test_few_shot_optimized_equals_torch_adam_on_a_copy(problem, bn):
    net, batch = problem
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    params = models.params_of(net, requires_grad=False)
    spec = fewshot.Spec("reptile", "conv", N_WAY, K_SHOT)
    got = fewshot.evaluate(spec, net, params, batch, settings_for(bn, test_steps=4, inner_lr=0.05))
    assert got["loss"].shape == (T, 5)
    expected = reference_adam_curves(net, batch, 4, 0.05, bn)
    torch.testing.assert_close(got["loss"], expected, atol=1e-10, rtol=1e-10)
    # each step is measured when it is reached, not after the last one (in-place updates)
    assert (got["loss"][:, 1:-1] - got["loss"][:, -1:]).abs().min() > 1e-6
    # the model and the given parameters are left alone
    assert all(torch.equal(v, before[k]) for k, v in net.named_parameters())
    assert all(torch.equal(v, before[k]) for k, v in params.items())


def test_few_shot_optimized_with_sgd_is_few_shot(problem):
    net, batch = problem
    params = models.params_of(net, requires_grad=False)
    sgd = evaluation.few_shot_optimized(net, params, *batch[:4], core.InnerOptimizer("sgd", lr=0.3), 3,
                                        bn="inductive")
    plain = evaluation.few_shot(net, params, *batch[:4], core.InnerLoop(3, 0.3), bn="inductive")
    torch.testing.assert_close(sgd["loss"], plain["loss"], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(sgd["accuracy"], plain["accuracy"])


def test_reptilesgd_adapts_with_plain_sgd_of_its_step_and_reptile_with_adam(problem):
    """The two Reptile algorithms differ in their inner optimiser only: reptilesgd's test-time
    adaptation is the plain SGD loop of ``inner_lr`` on every parameter, on the mean cross-entropy."""
    net, batch = problem
    params = models.params_of(net, requires_grad=False)
    settings = settings_for("inductive", test_steps=3, inner_lr=0.3)
    sgd = fewshot.evaluate(fewshot.Spec.parse(f"reptilesgd-conv-{N_WAY}w{K_SHOT}s"), net, params, batch, settings)
    plain = evaluation.few_shot(net, params, *batch[:4], core.InnerLoop(3, 0.3), bn="inductive")
    torch.testing.assert_close(sgd["loss"], plain["loss"], atol=1e-10, rtol=1e-10)
    adam = fewshot.evaluate(fewshot.Spec.parse(f"reptile-conv-{N_WAY}w{K_SHOT}s"), net, params, batch, settings)
    assert (adam["loss"][:, 1:] - sgd["loss"][:, 1:]).abs().min() > 1e-6


def test_a_reptile_runs_settings_take_the_step_size_of_its_inner_optimiser():
    p = dataclasses.make_dataclass("P", [])()
    for key, value in dict(reptile_iterations=7, reptile_meta_batch=3, reptile_inner_steps=2, reptile_inner_lr=0.001,
                           reptile_sgd_inner_lr=0.003, reptile_test_steps=9, reptile_inner_batch=4,
                           reptile_train_shots=6, reptile_meta_step=0.5).items():
        setattr(p, key, value)
    adam = fewshot.reptile_settings(fewshot.Spec.parse("reptile-conv-5w1s"), p, meta_lr=0.01)
    sgd = fewshot.reptile_settings(fewshot.Spec.parse("multiclass+reptilesgd-conv-5w1s"), p, meta_lr=0.01)
    assert (adam.inner_lr, sgd.inner_lr) == (0.001, 0.003)
    assert dataclasses.replace(sgd, inner_lr=0.001) == adam == fewshot.Settings(
        7, 3, 2, 0.001, 9, inner_batch=4, train_shots=6, meta_step=0.5, meta_lr=0.01)
    assert fewshot.Spec.parse("reptilesgd-conv-5w1s").reptile and not fewshot.Spec.parse("maml-conv-5w1s").reptile


def test_reptile_evaluation_refuses_frozen_layers(problem):
    net, batch = problem
    params = models.params_of(net, requires_grad=False)
    with pytest.raises(ValueError, match="freezing layers"):
        fewshot.evaluate(fewshot.Spec("reptile", "conv", N_WAY, K_SHOT), net, params, batch,
                         settings_for("transductive"), frozen=("body.layer1",))


def test_freezing_an_unknown_layer_is_refused_not_ignored(problem):
    net, batch = problem
    params = models.params_of(net, requires_grad=False)
    with pytest.raises(ValueError, match=r"cannot freeze \['layer1'\]"):
        fewshot.evaluate(fewshot.Spec("maml", "conv", N_WAY, K_SHOT), net, params, batch,
                         settings_for("transductive"), frozen=("layer1",))


# ------------------------------------------------------------------------ 9. Spec


@pytest.mark.parametrize("name", ["maml-conv-5w1s", "anil-conv-20w1s", "fomaml-mlp-5w5s", "random-conv-2w1s",
                                  "reptile-conv-20w5s", "reptilesgd-conv-5w1s", "maml-mlp-100w10s"])
def test_good_run_names_round_trip(name):
    spec = fewshot.Spec.parse(name)
    assert spec.name == name
    assert fewshot.Spec.parse(spec.name) == spec
    algorithm, model, setting = name.split("-")
    assert (spec.algorithm, spec.model, spec.setting) == (algorithm, model, setting)
    n, k = setting[:-1].split("w")
    assert (spec.n_way, spec.k_shot) == (int(n), int(k))


@pytest.mark.parametrize("name,match", [
    ("maml-conv-5w", r"is not '\[<init>\+\]<algorithm>-<model>-<N>w<K>s'"),
    ("maml-conv-5w1s-extra", "is not"),
    ("MAML-conv-5w1s", "is not"),
    ("maml_conv_5w1s", "is not"),
    ("", "is not"),
    ("foo-conv-5w1s", "unknown algorithm 'foo'"),
    ("maml-resnet-5w1s", "unknown model 'resnet'"),
    ("maml-conv-1w1s", "at least 2 ways and 1 shot"),
    ("maml-conv-5w0s", "at least 2 ways and 1 shot"),
])
def test_bad_run_names_are_refused_with_a_helpful_message(name, match):
    with pytest.raises(ValueError, match=match) as info:
        fewshot.Spec.parse(name)
    assert repr(name) in str(info.value)


def test_build_model_per_dataset_and_refusals():
    spec = fewshot.Spec.parse("maml-conv-5w1s")
    omniglot = fewshot.build_model(spec, "omniglot", 8)
    assert omniglot(torch.rand(2, 1, 28, 28)).shape == (2, 5)
    assert omniglot(torch.rand(2, 1, 28, 28), features=True).shape == (2, 8)
    mini = fewshot.build_model(fewshot.Spec.parse("anil-conv-20w1s"), "miniimagenet", 4)
    assert mini(torch.rand(2, 3, 84, 84)).shape == (2, 20)
    assert mini(torch.rand(2, 3, 84, 84), features=True).shape == (2, 4 * 25)
    mlp = fewshot.build_model(fewshot.Spec.parse("maml-mlp-5w1s"), "omniglot", 8)
    assert mlp(torch.rand(2, 1, 28, 28), features=True).shape == (2, 64)
    assert sum(p.numel() for p in mlp.parameters()) == sum(
        a * b + b + 2 * b * (i < 4) for i, (a, b) in enumerate(zip([784, 256, 128, 64, 64], [256, 128, 64, 64, 5])))
    with pytest.raises(ValueError, match="Omniglot only"):
        fewshot.build_model(fewshot.Spec.parse("maml-mlp-5w1s"), "miniimagenet", 8)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        fewshot.build_model(spec, "cifar", 8)


# ----------------------------------------------------------- 10. resumable training

# 14 x 14 rather than 28 x 28: the strided Conv4 takes any size (mean over space), and on CPU
# float32 second-order MAML is far slower at 28 x 28
IMAGES = torch.randint(0, 256, (12, 6, 14, 14), generator=gen(3), dtype=torch.uint8)


class Killed(Exception):
    pass


SETTINGS = {
    # logs every 3 iterations, checkpoints every 2: a restart resumes with a half-full window
    "maml": fewshot.Settings(iterations=6, meta_batch=2, inner_steps=1, inner_lr=0.4, test_steps=1, meta_lr=0.01,
                             val_every=3, checkpoint_every=2),
    "reptile": fewshot.Settings(iterations=6, meta_batch=2, inner_steps=2, inner_lr=0.01, test_steps=1,
                                train_shots=1, inner_batch=2, meta_step=1.0, val_every=3, checkpoint_every=2),
    "random": fewshot.Settings(iterations=4, meta_batch=2, inner_steps=1, inner_lr=0.4, test_steps=1, meta_lr=0.05,
                               val_every=2, checkpoint_every=2),
}


def train_run(monkeypatch, work, algorithm, kill_after=None, settings=None, **options):
    """A tiny fewshot.train run on random images; the sampler raises on call ``kill_after + 1``."""
    monkeypatch.setattr(metalearn.paths, "WORK", work)
    spec = fewshot.Spec(algorithm, "conv", 3, 1)
    model = models.init_model(lambda: fewshot.build_model(spec, "omniglot", 4), seed=0)
    sampler = EpisodeSampler(IMAGES, torch.arange(12), n_way=3, k_shot=1, n_query=1, seed=0)
    val = sampler.fixed_episodes(2, seed=7)
    calls = {"n": 0}
    draw = sampler.batch

    def batch(*args, **kwargs):
        if kill_after is not None and calls["n"] == kill_after:
            raise Killed
        calls["n"] += 1
        return draw(*args, **kwargs)

    sampler.batch = batch
    history = fewshot.train(spec, model, sampler, val, settings or SETTINGS[algorithm], seed=0, stage="test",
                            config={"dataset": "synthetic"}, **options)
    return model, history, calls["n"]


def test_snapshots_are_the_weights_of_shorter_runs_and_survive_a_kill(monkeypatch, tmp_path):
    """A-early's checkpoints through training: the weights after iteration i of a run are those at
    the end of the same run trained for i iterations, and a killed run still writes them."""
    out = tmp_path / "out"
    monkeypatch.setenv(metalearn.paths.STAGING_ENV, str(out))
    model, _, _ = train_run(monkeypatch, tmp_path / "a", "maml", snapshots=(3, 6), suffix="-seed0")
    files = sorted(p.name for p in (out / "data/models/test").iterdir())
    assert files == ["maml-conv-3w1s-seed0@3.pt", "maml-conv-3w1s-seed0@6.pt"]
    load = lambda i: torch.load(out / f"data/models/test/maml-conv-3w1s-seed0@{i}.pt")
    assert all(torch.equal(load(6)[k], v) for k, v in model.state_dict().items())
    short, _, _ = train_run(monkeypatch, tmp_path / "c", "maml", settings=dataclasses.replace(SETTINGS["maml"], iterations=3))
    assert all(torch.equal(load(3)[k], v) for k, v in short.state_dict().items())
    assert not all(torch.equal(load(3)[k], load(6)[k]) for k in model.state_dict())
    reference = {i: load(i) for i in (3, 6)}

    shutil.rmtree(out)
    with pytest.raises(Killed):  # checkpoint at 4 holds the snapshot of 3; killed in iteration 6
        train_run(monkeypatch, tmp_path / "b", "maml", kill_after=5, snapshots=(3, 6), suffix="-seed0")
    assert not (out / "data/models/test").exists()
    train_run(monkeypatch, tmp_path / "b", "maml", snapshots=(6, 3), suffix="-seed0")
    assert all(torch.equal(load(i)[k], v) for i in (3, 6) for k, v in reference[i].items())
    with pytest.raises(ValueError, match="snapshots \\[7\\] must lie in 1..6"):
        train_run(monkeypatch, tmp_path / "d", "maml", snapshots=(7,))


def test_reptile_refuses_a_sampler_with_other_shots_than_its_settings(monkeypatch, tmp_path):
    monkeypatch.setattr(metalearn.paths, "WORK", tmp_path)
    spec = fewshot.Spec("reptile", "conv", 3, 1)
    model = fewshot.build_model(spec, "omniglot", 4)
    sampler = EpisodeSampler(IMAGES, torch.arange(12), n_way=3, k_shot=2, n_query=1, seed=0)
    with pytest.raises(ValueError, match="trains on 1 shots per class, but the sampler draws 2"):
        fewshot.train(spec, model, sampler, sampler.fixed_episodes(1, seed=0), SETTINGS["reptile"], seed=0,
                      stage="test", config={})


@pytest.mark.parametrize("algorithm", ["maml", "reptile"])
def test_training_killed_and_restarted_ends_identically(monkeypatch, tmp_path, algorithm):
    reference, ref_history, ref_calls = train_run(monkeypatch, tmp_path / "a", algorithm)
    assert ref_calls == 6
    assert [h["iteration"] for h in ref_history] == [3, 6]
    assert all({"loss", "val_loss", "val_accuracy"} <= set(h) for h in ref_history)
    assert all(math.isfinite(h["loss"]) and 0 <= h["val_accuracy"] <= 1 for h in ref_history)
    with pytest.raises(Killed):
        train_run(monkeypatch, tmp_path / "b", algorithm, kill_after=3)  # checkpoint at 2, killed in 4
    assert len(list((tmp_path / "b").glob("*.pt"))) == 1
    resumed, history, calls = train_run(monkeypatch, tmp_path / "b", algorithm)
    assert calls == 4  # only the iterations after the checkpoint were redone
    assert history == ref_history
    ref_state, state = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)
    # and training did something
    initial = models.init_model(lambda: fewshot.build_model(fewshot.Spec(algorithm, "conv", 3, 1), "omniglot", 4), 0)
    assert any(not torch.equal(p, initial.state_dict()[k]) for k, p in ref_state.items())


def test_a_finished_run_is_not_trained_again(monkeypatch, tmp_path):
    _, first, _ = train_run(monkeypatch, tmp_path, "maml")
    _, again, calls = train_run(monkeypatch, tmp_path, "maml")
    assert calls == 0
    assert again == first


def test_random_features_train_the_head_only(monkeypatch, tmp_path):
    model, history, calls = train_run(monkeypatch, tmp_path, "random")
    assert calls == 4 and [h["iteration"] for h in history] == [2, 4]
    initial = models.init_model(lambda: fewshot.build_model(fewshot.Spec("random", "conv", 3, 1), "omniglot", 4), 0)
    start = dict(initial.named_parameters())
    for k, p in model.named_parameters():
        if k.startswith("body."):
            assert torch.equal(p, start[k]), k
        else:
            assert (p - start[k]).abs().max() > 1e-4, k


# ------------------------------------------------------------- 11. Run history


def test_run_history_is_the_mean_over_each_log_window(tmp_path):
    model = models.mlp([1, 2, 1])
    run = training.Run("h", {}, model, seed=0, checkpoint_every=100, work_dir=tmp_path)

    def step(r):
        n = r.iteration + 1  # 1, 2, 3, ...
        metrics = {"loss": float(n)}
        if n % 2 == 0:
            metrics["val"] = 10.0 * n  # reported now and then: averaged over the times it came
        return metrics

    history = run.train(8, step, log_every=3)
    assert history == [
        {"iteration": 3, "loss": 2.0, "val": 20.0},
        {"iteration": 6, "loss": 5.0, "val": 50.0},  # (40 + 60) / 2
        {"iteration": 8, "loss": 7.5, "val": 80.0},  # the last, partial window
    ]
    assert run.iteration == 8


def test_run_history_window_survives_a_restart(tmp_path):
    def build():
        return training.Run("w", {}, models.mlp([1, 2, 1]), seed=0, checkpoint_every=2, work_dir=tmp_path)

    def step(r):
        if r.iteration == 3 and not done.get("killed"):
            done["killed"] = True
            raise Killed
        return {"loss": float(r.iteration + 1)}

    done = {}
    with pytest.raises(Killed):
        build().train(6, step, log_every=3)
    run = build()
    assert run.resumed_from == 2 and run.window == {"loss": [1.0, 2.0]}
    assert run.train(6, step, log_every=3) == [{"iteration": 3, "loss": 2.0}, {"iteration": 6, "loss": 5.0}]


def test_run_refuses_a_diverged_metric(tmp_path):
    run = training.Run("d", {}, models.mlp([1, 2, 1]), seed=0, work_dir=tmp_path)
    with pytest.raises(FloatingPointError, match="diverged at iteration 2"):
        run.train(5, lambda r: {"loss": 1.0 if r.iteration == 0 else float("nan")})


def test_more_iterations_continue_a_finished_maml_run_to_the_weights_of_the_longer_run(monkeypatch, tmp_path):
    """Extendable runs: a MAML run of 6 iterations given 12 resumes its checkpoint and ends with the weights
    (and history) of the 12-iteration run trained at once; kept iterations come along. Reptile, whose outer
    step anneals over its total, starts again."""
    twelve = dataclasses.replace(SETTINGS["maml"], iterations=12)
    at_once, at_once_history, _ = train_run(monkeypatch, tmp_path / "a", "maml", settings=twelve, snapshots=(3, 12))
    train_run(monkeypatch, tmp_path / "b", "maml", snapshots=(3,))
    extended, history, calls = train_run(monkeypatch, tmp_path / "b", "maml", settings=twelve, snapshots=(3, 12))
    assert calls == 6  # only the iterations the shorter run had not done
    assert all(torch.equal(v, extended.state_dict()[k]) for k, v in at_once.state_dict().items())
    assert history == at_once_history
    with pytest.raises(ValueError, match=r"at iteration 12, which did not keep the weights after iterations \[2\]"):
        train_run(monkeypatch, tmp_path / "b", "maml", settings=dataclasses.replace(twelve, iterations=15),
                  snapshots=(2,))
    train_run(monkeypatch, tmp_path / "c", "reptile")
    _, _, calls = train_run(monkeypatch, tmp_path / "c", "reptile",
                            settings=dataclasses.replace(SETTINGS["reptile"], iterations=8))
    assert calls == 8 and len(list((tmp_path / "c").glob("*.pt"))) == 1  # from the start; the old checkpoint gone


def test_progress_reads_where_each_run_stands_from_its_checkpoint(monkeypatch, tmp_path):
    """What reports/campaign.md is made of: a run's iteration, time and history, from its checkpoint."""
    train_run(monkeypatch, tmp_path / "w", "maml")  # stage "test", 6 iterations, logged every 3
    [found] = fewshot.progress("test", tmp_path / "w")
    assert found["run"] == "maml-conv-3w1s" and found["iteration"] == 6 and found["seconds"] > 0
    assert [h["iteration"] for h in found["history"]] == [3, 6]
    assert fewshot.progress("other", tmp_path / "w") == []
    assert fewshot.target_iterations({"iterations": 7}, fewshot.Spec.parse("maml-conv-5w1s")) == 7
    omniglot = {"iterations_5way": 5, "iterations_20way": 20}
    assert fewshot.target_iterations(omniglot, fewshot.Spec.parse("anil-conv-20w1s")) == 20
    assert fewshot.target_iterations(omniglot, fewshot.Spec.parse("anil-conv-5w1s")) == 5
    from metalearn import papers
    assert papers.final_accuracies("omniglot maml conv 20w1s") == {"M-omni": 95.8, "A-anil": 93.7}
    assert papers.final_accuracies("omniglot anil conv 5w1s") == {}
    monkeypatch.setattr(metalearn.paths, "WORK", tmp_path / "data" / "work")
    assert metalearn.paths.checkpoints() == tmp_path / "data/work"
    assert metalearn.paths.checkpoints(kept=True) == tmp_path / "data/checkpoints"


def test_a_run_on_the_batched_path_is_another_run_with_the_loops_weights_to_rounding(monkeypatch, tmp_path):
    """path="batched" trains what the loop trains (float32, 6 iterations: equal to rounding), under its
    own identity (its checkpoint is not the loop's); models it does not compute, and Reptile, take the
    loop; several ranks with it are refused naming `path`."""
    loop, loop_history, _ = train_run(monkeypatch, tmp_path / "a", "maml")
    together, history, calls = train_run(monkeypatch, tmp_path / "a", "maml", path="batched")
    assert calls == 6  # trained from the start: the loop's finished checkpoint is another run's
    for k, v in loop.state_dict().items():
        if not k.endswith("layer.bias"):  # a conv bias before batch norm has a meta-gradient of 0 but for
            # rounding, which Adam turns into steps of its size: they differ, and change no output
            torch.testing.assert_close(together.state_dict()[k], v, atol=1e-3, rtol=1e-3)
    x = IMAGES[:6, 0, None].float() / 255
    torch.testing.assert_close(together(x), loop(x), atol=1e-3, rtol=1e-3)  # 6 float32 Adam steps of 0.01:
    # rounding grows to ~1e-4 with the thread count; a wrong task pairing moves weights by ~1e-2
    assert [h["iteration"] for h in history] == [h["iteration"] for h in loop_history]
    spec, settings = fewshot.Spec.parse("maml-conv-3w1s"), SETTINGS["maml"]
    conv = fewshot.build_model(spec, "omniglot", 4)
    assert fewshot.meta_path(spec, conv, settings, "batched") == "batched"
    assert fewshot.meta_path(spec, fewshot.build_model(fewshot.Spec.parse("maml-mlp-3w1s"), "omniglot", 4), settings,
                             "batched") == "loop"
    assert fewshot.meta_path(spec, conv, dataclasses.replace(settings, bn="inductive"), "batched") == "loop"
    assert fewshot.meta_path(fewshot.Spec.parse("reptile-conv-3w1s"), conv, settings, "vmap") == "loop"
    _, key = fewshot.run_identity(spec, settings, 0, "s", {}, path="batched")
    assert key["meta_path"] == "batched" and "meta_path" not in fewshot.run_identity(spec, settings, 0, "s", {})[1]
    with pytest.raises(ParameterError, match="path"):
        fewshot.meta_path(spec, conv, settings, "fast")
    with pytest.raises(ParameterError, match="'graph' captures the meta-iteration as a CUDA graph: it needs device cuda"):
        fewshot.meta_path(spec, conv, settings, "graph")  # on the CPU, as every model here
    with pytest.raises(ParameterError, match="use workers 1"):
        fewshot.train_runs([spec], "omniglot", 4, None, lambda s: settings, 2, 1, 0, "s", {}, workers=2,
                           path="batched")


def _images(per_class: dict) -> fewshot.Images:
    """Images with ``per_class[split]`` images per class (a MiniImageNet-like dict, or one shared tensor)."""
    if isinstance(per_class, int):  # Omniglot-like: 30 characters, split by class indices (20 / 5 / 25 classes)
        classes = {"train": torch.arange(20), "val": torch.arange(20, 25), "test": torch.arange(5, 30)}
        return fewshot.Images(torch.zeros(30, per_class, 1, 2, 2), classes, "d", "f")
    return fewshot.Images({s: torch.zeros(5, n, 3, 2, 2) for s, n in per_class.items()}, None, "d", "f")


def test_a_stage_is_stopped_when_its_episodes_need_more_images_than_a_class_has():
    mini = _images({"train": 600, "val": 100, "test": 100})
    runs = [fewshot.Spec.parse("maml-conv-5w5s"), fewshot.Spec.parse("reptile-conv-5w1s")]
    fewshot.require_enough_images(mini, runs, train_queries=15, test_queries=95, reptile_train_shots=599)
    with pytest.raises(ParameterError, match="maml-conv-5w5s: shots plus queries exceed"):
        fewshot.require_enough_images(mini, runs, 15, test_queries=96)   # 5 + 96 > 100 test images
    with pytest.raises(ParameterError, match="reptile-conv-5w1s"):
        fewshot.require_enough_images(mini, runs, 15, 15, reptile_train_shots=600)  # Reptile draws shots + 1
    omniglot = _images(20)  # 20 drawings of every character; train_queries None: K queries (MAML's code)
    fewshot.require_enough_images(omniglot, [fewshot.Spec.parse("maml-conv-5w5s")], None, 15)
    with pytest.raises(ParameterError, match="maml-conv-5w5s: shots plus queries exceed"):
        fewshot.require_enough_images(omniglot, [fewshot.Spec.parse("maml-conv-5w5s")], None, 16)


def test_a_stage_is_stopped_when_its_episodes_need_more_classes_than_a_split_has():
    omniglot, mini = _images(20), _images({"train": 600, "val": 100, "test": 100})  # fewest classes: 5 in a split
    for images in (omniglot, mini):
        fewshot.require_enough_images(images, [fewshot.Spec.parse("anil-conv-5w1s")], 1, 1)
        with pytest.raises(ParameterError, match=r"has maml-conv-6w1s: 6 ways, but a split has fewer classes"):
            fewshot.require_enough_images(images, [fewshot.Spec.parse("maml-conv-6w1s")], 1, 1)


def test_a_seeds_stage_needs_two_seeds_and_maml_family_runs_from_scratch():
    fewshot.require_seed_runs([0, 1], [fewshot.Spec.parse("anil-conv-5w1s")])
    with pytest.raises(ParameterError, match="'seeds' needs at least two seeds"):
        fewshot.require_seed_runs([0], [fewshot.Spec.parse("anil-conv-5w1s")])
    for name in ("reptile-conv-5w1s", "maml-mlp-5w1s", "multiclass+head-conv-5w1s"):
        with pytest.raises(ParameterError, match=f"has {re.escape(name)}: this stage trains MAML-family conv runs"):
            fewshot.require_seed_runs([0, 1], [fewshot.Spec.parse(name)])


def test_load_images_names_a_dataset_or_copy_it_does_not_know():
    with pytest.raises(ValueError, match="'cifar' is none of"):
        fewshot.load_images("cifar", "cpu")
    with pytest.raises(ParameterError, match="'prepared' is 'tiered'"):
        fewshot.load_images("miniimagenet", "cpu", prepared="tiered")
