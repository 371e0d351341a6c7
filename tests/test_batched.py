"""The batched path of the meta-loss (metalearn.batched): float64 meta-gradients equal to the per-task
loop for Conv4 with batch norm (MAML, first-order, ANIL, frozen layers; both Conv4 layouts), and a
number of operator calls that does not grow with the meta-batch (counted with torch.profiler)."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from metalearn import batched, core, models

#: operators that only make a view or ask for metadata: no kernel runs for them on any device
VIEWS = {"aten::view", "aten::reshape", "aten::_reshape_alias", "aten::_unsafe_view", "aten::expand", "aten::permute",
         "aten::transpose", "aten::t", "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice",
         "aten::as_strided", "aten::detach", "aten::alias", "aten::flatten", "aten::unflatten", "aten::view_as",
         "aten::expand_as", "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "aten::result_type",
         "aten::empty", "aten::empty_like", "aten::empty_strided"}


def problem(strided: bool, n_tasks: int, seed: int = 0, dtype=torch.float64):
    """A Conv4 (Omniglot's strided layout or MiniImageNet's pooled one, few filters) with
    perturbed batch-norm weights, and T 3-way tasks of random images."""
    size, channels = (12, 1) if strided else (16, 3)
    net = models.init_model(lambda: models.conv4(3, channels, 4, size, strided=strided), seed).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    params = {k: (v.detach() + 0.1 * torch.randn(v.shape, generator=g, dtype=dtype)).requires_grad_()
              for k, v in net.named_parameters()}
    xs = torch.randn(n_tasks, 6, channels, size, size, generator=g, dtype=dtype)
    xq = torch.randn(n_tasks, 9, channels, size, size, generator=g, dtype=dtype)
    ys = torch.arange(3).repeat_interleave(2).expand(n_tasks, -1)
    yq = torch.randint(0, 3, (n_tasks, 9), generator=g)
    return net, params, (xs, ys, xq, yq)


def meta_gradient(net, params, data, inner, path):
    loss, logits = core.meta_loss(net, params, *data, inner, core.class_sum_cross_entropy, path=path)
    return loss, logits, torch.autograd.grad(loss, list(params.values()), allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("strided", [True, False], ids=["omniglot-layout", "miniimagenet-layout"])
@pytest.mark.parametrize("algorithm,layers", [("maml", None), ("fomaml", None), ("anil", None),
                                              ("maml", ["body.layer3", "body.layer4", "head"])],
                         ids=["maml", "fomaml", "anil", "maml-layers-1-2-frozen"])
def test_batched_meta_gradients_equal_the_per_task_loop(strided, algorithm, layers):
    net, params, data = problem(strided, n_tasks=3)
    inner = core.inner_loop(algorithm, params, 2, (0.3, 0.2), layers)
    loss, logits, grads = meta_gradient(net, params, data, inner, "loop")
    b_loss, b_logits, b_grads = meta_gradient(net, params, data, inner, "batched")
    torch.testing.assert_close(b_loss, loss, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(b_logits, logits, atol=1e-12, rtol=1e-12)
    scale = max(g.abs().max() for g in grads)
    for name, a, b in zip(params, grads, b_grads):
        # conv biases before batch norm have a meta-gradient of 0 up to rounding: compare on the overall scale
        assert (a - b).abs().max() <= 1e-12 * scale, name
    assert scale > 1e-3  # a meta-gradient of substance, so the comparison says something


def test_a_task_adapts_on_its_own_support_set_only():
    """Changing task 1's support images changes task 1's adapted query logits and leaves task 0's
    bit for bit: the tasks' losses share no weights."""
    net, params, (xs, ys, xq, yq) = problem(True, n_tasks=2)
    inner = core.inner_loop("maml", params, 1, 0.3)
    _, before = batched.meta_loss(net, params, xs, ys, xq, yq, inner, core.class_sum_cross_entropy)
    changed = xs.clone()
    changed[1] += 1.0
    _, after = batched.meta_loss(net, params, changed, ys, xq, yq, inner, core.class_sum_cross_entropy)
    assert torch.equal(after[0], before[0]) and not torch.allclose(after[1], before[1])


def kernel_calls(fn) -> int:
    """Operator calls that run a kernel: aten operators called from Python or the autograd engine
    (not from inside another operator), views and metadata excluded."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and e.name not in VIEWS
               and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_batched_operator_calls_do_not_grow_with_the_meta_batch(algorithm):
    """A meta-iteration (meta-loss and its backward) makes as many kernel calls for 6 tasks as for
    2; the per-task loop makes about T times one task's (measured: 0.99 T at T = 8 against the
    batched path, which has a per-iteration sum over tasks for each parameter)."""
    counts = {}
    for path in ("loop", "batched"):
        for n_tasks in (2, 6):
            net, params, data = problem(True, n_tasks, dtype=torch.float32)
            inner = core.inner_loop(algorithm, params, 2, 0.3)
            counts[path, n_tasks] = kernel_calls(
                lambda: core.meta_loss(net, params, *data, inner, core.class_sum_cross_entropy, path=path)[0].backward())
    assert counts["batched", 2] == counts["batched", 6]
    assert counts["loop", 6] >= 0.9 * 6 * counts["batched", 6]
    assert counts["loop", 6] > 2.5 * counts["loop", 2]


def test_the_batched_path_refuses_what_it_does_not_compute():
    net, params, data = problem(True, n_tasks=2)
    inner = core.inner_loop("maml", params, 1, 0.3)
    with pytest.raises(ValueError, match="bn='transductive'"):
        batched.meta_loss(net, params, *data, inner, core.class_sum_cross_entropy, bn="inductive")
    mlp = models.mlp([4, 8, 3])
    with pytest.raises(ValueError, match="Conv4"):
        batched.meta_loss(mlp, dict(mlp.named_parameters()), torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long),
                          torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long),
                          core.inner_loop("maml", dict(mlp.named_parameters()), 1, 0.1), core.class_sum_cross_entropy)
    with pytest.raises(ValueError, match="path must be one of"):
        core.meta_loss(net, params, *data, inner, path="fast")


# --- the captured meta-iteration (batched.CapturedStep): the same training step, a graph on CUDA ----

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (make bench-gpu's machine)")


def train_twice(device: str, dtype, iterations: int, capture: bool | None):
    """The same Conv4 trained ``iterations`` meta-iterations on the same changing batches, by the plain
    batched training step and by a CapturedStep: (plain weights, captured weights, plain metrics,
    captured metrics)."""
    from metalearn import training
    from metalearn.benchmark import _Run
    from metalearn.tasks import Batch

    net, _, _ = problem(False, n_tasks=3, dtype=dtype)
    batches = []
    for i in range(iterations):
        _, _, (xs, ys, xq, yq) = problem(False, n_tasks=3, seed=10 + i, dtype=dtype)
        batches.append(Batch(*(t.to(device) for t in (xs, ys, xq, yq)), None))
    out = []
    for captured in (False, True):
        model = models.init_model(lambda: models.conv4(3, 3, 4, 16, strided=False), 0).to(dtype).to(device)
        model.load_state_dict(net.state_dict())
        run = _Run(model, torch.optim.Adam(model.parameters(), lr=0.01, capturable=captured and device == "cuda"))
        inner = core.inner_loop("maml", dict(model.named_parameters()), 2, 0.3)
        step = batched.CapturedStep(model, run.optimizer, inner, core.class_sum_cross_entropy, capture=capture) \
            if captured else None
        metrics = [training.maml_step(run, lambda g, b=b: b, inner, core.class_sum_cross_entropy, path="batched",
                                      captured=step) for b in batches]
        out.append(({k: v.detach().cpu() for k, v in model.state_dict().items()}, metrics))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def test_the_captured_step_trains_as_the_plain_batched_step():
    """Eager (the CPU): the captured step's buffers, copies and zeroed gradients give the plain batched
    training step's weights and metrics bit for bit, batch after batch (inputs changing each time)."""
    plain, captured, plain_metrics, captured_metrics = train_twice("cpu", torch.float64, 4, capture=None)
    assert captured_metrics == plain_metrics
    for name in plain:
        assert torch.equal(plain[name], captured[name]), name
    start, _, _ = problem(False, n_tasks=3)
    assert not torch.equal(start.state_dict()["head.weight"], captured["head.weight"].double())  # it trained


def test_the_captured_step_refuses_what_it_cannot_replay():
    net, params, data = problem(False, n_tasks=2)
    inner = core.inner_loop("maml", params, 1, 0.3)
    adam = torch.optim.Adam(net.parameters(), lr=0.01)
    with pytest.raises(ValueError, match="CUDA device"):
        batched.CapturedStep(net, adam, inner, core.class_sum_cross_entropy, capture=True)
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        batched.CapturedStep(net, adam, inner, core.class_sum_cross_entropy, warmup=0)
    step = batched.CapturedStep(net, adam, inner, core.class_sum_cross_entropy)
    step(*data)
    _, _, other = problem(False, n_tasks=3)
    with pytest.raises(ValueError, match="fixed shapes"):
        step(*other)


@CUDA
def test_the_cuda_graph_trains_as_the_eager_step_and_never_waits_for_the_host():
    """On CUDA: 3 eager iterations, the capture, then replays (float32; the graph runs the eager
    step's kernels, so the weights agree to rounding); a replayed call copies and launches without
    any host synchronisation (torch.cuda.set_sync_debug_mode('error') raises on one)."""
    plain, captured, plain_metrics, captured_metrics = train_twice("cuda", torch.float32, 7, capture=True)
    for name in plain:
        torch.testing.assert_close(captured[name], plain[name], rtol=1e-4, atol=1e-5)
    assert [m["loss"] for m in captured_metrics] == pytest.approx([m["loss"] for m in plain_metrics], rel=1e-4)
    net, params, data = problem(False, n_tasks=2, dtype=torch.float32)
    net = net.cuda()
    data = [t.cuda() for t in data]
    adam = torch.optim.Adam(net.parameters(), lr=0.01, capturable=True)
    step = batched.CapturedStep(net, adam, core.inner_loop("maml", dict(net.named_parameters()), 1, 0.3),
                                core.class_sum_cross_entropy)
    for _ in range(batched.WARMUP + 1):
        step(*data)
    assert step.graph is not None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = step(*data)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(result.loss).item()
